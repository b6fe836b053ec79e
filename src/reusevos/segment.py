"""Running a session over whole videos and datasets, writing masks and statistics.

Timing follows SPEC section 8: a sequence's FPS is its frames over the wall time of processing it,
first-frame initialisation included (reported separately too); reading frames and writing PNGs are
timed apart, as I/O.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from PIL import Image

from reusevos import __version__
from reusevos.errors import ReusevosError
from reusevos.io.davis import DavisDataset
from reusevos.io.masks import write_mask
from reusevos.model.network import VOSNetwork
from reusevos.session import Session


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
                     name: str = "", on_frame: Callable | None = None) -> SequenceStats:
    """Segment one video: ``frames`` yields ``(frame name, (H, W, 3) uint8)``; ``masks`` maps frame names to
    label maps that start objects. Writes ``out_dir/<frame name>.png`` per frame when ``out_dir`` is given."""
    session = Session(network)
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
    return {first.stem: np.where(labels == 255, 0, labels).astype(np.uint8)}  # 255 = void in DAVIS 2017


def segment_davis(network: VOSNetwork, dataset: DavisDataset, out_root: str | os.PathLike,
                  shard: tuple[int, int] = (0, 1), warmup: bool = True,
                  log: Callable[[str], None] = lambda _: None) -> dict:
    """Segment every sequence of ``dataset`` (those of shard ``i`` of ``n``) into ``out_root/<seq>/``.

    A sequence whose folder holds every frame's PNG and whose entry is in ``stats.json`` is skipped,
    so an interrupted run resumes. Returns the statistics, also written to ``out_root/stats.json``
    (``stats-<i>of<n>.json`` for a shard).
    """
    index, count = shard
    out_root = Path(out_root)
    if out_root.exists() and not out_root.is_dir():
        raise ReusevosError(f"output {out_root} is a file; give a folder")
    out_root.mkdir(parents=True, exist_ok=True)
    stats_path = out_root / ("stats.json" if count == 1 else f"stats-{index}of{count}.json")
    report = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
    done = report.get("sequences", {})
    report.update({"reusevos": __version__, "torch": torch.__version__, "threads": torch.get_num_threads(),
                   "device": str(network.device), "machine": platform.machine(),
                   "weights": getattr(network, "meta", {}).get("name", "")})
    if warmup and dataset.sequences:
        # One short untimed pass so allocator and kernel start-up costs are not charged to the first sequence.
        first = dataset.sequences[0]
        warm_frames = [f for _, f in zip(range(3), _davis_frames(dataset, first))]
        mask = next(iter(_start_masks(dataset, first).values()))
        session = Session(network)
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
                                 seq_dir, name=sequence)
        done[sequence] = stats.to_dict()
        report["sequences"] = done
        _write_json(stats_path, report)
        log(f"{sequence}: {stats.frames} frames, {stats.fps:.2f} FPS, init {stats.init_s:.2f} s")
    frames = sum(s["frames"] for s in done.values())
    process = sum(s["process_s"] for s in done.values())
    report["sequences"] = done
    report["total"] = {"sequences": len(done), "frames": frames, "process_s": round(process, 3),
                       "fps": round(frames / process, 4) if process else 0.0,
                       "init_s": round(sum(s["init_s"] for s in done.values()), 3)}
    _write_json(stats_path, report)
    return report


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
