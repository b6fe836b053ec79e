"""The one timed loop over a video, shared by ``segment``, ``segment-davis`` and the benchmark.

:func:`timed_steps` runs a session over frames and yields each result; only ``Session.step`` is timed
as model time, and whatever the caller does between two results (decoding, resizing, writing) counts
as I/O. FPS is frames over model time, the objects' initialisation included (and reported apart),
after one untimed :func:`warm_up`. :class:`VideoStats` is what every command records of a video.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Container, Iterable, Iterator, Mapping, Sequence

import numpy as np

from reusevos.config import SessionConfig
from reusevos.model.network import VOSNetwork
from reusevos.session import FrameResult, Route, Session

FRAME_KINDS = ("start", "computed", "reoptimised", "reused", "copied", "moved", "mixed")
"""How a frame is classified: an object started on it (``start``); every tracked object took the full
path (``computed``), and one re-optimised its target model (``reoptimised``); every tracked object took
the reuse path (``reused``), was copied (``copied``) or moved (``moved``); anything else (``mixed``)."""


def frame_kind(result: FrameResult) -> str:
    """The :data:`FRAME_KINDS` entry of one frame."""
    routes = set(result.routes.values())
    if result.started:
        return "start"
    if result.reoptimised:
        return "reoptimised"
    if routes <= {Route.COMPUTED}:
        return "computed"
    if len(routes) == 1:
        return routes.pop().value  # "reused" or "copied"
    return "mixed"


def frames_per_second(frames: int, seconds: float) -> float:
    """Frames over seconds, 0 when nothing was timed: the one definition of FPS, for a video and for a dataset."""
    return frames / seconds if seconds else 0.0


def totals(entries: Iterable[Mapping]) -> dict:
    """A dataset run's ``total`` from its sequences' ``stats.json`` entries: sequences, frames, model seconds, FPS
    (the summed frames over the summed model seconds) and initialisation seconds. The sums are exact
    (``math.fsum``), so the entries' order (one run, or shards merged) never changes them."""
    entries = list(entries)
    frames = sum(entry["frames"] for entry in entries)
    process = math.fsum(entry["process_s"] for entry in entries)
    return {"sequences": len(entries), "frames": frames, "process_s": round(process, 3),
            "fps": round(frames_per_second(frames, process), 4),
            "init_s": round(math.fsum(entry["init_s"] for entry in entries), 3)}


@dataclass
class ObjectLog:
    """One object's routes and gate probabilities: entry ``i`` is frame ``start_frame + 1 + i``."""

    start_frame: int
    start_name: str
    routes: list[str] = field(default_factory=list)
    gate_probability: list[float | None] = field(default_factory=list)

    def count(self, route: Route) -> int:
        return self.routes.count(route.value)

    @property
    def reuse_rate(self) -> float:
        """Frames that skipped the full path (reused or copied) / frames since the start frame."""
        return 1.0 - self.count(Route.COMPUTED) / len(self.routes) if self.routes else 0.0

    def to_dict(self) -> dict:
        probs = self.gate_probability if any(p is not None for p in self.gate_probability) else None
        return {"start_frame": self.start_frame, "start_name": self.start_name, "tracked_frames": len(self.routes),
                **{f"{route.value}_frames": self.count(route) for route in Route},
                "reuse_rate": round(self.reuse_rate, 4), "routes": self.routes, "gate_probability": probs}


