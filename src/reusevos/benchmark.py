"""Speed, accuracy and computation of the frame-loop settings, measured in one process.

:func:`run_benchmark` runs every requested setting (variant, tau, tau2) over the same frames: sequences in
the outer loop, settings in the inner one, so one sequence's frames are decoded once (before any timing),
held in memory and shared by all settings. One untimed warm-up comes before the first timed run. Per
setting it reports (definitions as in SPEC section 8):

- ``fps``: frames / wall time of the sequences (the sum of ``Session.step`` times), first-frame
  initialisation included; ``fps_excl_init``: the frames on which no object starts / their time;
- ``init_s_per_object``: target-model initialisation (augmentation + fit) per object;
- ``reuse_rate``: per object reused / tracked frames, averaged over all objects of all sequences;
- ``scores``: J&F, J, F (Mean, Recall, Decay) by the project's evaluator, in memory, over all objects;
- ``peak_rss_mb``: the largest resident set size (VmRSS, the whole process: model, the held frames of
  the sequence, Python) sampled every 10 ms while the setting ran; ``rss_increase_mb``: that peak minus
  the resident size when the setting started (what running it adds, transiently);
- ``stages_ms_per_frame``: the session's stage timings plus finer ones measured from outside
  (refinement levels by forward hooks, the head as the rest of the shallow refinement, target-model
  re-optimisation by wrapping ``TargetModel.update``), work done inside an object's initialisation
  moved to ``initialisation``; ``mask_encoding`` (label map to PNG bytes) is measured apart and is not
  part of the FPS;
- ``c``: mean time of a frame on which every object took the reuse path (for the ``copy`` variant:
  was copied) / mean time of a frame on which every object took the full path without a target-model
  re-optimisation, in the same setting, or, when it has no such frame (tau = 0), in the same variant at
  tau = 1 (``c_reference`` says which); ``c_copy``: copied frames against computed ones;
- ``gflops_per_frame`` and ``computation_saved``: from the FLOPs of each path counted with
  ``torch.utils.flop_counter.FlopCounterMode`` on one representative frame (see :func:`count_flops`).

Sub-stages (``refine_level32`` and ``refine_level16`` of ``refine_deep``; ``refine_level8``,
``refine_level4`` and ``refine_head`` of ``refine_shallow``; ``target_model_add_sample`` and
``target_model_reoptimise`` of ``target_model_update``) are listed in :data:`SUB_STAGES`; the top-level
stages, ``initialisation`` and ``other`` add up to the timed wall time.

With a ``partial`` file (JSON lines), each finished (sequence, setting) is appended and skipped when the
run is started again, so a run of hours can be interrupted and resumed; the report aggregates all lines.
"""

from __future__ import annotations

import gc
import hashlib
import io
import itertools
import json
import os
import platform
import re
import subprocess
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np
import torch
from PIL import Image

from reusevos import __version__
from reusevos.config import VARIANTS, SessionConfig
from reusevos.errors import ReusevosError
from reusevos.evaluation.davis_eval import DavisScores, ObjectScores, score_sequence
from reusevos.io.davis import VOID_LABEL, DavisDataset
from reusevos.io.files import write_text
from reusevos.io.masks import DAVIS_PALETTE
from reusevos.model.network import VOSNetwork
from reusevos.model.onnx_backbone import RUNTIME_NAMES, check_runtime, onnxruntime_version
from reusevos.session import Session

REPORT_FORMAT = "reusevos-benchmark"
REPORT_VERSION = 1
QUICK_SEQUENCES = 3  # blackswan (when the split has it) and the next ones in split order
QUICK_FRAMES = 20
RSS_INTERVAL_S = 0.01

SESSION_STAGES = ("backbone_to_f8", "backbone_f8_to_f32", "template_match", "gate", "target_model_apply",
                  "refine_reduce_deep", "refine_deep", "delta", "translator", "refine_reduce_shallow",
                  "refine_shallow", "merge", "target_model_update")
"""The session's own stages (``Session.timings``); they do not overlap."""

SUB_STAGES = {"refine_deep": ("refine_level32", "refine_level16"),
              "refine_shallow": ("refine_level8", "refine_level4", "refine_head"),
              "target_model_update": ("target_model_add_sample", "target_model_reoptimise")}
"""Finer stages measured from outside, each part of the stage it is listed under."""

STAGE_ORDER = ("backbone_to_f8", "backbone_f8_to_f32", "template_match", "gate", "target_model_apply",
               "refine_reduce_deep", "refine_deep", "refine_level32", "refine_level16", "delta", "translator",
               "refine_reduce_shallow", "refine_shallow", "refine_level8", "refine_level4", "refine_head", "merge",
               "target_model_update", "target_model_add_sample", "target_model_reoptimise", "initialisation",
               "other", "mask_encoding")
"""Every stage of a report, in the order of the paper's Fig. 2 (``mask_encoding`` is outside the FPS)."""

_LEVELS = ("level32", "level16", "level8", "level4")
FRAME_KINDS = ("start", "computed", "reoptimised", "reused", "copied", "mixed")
"""How a frame is classified: an object started on it (``start``); every tracked object took the full
path (``computed``), and one re-optimised its target model (``reoptimised``); every tracked object took
the reuse path (``reused``) or was copied (``copied``); anything else (``mixed``)."""


