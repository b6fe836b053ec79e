"""Running a session over whole videos and datasets, writing masks, overlays and statistics.

- :func:`segment_video`: one video file or frame folder plus its start mask(s), boxes or clicks, and corrections
  -> a palette PNG per frame at the input size (or the other formats of :mod:`reusevos.io.exports`), an optional
  overlay video, ``stats.json``. What ``reusevos segment`` runs.
- :func:`segment_davis`: every sequence of a DAVIS split or a YouTube-VOS folder, resumable and shardable
  (``reusevos segment-davis``; :mod:`reusevos.shards` joins the shards' statistics).

Both run :func:`reusevos.runner.timed_steps`, so their timings mean what the benchmark's mean.
Frames stream: nothing here holds more than the current frame, its masks and one line of log per frame.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import cv2
import numpy as np
import torch

from reusevos import __version__
from reusevos.config import DEFAULT_MAX_SIZE, SessionConfig, offline_config
from reusevos.errors import ReusevosError
from reusevos.io.davis import VOID_LABEL, DavisDataset
from reusevos.io.youtube import YoutubeDataset, annotations_folder, write_submission_zip
from reusevos.io.files import write_json
from reusevos.io.exports import Exports, check_formats
from reusevos.io.frames import FrameSource, fit_size, natural_key, open_frames, resize_frame
from reusevos.io.masks import object_ids, read_mask, to_label_map, write_mask
from reusevos.io.outputs import ResultFolder, check_outputs, refuse_inputs_as_outputs
from reusevos.io.writers import MaskWriter, OverlayVideoWriter
from reusevos.model.network import VOSNetwork
from reusevos.provenance import machine_info, versions, weights_info
from reusevos.runner import VideoStats, timed_steps, totals, warm_up
from reusevos.shards import Shard
from reusevos.session import FrameResult, Session, check_frame_size
from reusevos.start import Prompt, check_box_method, prompt_masks

MASK_SUFFIXES = (".png",)


# -- start masks --------------------------------------------------------------------------------------------------
class StartMasks:
    """The masks that start objects, keyed by frame name and read when their frame comes.

    Build one with :meth:`from_path` (a PNG for the first frame, or a folder of PNGs each named after the
    frame it belongs to) or :meth:`from_arrays` (``{frame name: (H, W) label map}``); :meth:`add_prompts` adds
    objects started from a box or clicks (:mod:`reusevos.start`). Label 255 (DAVIS "void") counts as background.
    :meth:`check` reads every mask once and keeps only those that start an object, so a folder holding the
    ground truth of every frame costs no memory later. Files and arrays follow one rule
    (:func:`reusevos.io.masks.to_label_map`); ``threshold`` binarises soft or JPEG masks.

    With ``restart`` they are corrections: every object each mask marks starts again at its frame
    (``Session.step(..., reset=True)``), and a mask that marks no object is an error.
    """

    def __init__(self, entries: Mapping[str, Path | np.ndarray], description: str = "mask",
                 threshold: int | None = None, restart: bool = False):
        self._entries: dict[str, Path | np.ndarray] = dict(entries)
        self.description = description
        self.threshold = threshold
        self.restart = restart
        self.path: Path | None = None  # the file or folder they came from
        self.starts: dict[int, str] = {}  # object id -> name of the frame it (last) starts at (after check)
        self.marks: dict[str, list[int]] = {}  # frame name -> the objects its mask starts (after check)
        self.prompts: dict[int, Prompt] = {}  # object id -> the box or clicks it starts from
        self.box_method: str | None = None  # how add_prompts made boxes into masks (reusevos.start.BOX_METHODS)
        self._made: set[str] = set()  # frames whose label maps add_prompts made (read as they are)
        self._files: dict[str, Path] = {}  # frame name -> the mask file a made label map took objects from

    @classmethod
    def from_path(cls, path: str | os.PathLike, frame_names: list[str], threshold: int | None = None,
                  restart: bool = False) -> "StartMasks":
        """A mask file (for ``frame_names[0]``) or a folder of ``<frame name>.png`` files (corrections, with
        ``restart``: a folder only).

        In a folder, a name matches a frame by its text or, when both are numbers, by value
        (``7.png`` is frame ``00007`` of a video).
        """
        path = Path(path).expanduser()
        what = "correction" if restart else "mask"
        if not frame_names:
            raise ReusevosError("the input has no frames")
        if path.is_file() and restart:
            raise ReusevosError(f"corrections {path} is a file; give a folder of masks named after the frames they "
                                "correct (00010.png for frame 10)")
        if path.is_file():
            masks = cls({frame_names[0]: path}, f"mask {path}", threshold)
            masks.path = path
            return masks
        if not path.is_dir():
            raise ReusevosError(f"{what} not found: {path}; give " + ("a folder of masks named after the frames they "
                                "correct" if restart else "the first frame's mask (PNG) or a folder of masks named "
                                "after their frames"))
        files = sorted((p for p in path.iterdir() if p.suffix.lower() in MASK_SUFFIXES and not p.name.startswith(".")
                        and p.is_file()), key=lambda p: natural_key(p.name))
        if not files:
            raise ReusevosError(f"{what} folder {path} holds no PNG masks; put <frame name>.png files in it "
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
                raise ReusevosError(f"{what} {file} is for frame {file.stem!r}, which the input does not have "
                                    f"({len(frame_names)} frames, named {shown}); rename or remove it")
            if frame in entries:
                raise ReusevosError(f"{what}s {entries[frame].name} and {file.name} in {path} are both for frame "
                                    f"{frame}; keep one")
            entries[frame] = file
        masks = cls(entries, f"{what} folder {path}", threshold, restart)
        masks.path = path
        return masks

    @classmethod
    def from_arrays(cls, masks: Mapping[str, np.ndarray], threshold: float | None = None,
                    restart: bool = False) -> "StartMasks":
        return cls({name: np.asarray(m) for name, m in masks.items()}, "corrections" if restart else "masks",
                   threshold, restart)

    def add_prompts(self, prompts: Sequence[Prompt], frames: FrameSource, box_method: str | None = None,
                    network: VOSNetwork | None = None) -> None:
        """Objects started from a box or clicks, numbered after the masks' objects (``check`` them first): ids
        ``K + 1, K + 2, ...`` in the order of ``prompts``, K the highest id the masks start (0 without masks). On a
        frame that has a mask too, a prompt's object takes only the pixels the mask leaves as background. Boxes
        are made into masks by ``box_method`` (:func:`reusevos.start.mask_from_box`: None is ``"model"`` with a
        ``network``, else ``"grabcut"``)."""
        first = max(self.starts, default=0) + 1
        names = frames.names
        given = {n: self.read(n) for n in {names[p.frame] for p in prompts if 0 <= p.frame < len(names)}
                 if n in self._entries}
        boxes = any(p.box is not None for p in prompts)
        self.box_method = check_box_method(box_method, network) if boxes else None
        for name, labels in prompt_masks(prompts, frames, first, given, self.box_method, network).items():
            if isinstance(self._entries.get(name), Path):
                self._files[name] = self._entries[name]
            self._entries[name] = labels
            self._made.add(name)
        self.prompts.update({first + k: p for k, p in enumerate(prompts)})

    @property
    def made(self) -> list[str]:
        """The frames whose label maps boxes or clicks made (:meth:`add_prompts`), in order."""
        return [name for name in self._entries if name in self._made]

    def describe(self) -> dict[str, dict]:
        """How each object starts, for ``stats.json``: ``{id: {"frame": name, "mask": file} or {"frame": name,
        "box": [x0, y0, x1, y1], "method": "model" or "grabcut"} or {"frame": name, "points": {"foreground": [[x, y]],
        "background": [...]}}}``."""
        starts = {}
        for obj, name in sorted(self.starts.items()):
            if obj in self.prompts:
                prompt = self.prompts[obj]
                method = {"method": self.box_method} if prompt.box is not None else {}
                starts[str(obj)] = {"frame": name, **prompt.to_dict(), **method}
            else:
                entry = self._files.get(name, self._entries.get(name))
                starts[str(obj)] = {"frame": name, "mask": str(entry) if isinstance(entry, Path) else "array"}
        return starts

    def read(self, name: str) -> np.ndarray | None:
        """The ``(H, W)`` uint8 label map given for frame ``name`` (void 255 -> 0), or None."""
        entry = self._entries.get(name)
        if entry is None:
            return None
        if name in self._made:  # made here: labels already, never thresholded
            return entry.copy()
        if isinstance(entry, Path):
            labels = read_mask(entry, self.threshold)
        else:
            labels = to_label_map(entry, f"the mask for frame {name}", self.threshold)
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
        self.starts, self.marks = {}, {}  # checking again (at another processing size) starts over
        for name in sorted(self._entries, key=order.__getitem__):
            labels = self.read(name)
            where = self._where(name)
            if labels.shape != (height, width):
                raise ReusevosError(f"{where} is {labels.shape[1]}x{labels.shape[0]} but the frames are "
                                    f"{width}x{height}; give a mask of the frame size")
            new = [i for i in object_ids(labels) if self.restart or i not in self.starts]
            if not new and self.restart:
                raise ReusevosError(f"{where} marks no object: every pixel is background (0) or void (255); a "
                                    "correction paints each object it restarts with its id")
            if not new:
                continue
            small = resize_labels(labels, process_size)
            for obj in new:
                area = int(np.count_nonzero(small == obj))
                if area < min_pixels:
                    scale = "" if process_size == frame_size else (
                        f" at the processing size {process_size[1]}x{process_size[0]} (raise --max-size)")
                    made = f" ({self.prompts[obj].text or 'from a box or clicks'})" if obj in self.prompts else ""
                    raise ReusevosError(f"object {obj}{made} in {where} covers {area} pixels{scale}; at least "
                                        f"{min_pixels} are needed to fit its model")
                self.starts[obj] = name
            self.marks[name] = new
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
        what = "correction" if self.restart else "mask"
        return f"{what} {entry}" if isinstance(entry, Path) else f"the {what} for frame {name}"


def make_start_masks(frames: FrameSource, masks: str | os.PathLike | StartMasks | Mapping[str, np.ndarray] | None,
                     prompts: Sequence[Prompt] = (), process_size: tuple[int, int] | None = None,
                     min_pixels: int = 1, threshold: int | None = None, box_method: str | None = None,
                     network: VOSNetwork | None = None) -> StartMasks:
    """The checked start masks of a video from mask files or arrays (see :class:`StartMasks`) and ``prompts``
    (boxes and clicks, made into masks here: boxes by ``box_method`` with ``network``, see
    :meth:`StartMasks.add_prompts`; clicks by GrabCut); ``threshold`` binarises the mask files."""
    if isinstance(masks, StartMasks):
        start_masks = masks
    elif isinstance(masks, Mapping):
        start_masks = StartMasks.from_arrays(masks, threshold)
    elif masks is not None:
        start_masks = StartMasks.from_path(masks, frames.names, threshold)
    elif prompts:
        start_masks = StartMasks({}, "the boxes and clicks")
    else:
        raise ReusevosError("nothing starts an object: give the first frame's mask, or a box or clicks on each object")
    if prompts:
        if start_masks.names:  # the masks' ids first: the prompts' objects are numbered after them
            start_masks.check(frames.names, frames.size, process_size, min_pixels)
        start_masks.add_prompts(prompts, frames, box_method, network)
    start_masks.check(frames.names, frames.size, process_size, min_pixels)
    return start_masks


def make_corrections(frames: FrameSource, corrections: str | os.PathLike | StartMasks | Mapping[str, np.ndarray] | None,
                     process_size: tuple[int, int] | None = None, min_pixels: int = 1,
                     threshold: int | None = None) -> StartMasks | None:
    """The checked corrections of a video (a folder of masks named after their frames, or arrays), or None."""
    if corrections is None:
        return None
    if isinstance(corrections, StartMasks):
        fixes = corrections
    elif isinstance(corrections, Mapping):
        fixes = StartMasks.from_arrays(corrections, threshold, restart=True)
    else:
        fixes = StartMasks.from_path(corrections, frames.names, threshold, restart=True)
    if not fixes.restart:
        raise ReusevosError("corrections must be made with restart=True (StartMasks.from_path(..., restart=True))")
    fixes.check(frames.names, frames.size, process_size, min_pixels)
    return fixes


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
def whole_video_options(network: VOSNetwork, options: SessionConfig | None) -> SessionConfig | None:
    """What a run over whole videos (:func:`segment_video`, :func:`segment_davis`, the commands, the app) runs:
    ``options``, or unless told, with FRTM weights, :func:`reusevos.config.offline_config` (the flow variant with
    the lookahead), with TTVOS's their own default (None)."""
    if options is None and network.base == "frtm":
        return offline_config()
    return options


