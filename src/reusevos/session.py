"""The per-video session: feed frames one at a time, get label maps.

:meth:`Session.step` follows the paper's Fig. 2 from top to bottom: features to stride 8, template
matching and the gate per object, then each object's route (the full path, the reuse path, or its last
output copied or moved), the shallow refinement levels, the merge of the objects, and what later frames
need remembered. Where a frame needs the base model itself (an object's start, the full path, what it
remembers) the session calls its base model, FRTM's or TTVOS's (:mod:`reusevos.base_models`). Per video the
session holds only what the next frame needs: per object its base model's state (FRTM: the target model,
with bounded memory; TTVOS: its memory), template, last computed score map and refinement state, and last
output.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Iterator, Sequence

import numpy as np
import torch

from reusevos.base_models import base_model
from reusevos.config import SessionConfig
from reusevos.errors import ReusevosError
from reusevos.evaluation.metrics import region_similarity
from reusevos.flow import Anchor, FlowWarper, blend, load_flow_gate, make_anchor
from reusevos.flow import small_grey as flow_grey
from reusevos.io.masks import VOID, object_ids, to_label_map
from reusevos.model.backbone import images_to_tensor
from reusevos.model.merge import merge, merged_labels
from reusevos.model.network import VOSNetwork
from reusevos.model.target_model import TargetModel
from reusevos.model.ttvos import TTVOSMemory
from reusevos.motion import moved_output, small_grey
from reusevos.stages import SUB_STAGES, Stage, StageTimer  # noqa: F401  (SUB_STAGES: imported from here too)
from reusevos.windows import box_slices, score_box, window_box

Box = tuple[int, int, int, int]
MIN_FRAME_SIDE = 48  # below it the stride-32 features are a single cell and every frame looks unchanged


def check_frame_size(size: tuple[int, int]) -> None:
    """Refuse frames ``(H, W)`` too small for the model to see anything in."""
    if min(size) < MIN_FRAME_SIDE:
        raise ReusevosError(f"frames of {size[1]}x{size[0]} are too small: the model needs at least {MIN_FRAME_SIDE} "
                            "pixels a side (its deepest features are 1/32 of the frame); give a larger video or "
                            "raise --max-size")


class Route(str, Enum):
    """What an object's frame went through; the one vocabulary of results, statistics and reports."""

    COMPUTED = "computed"  # the full path: backbone past stride 8, target model, deep refinement
    REUSED = "reused"  # the reuse path: S_prev + Delta_t and the refine-translator
    COPIED = "copied"  # the last output unchanged (the copy and fusion variants)
    MOVED = "moved"  # an earlier output moved by the object's motion (the motion and flow variants, ours)


@dataclass
class ObjectState:
    """What the session keeps for one object between frames."""

    object_id: int
    start_frame: int
    target: TargetModel | None = None  # FRTM's target model, fitted at the start frame
    memory: TTVOSMemory | None = None  # TTVOS's memory of the object (template, mask history, last feature)
    template: torch.Tensor | None = None  # T, (1, 64, 64), built once at the start frame
    score_prev: torch.Tensor | None = None  # S of the last computed frame, (1, 1, H/16, W/16); FRTM only
    state_prev: torch.Tensor | None = None  # R of the last computed frame, (1, 64, H/16, W/16); TTVOS: short-term
    prob_prev: torch.Tensor | None = None  # last output, (H, W); copy, fusion, motion and the windows only
    last_computed: int = -1  # index of the last computed frame (the oracle compares with it)
    last_refit: int = -1  # index of the last frame whose computation refitted the base model (memory_clock "frames")
    computed_since_refit: int = 0  # computed frames since then (TargetModelConfig.scale_refits)
    anchor: Anchor | None = None  # the last computed frame and output, small and grey: the flow variant's
    routes: Counter = field(default_factory=Counter)  # Route -> frames since the start frame

    @property
    def tracked_frames(self) -> int:
        return sum(self.routes.values())

    @property
    def computed_frames(self) -> int:
        return self.routes[Route.COMPUTED]

    @property
    def reuse_rate(self) -> float:
        """Frames that skipped the full path (reused or copied) / frames since the start frame."""
        tracked = self.tracked_frames
        return (tracked - self.routes[Route.COMPUTED]) / tracked if tracked else 0.0


@dataclass
class FrameFeatures:
    """One frame's backbone features, computed once and shared by every object; f16 and f32 only
    when some object needs the full path, ``deep`` with them: the base model's object-independent
    reduction of f16 and f32 (FRTM: the refiner's reduced pair; TTVOS: its stride-16 feature)."""

    size: tuple[int, int]  # (H, W) of the frame the model runs on
    f4: torch.Tensor
    f8: torch.Tensor
    f16: torch.Tensor | None = None
    f32: torch.Tensor | None = None
    deep: tuple[torch.Tensor, torch.Tensor] | torch.Tensor | None = None