# -- settings -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """One frame-loop setting: a :class:`SessionConfig` with a short name (``full``, ``reuse@0.7``,
    ``fusion@0.5/0.9``, ``reuse@0.7+w2+c2``), and the backbone's runtime when the setting fixes it
    (``+torch``, ``+ort``; None runs the model's own choice)."""

    variant: str
    tau: float
    tau2: float | None = None
    window: int = 0  # SessionConfig.reuse_window
    compute_window: int = 0  # SessionConfig.compute_window
    runtime: str | None = None  # Backbone.runtime while the setting runs (a key of _RUNTIME_SUFFIXES)

    @property
    def key(self) -> str:
        name = "full" if self.variant == "full" else (
            f"{self.variant}@{self.tau:g}" + (f"/{self.tau2:g}" if self.tau2 is not None else "")
            + (f"+w{self.window}" if self.window else ""))
        runtime = f"+{_RUNTIME_SUFFIXES[self.runtime]}" if self.runtime else ""
        return name + (f"+c{self.compute_window}" if self.compute_window else "") + runtime

    def options(self) -> SessionConfig:
        options = SessionConfig(self.variant, self.tau, self.tau2, reuse_window=self.window,
                                compute_window=self.compute_window)
        options.validate()
        return options


def build_settings(variants: Iterable[str], taus: Iterable[float], tau2s: Iterable[float] = (0.9,),
                   has_gate: bool = True, windows: Iterable[int] = (0,),
                   compute_windows: Iterable[int] = (0,),
                   runtimes: Iterable[str | None] = (None,)) -> tuple[list[Setting], list[dict]]:
    """The cross product of ``variants`` and ``taus`` (``fusion`` also with each ``tau2``; the variants with a
    reuse path, at tau < 1, also with each ``reuse_window`` in ``windows``), then each with every
    ``compute_window`` in ``compute_windows``, in that order, each of them with every backbone runtime in
    ``runtimes`` in turn (None: the model's own).

    ``full`` appears once (it has no tau). Combinations that cannot run are returned apart, each as
    ``{"setting", "variant", "tau", "tau2", "reason"}``: fusion with ``tau2 <= tau``, and every variant
    but ``full`` when the weights have no reuse gate. Raises ReusevosError for an unknown variant or a
    tau outside [0, 1], or a runtime that cannot run here.
    """
    variants, taus, tau2s = list(dict.fromkeys(variants)), list(dict.fromkeys(taus)), list(dict.fromkeys(tau2s))
    # auto is what the model does anyway: the same setting as None, with the same name
    runtimes = list(dict.fromkeys(None if r in (None, "auto") else check_runtime(r) for r in runtimes)) or [None]
    windows, compute_windows = list(dict.fromkeys(windows)), list(dict.fromkeys(compute_windows))
    for name, values in (("reuse", windows), ("compute", compute_windows)):
        if any(isinstance(w, bool) or not isinstance(w, int) or w < 0 for w in values) or not values:
            raise ReusevosError(f"{name} windows must be whole numbers of cells >= 0 (0 = off), got {values}")
    if not variants:
        raise ReusevosError("give at least one variant")
    for variant in variants:
        if variant not in VARIANTS:
            raise ReusevosError(f"unknown variant {variant!r}; choose among {', '.join(VARIANTS)}")
    for value in [*taus, *tau2s]:
        if not 0.0 <= value <= 1.0:
            raise ReusevosError(f"tau and tau2 must lie in [0, 1], got {value}")
    if any(v != "full" for v in variants) and not taus:
        raise ReusevosError("give at least one tau")
    settings: list[Setting] = []
    skipped: list[dict] = []

    def skip(setting: Setting, reason: str) -> None:
        skipped.append({"setting": setting.key, "variant": setting.variant, "tau": setting.tau,
                        "tau2": setting.tau2, "reason": reason})

    for variant, compute_window, runtime in itertools.product(variants, compute_windows, runtimes):
        if variant == "full":
            settings.append(Setting("full", 1.0, compute_window=compute_window, runtime=runtime))
            continue
        for tau in taus:
            for tau2 in (tau2s if variant == "fusion" else [None]):
                for window in (windows if variant != "copy" and tau < 1.0 else [0]):  # tau = 1 never reuses
                    setting = Setting(variant, float(tau), None if tau2 is None else float(tau2), window,
                                      compute_window, runtime)
                    if not has_gate:
                        skip(setting, "the weights have no reuse gate")
                    elif variant == "fusion" and not tau < tau2:
                        skip(setting, f"fusion needs tau < tau2 = {tau2:g}")
                    else:
                        settings.append(setting)
    return list(dict.fromkeys(settings)), skipped


_RUNTIME_SUFFIXES = {"torch": "torch", "onnxruntime": "ort"}  # Setting.runtime -> its part of the name
_SUFFIX_RUNTIMES = {suffix: runtime for runtime, suffix in _RUNTIME_SUFFIXES.items()}
_KEY = re.compile(r"(?P<variant>[a-z]+)(?:@(?P<tau>[0-9.e-]+)(?:/(?P<tau2>[0-9.e-]+))?)?(?:\+w(?P<window>\d+))?"
                  r"(?:\+c(?P<compute>\d+))?(?:\+(?P<runtime>" + "|".join(_SUFFIX_RUNTIMES) + "))?")


def parse_setting(key: str) -> Setting:
    """The setting a name of :attr:`Setting.key` stands for (``full+c2+ort``, ``reuse@0.7+w2+c2``,
    ``fusion@0.5/0.9``, ``full+torch``): the inverse of ``key``. Raises ReusevosError for anything else."""
    match = _KEY.fullmatch(key.strip())
    example = "full, full+c2+ort, reuse@0.7+w2+c2 or fusion@0.5/0.9"
    if match is None:
        raise ReusevosError(f"setting {key!r} is not a setting name such as {example}")
    variant, tau, tau2 = match["variant"], match["tau"], match["tau2"]
    if variant not in VARIANTS:
        raise ReusevosError(f"setting {key!r}: unknown variant {variant!r}; choose among {', '.join(VARIANTS)}")
    if variant == "full" and tau is not None:
        raise ReusevosError(f"setting {key!r}: full never reuses, so it takes no tau; write full")
    if variant != "full" and tau is None:
        raise ReusevosError(f"setting {key!r}: give the variant's tau, as in {variant}@0.7")
    try:
        tau_value, tau2_value = float(tau or 1.0), None if tau2 is None else float(tau2)
    except ValueError:
        raise ReusevosError(f"setting {key!r}: tau must be a number, as in {variant}@0.7") from None
    runtime = _SUFFIX_RUNTIMES.get(match["runtime"])
    setting = Setting(variant, tau_value, tau2_value, int(match["window"] or 0), int(match["compute"] or 0),
                      None if runtime is None else check_runtime(runtime))
    setting.options()  # tau in [0, 1], fusion's tau < tau2, a reuse window only where there is a reuse path
    return setting


def select_settings(keys: Iterable[str], has_gate: bool = True) -> tuple[list[Setting], list[dict]]:
    """Exactly the settings named by ``keys`` (see :func:`parse_setting`), in that order, instead of a cross
    product; like :func:`build_settings` it returns those that cannot run (no reuse gate) apart."""
    settings = list(dict.fromkeys(parse_setting(key) for key in keys))
    if not settings:
        raise ReusevosError("give at least one setting")
    runnable = [s for s in settings if has_gate or s.variant == "full"]
    skipped = [{"setting": s.key, "variant": s.variant, "tau": s.tau, "tau2": s.tau2,
                "reason": "the weights have no reuse gate"} for s in settings if s not in runnable]
    return runnable, skipped


# -- data ---------------------------------------------------------------------------------------------------------
@dataclass
class SequenceData:
    """One sequence held in memory: ``frames`` ``(T, H, W, 3)`` uint8 RGB, ``ground_truth`` ``(T, H, W)``
    uint8 (255 = void), ``start_masks`` frame index -> ``(H, W)`` label map that starts objects (the
    semi-supervised protocol: the first frame's annotation, void as background)."""

    name: str
    frames: np.ndarray
    ground_truth: np.ndarray
    frame_ids: list[str]
    start_masks: dict[int, np.ndarray]

    @property
    def resolution(self) -> tuple[int, int]:
        return tuple(self.frames.shape[1:3])

    @property
    def num_objects(self) -> int:
        return sum(len([i for i in np.unique(m) if i != 0]) for m in self.start_masks.values())


def load_sequence(dataset: DavisDataset, sequence: str, max_frames: int | None = None,
                  max_size: int | None = None) -> SequenceData:
    """Decode a sequence's frames and ground truth (the first ``max_frames``; frames whose longer side
    exceeds ``max_size`` are shrunk by area averaging, the ground truth by nearest neighbour)."""
    frame_paths = dataset.frame_paths(sequence)
    mask_paths = dataset.mask_paths(sequence)
    if len(mask_paths) != len(frame_paths):
        raise ReusevosError(f"sequence {sequence} has annotations for {len(mask_paths)} of its {len(frame_paths)} "
                            "frames; the benchmark scores every frame, so use a split with full ground truth (val)")
    if max_frames is not None:
        frame_paths, mask_paths = frame_paths[:max_frames], mask_paths[:max_frames]
    frames, masks = [], []
    for frame_path, mask_path in zip(frame_paths, mask_paths):
        try:
            with Image.open(frame_path) as image:
                frame = np.array(image.convert("RGB"))
        except OSError as exc:
            raise ReusevosError(f"cannot read frame {frame_path}: {exc}") from exc
        mask = dataset.read_mask(mask_path)
        if mask.shape != frame.shape[:2]:
            raise ReusevosError(f"annotation {mask_path} is {mask.shape[1]}x{mask.shape[0]} but frame {frame_path} "
                                f"is {frame.shape[1]}x{frame.shape[0]}")
        if max_size and max(frame.shape[:2]) > max_size:
            scale = max_size / max(frame.shape[:2])
            size = (max(1, round(frame.shape[1] * scale)), max(1, round(frame.shape[0] * scale)))
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
            mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
        frames.append(frame)
        masks.append(mask)
    if len(frames) < 3:
        raise ReusevosError(f"sequence {sequence}: {len(frames)} frame(s); scoring leaves out the first and the last "
                            "frame, so at least 3 are needed")
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise ReusevosError(f"the frames of sequence {sequence} differ in size: {sorted(shapes)}")
    ground_truth = np.stack(masks)
    first = np.where(ground_truth[0] == VOID_LABEL, 0, ground_truth[0]).astype(np.uint8)
    if not first.any():
        raise ReusevosError(f"the first annotation of sequence {sequence} marks no object")
    return SequenceData(sequence, np.stack(frames), ground_truth, [p.stem for p in mask_paths], {0: first})


def quick_sequences(dataset: DavisDataset, count: int = QUICK_SEQUENCES) -> list[str]:
    """``blackswan`` when the split has it, then the next sequences in split order, ``count`` in all."""
    names = dataset.sequences
    chosen = ["blackswan"] if "blackswan" in names else []
    return (chosen + [n for n in names if n not in chosen])[:count]


# -- measuring ----------------------------------------------------------------------------------------------------
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


def _hwm_mb() -> float | None:
    return _proc_status_mb("VmHWM")
    return None


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


class _Probe:
    """Finer timing of one session from outside, without changing what it computes.

    Forward hooks time the refiner's levels; instance wrappers count the objects on the reuse path, time
    target-model re-optimisations, and set aside the stage time spent inside object initialisation.
    """

    def __init__(self, session: Session):
        self.session = session
        self.levels: dict[str, float] = defaultdict(float)
        self.reoptimise_s = 0.0
        self.reoptimisations = 0
        self.reuse_path_objects = 0
        self.in_init: dict[str, float] = defaultdict(float)  # stage seconds spent inside _start_object
        self._handles = []
        self._wrapped: set[int] = set()
        self._level_start: dict[str, float] = {}
        self._wrap_session()

    # Hooks stay on the (shared) network only while a context is open.
    @contextmanager
    def hooks(self):
        refiner = self.session.network.refiner
        for name in _LEVELS:
            module = getattr(refiner, name, None)
            if module is None:
                continue
            self._handles.append(module.register_forward_pre_hook(self._pre(name)))
            self._handles.append(module.register_forward_hook(self._post(name)))
        try:
            yield self
        finally:
            for handle in self._handles:
                handle.remove()
            self._handles.clear()

    def _pre(self, name: str):
        def hook(module, args):
            self._level_start[name] = time.perf_counter()
        return hook

    def _post(self, name: str):
        def hook(module, args, output):
            self.levels[name] += time.perf_counter() - self._level_start.pop(name)
        return hook

    def _wrap_session(self) -> None:
        session = self.session
        reuse_path = session.reuse_path

        def counted_reuse_path(objects, change):
            self.reuse_path_objects += len(objects)
            return reuse_path(objects, change)

        session.reuse_path = counted_reuse_path
        start_object = getattr(session, "_start_object", None)
        if start_object is not None:
            def attributed_start(*args, **kwargs):
                before = self._snapshot()
                try:
                    return start_object(*args, **kwargs)
                finally:
                    for key, value in self._snapshot().items():
                        self.in_init[key] += value - before.get(key, 0.0)

            session._start_object = attributed_start

    def _snapshot(self) -> dict[str, float]:
        values = dict(self.session.timings)
        values.update({f"refine_{name}": seconds for name, seconds in self.levels.items()})
        return values

    def watch_targets(self) -> None:
        """Wrap the update of target models created since the last call (new objects)."""
        for obj in self.session.objects.values():
            target = obj.target
            if id(target) in self._wrapped:
                continue
            self._wrapped.add(id(target))
            update = target.update

            def timed_update(update=update):
                start = time.perf_counter()
                try:
                    return update()
                finally:
                    self.reoptimise_s += time.perf_counter() - start
                    self.reoptimisations += 1

            target.update = timed_update


# -- one sequence, one setting ------------------------------------------------------------------------------------
@dataclass
class SequenceResult:
    """What one setting measured on one sequence. Times in seconds; ``kinds`` maps a frame kind
    (:data:`FRAME_KINDS`) to ``[frames, seconds]``; ``objects`` maps an object id to its reused and tracked
    frame counts and its per-frame ``j`` and ``f`` (frames 1..T-2)."""

    sequence: str
    setting: str
    frames: int
    resolution: tuple[int, int]
    time_s: float
    init_s: float
    stages_s: dict[str, float]
    kinds: dict[str, list]
    object_frames: dict[str, int]  # tracked object-frames per path: computed, reuse_path, copy
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
    session = Session(network, setting.options())
    probe = _Probe(session)
    oracle = setting.variant == "oracle"
    num = len(data.frames)
    predictions = np.empty(data.ground_truth.shape, np.uint8)
    kinds = {kind: [0, 0.0] for kind in FRAME_KINDS}
    object_frames = {"computed": 0, "reuse_path": 0, "copy": 0}
    total = encode_s = 0.0
    gc.collect()
    with network.backbone.runtime_as(setting.runtime), probe.hooks(), RssSampler() as rss:
        for t in range(num):
            reopt_before, reuse_before = probe.reoptimisations, probe.reuse_path_objects
            start = time.perf_counter()
            result = session.step(data.frames[t], data.start_masks.get(t),
                                  ground_truth=data.ground_truth[t] if oracle else None)
            elapsed = time.perf_counter() - start
            total += elapsed
            probe.watch_targets()
            predictions[t] = result.labels
            start = time.perf_counter()
            encode_png(result.labels)
            encode_s += time.perf_counter() - start

            reused = sum(bool(r) for r in result.reused.values())
            reuse_path = probe.reuse_path_objects - reuse_before
            tracked = len(result.reused)
            object_frames["computed"] += tracked - reused
            object_frames["reuse_path"] += reuse_path
            object_frames["copy"] += reused - reuse_path
            if result.started:
                kind = "start"
            elif probe.reoptimisations > reopt_before:
                kind = "reoptimised"
            elif reused == 0:
                kind = "computed"
            elif reuse_path == tracked:
                kind = "reused"
            elif reuse_path == 0 and reused == tracked:
                kind = "copied"
            else:
                kind = "mixed"
            kinds[kind][0] += 1
            kinds[kind][1] += elapsed

    stages = _stages(session, probe, total)
    stages["mask_encoding"] = encode_s
    scores = score_sequence(data.ground_truth, predictions, data.name, data.frame_ids)
    by_id = {s.object_id: s for s in scores}
    objects = {}
    for obj_id, state in session.objects.items():
        score = by_id.get(obj_id)
        objects[str(obj_id)] = {"started": True, "reused": state.reused_frames,
                                "tracked": state.computed_frames + state.reused_frames,
                                "j": _rounded(score.j) if score else [], "f": _rounded(score.f) if score else []}
    for obj_id, score in by_id.items():  # annotated, but not in the first frame: never started, scored as missed
        objects.setdefault(str(obj_id), {"started": False, "reused": 0, "tracked": 0, "j": _rounded(score.j),
                                         "f": _rounded(score.f)})
    increase = None if rss.peak_mb is None or rss.start_mb is None else rss.peak_mb - rss.start_mb
    return SequenceResult(data.name, setting.key, num, data.resolution, total, session.init_seconds, stages,
                          kinds, object_frames, objects, rss.peak_mb, increase, run)


def _rounded(values: np.ndarray) -> list[float]:
    return [round(float(v), 6) for v in values]


def _stages(session: Session, probe: _Probe, total: float) -> dict[str, float]:
    """Seconds per stage, work inside object initialisation moved to ``initialisation``."""
    raw = dict(session.timings)
    raw.update({f"refine_{name}": seconds for name, seconds in probe.levels.items()})
    # A stage the session may add later is kept under its own name (and counted out of "other").
    session_stages = list(SESSION_STAGES) + sorted(set(session.timings) - set(SESSION_STAGES))
    stages = {key: max(0.0, raw.get(key, 0.0) - probe.in_init.get(key, 0.0))
              for key in (*session_stages, *(f"refine_{n}" for n in _LEVELS))}
    stages["refine_head"] = max(0.0, stages["refine_shallow"] - stages["refine_level8"] - stages["refine_level4"])
    stages["target_model_reoptimise"] = probe.reoptimise_s
    stages["target_model_add_sample"] = max(0.0, stages["target_model_update"] - probe.reoptimise_s)
    stages["initialisation"] = session.init_seconds
    stages["other"] = max(0.0, total - session.init_seconds - sum(stages[k] for k in session_stages))
    return stages


# -- FLOPs --------------------------------------------------------------------------------------------------------
def count_flops(network: VOSNetwork, data: SequenceData) -> dict:
    """GFLOPs of one frame on each path, counted with PyTorch's FLOP counter on ``data``'s frames 0 and 1.

    Paths: ``full`` (the base model's frame: variant full), and with a reuse gate ``computed`` (the full
    path of the dynamic network: template matching and gate included), ``reuse`` (the reuse path),
    ``copy`` (the copy variant's reused frame); ``start_frame`` is frame 0 with the target models'
    initialisation (Gauss-Newton's convolutions and matrix products counted). All objects of the
    sequence take the same path. The counter sees convolutions and matrix products, not element-wise
    operations or resampling. The backbone runs in PyTorch here, since the counter cannot see into ONNX
    Runtime; the work is the same whichever runtime the timed settings use.
    """
    from torch.utils.flop_counter import FlopCounterMode

    paths = [("full", Setting("full", 1.0))]
    if network.has_gate:
        paths += [("computed", Setting("reuse", 1.0)), ("reuse", Setting("reuse", 0.0)), ("copy", Setting("copy", 0.0))]
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


# -- warm-up ------------------------------------------------------------------------------------------------------
def warm_up(network: VOSNetwork, data: SequenceData, frames: int = 3,
            runtimes: Iterable[str | None] = (None,)) -> float:
    """Untimed: start the objects and track a few frames on the full path (and on the reuse path when
    the weights have a gate), with each backbone runtime of ``runtimes``, so one-off start-up costs (such as
    the backbone's export to ONNX Runtime) are not charged to the first timed setting."""
    start = time.perf_counter()
    settings = [Setting("full", 1.0)] + ([Setting("reuse", 0.0)] if network.has_gate else [])
    for runtime, setting in itertools.product(dict.fromkeys(runtimes), settings):
        with network.backbone.runtime_as(runtime):
            session = Session(network, setting.options())
            for t in range(min(frames, len(data.frames))):
                session.step(data.frames[t], data.start_masks.get(t))
    return time.perf_counter() - start


# -- aggregation --------------------------------------------------------------------------------------------------
def summarise(setting: Setting, results: Sequence[SequenceResult], flops: dict | None = None) -> dict:
    """One setting's figures over its sequences: FPS = total frames / total time, J&F over all objects."""
    frames = sum(r.frames for r in results)
    time_s = sum(r.time_s for r in results)
    init_s = sum(r.init_s for r in results)
    kinds = {k: [sum(r.kinds[k][0] for r in results), sum(r.kinds[k][1] for r in results)] for k in FRAME_KINDS}
    tracked_frames = frames - kinds["start"][0]
    tracked_time = time_s - kinds["start"][1]
    started = [o for r in results for o in r.objects.values() if o["started"]]
    rates = [o["reused"] / o["tracked"] if o["tracked"] else 0.0 for o in started]
    scores = DavisScores([s for r in results for s in r.object_scores()]).global_scores()
    names = list(STAGE_ORDER) + sorted({k for r in results for k in r.stages_s} - set(STAGE_ORDER))
    stages = {k: sum(r.stages_s.get(k, 0.0) for r in results) for k in names}
    object_frames = {k: sum(r.object_frames[k] for r in results) for k in ("computed", "reuse_path", "copy")}

    def mean_ms(kind: str) -> float | None:
        n, seconds = kinds[kind]
        return 1000 * seconds / n if n else None

    computed = mean_ms("computed")
    reused = mean_ms(_reused_kind(setting.variant))
    c = reused / computed if computed and reused is not None else None
    c_copy = mean_ms("copied") / computed if computed and mean_ms("copied") is not None else None
    peaks = [r.peak_rss_mb for r in results if r.peak_rss_mb is not None]
    increases = [r.rss_increase_mb for r in results if r.rss_increase_mb is not None]
    summary = {
        "setting": setting.key, "variant": setting.variant, "tau": setting.tau, "tau2": setting.tau2,
        "reuse_window": setting.window, "compute_window": setting.compute_window, "sequences": len(results),
        "frames": frames, "objects": len(started),
        "time_s": round(time_s, 4), "init_s": round(init_s, 4),
        "fps": round(frames / time_s, 4) if time_s else None,
        "fps_excl_init": round(tracked_frames / tracked_time, 4) if tracked_frames and tracked_time > 0 else None,
        "init_s_per_object": round(init_s / len(started), 4) if started else None,
        "reuse_rate": round(float(np.mean(rates)), 4) if rates else 0.0,
        "J&F": round(scores["J&F-Mean"], 4), "J": round(scores["J-Mean"], 4), "F": round(scores["F-Mean"], 4),
        "scores": {k: round(v, 4) for k, v in scores.items()},
        "c": None if c is None else round(c, 4), "c_reference": None if c is None else setting.key,
        "c_copy": None if c_copy is None else round(c_copy, 4),
        "frame_ms": {k: None if mean_ms(k) is None else round(mean_ms(k), 2) for k in FRAME_KINDS},
        "frame_kinds": {k: kinds[k][0] for k in FRAME_KINDS},
        "object_frames": object_frames,
        "peak_rss_mb": round(max(peaks), 1) if peaks else None,
        "rss_increase_mb": round(max(increases), 1) if increases else None,
        "stages_ms_per_frame": {k: round(1000 * v / frames, 3) for k, v in stages.items()} if frames else {},
        "stages_s": {k: round(v, 4) for k, v in stages.items()},
        "per_sequence": [_sequence_summary(r) for r in results],
        "runs": sorted({r.run for r in results if r.run}),
    }
    summary.update(_computation(setting, object_frames, flops))
    return summary


def _reused_kind(variant: str) -> str:
    """The frame kind whose cost ``c`` compares: copied frames for the copy variant, else reuse-path frames."""
    return "copied" if variant == "copy" else "reused"


def _sequence_summary(result: SequenceResult) -> dict:
    scores = DavisScores(result.object_scores()).global_scores()
    rates = [o["reused"] / o["tracked"] if o["tracked"] else 0.0 for o in result.objects.values() if o["started"]]
    return {"sequence": result.sequence, "frames": result.frames,
            "fps": round(result.frames / result.time_s, 4) if result.time_s else None,
            "init_s": round(result.init_s, 4), "reuse_rate": round(float(np.mean(rates)), 4) if rates else 0.0,
            "J&F": round(scores["J&F-Mean"], 4)}


def _computation(setting: Setting, object_frames: dict[str, int], flops: dict | None) -> dict:
    """GFLOPs per frame and the share saved against the setting's own full path (every frame computed):
    saved = share of reuse-path object-frames x (1 - F_reuse / F_computed) + the same for copies.
    Exact for single-object sequences; an estimate with several objects (the per-frame part is shared)."""
    if not flops:
        return {"gflops_per_frame": None, "computation_saved": None}
    g = flops["gflops"]
    reference = g.get("computed") if setting.variant != "full" else g.get("full")
    if not reference:
        return {"gflops_per_frame": None, "computation_saved": None}
    tracked = sum(object_frames.values())
    saved = 0.0
    if tracked:
        for path, key in (("reuse_path", "reuse"), ("copy", "copy")):
            if object_frames[path] and g.get(key) is not None:
                saved += object_frames[path] / tracked * (1 - g[key] / reference)
    return {"gflops_per_frame": round(reference * (1 - saved), 4), "computation_saved": round(saved, 4)}


# -- provenance ---------------------------------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (else ``platform.processor()``, else ``unknown``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    return {"platform": platform.platform(), "machine": platform.machine(), "cpu_model": cpu_model(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpus": os.cpu_count(),
            "python": platform.python_version()}