def segment_video(network: VOSNetwork, source: str | os.PathLike | FrameSource,
                  masks: str | os.PathLike | StartMasks | Mapping[str, np.ndarray] | None = None,
                  out_dir: str | os.PathLike | None = None, *, prompts: Sequence[Prompt] = (),
                  box_method: str | None = None,
                  corrections: str | os.PathLike | StartMasks | Mapping[str, np.ndarray] | None = None,
                  formats: Sequence[str] = ("davis",), feather: float = 0.0,
                  overlay: str | os.PathLike | None = None,
                  options: SessionConfig | None = None, max_size: int | None = DEFAULT_MAX_SIZE,
                  warmup: bool = True, on_start: Callable[[VideoStats], None] | None = None,
                  on_frame: Callable[[FrameResult, VideoStats], None] | None = None,
                  extra: Mapping | None = None, overwrite: bool = False) -> VideoStats:
    """Segment one video and write the results; what ``reusevos segment`` runs.

    Args:
        network: a loaded model (:func:`reusevos.load_model`).
        source: a video file or a folder of frames (or an opened :class:`FrameSource`, read at its size).
        masks: the first frame's mask file, a folder of ``<frame name>.png`` masks for objects that start
            later, a :class:`StartMasks`, or ``{frame name: (H, W) label map}``; at the input size. None: the
            objects start from ``prompts`` only.
        out_dir: folder for the ``formats`` and ``stats.json``, and ``start-masks/<frame name>.png`` (the start
            masks ``prompts`` made); None = no files.
        prompts: objects started from a box or clicks (:class:`reusevos.start.Prompt`), numbered after the objects
            of ``masks`` (see :meth:`StartMasks.add_prompts`).
        box_method: how ``prompts``' boxes become masks, one of :data:`reusevos.start.BOX_METHODS`; None (the
            default) is ``"model"``, with ``network`` (see :func:`reusevos.start.mask_from_box`).
        corrections: masks, as ``masks`` (a folder, a :class:`StartMasks` with ``restart``, or arrays), whose
            objects start again at their frames: ``Session.step(..., reset=True)``.
        formats: what to write, names from :data:`reusevos.io.exports.FORMATS` (``davis``: ``<frame name>.png``,
            DAVIS palette, input size).
        feather: the mattes' (``rgba``, ``webm``, ``mov``) edge blur, pixels.
        overlay: optional video file (``.mp4``) of the frames with the masks drawn over them, at input size.
        options: the session's variant and tau; None: :func:`whole_video_options`' (FRTM: the flow variant with
            the lookahead at tau 0.9, compute window 2).
        max_size: the model runs on frames whose longer side is at most this (None or 0: the input size);
            masks are still written at the input size (see :func:`upscale_labels`).
        warmup: run the first frames once untimed so start-up costs do not count in the FPS.
        on_start: called once all checks and the warm-up are done, just before the first frame.
        on_frame: called after every frame with its result (at the processing size) and the live stats.
        extra: more entries for ``stats.json`` (e.g. the command line).
        overwrite: replace an ``out_dir`` that holds files (of another run) whole, at the end; without it such
            a folder is refused. Outputs that are inputs are always refused (see :mod:`reusevos.io.outputs`).

    Returns the statistics, also written to ``out_dir/stats.json`` (``"complete": true``). Raises ReusevosError
    for bad input, before anything is written when the problem is in the settings, the input, the masks or the
    output paths; a run that stops early leaves its ``stats.json`` saying ``"complete": false``.
    """
    if max_size is not None and max_size < 0:
        raise ReusevosError(f"max_size {max_size}: give a number of pixels, or 0 / None for the input size")
    frames = source if isinstance(source, FrameSource) else open_frames(source)
    size = frames.size
    process_size = fit_size(size, max_size or None)
    check_frame_size(process_size)
    session = Session(network, whole_video_options(network, options))  # refuses settings the weights cannot run
    min_pixels = getattr(getattr(network.config, "target", None), "min_object_pixels", 1)
    start_masks = make_start_masks(frames, masks, prompts, process_size, min_pixels, box_method=box_method,
                                   network=network)
    fixes = make_corrections(frames, corrections, process_size, min_pixels)
    formats = check_formats(formats, feather)

    results = plan_outputs(frames, start_masks, out_dir, overlay, overwrite, getattr(network, "weights_file", None),
                           fixes)
    stats = VideoStats(str(frames.path), len(frames), size, process_size,
                       settings=_settings(session, max_size, network, warmup, out_dir, overlay, start_masks,
                                          fixes, formats, feather),
                       weights=weights_info(network))
    exports = _open_exports(results, start_masks, formats, frames, feather) if results is not None else None
    record = _Record(results.folder / "stats.json" if results is not None else None, stats,
                     {"starts": start_masks.describe(), "corrections": fixes.marks if fixes else {}, **(extra or {})})
    record.write(complete=False)  # from the start, so even a killed run is marked partial
    video = OverlayVideoWriter(overlay, fps=frames.fps or 24.0) if overlay is not None else None
    try:
        if warmup:
            first = resize_frame(next(iter(frames))[1], process_size)  # the generator is dropped: file closed
            mask = resize_labels(start_masks.read(start_masks.names[0]), process_size)
            stats.warmup_s = warm_up(network, [first, first], mask, [session.options])
        if on_start is not None:
            on_start(stats)
        _run(session, frames, start_masks, fixes, process_size, exports, video, stats, record.frame_done(on_frame))
        if video is not None:
            video.close()
        if stats.frames == 0:
            raise ReusevosError(f"{frames.path} gave no frames")
        if exports is not None:
            exports.close()
    except BaseException as exc:
        if video is not None:
            video.abort()  # an older file at that path is left as it was
        if exports is not None:
            exports.finish_partial()  # the frames done, in every format that waits for the end
        record.write(complete=False, quiet=True)
        if isinstance(exc, ReusevosError) and results is not None and record.written:
            raise ReusevosError(f"{exc} ({_partial_note(results, record.written)})") from exc
        raise
    record.write(complete=True)
    if results is not None:
        results.commit()
    return stats


