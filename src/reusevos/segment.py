"""Running a session over whole videos and datasets, writing masks, overlays and statistics.

- :func:`segment_video`: one video file or frame folder plus its start mask(s) -> a palette PNG per
  frame at the input size, an optional overlay video, ``stats.json``. What ``reusevos segment`` runs.
- :func:`segment_davis`: every sequence of a DAVIS split, resumable and shardable (``reusevos segment-davis``).

Timing follows SPEC section 8: FPS is frames over the model's wall time of the whole sequence,
first-frame initialisation included (reported separately too), after one untimed warm-up; decoding,
resizing and writing are timed apart as I/O, and the end-to-end rate is reported as well.
Frames stream: nothing here holds more than the current frame, its masks and one line of log per frame.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

import cv2
import numpy as np
import torch
from PIL import Image

from reusevos import __version__
from reusevos.config import SessionConfig
from reusevos.errors import ReusevosError
from reusevos.io.davis import VOID_LABEL, DavisDataset
from reusevos.io.files import write_json
from reusevos.io.frames import FrameSource, fit_size, natural_key, open_frames, resize_frame
from reusevos.io.masks import object_ids, read_mask, write_mask
from reusevos.io.writers import MaskWriter, OverlayVideoWriter
from reusevos.model.network import VOSNetwork
from reusevos.session import FrameResult, Session

DEFAULT_MAX_SIZE = 854
"""Default longer side the model runs at: DAVIS 480p (854x480), the size it is trained and measured at."""

MASK_SUFFIXES = (".png",)


# -- start masks --------------------------------------------------------------------------------------------------
class StartMasks:
    """The masks that start objects, keyed by frame name and read when their frame comes.

    Build one with :meth:`from_path` (a PNG for the first frame, or a folder of PNGs each named after the
    frame it belongs to) or :meth:`from_arrays` (``{frame name: (H, W) label map}``). Label 255 (DAVIS "void")
    counts as background. :meth:`check` reads every mask once and keeps only those that start an object,
    so a folder holding the ground truth of every frame costs no memory later.
    """

    def __init__(self, entries: Mapping[str, Path | np.ndarray], description: str = "mask"):
        self._entries: dict[str, Path | np.ndarray] = dict(entries)
        self.description = description
        self.path: Path | None = None  # the file or folder they came from
        self.starts: dict[int, str] = {}  # object id -> name of the frame it starts at (after check)

    @classmethod
    def from_path(cls, path: str | os.PathLike, frame_names: list[str]) -> "StartMasks":
        """A mask file (for ``frame_names[0]``) or a folder of ``<frame name>.png`` files.

        In a folder, a name matches a frame by its text or, when both are numbers, by value
        (``7.png`` is frame ``00007`` of a video).
        """
        path = Path(path).expanduser()
        if not frame_names:
            raise ReusevosError("the input has no frames")
        if path.is_file():
            masks = cls({frame_names[0]: path}, f"mask {path}")
            masks.path = path
            return masks
        if not path.is_dir():
            raise ReusevosError(f"mask not found: {path}; give the first frame's mask (PNG) or a folder of masks "
                                "named after their frames")
        files = sorted((p for p in path.iterdir() if p.suffix.lower() in MASK_SUFFIXES and not p.name.startswith(".")
                        and p.is_file()), key=lambda p: natural_key(p.name))
        if not files:
            raise ReusevosError(f"mask folder {path} holds no PNG masks; put <frame name>.png files in it "
                                "(00000.png for a video's first frame)")
        by_name = {name: name for name in frame_names}
        by_number = {int(name): name for name in frame_names if name.isdigit()}
        entries: dict[str, Path] = {}
        for file in files:
            frame = by_name.get(file.stem)
            if frame is None and file.stem.isdigit():
                frame = by_number.get(int(file.stem))
            if frame is None:
                shown = frame_names[0] if len(frame_names) == 1 else f"{frame_names[0]} .. {frame_names[-1]}"
                raise ReusevosError(f"mask {file} is for frame {file.stem!r}, which the input does not have "
                                    f"({len(frame_names)} frames, named {shown}); rename or remove it")
            if frame in entries:
                raise ReusevosError(f"masks {entries[frame].name} and {file.name} in {path} are both for frame "
                                    f"{frame}; keep one")
            entries[frame] = file
        masks = cls(entries, f"mask folder {path}")
        masks.path = path
        return masks

    @classmethod
    def from_arrays(cls, masks: Mapping[str, np.ndarray]) -> "StartMasks":
        return cls({name: np.asarray(m) for name, m in masks.items()}, "masks")

    def read(self, name: str) -> np.ndarray | None:
        """The ``(H, W)`` uint8 label map given for frame ``name`` (void 255 -> 0), or None."""
        entry = self._entries.get(name)
        if entry is None:
            return None
        labels = read_mask(entry) if isinstance(entry, Path) else np.asarray(entry)
        if labels.ndim != 2:
            raise ReusevosError(f"the mask for frame {name} must be a (H, W) label map; got shape {labels.shape}")
        labels = labels.astype(np.uint8, copy=True)
        labels[labels == VOID_LABEL] = 0
        return labels

    def check(self, frame_names: list[str], frame_size: tuple[int, int],
              process_size: tuple[int, int] | None = None, min_pixels: int = 1) -> None:
        """Read every mask once: right size, at least one object over all, every starting object at least
        ``min_pixels`` pixels at ``process_size`` (where the model sees it). Keeps only masks that start objects."""
        order = {name: i for i, name in enumerate(frame_names)}
        unknown = [n for n in self._entries if n not in order]
        if unknown:
            raise ReusevosError(f"a mask is given for frame {unknown[0]!r}, which the input does not have")
        process_size = process_size or frame_size
        height, width = frame_size
        kept: dict[str, Path | np.ndarray] = {}
        for name in sorted(self._entries, key=order.__getitem__):
            labels = self.read(name)
            where = self._where(name)
            if labels.shape != (height, width):
                raise ReusevosError(f"{where} is {labels.shape[1]}x{labels.shape[0]} but the frames are "
                                    f"{width}x{height}; give a mask of the frame size")
            new = [i for i in object_ids(labels) if i not in self.starts]
            if not new:
                continue
            small = resize_labels(labels, process_size)
            for obj in new:
                area = int(np.count_nonzero(small == obj))
                if area < min_pixels:
                    scale = "" if process_size == frame_size else (
                        f" at the processing size {process_size[1]}x{process_size[0]} (raise --max-size)")
                    raise ReusevosError(f"object {obj} in {where} covers {area} pixels{scale}; at least "
                                        f"{min_pixels} are needed to fit its model")
                self.starts[obj] = name
            kept[name] = self._entries[name]
        if not kept:
            raise ReusevosError(f"{self.description} marks no object: every pixel is background (0) or void (255); "
                                "paint each object with its own label 1, 2, ... (or 255 in a black-and-white mask)")
        self._entries = kept

    @property
    def names(self) -> list[str]:
        return list(self._entries)

    def _where(self, name: str) -> str:
        entry = self._entries[name]
        return f"mask {entry}" if isinstance(entry, Path) else f"the mask for frame {name}"


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A ``(H, W)`` label map resized to ``size = (H', W')`` by nearest neighbour (labels are not blended)."""
    if labels.shape == tuple(size):
        return labels
    return cv2.resize(labels, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


def upscale_labels(probabilities: Mapping[int, np.ndarray], size: tuple[int, int],
                   start_mask: np.ndarray | None = None, started: Iterable[int] = ()) -> np.ndarray:
    """Labels at ``size = (H, W)`` from merged per-object probabilities ``{id: (h, w) float32}`` at a smaller size.

    Each object's probability is upsampled bilinearly and the argmax taken there, with background
    ``1 - sum`` (the probabilities are the soft-aggregated ones, which sum to at most 1): boundaries
    follow the probability's 0.5 level at full resolution instead of the low-resolution pixel grid that
    nearest-neighbour upsampling of labels gives. Objects ``started`` this frame take their given
    full-size ``start_mask`` exactly, as the session does at the processing size. Returns ``(H, W)`` uint8.
    """
    height, width = size
    ids = sorted(probabilities)
    if not ids:
        return np.zeros((height, width), np.uint8)
    stack = np.empty((len(ids) + 1, height, width), np.float32)
    for k, obj in enumerate(ids):
        stack[k + 1] = cv2.resize(np.asarray(probabilities[obj], np.float32), (width, height),
                                  interpolation=cv2.INTER_LINEAR)
    stack[0] = 1.0 - stack[1:].sum(axis=0)
    started = [obj for obj in started if obj in probabilities]
    if started and start_mask is not None:
        given = np.isin(start_mask, started)
        for k, obj in enumerate(ids):
            stack[k + 1] = (start_mask == obj) if obj in started else np.where(given, 0.0, stack[k + 1])
        stack[0][given] = 0.0
    lookup = np.array([0] + ids, np.uint8)
    return lookup[stack.argmax(axis=0)]


# -- one video ----------------------------------------------------------------------------------------------------
@dataclass
class ObjectLog:
    """One object's gate decisions: entry ``i`` is frame ``start_frame + 1 + i``."""

    start_frame: int
    start_name: str
    reused: list[bool] = field(default_factory=list)
    gate_probability: list[float | None] = field(default_factory=list)

    def to_dict(self, reuse_rate: float) -> dict:
        probs = self.gate_probability if any(p is not None for p in self.gate_probability) else None
        return {"start_frame": self.start_frame, "start_name": self.start_name,
                "tracked_frames": len(self.reused), "reused_frames": int(sum(self.reused)),
                "reuse_rate": round(reuse_rate, 4), "reused": self.reused, "gate_probability": probs}


@dataclass
class VideoStats:
    """What :func:`segment_video` measured; updated frame by frame (a progress display reads it live)."""

    input: str
    total: int  # frames the source declares
    resolution: tuple[int, int]  # (H, W) of the input and of the written masks
    process_resolution: tuple[int, int]  # (H, W) the model runs at
    frames: int = 0
    process_s: float = 0.0  # model time, first-frame initialisation included
    init_s: float = 0.0  # initialisation of all objects at their start frames
    io_s: float = 0.0  # decoding, resizing, writing masks and overlay
    wall_s: float = 0.0  # the whole loop, end to end
    warmup_s: float = 0.0  # the untimed warm-up before it
    reuse_rates: dict[int, float] = field(default_factory=dict)  # object id -> reused / tracked frames
    objects: dict[int, ObjectLog] = field(default_factory=dict)
    stages_s: dict[str, float] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    weights: dict = field(default_factory=dict)

    @property
    def fps(self) -> float:
        """Frames per second of model time (SPEC section 8)."""
        return self.frames / self.process_s if self.process_s else 0.0

    @property
    def fps_wall(self) -> float:
        """Frames per second end to end, decoding and writing included."""
        return self.frames / self.wall_s if self.wall_s else 0.0

    @property
    def reuse_rate(self) -> float:
        """The mean over objects of their reuse rates (SPEC section 8)."""
        return float(np.mean(list(self.reuse_rates.values()))) if self.reuse_rates else 0.0

    def to_dict(self) -> dict:
        return {
            "input": self.input, "frames": self.frames, "resolution": list(self.resolution),
            "process_resolution": list(self.process_resolution),
            "wall_s": round(self.wall_s, 4), "process_s": round(self.process_s, 4), "init_s": round(self.init_s, 4),
            "io_s": round(self.io_s, 4), "warmup_s": round(self.warmup_s, 4),
            "fps": round(self.fps, 4), "fps_wall": round(self.fps_wall, 4), "reuse_rate": round(self.reuse_rate, 4),
            "objects": {str(k): log.to_dict(self.reuse_rates.get(k, 0.0)) for k, log in sorted(self.objects.items())},
            "stages_s": {k: round(v, 4) for k, v in self.stages_s.items()},
            "settings": self.settings, "weights": self.weights, "versions": versions(),
            "machine": {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count()},
        }


def segment_video(network: VOSNetwork, source: str | os.PathLike | FrameSource,
                  masks: str | os.PathLike | StartMasks | Mapping[str, np.ndarray],
                  out_dir: str | os.PathLike | None, *, overlay: str | os.PathLike | None = None,
                  options: SessionConfig | None = None, max_size: int | None = DEFAULT_MAX_SIZE,
                  warmup: bool = True, on_start: Callable[[VideoStats], None] | None = None,
                  on_frame: Callable[[FrameResult, VideoStats], None] | None = None,
                  extra: Mapping | None = None) -> VideoStats:
    """Segment one video and write the results; what ``reusevos segment`` runs.

    Args:
        network: a loaded model (:func:`reusevos.load_model`).
        source: a video file or a folder of frames (or an opened :class:`FrameSource`, read at its size).
        masks: the first frame's mask file, a folder of ``<frame name>.png`` masks for objects that start
            later, a :class:`StartMasks`, or ``{frame name: (H, W) label map}``; at the input size.
        out_dir: folder for ``<frame name>.png`` (DAVIS palette, input size) and ``stats.json``; None = no files.
        overlay: optional video file (``.mp4``) of the frames with the masks drawn over them, at input size.
        options: the session's variant and tau; None lets the session choose (the reuse gate at tau 0.7 when
            the weights have one, else the base model).
        max_size: the model runs on frames whose longer side is at most this (None or 0: the input size);
            masks are still written at the input size (see :func:`upscale_labels`).
        warmup: run the first frames once untimed so start-up costs do not count in the FPS.
        on_start: called once all checks and the warm-up are done, just before the first frame.
        on_frame: called after every frame with its result (at the processing size) and the live stats.
        extra: more entries for ``stats.json`` (e.g. the command line).

    Returns the statistics, also written to ``out_dir/stats.json``. Raises ReusevosError for bad input,
    before anything is written when the problem is in the settings, the input, the masks or the output paths.
    """
    if max_size is not None and max_size < 0:
        raise ReusevosError(f"max_size {max_size}: give a number of pixels, or 0 / None for the input size")
    frames = source if isinstance(source, FrameSource) else open_frames(source)
    names = frames.names
    size = frames.size
    process_size = fit_size(size, max_size or None)
    session = Session(network, options)  # refuses settings the weights cannot run
    if isinstance(masks, StartMasks):
        start_masks = masks
    elif isinstance(masks, Mapping):
        start_masks = StartMasks.from_arrays(masks)
    else:
        start_masks = StartMasks.from_path(masks, names)
    min_pixels = getattr(getattr(network.config, "target", None), "min_object_pixels", 1)
    start_masks.check(names, size, process_size, min_pixels)

    mask_writer = MaskWriter(out_dir) if out_dir is not None else None
    stats_path = Path(out_dir).expanduser() / "stats.json" if out_dir is not None else None
    if stats_path is not None and stats_path.is_dir():
        raise ReusevosError(f"{stats_path} is a folder; remove it or choose another output folder")
    stats = VideoStats(str(frames.path), len(frames), size, process_size,
                       settings=_settings(session, max_size, network, warmup, out_dir, overlay, start_masks),
                       weights=_weights_info(network))
    video = OverlayVideoWriter(overlay, fps=frames.fps or 24.0) if overlay is not None else None
    try:
        if warmup:
            stats.warmup_s = _warm_up(network, session.options, frames, start_masks, process_size)
        if on_start is not None:
            on_start(stats)
        _run(session, frames, start_masks, process_size, mask_writer, video, stats, on_frame)
        if video is not None:
            video.close()
    except BaseException:
        if video is not None:
            video.abort()  # an older file at that path is left as it was
        raise
    if stats.frames == 0:
        raise ReusevosError(f"{frames.path} gave no frames")
    if stats_path is not None:
        write_json(stats_path, {**stats.to_dict(), **(extra or {})})
    return stats


def _run(session: Session, frames: FrameSource, start_masks: StartMasks, process_size: tuple[int, int],
         mask_writer: MaskWriter | None, video: OverlayVideoWriter | None, stats: VideoStats,
         on_frame: Callable | None) -> None:
    scaled = process_size != tuple(stats.resolution)
    loop_start = io_start = time.perf_counter()
    for index, (name, frame) in enumerate(frames):
        given = start_masks.read(name)
        small = resize_frame(frame, process_size)
        start = time.perf_counter()
        stats.io_s += start - io_start
        result = session.step(small, resize_labels(given, process_size) if given is not None else None,
                              return_probabilities=scaled)
        end = time.perf_counter()
        stats.process_s += end - start
        labels = result.labels
        if scaled:
            labels = upscale_labels(result.probabilities or {}, stats.resolution, given, result.started)
            result.probabilities = None  # not kept: a caller wanting them runs the session itself
        if mask_writer is not None:
            mask_writer.write(name, labels)
        if video is not None:
            video.write(frame, labels)
        for obj in result.started:
            stats.objects[obj] = ObjectLog(index, name)
        for obj, reused in result.reused.items():
            log = stats.objects[obj]
            log.reused.append(bool(reused))
            p = result.gate_probability.get(obj)
            log.gate_probability.append(None if p is None else round(float(p), 4))
        stats.frames += 1
        stats.reuse_rates = session.reuse_rates
        io_start = time.perf_counter()
        stats.io_s += io_start - end
        stats.wall_s = io_start - loop_start
        if on_frame is not None:
            on_frame(result, stats)
    stats.init_s = session.init_seconds
    stats.stages_s = dict(session.timings)


def _warm_up(network: VOSNetwork, options, frames: FrameSource, start_masks: StartMasks,
             process_size: tuple[int, int]) -> float:
    """Start the first object on the first frame and track it for one frame, in a throw-away session."""
    start = time.perf_counter()
    first = next(iter(frames))[1]  # the generator is dropped here, which closes the file
    frame = resize_frame(first, process_size)
    mask = resize_labels(start_masks.read(start_masks.names[0]), process_size)
    session = Session(network, options)
    session.step(frame, mask)
    session.step(frame)
    return time.perf_counter() - start


def _settings(session: Session, max_size, network, warmup, out_dir, overlay, masks: StartMasks) -> dict:
    options = getattr(session, "options", None)
    settings = asdict(options) if is_dataclass(options) else {}
    settings.update({"max_size": max_size or None, "device": str(network.device), "threads": torch.get_num_threads(),
                     "backbone_runtime": network.backbone.active_runtime(network.device),
                     "warmup": warmup, "out": None if out_dir is None else str(out_dir),
                     "overlay": None if overlay is None else str(overlay),
                     "mask": None if masks.path is None else str(masks.path)})
    return settings


def _weights_info(network: VOSNetwork) -> dict:
    path = getattr(network, "weights_file", None)
    info = {"file": path, "has_gate": bool(getattr(network, "has_gate", False)), "meta": getattr(network, "meta", {})}
    if path and Path(path).is_file():
        info["sha256"] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return info


def versions() -> dict[str, str]:
    """Versions of reusevos and the libraries whose numbers it depends on."""
    import av
    import torchvision

    return {"reusevos": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": np.__version__, "opencv": cv2.__version__,
            "av": av.__version__, "pillow": Image.__version__}


# -- DAVIS splits -------------------------------------------------------------------------------------------------
@dataclass
class SequenceStats:
    name: str
    frames: int = 0
    resolution: tuple[int, int] = (0, 0)  # (H, W)
    process_s: float = 0.0  # model time, initialisation included
    init_s: float = 0.0  # first-frame initialisation of all objects
    io_s: float = 0.0  # reading frames, writing masks
    reuse_rate: dict[int, float] = field(default_factory=dict)
    stages_s: dict[str, float] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.frames / self.process_s if self.process_s else 0.0

    def to_dict(self) -> dict:
        return {"name": self.name, "frames": self.frames, "resolution": list(self.resolution),
                "process_s": round(self.process_s, 4), "init_s": round(self.init_s, 4), "io_s": round(self.io_s, 4),
                "fps": round(self.fps, 4), "reuse_rate": {str(k): v for k, v in self.reuse_rate.items()},
                "stages_s": {k: round(v, 4) for k, v in self.stages_s.items()}}


def segment_sequence(network: VOSNetwork, frames: Iterable[tuple[str, np.ndarray]],
                     masks: dict[str, np.ndarray], out_dir: str | os.PathLike | None,
                     name: str = "", on_frame: Callable | None = None,
                     options: SessionConfig | None = None) -> SequenceStats:
    """Segment one video: ``frames`` yields ``(frame name, (H, W, 3) uint8)``; ``masks`` maps frame names to
    label maps that start objects. Writes ``out_dir/<frame name>.png`` per frame when ``out_dir`` is given."""
    session = Session(network, options)
    stats = SequenceStats(name)
    out = Path(out_dir) if out_dir is not None else None
    io_start = time.perf_counter()
    for frame_name, frame in frames:
        start = time.perf_counter()
        stats.io_s += start - io_start
        result = session.step(frame, masks.get(frame_name))
        end = time.perf_counter()
        stats.process_s += end - start
        if out is not None:
            write_mask(out / f"{frame_name}.png", result.labels)
        stats.frames += 1
        if on_frame is not None:
            on_frame(result)
        io_start = time.perf_counter()
        stats.io_s += io_start - end
    if stats.frames == 0:
        raise ReusevosError(f"sequence {name or '(video)'} has no frames")
    stats.resolution = session.image_size
    stats.init_s = session.init_seconds
    stats.reuse_rate = session.reuse_rates
    stats.stages_s = dict(session.timings)
    return stats


def _davis_frames(dataset: DavisDataset, sequence: str):
    for path in dataset.frame_paths(sequence):
        try:
            with Image.open(path) as image:
                yield path.stem, np.array(image.convert("RGB"))
        except OSError as exc:
            raise ReusevosError(f"cannot read frame {path}: {exc}") from exc


def _start_masks(dataset: DavisDataset, sequence: str) -> dict[str, np.ndarray]:
    """What the semi-supervised DAVIS protocol gives: the first frame's annotation, nothing later."""
    first = dataset.mask_paths(sequence)[0]
    labels = dataset.read_mask(first)
    return {first.stem: np.where(labels == VOID_LABEL, 0, labels).astype(np.uint8)}


def segment_davis(network: VOSNetwork, dataset: DavisDataset, out_root: str | os.PathLike,
                  shard: tuple[int, int] = (0, 1), warmup: bool = True,
                  log: Callable[[str], None] = lambda _: None, options: SessionConfig | None = None) -> dict:
    """Segment every sequence of ``dataset`` (those of shard ``i`` of ``n``) into ``out_root/<seq>/``.

    A sequence whose folder holds every frame's PNG and whose entry is in ``stats.json`` is skipped,
    so an interrupted run resumes; resuming with other session settings (variant, tau) is refused.
    Returns the statistics, also written to ``out_root/stats.json`` (``stats-<i>of<n>.json`` for a shard).
    """
    index, count = shard
    out_root = Path(out_root)
    if out_root.exists() and not out_root.is_dir():
        raise ReusevosError(f"output {out_root} is a file; give a folder")
    chosen = Session(network, options).options  # what the session runs when options is None
    settings = asdict(chosen) if is_dataclass(chosen) else {}
    stats_path = out_root / ("stats.json" if count == 1 else f"stats-{index}of{count}.json")
    report = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
    if report.get("sequences") and report.get("settings", settings) != settings:
        raise ReusevosError(f"{out_root} holds results made with {report['settings']}, not {settings}; "
                            "choose another output folder")
    out_root.mkdir(parents=True, exist_ok=True)
    done = report.get("sequences", {})
    report.update({"reusevos": __version__, "torch": torch.__version__, "threads": torch.get_num_threads(),
                   "device": str(network.device), "machine": platform.machine(),
                   "backbone_runtime": network.backbone.active_runtime(network.device),
                   "weights": getattr(network, "meta", {}).get("name", ""), "settings": settings})
    if warmup and dataset.sequences:
        # One short untimed pass so allocator and kernel start-up costs are not charged to the first sequence.
        first = dataset.sequences[0]
        warm_frames = [frame for _, (_, frame) in zip(range(3), _davis_frames(dataset, first))]
        mask = next(iter(_start_masks(dataset, first).values()))
        session = Session(network, options)
        for k, frame in enumerate(warm_frames):
            session.step(frame, mask if k == 0 else None)
    for i, sequence in enumerate(dataset.sequences):
        if i % count != index:
            continue
        seq_dir = out_root / sequence
        expected = len(dataset.frame_paths(sequence))
        if sequence in done and seq_dir.is_dir() and len(list(seq_dir.glob("*.png"))) == expected:
            log(f"{sequence}: already complete, skipped")
            continue
        seq_dir.mkdir(exist_ok=True)
        stats = segment_sequence(network, _davis_frames(dataset, sequence), _start_masks(dataset, sequence),
                                 seq_dir, name=sequence, options=options)
        done[sequence] = stats.to_dict()
        report["sequences"] = done
        write_json(stats_path, report)
        log(f"{sequence}: {stats.frames} frames, {stats.fps:.2f} FPS, init {stats.init_s:.2f} s")
    frames = sum(s["frames"] for s in done.values())
    process = sum(s["process_s"] for s in done.values())
    report["sequences"] = done
    report["total"] = {"sequences": len(done), "frames": frames, "process_s": round(process, 3),
                       "fps": round(frames / process, 4) if process else 0.0,
                       "init_s": round(sum(s["init_s"] for s in done.values()), 3)}
    write_json(stats_path, report)
    return report