def machine_label() -> str:
    """``CPU model (SIMD level, N cpus)``: what a timing depends on beyond the run's signature."""
    return f"{cpu_model()} ({torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} cpus)"


def source_commit() -> dict:
    """``{"commit": sha or "unknown", "dirty": bool or None}`` of the git tree this package runs from."""
    here = Path(__file__).resolve().parent
    try:
        top = subprocess.run(["git", "-C", str(here), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=10)
        if top.returncode or not (Path(top.stdout.strip()) / "src" / "reusevos").is_dir():
            return {"commit": "unknown", "dirty": None}
        sha = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        status = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=30).stdout.strip()
        return {"commit": sha or "unknown", "dirty": bool(status)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


def source_fingerprint() -> str:
    """A short hash of the package's Python sources: resumed measurements must come from the same code
    (a commit would also change with the docs, and is unknown outside a git checkout)."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def weights_info(network: VOSNetwork) -> dict:
    path = getattr(network, "weights_file", None)
    info = {"file": path, "has_gate": bool(network.has_gate), "meta": getattr(network, "meta", {})}
    if path and Path(path).is_file():
        info["sha256"] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return info


# -- partial results ----------------------------------------------------------------------------------------------
class PartialResults:
    """A JSON-lines file of finished (sequence, setting) results, for resuming.

    Every line carries the run's ``signature`` (weights, split, frames, size, threads, torch, the code's
    :func:`source_fingerprint`); a file written under another signature is refused, since its numbers
    would not compare. Every line also names the machine it was timed on (:func:`machine_label`): a run
    resumed on another kind of machine keeps its scores, and ``machines`` lets the report say that its
    timings mix machines. A last line cut short by an interruption is ignored (and overwritten by the next
    append).
    """

    def __init__(self, path: str | os.PathLike, signature: dict):
        self.path = Path(path)
        self.signature = signature
        self.done: dict[tuple[str, str], SequenceResult] = {}
        self.machines: dict[tuple[str, str], str] = {}
        if not self.path.is_file():
            return
        lines = self.path.read_text(encoding="utf-8").splitlines()
        good = 0
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                result = SequenceResult.from_dict(entry["result"])
            except (ValueError, KeyError, TypeError) as exc:
                if number == len(lines):
                    break  # an interrupted write
                raise ReusevosError(f"{self.path} line {number} is damaged ({exc}); delete the line or the file") \
                    from None
            if entry.get("signature") != signature:
                differ = sorted(k for k in set(signature) | set(entry.get("signature") or {})
                                if signature.get(k) != (entry.get("signature") or {}).get(k))
                raise ReusevosError(f"{self.path} holds results of another run (differs in {', '.join(differ)}); "
                                    "use another output file or folder, or delete it to start over")
            self.done[(result.sequence, result.setting)] = result
            self.machines[(result.sequence, result.setting)] = entry.get("machine", "unknown")
            good = number
        if good < len(lines):  # drop the torn tail so appends start on a fresh line
            self._rewrite(lines[:good])

    def _rewrite(self, lines: list[str]) -> None:
        write_text(self.path, "".join(line + "\n" for line in lines if line.strip()))

    def add(self, result: SequenceResult) -> None:
        self.done[(result.sequence, result.setting)] = result
        self.machines[(result.sequence, result.setting)] = machine_label()
        line = json.dumps({"signature": self.signature, "machine": machine_label(), "result": result.to_dict()})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())


# -- the whole run ------------------------------------------------------------------------------------------------
def run_signature(network: VOSNetwork, dataset: DavisDataset, max_frames: int | None, max_size: int | None) -> dict:
    """What must not change between the parts of a resumed run, or their numbers would not compare."""
    weights = weights_info(network)
    return {"weights": weights.get("sha256") or weights.get("file"), "split": dataset.split,
            "max_frames": max_frames, "max_size": max_size, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "device": str(network.device), "code": source_fingerprint(),
            "backbone_runtime": network.backbone.active_runtime(network.device), "onnxruntime": onnxruntime_version()}


def run_benchmark(network: VOSNetwork, dataset: DavisDataset, settings: Sequence[Setting], *,
                  skipped: Sequence[dict] = (), max_frames: int | None = None, max_size: int | None = None,
                  partial: str | os.PathLike | None = None, flops: bool = True, warmup: bool = True,
                  command: str = "", log: Callable[[str], None] = lambda _: None) -> dict:
    """Run ``settings`` over ``dataset``'s sequences (sequences outer, settings inner) and report.

    Args:
        network: the model, in eval mode, on the device to measure.
        dataset: the sequences to run (every frame must be annotated).
        settings: from :func:`build_settings`; ``skipped`` its list of impossible combinations, reported.
        max_frames: only the first frames of each sequence (None = all).
        max_size: shrink frames whose longer side exceeds this (None = as stored); scores are then at
            that size.
        partial: JSON-lines file of per-sequence results: appended as they finish, done ones skipped.
        flops: count each path's FLOPs on the first sequence's frames 0 and 1.
        command: the command line, recorded.
        log: receives one line per finished (sequence, setting).

    Returns the report (see the README's benchmark section and :func:`format_table`); JSON-serialisable.
    """
    if not settings:
        raise ReusevosError("no setting to run: every requested combination was skipped "
                            + "; ".join(f"{s['setting']}: {s['reason']}" for s in skipped))
    if max_frames is not None and max_frames < 3:
        raise ReusevosError(f"max_frames {max_frames}: scoring needs at least 3 frames")
    sequences = dataset.sequences
    if not sequences:
        raise ReusevosError(f"{dataset} has no sequence to run")
    weights = weights_info(network)
    threads = torch.get_num_threads()
    store = PartialResults(partial, run_signature(network, dataset, max_frames, max_size)) if partial else None
    run = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    started = time.time()
    flop_report = count_flops(network, load_sequence(dataset, sequences[0], 3, max_size)) if flops else None
    results: dict[tuple[str, str], SequenceResult] = dict(store.done) if store else {}
    resolutions: dict[str, list[int]] = {}
    warmup_s = None
    for index, sequence in enumerate(sequences, start=1):
        todo = [s for s in settings if (sequence, s.key) not in results]
        if not todo:
            resolutions[sequence] = list(results[(sequence, settings[0].key)].resolution)
            log(f"{sequence} [{index}/{len(sequences)}]: all settings already done")
            continue
        data = load_sequence(dataset, sequence, max_frames, max_size)
        resolutions[sequence] = list(data.resolution)
        if warmup and warmup_s is None:
            warmup_s = warm_up(network, data, runtimes=[s.runtime for s in settings])
        for setting in todo:
            result = run_setting(network, data, setting, run)
            results[(sequence, setting.key)] = result
            if store is not None:
                store.add(result)
            summary = _sequence_summary(result)
            reuse = f", reuse {summary['reuse_rate']:.0%}" if setting.variant != "full" else ""
            log(f"{sequence} [{index}/{len(sequences)}] {setting.key}: {result.frames} frames, "
                f"{summary['fps']:.2f} FPS{reuse}, J&F {summary['J&F']:.3f}")
        del data
    summaries = [summarise(s, [results[(q, s.key)] for q in sequences], flop_report) for s in settings]
    for setting, summary in zip(settings, summaries):
        with network.backbone.runtime_as(setting.runtime):
            summary["backbone_runtime"] = network.backbone.active_runtime(network.device)
    _add_references(summaries)
    timed_on = sorted({store.machines.get((q, s.key), machine_label()) if store else machine_label()
                       for q in sequences for s in settings})
    return {
        "format": REPORT_FORMAT, "version": REPORT_VERSION, "command": command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "wall_time_s": round(time.time() - started, 1),
        "reusevos": __version__, **source_commit(), "torch": torch.__version__, "threads": threads,
        "device": str(network.device), "machine": machine_info(), "timed_on": timed_on, "weights": weights,
        "onnxruntime": onnxruntime_version(),
        "dataset": {"root": str(dataset.root), "split": dataset.split, "layout": dataset.layout,
                    "sequences": list(sequences), "max_frames": max_frames, "max_size": max_size,
                    "resolutions": resolutions, "frames": sum(r.frames for (q, k), r in results.items()
                                                              if k == settings[0].key and q in sequences)},
        "warmup_s": None if warmup_s is None else round(warmup_s, 3),
        "process_peak_rss_mb": None if _hwm_mb() is None else round(_hwm_mb(), 1),
        "memory": "peak_rss_mb: largest VmRSS of the whole process (model, one sequence's decoded frames, "
                  f"Python) sampled every {RSS_INTERVAL_S * 1000:g} ms while the setting ran; rss_increase_mb: "
                  "that peak minus the VmRSS when the setting started",
        "flops": flop_report, "settings": summaries, "skipped": list(skipped),
    }


def _add_references(summaries: list[dict]) -> None:
    """Ratios against other settings of the same report (so from the same run).

    References are taken among the settings with the same backbone runtime, so a ratio never mixes runtimes.
    ``speedup``: fps over that of ``full`` (without a compute window when it ran, else with one) when it
    ran, else (for tau < 1) of a setting at tau = 1 (which never reuses), preferably of the same variant
    and compute window; ``speedup_reference`` names it.
    ``c`` of a setting without computed frames of its own (every frame reused, e.g. tau = 0): its reused
    frames against the computed frames of a setting at tau = 1 (the same variant and compute window
    preferred: the dynamic network's full path, gate included), else of ``full``; ``c_reference`` names it.
    """
    def peers(summary: dict) -> list[dict]:
        return [s for s in summaries if s.get("backbone_runtime") == summary.get("backbone_runtime")]

    def full_of(summary: dict, window: int, need_computed: bool = False) -> dict | None:
        """The ``full`` setting of the summary's runtime, the one with compute window ``window`` if it ran."""
        fulls = [s for s in peers(summary) if s["variant"] == "full" and (s["frame_ms"]["computed"] or not need_computed)]
        return min(fulls, key=lambda s: (s.get("compute_window") or 0) != window, default=None)

    def at_tau_one(summary: dict, need_computed: bool) -> dict | None:
        candidates = [s for s in peers(summary) if s["tau"] == 1.0 and s["variant"] != "full" and s is not summary
                      and (s["frame_ms"]["computed"] or not need_computed)]
        return min(candidates, default=None, key=lambda s: (s["variant"] != summary["variant"],
                                                            s.get("compute_window") != summary.get("compute_window")))

    for summary in summaries:
        reused = summary["frame_ms"][_reused_kind(summary["variant"])]
        if summary["c"] is None and reused is not None:
            reference = at_tau_one(summary, True) or full_of(summary, summary.get("compute_window") or 0, True)
            if reference is not None:
                summary["c"] = round(reused / reference["frame_ms"]["computed"], 4)
                summary["c_reference"] = reference["setting"]
    for summary in summaries:
        full = full_of(summary, 0)
        if summary is full:
            reference = None
        elif full is not None:
            reference = full
        elif summary["tau"] == 1.0:
            reference = None  # it is a reference itself
        else:
            reference = at_tau_one(summary, False)
        if reference and reference["fps"] and summary["fps"]:
            summary["speedup"] = round(summary["fps"] / reference["fps"], 4)
            summary["speedup_reference"] = reference["setting"]
        else:
            summary["speedup"] = summary["speedup_reference"] = None


# -- text ---------------------------------------------------------------------------------------------------------
def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """Aligned plain text: the first ``left`` columns left-aligned, the rest right-aligned."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(str(c).ljust(w) if i < left else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def format_table(report: dict) -> str:
    """One line per setting: speed, initialisation, reuse, accuracy, cost ratio, computation, memory;
    skipped settings last with their reason."""
    headers = ["setting", "frames", "FPS", "FPS-init", "speedup", "init s/obj", "reuse", "J&F", "J", "F", "c",
               "GFLOP/f", "saved", "peak MB"]
    rows = []
    for s in report["settings"]:
        rows.append([s["setting"], str(s["frames"]), _fmt(s["fps"], ".2f"), _fmt(s["fps_excl_init"], ".2f"),
                     _fmt(s.get("speedup"), ".2f"), _fmt(s["init_s_per_object"], ".2f"),
                     f"{s['reuse_rate']:.1%}", f"{s['J&F']:.3f}", f"{s['J']:.3f}", f"{s['F']:.3f}",
                     _fmt(s["c"], ".2f"), _fmt(s["gflops_per_frame"], ".2f"), _fmt(s["computation_saved"], ".1%"),
                     _fmt(s["peak_rss_mb"], ".0f")])
    table = text_table(headers, rows)
    skipped = report.get("skipped", [])
    if skipped:
        table += "\nskipped: " + "; ".join(f"{s['setting']} ({s['reason']})" for s in skipped)
    return table


def format_stage_table(report: dict) -> str:
    """Milliseconds per frame of each stage (rows) for each setting (columns); sub-stages indented."""
    settings = report["settings"]
    parent = {child: p for p, children in SUB_STAGES.items() for child in children}
    rows = []
    for stage in STAGE_ORDER:
        values = [s["stages_ms_per_frame"].get(stage) for s in settings]
        if not any(values) and stage not in ("initialisation", "mask_encoding"):
            continue
        label = ("  " + stage if stage in parent else stage) + (" (not in FPS)" if stage == "mask_encoding" else "")
        rows.append([label] + [_fmt(v, ".1f") for v in values])
    rows.append(["frame, mean"] + [_fmt(1000 * s["time_s"] / s["frames"] if s["frames"] else None, ".1f")
                                   for s in settings])
    for kind in ("computed", "reoptimised", "reused", "copied"):
        if any(s["frame_ms"].get(kind) is not None for s in settings):
            rows.append([f"{kind} frame, mean"] + [_fmt(s["frame_ms"].get(kind), ".1f") for s in settings])
    return text_table(["ms per frame"] + [s["setting"] for s in settings], rows)


def format_header(report: dict) -> str:
    """Where and how the numbers were measured, in two lines."""
    machine = report["machine"]
    data = report["dataset"]
    sizes = sorted({f"{w}x{h}" for h, w in data["resolutions"].values()})
    commit = report["commit"][:12] + ("+dirty" if report.get("dirty") else "")
    gflops = ""
    if report.get("flops"):
        g = report["flops"]["gflops"]
        gflops = "; GFLOPs per frame " + ", ".join(f"{k} {v:.2f}" for k, v in g.items())
    timed_on = report.get("timed_on", [])
    mixed = (f" (resumed run: timed on {len(timed_on)} kinds of machine, {'; '.join(timed_on)}; FPS and timings "
             "mix them)") if len(timed_on) > 1 else ""
    used = {s.get("backbone_runtime", "torch") for s in report["settings"]}
    runtimes = [r for r in RUNTIME_NAMES if r in used]
    backbone = ", backbone in " + " and ".join(
        RUNTIME_NAMES[r] + (f" {report.get('onnxruntime')}" if r == "onnxruntime" else "") for r in runtimes)
    return (f"{machine['cpu_model']}, {report['threads']} threads, torch {report['torch']}{backbone}, commit "
            f"{commit}{mixed}\n"
            f"{data['split']}: {len(data['sequences'])} sequences, {data['frames']} frames at {', '.join(sizes)}"
            + (f" (first {data['max_frames']} frames)" if data["max_frames"] else "") + gflops)


def format_markdown(report: dict) -> str:
    """The main table as Markdown, preceded by the command, machine, threads, commit and resolution, for
    pasting into the README unchanged (J&F, J, F and reuse in %)."""
    headers = ["setting", "FPS", "FPS w/o init", "speed-up", "init s/object", "reused", "J&F", "J", "F", "c",
               "GFLOPs/frame", "computation saved", "peak RSS MB"]
    lines = [f"`{report['command']}`" if report.get("command") else "", "",
             format_header(report).replace("\n", "; ") + ".", "",
             "| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
    for s in report["settings"]:
        speedup = "" if s.get("speedup") is None else f"{s['speedup']:.2f}x vs {s['speedup_reference']}"
        cells = [s["setting"], _fmt(s["fps"], ".2f"), _fmt(s["fps_excl_init"], ".2f"), speedup or "-",
                 _fmt(s["init_s_per_object"], ".2f"), f"{100 * s['reuse_rate']:.1f}", f"{100 * s['J&F']:.1f}",
                 f"{100 * s['J']:.1f}", f"{100 * s['F']:.1f}", _fmt(s["c"], ".2f"), _fmt(s["gflops_per_frame"], ".2f"),
                 _fmt(s["computation_saved"], ".1%"), _fmt(s["peak_rss_mb"], ".0f")]
        lines.append("| " + " | ".join(cells) + " |")
    for s in report.get("skipped", []):
        lines.append(f"| {s['setting']} | skipped: {s['reason']} |" + " |" * (len(headers) - 2))
    return "\n".join(lines).lstrip("\n") + "\n"