def plan_outputs(frames: FrameSource, masks: StartMasks, out_dir: str | os.PathLike | None,
                 overlay: str | os.PathLike | None, overwrite: bool = False,
                 weights: str | os.PathLike | None = None,
                 corrections: StartMasks | None = None) -> ResultFolder | None:
    """Check every output of :func:`segment_video` against the rules of :mod:`reusevos.io.outputs` (inputs never
    overwritten, one run per folder, writable) without writing anything; the results folder, or None."""
    inputs = [frames.path, masks.path, weights, corrections.path if corrections is not None else None]
    refuse_inputs_as_outputs({"--out": out_dir}, inputs)
    if overlay is not None and out_dir is not None and \
            Path(overlay).expanduser().resolve() == Path(out_dir).expanduser().resolve():
        raise ReusevosError(f"--overlay {overlay} is the --out folder; give the overlay a file name of its own")
    check_outputs(inputs, files={"--overlay": overlay})
    return ResultFolder(out_dir, overwrite) if out_dir is not None else None


def _partial_note(results: ResultFolder, frames: int) -> str:
    """Where a run that stopped early left its frames, and what became of the previous results."""
    note = f"the {frames} frames done are in {results.folder}, marked partial in its stats.json"
    return note + (f"; the earlier results in {results.path} are unchanged" if results.staging else "")