@dataclass
class _Track:
    """One tracked object on the current frame, as the step fills it in."""

    obj: ObjectState
    route: Route = Route.COMPUTED
    gate_probability: float | None = None
    change: torch.Tensor | None = None  # D_t, (1, 64, H/8, W/8)
    score: torch.Tensor | None = None  # this frame's S (computed) or S_hat (reused), (1, 1, H/16, W/16)
    state: torch.Tensor | None = None  # R or R_hat, (1, 64, H/16, W/16)
    box: Box | None = None  # the refinement window; None = the whole frame
    prob: torch.Tensor | None = None  # the object's probabilities, (H, W)
    update_weight: torch.Tensor | None = None  # TTVOS: how much of this frame the template takes in, (1,)
    elapsed: int | None = None  # memory_clock "frames": frames since the object's last computed frame


@dataclass
class FrameResult:
    """The output for one frame, and what it cost."""

    index: int
    labels: np.ndarray  # (H, W) uint8, object ids, 0 = background
    probabilities: dict[int, np.ndarray] | None = None  # object id -> (H, W) float32, on request
    routes: dict[int, Route] = field(default_factory=dict)  # tracked object id -> its route this frame
    gate_probability: dict[int, float] = field(default_factory=dict)  # object id -> P_gate (or g_IoU)
    reoptimised: list[int] = field(default_factory=list)  # objects whose target model was refitted
    started: list[int] = field(default_factory=list)  # objects whose start mask was this frame's
    stage_seconds: dict[str, float] = field(default_factory=dict)  # Stage value -> seconds on this frame
    seconds: float = 0.0  # model time spent on this frame (its stages, and the lookahead's work on it later)

    @property
    def init_seconds(self) -> float:
        """Time spent starting this frame's new objects."""
        return self.stage_seconds.get(Stage.INITIALISATION.value, 0.0)


@dataclass
class _Held:
    """A frame a lookahead session has not handed back yet: its result, its objects' probabilities before the merge,
    its small grey image, and its moved objects still waiting for their next computed frame (id -> the frame of
    the anchor they were moved from). A frame whose one object was moved is merged only when it is handed back
    (its ``result.labels`` is None until then): merging it before its blend would be work thrown away."""

    result: FrameResult
    probs: dict[int, torch.Tensor]
    grey: np.ndarray
    waiting: dict[int, int]
    new_ids: list[int]
    probabilities: bool  # whether the caller asked for them
    blended: bool = False


@dataclass
class _Stepped:
    """A frame through the loop up to its merge, before anything is kept for later frames (:meth:`Session._commit`):
    what the commit and the result need."""

    tracks: list[_Track]
    computed: list[_Track]
    features: FrameFeatures | None
    probs: dict[int, torch.Tensor]  # each object's probabilities before the merge
    labels: np.ndarray | None
    soft: dict[int, torch.Tensor]  # the merged probabilities (empty while a lookahead frame waits for its merge)
    grey: np.ndarray | None
    new_ids: list[int]
    return_probabilities: bool
    timed: StageTimer
    seconds: float


@contextmanager
def _charged(result: FrameResult, stage: Stage) -> Iterator[None]:
    """Time the lookahead's later work on a frame already stepped and add it to that frame's ``seconds`` and
    ``stage``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        spent = time.perf_counter() - start
        result.seconds += spent
        result.stage_seconds[stage.value] = result.stage_seconds.get(stage.value, 0.0) + spent


class LearnedGate:
    """The paper's gate: P_gate from D_t."""

    def __init__(self, network: VOSNetwork):
        self.network = network

    def __call__(self, objects: Sequence[ObjectState], change: torch.Tensor, frame_index: int) -> list[float]:
        return self.network.gate(change).tolist()


class OracleGate:
    """g_IoU: the ground-truth IoU between this frame and each object's last computed frame (evaluation
    only). ``ground_truth[t]`` is frame t's ``(H, W)`` label map."""

    def __init__(self, ground_truth: Sequence[np.ndarray]):
        self.ground_truth = ground_truth

    def __call__(self, objects: Sequence[ObjectState], change: torch.Tensor, frame_index: int) -> list[float]:
        if frame_index >= len(self.ground_truth):
            raise ReusevosError(f"the oracle has ground truth for {len(self.ground_truth)} frames, not frame "
                                f"{frame_index}")
        now = np.asarray(self.ground_truth[frame_index])
        return [float(region_similarity(now == obj.object_id,
                                        np.asarray(self.ground_truth[obj.last_computed]) == obj.object_id))
                for obj in objects]


