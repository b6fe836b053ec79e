"""Measuring one setting on one sequence held in memory: time per stage and frame kind, memory, scores, FLOPs.

Everything is read from the session's results (:class:`reusevos.session.FrameResult`) through the shared
timed loop (:func:`reusevos.runner.timed_steps`); nothing in the session is patched or wrapped.
"""

from __future__ import annotations

import gc
import io
import threading
import time
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from reusevos.evaluation.davis_eval import ObjectScores, score_sequence
from reusevos.io.davis import SequenceData
from reusevos.io.masks import DAVIS_PALETTE
from reusevos.model.network import VOSNetwork
from reusevos.runner import VideoStats, timed_steps
from reusevos.base_models import base_model
from reusevos.session import SUB_STAGES, Route, Session, Stage
from reusevos.bench.settings import Setting

RSS_INTERVAL_S = 0.01
_SUB = {child for children in SUB_STAGES.values() for child in children}


def _proc_status_mb(key: str) -> float | None:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), in MiB; None if unavailable."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _rss_mb() -> float | None:
    return _proc_status_mb("VmRSS")


def hwm_mb() -> float | None:
    """The process's peak resident size so far (VmHWM), in MiB."""
    return _proc_status_mb("VmHWM")


class RssSampler:
    """Samples the process's VmRSS (Linux ``/proc/self/status``) in a background thread while open.

    ``start_mb`` is the resident size when it started, ``peak_mb`` the largest sample (both None where
    ``/proc`` is missing).
    """

    def __init__(self, interval: float = RSS_INTERVAL_S):
        self.interval = interval
        self.start_mb: float | None = None
        self.peak_mb: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        value = _rss_mb()
        if value is not None and (self.peak_mb is None or value > self.peak_mb):
            self.peak_mb = value

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "RssSampler":
        self.start_mb = _rss_mb()
        self.peak_mb = self.start_mb
        self._thread = threading.Thread(target=self._loop, name="reusevos-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()


def encode_png(labels: np.ndarray) -> bytes:
    """A ``(H, W)`` uint8 label map as DAVIS-palette PNG bytes (what writing a result costs, without the disk)."""
    image = Image.fromarray(labels)
    image.putpalette(DAVIS_PALETTE.reshape(-1).tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class SequenceResult:
    """What one setting measured on one sequence. Times in seconds; ``kinds`` maps a frame kind
    (:data:`reusevos.runner.FRAME_KINDS`) to ``[frames, seconds]``; ``objects`` maps an object id to its
    tracked frame count, how many of them skipped the full path (``reused``: reuse path or copy), and its
    per-frame ``j`` and ``f`` (frames 1..T-2)."""

    sequence: str
    setting: str
    frames: int
    resolution: tuple[int, int]
    time_s: float
    init_s: float
    stages_s: dict[str, float]
    kinds: dict[str, list]
    object_frames: dict[str, int]  # tracked object-frames per Route value: computed, reused, copied
    objects: dict[str, dict]
    peak_rss_mb: float | None = None
    rss_increase_mb: float | None = None
    run: str = ""

    def to_dict(self) -> dict:
        data = asdict(self)
        data["resolution"] = list(self.resolution)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "SequenceResult":
        data = dict(data)
        data["resolution"] = tuple(data["resolution"])
        return cls(**data)

    def object_scores(self) -> list[ObjectScores]:
        scored = self.frames - 2
        ids = [f"{t:05d}" for t in range(1, scored + 1)]
        return [ObjectScores(self.sequence, int(obj), ids, np.asarray(o["j"], np.float64),
                             np.asarray(o["f"], np.float64))
                for obj, o in sorted(self.objects.items(), key=lambda kv: int(kv[0]))]


def run_setting(network: VOSNetwork, data: SequenceData, setting: Setting, run: str = "") -> SequenceResult:
    """Run one setting over one sequence held in memory: timing, memory, stages, scores."""
    oracle = setting.variant == "oracle"
    session = Session(network, setting.options(), ground_truth=data.ground_truth if oracle else None)
    stats = VideoStats(data.name, len(data.frames), data.resolution, data.resolution)
    predictions = np.empty(data.ground_truth.shape, np.uint8)
    encode_s = 0.0
    items = ((data.frame_ids[t], data.frames[t], data.start_masks.get(t), t) for t in range(len(data.frames)))
    gc.collect()
    with network.backbone.runtime_as(setting.runtime), RssSampler() as rss:
        for (_, _, _, t), result in timed_steps(session, items, stats):
            predictions[t] = result.labels
            start = time.perf_counter()
            encode_png(result.labels)
            encode_s += time.perf_counter() - start
    stages = stage_seconds(stats)
    stages["mask_encoding"] = encode_s
    scores = {s.object_id: s for s in score_sequence(data.ground_truth, predictions, data.name, data.frame_ids)}
    objects = {}
    for obj_id, log in stats.objects.items():
        score = scores.get(obj_id)
        objects[str(obj_id)] = {"started": True, "reused": len(log.routes) - log.count(Route.COMPUTED),
                                "tracked": len(log.routes), "j": _rounded(score.j) if score else [],
                                "f": _rounded(score.f) if score else []}
    for obj_id, score in scores.items():  # annotated, but not in the first frame: never started, scored as missed
        objects.setdefault(str(obj_id), {"started": False, "reused": 0, "tracked": 0, "j": _rounded(score.j),
                                         "f": _rounded(score.f)})
    object_frames = {route.value: sum(log.count(route) for log in stats.objects.values()) for route in Route}
    increase = None if rss.peak_mb is None or rss.start_mb is None else rss.peak_mb - rss.start_mb
    return SequenceResult(data.name, setting.key, stats.frames, data.resolution, stats.process_s, stats.init_s,
                          stages, stats.frame_kinds, object_frames, objects, rss.peak_mb, increase, run)


def _rounded(values: np.ndarray) -> list[float]:
    return [round(float(v), 6) for v in values]


def stage_seconds(stats: VideoStats) -> dict[str, float]:
    """Seconds per stage as the session measured them, with ``other``: the model time no stage covers."""
    stages = {stage.value: stats.stages_s.get(stage.value, 0.0) for stage in Stage}
    top = [stage.value for stage in Stage if stage not in _SUB]
    stages["other"] = max(0.0, stats.process_s - sum(stages[k] for k in top))
    return stages


# -- FLOPs --------------------------------------------------------------------------------------------------------
def count_flops(network: VOSNetwork, data: SequenceData) -> dict:
    """GFLOPs of one frame on each path, counted with PyTorch's FLOP counter on ``data``'s frames 0 and 1.

    Paths: ``full`` (the base model's frame: variant full), and with a reuse gate ``computed`` (the full
    path of the dynamic network: template matching and gate included), ``reuse`` (the reuse path),
    ``copy`` (the copy variant's reused frame), and ``flow`` (the flow variant's moved frame: no network at all;
    its optical flow runs in OpenCV, which the counter cannot see, so its cost is in the timings); ``start_frame`` is frame 0 with the target models'
    initialisation (Gauss-Newton's convolutions and matrix products counted). All objects of the
    sequence take the same path. The counter sees convolutions and matrix products, not element-wise
    operations or resampling. The backbone runs in PyTorch here, since the counter cannot see into ONNX
    Runtime; the work is the same whichever runtime the timed settings use.
    """
    from torch.utils.flop_counter import FlopCounterMode

    paths = [("full", Setting("full", 1.0)), ("flow", Setting("flow", 0.0))]
    if network.has_gate:
        paths += [("computed", Setting("reuse", 1.0)), ("reuse", Setting("reuse", 0.0)), ("copy", Setting("copy", 0.0))]
    runs = base_model(network).variants
    paths = [(name, setting) for name, setting in paths if setting.variant in runs]  # those the weights run
    gflops: dict[str, float] = {}
    for name, setting in paths:
        session = Session(network, setting.options())
        with network.backbone.runtime_as("torch"):
            counter = FlopCounterMode(display=False)
            with counter:
                session.step(data.frames[0], data.start_masks.get(0))
            if name == "full":
                gflops["start_frame"] = counter.get_total_flops() / 1e9
            counter = FlopCounterMode(display=False)
            with counter:
                session.step(data.frames[1], data.start_masks.get(1))
        gflops[name] = counter.get_total_flops() / 1e9
    return {"sequence": data.name, "resolution": list(data.resolution), "objects": data.num_objects,
            "gflops": {k: round(v, 4) for k, v in gflops.items()}}