class _Record:
    """``stats.json`` of a run: written at the start and at the end, and when a run stops early.

    ``written`` counts the frames whose outputs are all written. A run stopped between the model's step and the
    writing of that frame's outputs has one frame more in ``frames`` (the model's count) than in ``written`` (the
    masks on disk); the file records both.
    """

    def __init__(self, path: Path | None, stats: VideoStats, extra: Mapping | None):
        self.path, self.stats, self.extra = path, stats, dict(extra or {})
        self.written = 0

    def frame_done(self, on_frame: Callable | None) -> Callable:
        """The per-frame callback for :func:`_run`, called once a frame's outputs are written: counts the frame,
        then calls ``on_frame``."""
        def done(result, stats):
            self.written += 1
            if on_frame is not None:
                on_frame(result, stats)
        return done

    def write(self, complete: bool, quiet: bool = False) -> None:
        if self.path is None:
            return
        data = {"complete": complete, **self.stats.to_dict(), "written": self.written, "versions": versions(),
                "machine": machine_info(), **self.extra}
        try:
            write_json(self.path, data)
        except ReusevosError:
            if not quiet:  # while a run is failing already (a full disk), its first error is the one to report
                raise


def _run(session: Session, frames: FrameSource, start_masks: StartMasks, fixes: StartMasks | None,
         process_size: tuple[int, int], exports: Exports | None, video: OverlayVideoWriter | None, stats: VideoStats,
         on_frame: Callable) -> None:
    scaled = process_size != tuple(stats.resolution)

    def inputs():  # what the session sees, then the full-size frame and start mask for the outputs
        for name, frame in frames:
            given = _frame_mask(name, start_masks, fixes)
            small = None if given is None else resize_labels(given, process_size)
            yield name, resize_frame(frame, process_size), small, frame, given

    restarts = set(fixes.names) if fixes is not None else set()
    for (name, _, _, frame, given), result in timed_steps(session, inputs(), stats, return_probabilities=scaled,
                                                          restarts=restarts):
        labels = result.labels
        if scaled:
            labels = upscale_labels(result.probabilities or {}, stats.resolution, given, result.started)
            result.probabilities = None  # not kept: a caller wanting them runs the session itself
        if exports is not None:
            exports.write(name, frame, labels, sorted({*result.routes, *result.started}))
        if video is not None:
            video.write(frame, labels)
        on_frame(result, stats)  # _Record.frame_done: the frame counts as written, then the caller's callback