def _mean_memory(ours: _Stepped, theirs: _Stepped) -> dict[int, torch.Tensor]:
    """flip: what both trackers keep of a frame, in the unmirrored tracker's orientation: per object, the mean of
    the two trackers' merged probabilities (a tracker whose frame waits for its merge, a lookahead frame with one
    moved object, counts with its probabilities before the merge: a single object's merge leaves them as they are,
    up to rounding)."""
    def view(stepped: _Stepped, obj_id: int) -> torch.Tensor:
        return stepped.soft[obj_id] if obj_id in stepped.soft else stepped.probs[obj_id]

    ids = ours.probs.keys() | theirs.probs.keys()
    return {i: (view(ours, i).float() + view(theirs, i).float().flip(-1)) / 2 for i in ids}


def _mirrored(memory: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    return {i: p.flip(-1) for i, p in memory.items()}


class Session:
    """Segments one video. Create it, then call ``step(frame, mask)`` for every frame in order.

    ``mask`` (a ``(H, W)`` label map) introduces objects: the first frame's mask, and later masks for
    objects that appear later. Ids already being tracked are ignored in later masks.

    With ``SessionConfig(lookahead=True)`` results come back later than their frames: feed it with
    :meth:`push` and :meth:`finish` (which any session takes, and which :func:`reusevos.segment_video` uses).

    ``options`` picks the frame loop (variant, tau, windows); by default :class:`SessionConfig`'s: the flow
    variant (ours) at tau 0.92 with a compute window of 2, which needs no trained reuse gate (TTVOS weights: variant
    ``full`` with a compute window of 2; see :meth:`reusevos.base_models.BaseModel.runnable`). ``ground_truth``
    (``ground_truth[t]``: frame t's label map) is the oracle variant's, and only its.
    """

    def __init__(self, network: VOSNetwork, options: SessionConfig | None = None,
                 ground_truth: Sequence[np.ndarray] | None = None):
        if not isinstance(network, VOSNetwork):
            raise ReusevosError(f"Session needs a loaded model (reusevos.load_model()), not {type(network).__name__}")
        if options is not None and not isinstance(options, SessionConfig):
            raise ReusevosError(f"options must be a reusevos.SessionConfig (or None), not {type(options).__name__}")
        self.network = network.eval()
        self.config = network.config
        self.base = base_model(network)
        self.options = self.base.runnable(options)  # validated; None: the base model's default
        if self.options.memory_band is not None:  # FRTM's target models take this band (TTVOS refuses one)
            self.base.config = replace(self.base.config, sample_ignore_band=float(self.options.memory_band))
        if (self.options.variant == "oracle") != (ground_truth is not None):
            raise ReusevosError("the oracle variant needs the ground truth of every frame (ground_truth=...), "
                                "and only it takes one")
        self.gate = OracleGate(ground_truth) if ground_truth is not None else LearnedGate(network)
        self.device = network.device
        self.objects: dict[int, ObjectState] = {}
        self.frame_index = -1
        self.image_size: tuple[int, int] | None = None
        self._grey_prev: np.ndarray | None = None  # the previous frame, small and grey: the motion variant's
        if self.options.variant == "flow":
            self.flow_gate = load_flow_gate(self.options.flow_gate)
            self._warper = FlowWarper()
        self._held: deque[_Held] = deque()  # the lookahead's frames not handed back yet, in order
        # flip: the tracker of the mirrored video, and each tracker's results not fused yet, by frame index
        self._twin = Session(network, replace(self.options, flip=False)) if self.options.flip else None
        self._unfused: tuple[dict[int, FrameResult], dict[int, FrameResult]] = ({}, {})
        self._asked: dict[int, bool] = {}  # frame index -> whether its probabilities were asked for
        self._next_fused = 0

    @torch.no_grad()
    def step(self, frame: np.ndarray, mask: np.ndarray | None = None,
             return_probabilities: bool = False, reset: bool = False) -> FrameResult:
        """Process the next frame ``(H, W, 3)`` uint8 RGB; ``mask`` ``(H, W)`` starts new objects.

        ``reset=True`` (a correction): the objects ``mask`` marks that are already tracked start again from it,
        exactly as new objects do (a new target model, template, last score and state, anchor and route counts);
        without it their ids in ``mask`` are ignored.

        A lookahead session (``SessionConfig(lookahead=True)``) hands frames back later: use :meth:`push`."""
        if self.options.lookahead:
            raise ReusevosError("this session looks ahead (lookahead=True): a moved frame comes back only once its "
                                "objects are computed again, so feed it with push() and finish(), not step()")
        if self._twin is not None:
            return self.push(frame, mask, return_probabilities, reset)[0]  # without the lookahead: this frame's
        return self._step(frame, mask, return_probabilities, reset)[0]

    @torch.no_grad()
    def push(self, frame: np.ndarray, mask: np.ndarray | None = None, return_probabilities: bool = False,
             reset: bool = False) -> list[FrameResult]:
        """Process the next frame as :meth:`step` does and return the results ready now, in frame order: this
        frame's alone without the lookahead; with it, none while a moved frame waits for its objects' next computed
        frame, then every frame up to the first still waiting. Call :meth:`finish` after the last frame."""
        if self._twin is None:
            return self._hold(*self._step(frame, mask, return_probabilities, reset), return_probabilities)
        ours = self._outputs(frame, mask, True, reset)  # checks the frame and the mask first
        frame = np.asarray(frame)
        theirs = self._twin._outputs(frame[:, ::-1], None if mask is None else np.asarray(mask)[:, ::-1], True, reset)
        # Both trackers keep the mean of their outputs (target-model samples, the windows' last output), each the
        # right way round: chosen on the held-out train sequences over each keeping its own
        memory = _mean_memory(ours, theirs)
        results = [tracker._hold(*tracker._commit(stepped, kept), True)
                   for tracker, stepped, kept in ((self, ours, memory), (self._twin, theirs, _mirrored(memory)))]
        return self._fuse(*results, return_probabilities)

    def _hold(self, result: FrameResult, probs: dict[int, torch.Tensor], grey: np.ndarray | None, new_ids: list[int],
              return_probabilities: bool) -> list[FrameResult]:
        """The results of this tracker ready after the frame just stepped (with flip: of one of the two videos)."""
        if not self.options.lookahead:
            return [result]
        waiting = {obj_id: self.objects[obj_id].anchor.frame for obj_id, route in result.routes.items()
                   if route is Route.MOVED}
        self._held.append(_Held(result, probs, grey, waiting, list(new_ids), return_probabilities))
        anchored = {obj_id for obj_id, route in result.routes.items() if route is Route.COMPUTED} | set(new_ids)
        for held in self._held:
            for obj_id in anchored & held.waiting.keys():
                self._blend(held, obj_id)
        return self._release()

    def finish(self) -> list[FrameResult]:
        """The frames still held after the last frame (lookahead only): their moved objects keep the warp of
        their last computed output, as without the lookahead."""
        for held in self._held:
            held.waiting.clear()
        if self._twin is None:
            return self._release()
        return self._fuse(self._release(), self._twin.finish(), None)

    def _fuse(self, ours: list[FrameResult], mirrored: list[FrameResult],
              return_probabilities: bool | None) -> list[FrameResult]:
        """flip: the frames both trackers have handed back, in order, each with the mean of the two trackers' merged
        probabilities (the mirrored one's mirrored back; the background takes what the objects leave) and the labels
        they give; routes, gate probabilities and refits are this tracker's, time and stage times both trackers'.
        ``return_probabilities``: whether the frame just pushed asked for probabilities (None: finish())."""
        if return_probabilities is not None:
            self._asked[self.frame_index] = return_probabilities
        for store, results in zip(self._unfused, (ours, mirrored)):
            store.update((r.index, r) for r in results)
        ready = []
        while self._next_fused in self._unfused[0] and self._next_fused in self._unfused[1]:
            index = self._next_fused
            result, twin = self._unfused[0].pop(index), self._unfused[1].pop(index)
            ids = sorted(result.probabilities)
            if ids:
                fused = torch.stack([torch.from_numpy(result.probabilities[i] + twin.probabilities[i][:, ::-1]) / 2
                                     for i in ids])
                result.labels = merged_labels(fused, ids).numpy()
            result.probabilities = ({i: fused[k].numpy() for k, i in enumerate(ids)}
                                    if self._asked.pop(index) else None)
            for stage, seconds in twin.stage_seconds.items():
                result.stage_seconds[stage] = result.stage_seconds.get(stage, 0.0) + seconds
            result.seconds += twin.seconds
            ready.append(result)
            self._next_fused += 1
        return ready

    def _blend(self, held: _Held, obj_id: int) -> None:
        """The lookahead: object ``obj_id`` of the held frame takes its next computed output (its new anchor)
        warped back onto that frame, blended with its forward warp by distance in time."""
        with _charged(held.result, Stage.MOTION):
            earlier, later = held.waiting.pop(obj_id), self.objects[obj_id].anchor
            index = held.result.index
            warped = self._warper.warp(later, held.grey) if later.frame > index else None
            if warped is not None:
                backward = torch.from_numpy(warped).to(held.probs[obj_id].device)
                held.probs[obj_id] = blend(held.probs[obj_id], backward, index, earlier, later.frame)
                held.blended = True

    def _release(self) -> list[FrameResult]:
        """The held frames from the oldest up to the first still waiting, merged again where blended."""
        ready = []
        while self._held and not self._held[0].waiting:
            held = self._held.popleft()
            result = held.result
            if held.blended or result.labels is None:
                with _charged(result, Stage.MERGE):
                    result.labels, soft = self._merge(held.probs, held.new_ids)
                    if held.probabilities:
                        result.probabilities = {i: p.float().cpu().numpy() for i, p in soft.items()}
            ready.append(result)
        return ready

    def _step(self, frame: np.ndarray, mask: np.ndarray | None, return_probabilities: bool,
              reset: bool) -> tuple[FrameResult, dict[int, torch.Tensor], np.ndarray | None, list[int]]:
        """One frame through the loop: its result, the objects' probabilities before the merge, the small grey frame
        (the flow variant's) and the ids started on it."""
        return self._commit(self._outputs(frame, mask, return_probabilities, reset))

    def _outputs(self, frame: np.ndarray, mask: np.ndarray | None, return_probabilities: bool,
                 reset: bool) -> _Stepped:
        """The first part of :meth:`_step`: the frame's outputs, up to their merge."""
        began = time.perf_counter()
        self.frame_index += 1
        timed = StageTimer()
        frame = self._check_frame(frame)
        mask, new_ids = self._new_objects(mask, frame.shape[:2], reset) if mask is not None else (None, [])
        tracks = [_Track(obj) for obj in self.objects.values() if obj.start_frame < self.frame_index]
        grey = None
        if self.options.variant == "flow":  # decided before the backbone: moved objects need none of it
            with timed(Stage.MOTION):
                grey = flow_grey(frame)
            self.decide_by_flow(tracks, grey, timed)
        features = None
        if new_ids or any(t.route is not Route.MOVED for t in tracks):
            with timed(Stage.BACKBONE_TO_F8):
                features = FrameFeatures(self.image_size,
                                         *self.network.backbone.to_f8(images_to_tensor(frame, self.device)))
        if self.options.variant != "flow":
            self.decide(tracks, features.f8, timed)
        computed = [t for t in tracks if t.route is Route.COMPUTED]
        reused = [t for t in tracks if t.route is Route.REUSED]
        if computed or new_ids:
            self._deep_features(features, timed)
        if computed:
            self.base.full_path(computed, features, timed)
        if reused:
            self.base.reuse_path(reused, features, timed)
        self._window_outputs([t for t in computed + reused if t.prob is not None], features)
        unrefined = [t for t in computed + reused if t.prob is None]  # TTVOS's paths end in probabilities
        if unrefined:
            self.refine(unrefined, features, timed)
        for track in computed:  # S_prev and R_prev change only on computed frames
            track.obj.score_prev, track.obj.state_prev = track.score, track.state
        if self.options.variant == "motion":
            self._move(tracks, frame, timed)
        for track in tracks:
            if track.route is Route.COPIED:
                track.prob = track.obj.prob_prev  # the last output, unchanged
            track.obj.routes[track.route] += 1
        probs = {t.obj.object_id: t.prob for t in tracks}
        with timed(Stage.INITIALISATION):
            for obj_id in new_ids:
                probs[obj_id] = self._start_object(obj_id, frame, mask == obj_id, features, timed)
        if self.options.lookahead and len(tracks) == 1 and tracks[0].route is Route.MOVED and not new_ids:
            # One object, moved: merged when push() hands it back, after its blend. What later frames keep of it
            # (the compute window's box: probabilities > 0.5) is the same before the merge for a single object.
            labels, soft = None, {}
            tracks[0].obj.prob_prev = tracks[0].prob
        else:
            with timed(Stage.MERGE):
                labels, soft = self._merge(probs, new_ids)
        return _Stepped(tracks, computed, features, probs, labels, soft, grey, list(new_ids), return_probabilities,
                        timed, time.perf_counter() - began)

    def _commit(self, stepped: _Stepped, memory: dict[int, torch.Tensor] | None = None
                ) -> tuple[FrameResult, dict[int, torch.Tensor], np.ndarray | None, list[int]]:
        """The second part of :meth:`_step`: keep what later frames need of the frame, the base model's memory and
        the last outputs from ``memory`` (per object; None: the frame's own merged probabilities, ``stepped.soft``)
        and the flow anchors from the frame's own, and its result."""
        began = time.perf_counter()
        st, timed = stepped, stepped.timed
        memory = st.soft if memory is None else memory
        reoptimised = self._remember(st.computed, st.features, memory, timed)
        if st.grey is not None:  # the flow anchors stay the frame's own output (flip: fused ones move fewer frames)
            with timed(Stage.MOTION):
                self._anchor([t.obj.object_id for t in st.computed] + st.new_ids, st.grey, st.soft)
        result = FrameResult(
            self.frame_index, st.labels,
            probabilities={i: p.float().cpu().numpy() for i, p in st.soft.items()}
            if st.return_probabilities and st.labels is not None else None,  # a frame merged later gets them then
            routes={t.obj.object_id: t.route for t in st.tracks},
            gate_probability={t.obj.object_id: t.gate_probability for t in st.tracks
                              if t.gate_probability is not None},
            reoptimised=reoptimised, started=st.new_ids, stage_seconds=dict(timed.seconds))
        result.seconds = st.seconds + time.perf_counter() - began
        return result, st.probs, st.grey, st.new_ids

    @property
    def reuse_rates(self) -> dict[int, float]:
        return {obj_id: obj.reuse_rate for obj_id, obj in self.objects.items()}

    # -- the paper's paths ---------------------------------------------------------------------
    def decide(self, tracks: list[_Track], f8: torch.Tensor, timed: StageTimer) -> None:
        """Each track's route, P_gate (or g_IoU) and D_t ``(1, 64, H/8, W/8)``; the full path for all under
        variant ``full``, and for an object whose last computed frame is more than ``reuse_max_gap`` frames back."""
        opts = self.options
        if opts.reuse_max_gap:  # past the longest gap an object is computed: no gate for it
            tracks = [t for t in tracks if self.frame_index - t.obj.last_computed <= opts.reuse_max_gap]
        if opts.variant == "full" or not tracks:
            return
        objects = [t.obj for t in tracks]
        with timed(Stage.TEMPLATE_MATCH):
            change = self.network.matcher(torch.cat([o.template for o in objects]), f8,
                                          torch.cat([self.base.gate_guide(o) for o in objects]))
        with timed(Stage.GATE):
            probabilities = self.gate(objects, change, self.frame_index)
        for row, (track, p) in enumerate(zip(tracks, probabilities)):
            track.change, track.gate_probability = change[row:row + 1], float(p)
            if opts.variant == "fusion" and opts.tau2 < 1.0 and p >= opts.tau2:
                track.route = Route.COPIED
            elif opts.tau < 1.0 and p >= opts.tau:  # tau = 1 never reuses, even if P rounds to 1
                track.route = {"copy": Route.COPIED, "motion": Route.MOVED}.get(opts.variant, Route.REUSED)

    def decide_by_flow(self, tracks: list[_Track], grey: np.ndarray, timed: StageTimer) -> None:
        """The flow variant: each object's anchor warped onto this frame (``grey``: small and grey) and the flow
        gate's P, its predicted IoU; objects at P >= tau take the warped output, the others are computed."""
        tau = self.options.tau
        for track in tracks:
            anchor = track.obj.anchor
            if tau >= 1.0 or anchor is None or self.frame_index - anchor.frame > self.options.flow_max_gap:
                continue
            with timed(Stage.MOTION):
                proposal = self._warper.propose(anchor, grey, self.frame_index)
            if proposal is None:
                continue
            with timed(Stage.GATE):
                track.gate_probability = self.flow_gate(proposal.features)
            if track.gate_probability >= tau:
                track.route = Route.MOVED
                with timed(Stage.MOTION):
                    track.prob = torch.from_numpy(proposal.prob).to(self.device)

    def _anchor(self, ids: list[int], grey: np.ndarray, soft: dict[int, torch.Tensor]) -> None:
        """The flow variant: objects computed or started on this frame take it as their anchor."""
        for obj_id in ids:
            self.objects[obj_id].anchor = make_anchor(self.frame_index, grey, soft[obj_id].float().cpu().numpy())

    def refine(self, tracks: list[_Track], features: FrameFeatures, timed: StageTimer) -> None:
        """The shallow levels and the head: each track's probabilities, inside its window if it has one
        (computed objects around their coarse score, reused ones around their last output; with a search margin
        and no reuse window, reused ones around their score S_hat as computed ones)."""
        opts = self.options
        for track in tracks:
            obj, reused = track.obj, track.route is Route.REUSED
            if reused and opts.reuse_window:
                track.box = window_box(obj.prob_prev, obj.score_prev.shape[-2:], opts.reuse_window)
            elif opts.compute_window and (not reused or opts.search_margin):
                # reused: S_hat = S_prev + Delta keeps the far peaks of S_prev that the margin left out of the last
                # output; refined over the whole frame, they would come back, and the next search would follow them
                track.box = score_box(track.score[0, 0], obj.prob_prev, opts.compute_window, opts.search_margin)
        whole = [t for t in tracks if t.box is None]
        if whole:
            logits = self._refine_shallow(torch.cat([t.state for t in whole]), features.f4, features.f8,
                                          torch.cat([t.score for t in whole]), self.image_size, timed)
            for row, track in enumerate(whole):
                track.prob = torch.sigmoid(logits[row, 0])
        for track in tracks:
            if track.box is not None:
                kept = track.route is Route.REUSED and opts.reuse_window  # the reuse window keeps the last output
                outside = track.obj.prob_prev if kept else None  # else background
                track.prob = self._refine_window(track, features, outside, timed)

    def _window_outputs(self, tracks: list[_Track], features: FrameFeatures) -> None:
        """A base model whose paths end in probabilities (TTVOS): each object's output outside the box around its
        last output, grown by the window's margin in cells of the stride-16 grid, is background on a computed frame
        (compute window) and the last output on a reused one (reuse window), as FRTM's refinement leaves the
        outside of its windows. A margin of 0, or no box (nothing above 0.5 last time): the whole frame."""
        if not tracks:
            return
        opts = self.options
        f8 = features.f8.shape[-2:]
        grid = ((f8[0] + 1) // 2, (f8[1] + 1) // 2)  # the stride-16 grid, as the backbone's next stride-2 step
        for track in tracks:
            margin = opts.compute_window if track.route is Route.COMPUTED else opts.reuse_window
            box = window_box(track.obj.prob_prev, grid, margin) if margin else None
            if box is not None:
                rows, cols = box_slices(box, grid, self.image_size)
                prob = torch.zeros_like(track.prob) if track.route is Route.COMPUTED else track.obj.prob_prev.clone()
                prob[rows, cols] = track.prob[rows, cols]
                track.prob = prob

    def _move(self, tracks: list[_Track], frame: np.ndarray, timed: StageTimer) -> None:
        """The motion variant: moved objects take their last output shifted by their motion since the last frame."""
        with timed(Stage.MOTION):
            grey = small_grey(frame)
            for track in tracks:
                if track.route is Route.MOVED:
                    prob = track.obj.prob_prev
                    moved = moved_output(prob.float().cpu().numpy(), self._grey_prev, grey)
                    track.prob = torch.from_numpy(moved).to(prob.device, prob.dtype)
            self._grey_prev = grey

    def _deep_features(self, features: FrameFeatures, timed: StageTimer) -> None:
        # The rest of the backbone runs once per frame, however many objects need it.
        with timed(Stage.BACKBONE_F8_TO_F32):
            features.f16, features.f32 = self.network.backbone.f8_to_f32(features.f8)

    def _refine_shallow(self, state, f4, f8, scores, size: tuple[int, int], timed: StageTimer) -> torch.Tensor:
        """The stride-8 and stride-4 levels and the head: logits ``(B, 1, *size)``."""
        refiner = self.network.refiner
        with self.network.refiner_precision():
            with timed(Stage.REFINE_REDUCE_SHALLOW):
                r4, r8 = refiner.reduce_shallow(f4, f8)
            with timed(Stage.REFINE_SHALLOW):
                return refiner.shallow(state, r4, r8, scores, size, timed=timed.refiner_part).float()

    def _refine_window(self, track: _Track, features: FrameFeatures, outside: torch.Tensor | None,
                       timed: StageTimer) -> torch.Tensor:
        """The shallow levels and the head inside the track's box (cells of the stride-16 grid) only; outside
        it the probabilities are those of ``outside`` ``(H, W)`` (None: 0, background)."""
        box, grid = track.box, track.score.shape[-2:]

        def crop(x: torch.Tensor) -> torch.Tensor:  # the box at x's resolution, by the same proportion
            return x[(..., *box_slices(box, grid, x.shape[-2:]))]

        rows, cols = box_slices(box, grid, self.image_size)
        size = (rows.stop - rows.start, cols.stop - cols.start)
        logits = self._refine_shallow(crop(track.state), crop(features.f4), crop(features.f8), crop(track.score),
                                      size, timed)
        prob = torch.zeros(self.image_size, device=track.score.device) if outside is None else outside.clone()
        prob[rows, cols] = torch.sigmoid(logits[0, 0])
        return prob

    # -- objects --------------------------------------------------------------------------------
    def _new_objects(self, mask: np.ndarray, frame_size: tuple[int, int],
                     reset: bool = False) -> tuple[np.ndarray, list[int]]:
        """The mask as a label map (the rule of mask files, void as background) and the ids it starts; with
        ``reset`` the tracked objects it marks are dropped, so they start again too."""
        mask = to_label_map(mask, f"the mask for frame {self.frame_index}")
        mask = np.where(mask == VOID, 0, mask).astype(np.uint8) if (mask == VOID).any() else mask
        if mask.shape != frame_size:
            raise ReusevosError(
                f"the mask for frame {self.frame_index} is {mask.shape[1]}x{mask.shape[0]} but the frame is "
                f"{frame_size[1]}x{frame_size[0]}; give a mask of the frame's size")
        ids = [i for i in object_ids(mask) if reset or i not in self.objects]
        if not ids and not self.objects:
            raise ReusevosError(f"the mask for frame {self.frame_index} has no object (all background); "
                                "mark each object with a non-zero label")
        minimum = self.config.target.min_object_pixels
        for obj_id in ids:
            area = int((mask == obj_id).sum())
            if area < minimum:
                raise ReusevosError(f"object {obj_id} covers only {area} pixels in frame {self.frame_index}; "
                                    f"at least {minimum} are needed to fit its target model")
        for obj_id in ids:  # only once the mask is known to be good: a refused correction changes nothing
            self.objects.pop(obj_id, None)
        return mask, ids

    def _start_object(self, obj_id: int, frame: np.ndarray, mask: np.ndarray, features: FrameFeatures,
                      timed: StageTimer) -> torch.Tensor:
        """Start the object's base model from its mask (FRTM: a target model fitted on the start frame and its
        augmented copies; TTVOS: its memory); the output is the given mask.

        The start frame counts as computed: under the paper's variants its score and refinement state are the
        first S_prev, R_prev.
        """
        obj = ObjectState(obj_id, self.frame_index, last_computed=self.frame_index, last_refit=self.frame_index)
        given = torch.from_numpy(mask.astype(np.float32)).to(self.device)
        self.base.start(obj, frame, mask, given, features, timed)
        if self.options.variant not in ("full", "flow"):  # the reuse path starts from here (a base model with a gate)
            obj.template = self.network.matcher.template(features.f8, given[None, None])
            self.base.start_state(obj, given, features, timed)
        self.objects[obj_id] = obj
        return given

    def _remember(self, computed: list[_Track], features: FrameFeatures, soft: dict[int, torch.Tensor],
                  timed: StageTimer) -> list[int]:
        """Keep what later frames need: the base model's (FRTM: target-model samples and refits), the output for
        the copy variants and the windows. Returns the ids of the re-optimised objects."""
        for track in computed:
            if self.options.memory_clock == "frames":
                track.elapsed = self.frame_index - track.obj.last_computed
            track.obj.last_computed = self.frame_index
        refitted = self.base.remember(computed, features, soft, timed)
        opts = self.options
        if opts.variant in ("copy", "fusion", "motion", "flow") or opts.reuse_window or opts.compute_window:
            for obj_id, prob in soft.items():
                self.objects[obj_id].prob_prev = prob
        return refitted

    # -- helpers --------------------------------------------------------------------------------
    def _merge(self, probs: dict[int, torch.Tensor], new_ids: list[int]) -> tuple[np.ndarray, dict[int, torch.Tensor]]:
        """Label map and merged soft masks ``(H, W)`` per object from per-object probabilities."""
        ids = sorted(probs)
        if not ids:
            return np.zeros(self.image_size, np.uint8), {}
        if new_ids and len(ids) > len(new_ids):
            # Earlier objects are cleared where a new object's start mask is.
            union = torch.stack([probs[i] for i in new_ids]).amax(dim=0)
            probs = {i: p if i in new_ids else p * (1 - union) for i, p in probs.items()}
        labels, merged = merge(torch.stack([probs[i] for i in ids]), ids)
        return labels.cpu().numpy(), {obj_id: merged[k + 1] for k, obj_id in enumerate(ids)}

    def _check_frame(self, frame: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ReusevosError(f"frame {self.frame_index} must be an (H, W, 3) uint8 RGB array; got "
                                f"{frame.shape} {frame.dtype}")
        if self.image_size is None:
            check_frame_size(frame.shape[:2])
            self.image_size = frame.shape[:2]
        elif frame.shape[:2] != self.image_size:
            raise ReusevosError(f"frame {self.frame_index} is {frame.shape[1]}x{frame.shape[0]}, but the video "
                                f"started at {self.image_size[1]}x{self.image_size[0]}; all frames must share a size")
        return np.ascontiguousarray(frame)
