"""The base models the frame loop runs, behind one interface: FRTM's part of a frame and TTVOS's.

:class:`reusevos.session.Session` runs one loop for both (the backbone, each object's route, the merge, what
later frames need) and calls its base model where a frame needs the model itself:

- ``runnable(options)``: the session settings these weights can run;
- ``start(obj, frame, mask, given, features, timed)``: an object's start frame, from its given mask;
- ``full_path(tracks, features, timed)``: the computed objects of a frame. FRTM's ends in each object's score S
  and deep refinement state R, which the session's shallow refinement (shared with the paper's reuse path)
  turns into probabilities; TTVOS's ends in the probabilities;
- ``remember(computed, features, soft, timed)``: after the merge, what the computed objects keep of this frame;
  returns the ids of objects whose model was re-optimised.

With a reuse gate (G-FRTM, G-TTVOS) also:

- ``start_state(obj, given, features, timed)``: the start frame's R (and S), the reuse path's first state;
- ``gate_guide(obj)``: what template matching reads beside f8, the last computed frame's S (FRTM) or estimated
  mask (TTVOS: it has no score map);
- ``reuse_path(tracks, features, timed)``: the reused objects of a frame from their last computed state and
  Delta_t; FRTM's ends in S_hat and R_hat for the shallow refinement, TTVOS's in probabilities.

Per-object state lives on the session's ``ObjectState`` (FRTM: ``target``; TTVOS: ``memory``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from reusevos.config import VARIANTS, SessionConfig, TargetModelConfig
from reusevos.errors import ReusevosError
from reusevos.model.augment import augment_first_frame
from reusevos.model.backbone import images_to_tensor
from reusevos.model.network import VOSNetwork
from reusevos.model.target_model import TargetModel
from reusevos.model.ttvos import TTVOSMemory
from reusevos.stages import Stage, StageTimer

if TYPE_CHECKING:
    from reusevos.session import FrameFeatures, ObjectState, _Track


class BaseModel(Protocol):
    name: str
    variants: tuple[str, ...]  # the session variants these weights can run

    def runnable(self, options: SessionConfig | None) -> SessionConfig: ...

    def start(self, obj: ObjectState, frame: np.ndarray, mask: np.ndarray, given: torch.Tensor,
              features: FrameFeatures, timed: StageTimer) -> None: ...

    def full_path(self, tracks: list[_Track], features: FrameFeatures, timed: StageTimer) -> None: ...

    def remember(self, computed: list[_Track], features: FrameFeatures, soft: dict[int, torch.Tensor],
                 timed: StageTimer) -> list[int]: ...

    def start_state(self, obj: ObjectState, given: torch.Tensor, features: FrameFeatures,
                    timed: StageTimer) -> None: ...

    def gate_guide(self, obj: ObjectState) -> torch.Tensor: ...

    def reuse_path(self, tracks: list[_Track], features: FrameFeatures, timed: StageTimer) -> None: ...


def base_model(network: VOSNetwork) -> BaseModel:
    """The frame loop's interface to ``network``'s base model."""
    return {"frtm": FrtmBase, "ttvos": TtvosBase}[network.base](network)


class FrtmBase:
    """FRTM: per object a target model, fitted at its start frame on the frame and its augmented copies, given
    each computed frame's output as a sample and re-optimised every ``update_every``-th computed frame; the deep
    refinement levels."""

    name = "frtm"

    def __init__(self, network: VOSNetwork):
        self.network = network
        self.config = network.config.target
        self.device = network.device
        # without a reuse gate: the base model, and the flow variant (its gate is a file of its own)
        self.variants = VARIANTS if network.has_gate else ("full", "flow")

    def runnable(self, options: SessionConfig | None) -> SessionConfig:
        """``options`` (None: :class:`SessionConfig`'s default, the flow variant), validated; without a reuse gate,
        a variant that needs one runs as the base model at tau = 1 and is refused below it."""
        options = options or SessionConfig()
        options.validate()
        if options.variant not in self.variants:
            if options.tau < 1.0:
                raise ReusevosError(f"these weights have no trained reuse gate, so variant {options.variant!r} "
                                    "cannot run; use variant 'full' (or tau 1) or weights that include the gate")
            # tau = 1 never reuses
            return SessionConfig("full", 1.0, compute_window=options.compute_window, flip=options.flip,
                                 memory_band=options.memory_band, search_margin=options.search_margin)
        return options

    def start(self, obj: ObjectState, frame: np.ndarray, mask: np.ndarray, given: torch.Tensor,
              features: FrameFeatures, timed: StageTimer) -> None:
        """The object's target model, fitted on the start frame and its augmented copies."""
        cfg = self.config
        copies = augment_first_frame(frame, mask, cfg.num_augmented, cfg.augment_scales)
        f16 = [features.f16]
        if copies:
            f16.append(self.network.backbone.to_f16(images_to_tensor(np.stack([c[0] for c in copies]), self.device)))
        masks = np.stack([mask] + [c[1] for c in copies]).astype(np.float32)
        obj.target = TargetModel(cfg)
        obj.target.initialise(torch.cat(f16), torch.from_numpy(masks)[:, None].to(self.device))

    def start_state(self, obj: ObjectState, given: torch.Tensor, features: FrameFeatures, timed: StageTimer) -> None:
        """S and R of the start frame, from its fitted target model."""
        obj.score_prev = obj.target.apply(features.f16)
        obj.state_prev = self.deep_state(obj.score_prev, features, timed)

    def gate_guide(self, obj: ObjectState) -> torch.Tensor:
        return obj.score_prev

    def reuse_path(self, tracks: list[_Track], features: FrameFeatures, timed: StageTimer) -> None:
        """S_hat = S_prev + Delta_t and R_hat = translator(R_prev, Delta_t), without the deep network."""
        network = self.network
        score_prev = torch.cat([t.obj.score_prev for t in tracks])
        with timed(Stage.DELTA):
            delta = network.delta(torch.cat([t.change for t in tracks]), score_prev.shape[-2:])
        with timed(Stage.TRANSLATOR):
            states = network.translator(torch.cat([t.obj.state_prev for t in tracks]), delta)
        scores = score_prev + delta
        for row, track in enumerate(tracks):
            track.score, track.state = scores[row:row + 1], states[row:row + 1]

    def full_path(self, tracks: list[_Track], features: FrameFeatures, timed: StageTimer) -> None:
        """This frame's scores S from the target models and the deep refinement levels' state R."""
        with timed(Stage.TARGET_MODEL_APPLY):
            scores = torch.cat([t.obj.target.apply(features.f16) for t in tracks])
        states = self.deep_state(scores, features, timed)
        for row, track in enumerate(tracks):
            track.score, track.state = scores[row:row + 1], states[row:row + 1]

    def deep_state(self, scores: torch.Tensor, features: FrameFeatures, timed: StageTimer) -> torch.Tensor:
        """The deep refinement levels on scores ``(B, 1, H/16, W/16)``: R ``(B, 64, H/16, W/16)``."""
        refiner = self.network.refiner
        with self.network.refiner_precision():
            if features.deep is None:  # the object-independent part, once per frame
                with timed(Stage.REFINE_REDUCE_DEEP):
                    features.deep = refiner.reduce_deep(features.f16, features.f32)
            with timed(Stage.REFINE_DEEP):
                return refiner.deep(*features.deep, scores, timed=timed.refiner_part).float()

    def remember(self, computed: list[_Track], features: FrameFeatures, soft: dict[int, torch.Tensor],
                 timed: StageTimer) -> list[int]:
        """Each computed object's output as a target-model sample; a refit every ``update_every``-th computed frame,
        or, when the session counts the memory's time in frames (``track.elapsed`` set), older samples decaying by the
        frames elapsed and a refit once ``update_every`` frames have passed since the last."""
        refitted = []
        with timed(Stage.TARGET_MODEL_UPDATE):
            for track in computed:
                obj = track.obj
                steps = track.elapsed or 1
                with timed(Stage.TARGET_MODEL_ADD_SAMPLE):
                    obj.target.add_sample(features.f16, soft[obj.object_id][None, None], steps=steps)
                obj.computed_since_refit += 1
                frames_clock = track.elapsed is not None
                due = obj.last_computed - obj.last_refit >= self.config.update_every if frames_clock \
                    else obj.computed_frames % self.config.update_every == 0
                if due:
                    iters = refit_cg_iters(self.config, obj.computed_since_refit) \
                        if frames_clock and self.config.scale_refits else None
                    obj.last_refit, obj.computed_since_refit = obj.last_computed, 0
                    with timed(Stage.TARGET_MODEL_REOPTIMISE):
                        obj.target.update(iters)
                    refitted.append(obj.object_id)
        return refitted


def refit_cg_iters(config: TargetModelConfig, computed: int) -> int:
    """CG iterations of a refit after ``computed`` computed frames since the last (``scale_refits``, ours): in
    proportion, ``update_cg_iters`` after ``update_every`` of them (what every refit runs at tau 1), rounded up, at
    least ``min_refit_cg_iters``. A memory that took fewer new samples has moved less from the filter the refit
    starts from."""
    share = math.ceil(config.update_cg_iters * computed / config.update_every)
    return max(config.min_refit_cg_iters, min(config.update_cg_iters, share))


class TtvosBase:
    """TTVOS: per object a memory (template, mask history, last stride-16 feature), started from the given mask
    and moved on by every computed frame's estimate. Nothing is optimised at test time. Variants ``full`` and
    ``flow`` (which needs no trained gate); with a reuse gate (G-TTVOS) every variant. Reused frames leave the
    memory as the last computed frame left it, as G-FRTM's leave the target model."""

    name = "ttvos"

    def __init__(self, network: VOSNetwork):
        self.network = network
        self.model = network.ttvos
        self.variants = VARIANTS if network.has_gate else ("full", "flow")

    def runnable(self, options: SessionConfig | None) -> SessionConfig:
        """``options`` validated; TTVOS decodes the whole frame, and the windows clip its outputs to the box around
        each object's last output (:meth:`reusevos.session.Session._window_outputs`). None: variant ``full`` with
        the default compute window (the flow variant's default tau was chosen for FRTM). A variant these weights
        cannot run is refused below tau 1 and runs as ``full`` at tau 1."""
        options = options or SessionConfig("full", 1.0)
        options.validate()
        if options.memory_band is not None:
            raise ReusevosError("memory_band applies to FRTM's target model; TTVOS weights have none")
        if options.variant not in self.variants:
            if options.tau < 1.0:
                raise ReusevosError(f"these TTVOS weights have no trained reuse gate, so variant {options.variant!r} "
                                    "cannot run; use variant 'full' or 'flow' (or tau 1), or G-TTVOS weights (written "
                                    "by `reusevos train-gate --base` on TTVOS weights)")
            options = SessionConfig("full", 1.0, compute_window=options.compute_window, flip=options.flip)
        return options

    def start(self, obj: ObjectState, frame: np.ndarray, mask: np.ndarray, given: torch.Tensor,
              features: FrameFeatures, timed: StageTimer) -> None:
        """The object's memory from its given mask ``(H, W)``: template, mask history and this frame's feature."""
        obj.memory = self.model.start(features.f8, self._feature16(features), given[None, None])

    def full_path(self, tracks: list[_Track], features: FrameFeatures, timed: StageTimer) -> None:
        """Short-term and long-term matching and the decoder for every computed object at once: probabilities."""
        with timed(Stage.SHORT_TERM):
            feature16 = self._feature16(features)
        memory = TTVOSMemory.stack([t.obj.memory for t in tracks])
        out = self.model(memory, features.f4, features.f8, feature16, features.size,
                         timed=lambda part: timed(Stage(part)))
        for row, track in enumerate(tracks):
            track.prob = torch.sigmoid(out.logits[row, 0])
            track.update_weight = out.update_weight[row:row + 1]
            track.state = out.short[row:row + 1]

    def start_state(self, obj: ObjectState, given: torch.Tensor, features: FrameFeatures, timed: StageTimer) -> None:
        """R of the start frame: its short-term feature against the memory it has just started (the same frame)."""
        obj.state_prev = self.model.short_term_feature(obj.memory, self._feature16(features))

    def gate_guide(self, obj: ObjectState) -> torch.Tensor:
        return obj.memory.masks8[:, :1]  # the last computed frame's estimate, at stride 8

    def reuse_path(self, tracks: list[_Track], features: FrameFeatures, timed: StageTimer) -> None:
        """The translated short-term feature R_hat = translator(R_prev, Delta_t), then long-term matching and the
        decoder as on a computed frame, from each object's memory: probabilities, without x16 or short-term
        matching (and so without the backbone past stride 8)."""
        network = self.network
        memory = TTVOSMemory.stack([t.obj.memory for t in tracks])
        with timed(Stage.DELTA):
            delta = network.delta(torch.cat([t.change for t in tracks]), memory.feature16.shape[-2:])
        with timed(Stage.TRANSLATOR):
            short = network.translator(torch.cat([t.obj.state_prev for t in tracks]), delta)
        out = self.model.decode(memory, short, features.f4, features.f8, features.size,
                                timed=lambda part: timed(Stage(part)))
        for row, track in enumerate(tracks):
            track.prob = torch.sigmoid(out.logits[row, 0])
            track.state = short[row:row + 1]

    def remember(self, computed: list[_Track], features: FrameFeatures, soft: dict[int, torch.Tensor],
                 timed: StageTimer) -> list[int]:
        """Each computed object's memory takes in its merged output."""
        if computed:
            with timed(Stage.MEMORY_UPDATE):
                memory = self.model.remember(
                    TTVOSMemory.stack([t.obj.memory for t in computed]),
                    torch.cat([t.update_weight for t in computed]), features.f8, features.deep,
                    torch.stack([soft[t.obj.object_id] for t in computed])[:, None])
            for track, row in zip(computed, memory.rows()):
                track.obj.memory = row
        return []  # nothing is re-optimised

    def _feature16(self, features: FrameFeatures) -> torch.Tensor:
        if features.deep is None:  # object-independent: once per frame
            features.deep = self.model.frame_feature(features.f16, features.f32)
        return features.deep