def _frame_mask(name: str, start_masks: StartMasks, fixes: StartMasks | None) -> np.ndarray | None:
    """What frame ``name`` gives the session: its start mask, or its correction with the objects that start on that
    frame added where the correction leaves background (the correction restarts every object in it)."""
    given = start_masks.read(name)
    fix = fixes.read(name) if fixes is not None else None
    if fix is None:
        return given
    if given is not None:
        starting = np.isin(given, start_masks.marks.get(name, [])) & (fix == 0)
        fix[starting] = given[starting]
    return fix


def _open_exports(results: ResultFolder, start_masks: StartMasks, formats: Sequence[str], frames: FrameSource,
                  feather: float) -> Exports:
    """Open the run's folder, write the start masks that boxes and clicks made (``start-masks/<frame>.png``) and
    open the exports."""
    folder = results.open()
    if start_masks.made:
        made = MaskWriter(folder / "start-masks")
        for name in start_masks.made:
            made.write(name, start_masks.read(name))
    path = Path(str(frames.path))
    video = path.name if path.is_dir() else path.stem
    return Exports(formats, folder, video, frames.fps or 24.0, feather)


_BEFORE_THEY_EXISTED = {"search_margin": 0}  # what runs written before these fields existed ran


def _same_settings(held: dict, settings: dict) -> bool:
    """Whether a results folder's session settings ``held`` are ``settings``. A field added to
    :class:`SessionConfig` since ``held`` was written is missing there; it matches when it holds the field's default,
    which is what the older version ran (``flow_max_gap`` is None but for the flow variant, whose masks it changed),
    unless the default has changed since: ``search_margin``, 2 since session 24, was 0 before it existed."""
    defaults = {f.name: f.default for f in fields(SessionConfig)} | _BEFORE_THEY_EXISTED
    return set(held) <= set(settings) and all(held.get(k, defaults.get(k)) == v for k, v in settings.items())