@dataclass
class VideoStats:
    """What the loop measured on one video, updated frame by frame (a progress display reads it live)."""

    input: str
    total: int  # frames the source declares
    resolution: tuple[int, int]  # (H, W) of the input and of the written masks
    process_resolution: tuple[int, int]  # (H, W) the model runs at
    frames: int = 0
    process_s: float = 0.0  # model time, the objects' initialisation included
    init_s: float = 0.0  # initialisation of all objects at their start frames
    io_s: float = 0.0  # decoding, resizing, writing: everything between two steps
    wall_s: float = 0.0  # the whole loop, end to end
    warmup_s: float = 0.0  # the untimed warm-up before it
    objects: dict[int, ObjectLog] = field(default_factory=dict)
    stages_s: dict[str, float] = field(default_factory=dict)
    frame_kinds: dict[str, list] = field(default_factory=lambda: {kind: [0, 0.0] for kind in FRAME_KINDS})
    reoptimisations: int = 0  # target-model re-optimisations, all objects
    settings: dict = field(default_factory=dict)
    weights: dict = field(default_factory=dict)

    def add(self, name: str, result: FrameResult, seconds: float) -> None:
        """Count one frame that took ``seconds`` of model time."""
        self.frames += 1
        self.process_s += seconds
        self.init_s += result.init_seconds
        for stage, value in result.stage_seconds.items():
            self.stages_s[stage] = self.stages_s.get(stage, 0.0) + value
        kind = self.frame_kinds[frame_kind(result)]
        kind[0] += 1
        kind[1] += seconds
        self.reoptimisations += len(result.reoptimised)
        for obj in result.started:
            self.objects[obj] = ObjectLog(result.index, name)
        for obj, route in result.routes.items():
            log = self.objects[obj]
            log.routes.append(route.value)
            p = result.gate_probability.get(obj)
            log.gate_probability.append(None if p is None else round(float(p), 4))

    @property
    def fps(self) -> float:
        """Frames per second of model time."""
        return frames_per_second(self.frames, self.process_s)

    @property
    def fps_wall(self) -> float:
        """Frames per second end to end, decoding and writing included."""
        return frames_per_second(self.frames, self.wall_s)

    @property
    def reuse_rates(self) -> dict[int, float]:
        return {obj: log.reuse_rate for obj, log in self.objects.items()}

    @property
    def reuse_rate(self) -> float:
        """The mean over objects of their reuse rates."""
        return float(np.mean(list(self.reuse_rates.values()))) if self.objects else 0.0

    def to_dict(self) -> dict:
        return {
            "input": self.input, "frames": self.frames, "resolution": list(self.resolution),
            "process_resolution": list(self.process_resolution),
            "wall_s": round(self.wall_s, 4), "process_s": round(self.process_s, 4), "init_s": round(self.init_s, 4),
            "io_s": round(self.io_s, 4), "warmup_s": round(self.warmup_s, 4),
            "fps": round(self.fps, 4), "fps_wall": round(self.fps_wall, 4), "reuse_rate": round(self.reuse_rate, 4),
            "objects": {str(k): log.to_dict() for k, log in sorted(self.objects.items())},
            "stages_s": {k: round(v, 4) for k, v in self.stages_s.items()},
            "frame_kinds": {k: [n, round(s, 4)] for k, (n, s) in self.frame_kinds.items()},
            "reoptimisations": self.reoptimisations, "settings": self.settings, "weights": self.weights,
        }


def timed_steps(session: Session, items: Iterable[tuple], stats: VideoStats,
                return_probabilities: bool = False,
                restarts: Container[str] = ()) -> Iterator[tuple[tuple, FrameResult]]:
    """Step ``session`` through ``items``, each ``(frame name, frame, start mask or None, ...)``, and yield
    ``(item, result)``; anything after the first three entries rides along for the caller. On the frames named in
    ``restarts`` the mask is a correction: the objects it marks start again (``Session.step(..., reset=True)``).

    Only the session's work is model time (each result's ``seconds``); producing the next item and the caller's
    work on a result are I/O. A lookahead session's results come out in order but later than their items
    (:meth:`Session.push`); each is yielded with its own item.
    """
    loop_start = io_start = time.perf_counter()
    waiting: deque[tuple] = deque()  # items pushed whose results have not come back yet

    def hand_back(results: list[FrameResult]) -> Iterator[tuple[tuple, FrameResult]]:
        nonlocal io_start
        for result in results:
            item = waiting.popleft()
            stats.add(item[0], result, result.seconds)
            end = time.perf_counter()
            yield item, result
            io_start = time.perf_counter()
            stats.io_s += io_start - end
            stats.wall_s = io_start - loop_start

    for item in items:
        name, frame, mask = item[:3]
        start = time.perf_counter()
        stats.io_s += start - io_start
        waiting.append(item)
        results = session.push(frame, mask, return_probabilities=return_probabilities, reset=name in restarts)
        io_start = time.perf_counter()
        yield from hand_back(results)
    io_start = time.perf_counter()
    yield from hand_back(session.finish())


def warm_up(network: VOSNetwork, frames: Sequence[np.ndarray], mask: np.ndarray,
            options: Iterable[SessionConfig | None] = (None,), runtimes: Iterable[str | None] = (None,)) -> float:
    """Untimed: start the objects of ``mask`` on ``frames[0]`` and track them over the other frames, once per
    session setting and backbone runtime, so one-off start-up costs (memory allocation, kernel choice, the
    backbone's export to ONNX Runtime) are not charged to the first timed frames. Returns its seconds."""
    start = time.perf_counter()
    options = list(options)
    for runtime in dict.fromkeys(runtimes):
        with network.backbone.runtime_as(runtime):
            for setting in options:
                session = Session(network, setting)
                for k, frame in enumerate(frames):
                    session.push(frame, mask if k == 0 else None)
                session.finish()
    return time.perf_counter() - start