def _settings(session: Session, max_size, network, warmup, out_dir, overlay, masks: StartMasks,
              fixes: StartMasks | None, formats: Sequence[str], feather: float) -> dict:
    options = getattr(session, "options", None)
    settings = asdict(options) if is_dataclass(options) else {}
    settings.update({"max_size": max_size or None, "device": str(network.device), "threads": torch.get_num_threads(),
                     "backbone_runtime": network.backbone.active_runtime(network.device),
                     "warmup": warmup, "out": None if out_dir is None else str(out_dir),
                     "overlay": None if overlay is None else str(overlay),
                     "mask": None if masks.path is None else str(masks.path),
                     "corrections": None if fixes is None or fixes.path is None else str(fixes.path),
                     "formats": list(formats), "feather": feather})
    return settings


# -- dataset runs (DAVIS splits, YouTube-VOS folders) ---------------------------------------------------------------
def segment_davis(network: VOSNetwork, dataset: DavisDataset | YoutubeDataset, out_root: str | os.PathLike,
                  shard: Shard | tuple[int, int] = Shard(), warmup: bool = True,
                  log: Callable[[str], None] = lambda _: None, options: SessionConfig | None = None,
                  zip_path: str | os.PathLike | None = None) -> dict:
    """Segment every sequence of ``dataset`` (shard ``shard``'s share of them, see :mod:`reusevos.shards`).

    A DAVIS split's masks go to ``out_root/<seq>/<frame>.png`` (what ``reusevos eval`` reads); a YouTube-VOS folder's
    to ``out_root/Annotations/<video>/<frame>.png`` (the submission layout), its objects starting on their first
    annotations, and with ``zip_path`` (an unsharded run) into the submission zip at the end. A sequence whose folder
    holds every frame's PNG and whose entry is in the statistics is skipped, so an interrupted run resumes; resuming
    with other session settings (variant, tau) or another layout is refused. Returns the statistics, also written to
    ``out_root/stats.json`` (``stats-<i>of<n>.json`` for a shard: :func:`reusevos.shards.merge_shards` joins them),
    ``"complete": false`` until every sequence of the share is done.
    """
    shard = shard if isinstance(shard, Shard) else Shard(*shard)
    out_root = Path(out_root).expanduser()
    check_davis_output(dataset, out_root, getattr(network, "weights_file", None), shard, zip_path)
    chosen = Session(network, whole_video_options(network, options)).options  # what runs when options is None
    settings = asdict(chosen) if is_dataclass(chosen) else {}
    described = {"root": str(Path(dataset.root).resolve()), "layout": dataset.layout, "split": dataset.split,
                 "sequences": dataset.sequences}
    stats_path = out_root / shard.stats_name
    try:
        report = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
    except (OSError, ValueError) as exc:
        raise ReusevosError(f"cannot read {stats_path} ({exc}); remove it to start that folder over") from None
    if report.get("sequences") and not _same_settings(report.get("settings", settings), settings):
        raise ReusevosError(f"{out_root} holds results made with {report['settings']}, not {settings}; "
                            "choose another output folder")
    if report.get("sequences") and report.get("model", "frtm") != network.base:  # written before TTVOS: FRTM's
        raise ReusevosError(f"{out_root} holds results of the {report.get('model', 'frtm')} model, not {network.base}; "
                            "choose another output folder")
    held = (report.get("dataset") or {}).get("layout", dataset.layout)
    if report.get("sequences") and _results_layout(held) != _results_layout(dataset.layout):
        raise ReusevosError(f"{out_root} holds results of a {held} dataset, not of this {dataset.layout} one; "
                            "choose another output folder")
    out_root.mkdir(parents=True, exist_ok=True)
    done = report.get("sequences", {})
    report.pop("merged", None)  # a merged file resumed by an unsharded run is that run's from now on
    report.update({"complete": False, "reusevos": __version__, "torch": torch.__version__,
                   "threads": torch.get_num_threads(), "device": str(network.device), "machine": machine_info(),
                   "backbone_runtime": network.backbone.active_runtime(network.device),
                   "weights": getattr(network, "meta", {}).get("name", ""), "model": network.base,
                   "settings": settings,
                   "dataset": described, "shard": shard.to_dict(), "sequences": done})
    write_json(stats_path, report)  # from the start, so a stopped run is marked partial
    share = shard.take(dataset.sequences)
    if warmup and share:
        first = share[0]
        frames = [frame for _, (_, frame) in zip(range(3), dataset.frames(first))]
        warm_up(network, frames, next(iter(dataset.start_masks(first).values())), [chosen])
    for sequence in share:
        seq_dir = sequence_folder(out_root, dataset.layout, sequence)
        expected = len(dataset.frame_paths(sequence))
        if sequence in done and seq_dir.is_dir() and len(list(seq_dir.glob("*.png"))) == expected:
            log(f"{sequence}: already complete, skipped")
            continue
        seq_dir.mkdir(parents=True, exist_ok=True)
        stats = segment_sequence(network, dataset, sequence, seq_dir, options)
        done[sequence] = stats.to_dict()
        write_json(stats_path, report)
        log(f"{sequence}: {stats.frames} frames, {stats.fps:.2f} FPS, init {stats.init_s:.2f} s")
    report["total"] = totals(done.values())
    report["complete"] = set(share) <= set(done)
    write_json(stats_path, report)
    if zip_path is not None:
        write_submission_zip(out_root, zip_path, dataset.sequences)
    return report


def sequence_folder(out_root: str | os.PathLike, layout: str, sequence: str) -> Path:
    """Where a dataset run writes a sequence's masks: ``<seq>/`` for DAVIS, ``Annotations/<video>/`` for
    YouTube-VOS (``layout`` is the dataset's)."""
    if _results_layout(layout) == "youtube":
        return annotations_folder(out_root, sequence)
    return Path(out_root) / sequence


def _results_layout(layout: str) -> str:
    """``youtube`` or ``davis`` (a DAVIS dataset's layout is its year)."""
    return "youtube" if layout == "youtube" else "davis"


def check_davis_output(dataset: DavisDataset | YoutubeDataset, out_root: str | os.PathLike,
                       weights: str | os.PathLike | None = None, shard: Shard = Shard(),
                       zip_path: str | os.PathLike | None = None) -> None:
    """The rules of :mod:`reusevos.io.outputs` for a dataset run's results folder and zip: not the dataset or the
    weights (nor holding them), writable; a zip only of a YouTube-VOS run, and only unsharded (the shards' zip is
    made by ``reusevos merge``). (Its own earlier results are resumed, not refused.)"""
    if zip_path is not None:
        check_zip(dataset.layout, shard, dataset.root, zip_path)
    check_outputs([dataset.root, weights], folders={"--out": out_root})


def check_zip(layout: str, shard: Shard | None, dataset_root: str | os.PathLike | None,
              zip_path: str | os.PathLike) -> None:
    """Whether ``--zip`` can be written for a run of a ``layout`` dataset: YouTube-VOS results only, of the whole
    run, into a file that is not the dataset's (nor a folder)."""
    if _results_layout(layout) != "youtube":
        raise ReusevosError(f"--zip {zip_path}: the submission zip is YouTube-VOS's; this is a DAVIS run, scored by "
                            "`reusevos eval` (drop --zip)")
    if shard is not None and shard.count > 1:
        raise ReusevosError(f"--zip {zip_path}: this is shard {shard.index} of {shard.count} (from {shard.source}); "
                            "make the zip once every shard is done, with `reusevos merge RESULTS_DIR --zip FILE`")
    if Path(zip_path).suffix.lower() != ".zip":
        raise ReusevosError(f"--zip {zip_path}: give a file name ending in .zip")
    check_outputs([dataset_root], files={"--zip": zip_path})


def segment_sequence(network: VOSNetwork, dataset: DavisDataset | YoutubeDataset, sequence: str,
                     out_dir: str | os.PathLike | None, options: SessionConfig | None = None) -> VideoStats:
    """Segment one sequence of a dataset from its start masks (DAVIS: the first annotation; YouTube-VOS: each
    object's first); ``out_dir/<frame name>.png`` per frame when given."""
    session = Session(network, whole_video_options(network, options))
    starts = dataset.start_masks(sequence)
    paths = dataset.frame_paths(sequence)
    stats = VideoStats(sequence, len(paths), (0, 0), (0, 0))
    items = ((name, frame, starts.get(name)) for name, frame in dataset.frames(sequence))
    for (name, _, _), result in timed_steps(session, items, stats):
        if out_dir is not None:
            write_mask(Path(out_dir) / f"{name}.png", result.labels)
    if stats.frames == 0:
        raise ReusevosError(f"sequence {sequence} has no frames")
    stats.resolution = stats.process_resolution = session.image_size
    return stats
