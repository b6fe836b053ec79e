"""The per-video session: feed frames one at a time, get label maps.

The frame loop follows the paper's Fig. 2: extract features to stride 8, decide per object which
path to take, run the full path (rest of the backbone once per frame, target model, deep refinement)
for the objects that need it, refine the shallow levels for every object, merge the objects. The
session holds only what the next frame needs: per object its target model (bounded memory), the
last computed score map and refinement state.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch

from reusevos.config import SessionConfig
from reusevos.errors import ReusevosError
from reusevos.io.masks import object_ids
from reusevos.model.augment import augment_first_frame
from reusevos.model.merge import soft_aggregate
from reusevos.model.network import VOSNetwork
from reusevos.model.target_model import TargetModel


@dataclass
class ObjectState:
    """What the session keeps for one object between frames."""

    object_id: int
    start_frame: int
    target: TargetModel
    score_prev: torch.Tensor | None = None  # S of the last computed frame, (1, 1, H/16, W/16)
    state_prev: torch.Tensor | None = None  # R of the last computed frame, (1, 64, H/16, W/16)
    computed_frames: int = 0
    reused_frames: int = 0

    @property
    def reuse_rate(self) -> float:
        """Reused frames / frames since the object's start (the start frame excluded)."""
        tracked = self.computed_frames + self.reused_frames
        return self.reused_frames / tracked if tracked else 0.0


@dataclass
class FrameResult:
    """The output for one frame."""

    index: int
    labels: np.ndarray  # (H, W) uint8, object ids, 0 = background
    probabilities: dict[int, np.ndarray] | None = None  # object id -> (H, W) float32, on request
    reused: dict[int, bool] = field(default_factory=dict)  # object id -> took the reuse path
    gate_probability: dict[int, float] = field(default_factory=dict)
    started: list[int] = field(default_factory=list)  # objects whose start mask was this frame's


class Session:
    """Segments one video. Create it, then call ``step(frame, mask)`` for every frame in order.

    ``mask`` (a ``(H, W)`` label map) introduces objects: the first frame's mask, and later masks for
    objects that appear later. Ids already being tracked are ignored in later masks.

    ``options`` picks the frame loop (variant, tau); by default the paper's reuse path at tau = 0.7
    when the weights include a trained reuse gate, else the base model (``full``).
    """

    def __init__(self, network: VOSNetwork, options: SessionConfig | None = None):
        self.network = network.eval()
        self.config = network.config
        has_gate = getattr(network, "has_gate", False)
        self.options = options or (SessionConfig() if has_gate else SessionConfig(variant="full", tau=1.0))
        self.options.validate()
        if not has_gate and self.options.variant != "full" and self.options.tau < 1.0:
            raise ReusevosError(f"these weights have no trained reuse gate, so variant {self.options.variant!r} "
                                "cannot run; use variant 'full' (or tau 1) or weights that include the gate")
        self.device = network.device
        self.objects: dict[int, ObjectState] = {}
        self.frame_index = -1
        self.image_size: tuple[int, int] | None = None
        self.timings: dict[str, float] = defaultdict(float)  # seconds per stage, summed over frames
        self.init_seconds = 0.0

    # -- public ------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, frame: np.ndarray, mask: np.ndarray | None = None,
             return_probabilities: bool = False) -> FrameResult:
        """Process the next frame ``(H, W, 3)`` uint8 RGB; ``mask`` ``(H, W)`` starts new objects."""
        self.frame_index += 1
        frame = self._check_frame(frame)
        image = torch.from_numpy(frame).to(self.device).permute(2, 0, 1)[None].float().div_(255)
        f4, f8 = self._timed("backbone_to_f8", self.network.backbone.to_f8, image)

        new_ids = self._new_objects(mask, frame.shape[:2]) if mask is not None else []
        tracked = [obj for obj in self.objects.values() if obj.start_frame < self.frame_index]
        compute = tracked  # the base model computes every object on every frame

        f16 = f32 = None
        if compute or new_ids:
            f16, f32 = self._timed("backbone_f8_to_f32", self.network.backbone.f8_to_f32, f8)

        probs: dict[int, torch.Tensor] = {}
        if compute:
            probs.update(self.full_path(compute, f4, f8, f16, f32))
        for obj_id in new_ids:
            start = time.perf_counter()
            probs[obj_id] = self._start_object(obj_id, frame, mask == obj_id, f16)
            self.init_seconds += time.perf_counter() - start

        result, soft = self._merge(probs, new_ids, return_probabilities)
        self._update_target_models(compute, f16, soft)
        return result

    @property
    def reuse_rates(self) -> dict[int, float]:
        return {obj_id: obj.reuse_rate for obj_id, obj in self.objects.items()}

    # -- the paper's paths ---------------------------------------------------------------------
    def full_path(self, objects: list[ObjectState], f4, f8, f16, f32) -> dict[int, torch.Tensor]:
        """Target models on f16, the deep and shallow refinement levels: probabilities ``(1, H, W)`` each."""
        refiner = self.network.refiner
        scores = self._timed("target_model_apply",
                             lambda: torch.cat([obj.target.apply(f16) for obj in objects]))
        r16, r32 = self._timed("refine_reduce_deep", refiner.reduce_deep, f16, f32)
        state = self._timed("refine_deep", refiner.deep, r16, r32, scores)
        logits = self.refine_shallow(state, f4, f8, scores)
        for i, obj in enumerate(objects):
            obj.score_prev, obj.state_prev = scores[i:i + 1], state[i:i + 1]
            obj.computed_frames += 1
        return {obj.object_id: torch.sigmoid(logits[i, 0]) for i, obj in enumerate(objects)}

    def refine_shallow(self, state, f4, f8, scores) -> torch.Tensor:
        """The stride-8 and stride-4 levels and the head: logits ``(B, 1, H, W)``."""
        refiner = self.network.refiner
        r4, r8 = self._timed("refine_reduce_shallow", refiner.reduce_shallow, f4, f8)
        return self._timed("refine_shallow", refiner.shallow, state, r4, r8, scores, self.image_size)

    # -- objects --------------------------------------------------------------------------------
    def _new_objects(self, mask: np.ndarray, frame_size: tuple[int, int]) -> list[int]:
        mask = np.asarray(mask)
        if mask.ndim != 2:
            raise ReusevosError(f"a mask must be a (H, W) label map; got shape {mask.shape}")
        if mask.shape != frame_size:
            raise ReusevosError(
                f"the mask for frame {self.frame_index} is {mask.shape[1]}x{mask.shape[0]} but the frame is "
                f"{frame_size[1]}x{frame_size[0]}; give a mask of the frame's size")
        ids = [i for i in object_ids(mask) if i not in self.objects]
        if not ids and not self.objects:
            raise ReusevosError(f"the mask for frame {self.frame_index} has no object (all background); "
                                "mark each object with a non-zero label")
        minimum = self.config.target.min_object_pixels
        for obj_id in ids:
            area = int((mask == obj_id).sum())
            if area < minimum:
                raise ReusevosError(f"object {obj_id} covers only {area} pixels in frame {self.frame_index}; "
                                    f"at least {minimum} are needed to fit its target model")
        return ids

    def _start_object(self, obj_id: int, frame: np.ndarray, mask: np.ndarray, f16: torch.Tensor) -> torch.Tensor:
        """Fit a target model on the start frame and its augmented copies; the output is the given mask."""
        cfg = self.config.target
        copies = augment_first_frame(frame, mask, cfg.num_augmented)
        features = [f16]
        if copies:
            batch = torch.from_numpy(np.stack([c[0] for c in copies])).to(self.device)
            batch = batch.permute(0, 3, 1, 2).float().div_(255)
            features.append(self.network.backbone(batch)[2])
        masks = np.stack([mask] + [c[1] for c in copies]).astype(np.float32)
        target = TargetModel(cfg)
        target.initialise(torch.cat(features), torch.from_numpy(masks)[:, None].to(self.device))
        self.objects[obj_id] = ObjectState(obj_id, self.frame_index, target)
        return torch.from_numpy(mask.astype(np.float32)).to(self.device)

    def _update_target_models(self, computed: list[ObjectState], f16, soft: dict[int, torch.Tensor]) -> None:
        """Teach each computed object's target model this frame (its merged soft mask as label)."""
        if not computed:
            return
        start = time.perf_counter()
        for obj in computed:
            obj.target.add_sample(f16, soft[obj.object_id][None, None])
            if obj.computed_frames % self.config.target.update_every == 0:
                obj.target.update()
        self.timings["target_model_update"] += time.perf_counter() - start

    # -- helpers --------------------------------------------------------------------------------
    def _merge(self, probs: dict[int, torch.Tensor], new_ids: list[int],
               return_probabilities: bool) -> tuple[FrameResult, dict[int, torch.Tensor]]:
        """Label map and merged soft masks ``(H, W)`` per object from per-object probabilities."""
        start = time.perf_counter()
        ids = sorted(probs)
        if new_ids and len(ids) > len(new_ids):
            # Earlier objects are cleared where a new object's start mask is.
            union = torch.stack([probs[i] for i in new_ids]).amax(dim=0)
            probs = {i: p if i in new_ids else p * (1 - union) for i, p in probs.items()}
        soft: dict[int, torch.Tensor] = {}
        if ids:
            merged = soft_aggregate(torch.stack([probs[i] for i in ids]))
            lookup = torch.tensor([0] + ids, dtype=torch.uint8, device=merged.device)
            labels = lookup[merged.argmax(dim=0)].cpu().numpy()
            soft = {obj_id: merged[k + 1] for k, obj_id in enumerate(ids)}
        else:
            labels = np.zeros(self.image_size, np.uint8)
        result = FrameResult(self.frame_index, labels, started=list(new_ids))
        if return_probabilities:
            result.probabilities = {i: p.float().cpu().numpy() for i, p in soft.items()}
        result.reused = {i: False for i in ids if i not in new_ids}
        self.timings["merge"] += time.perf_counter() - start
        return result, soft

    def _check_frame(self, frame: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ReusevosError(f"frame {self.frame_index} must be an (H, W, 3) uint8 RGB array; got "
                                f"{frame.shape} {frame.dtype}")
        if self.image_size is None:
            self.image_size = frame.shape[:2]
        elif frame.shape[:2] != self.image_size:
            raise ReusevosError(f"frame {self.frame_index} is {frame.shape[1]}x{frame.shape[0]}, but the video "
                                f"started at {self.image_size[1]}x{self.image_size[0]}; all frames must share a size")
        return np.ascontiguousarray(frame)

    def _timed(self, stage: str, fn, *args):
        start = time.perf_counter()
        out = fn(*args)
        self.timings[stage] += time.perf_counter() - start
        return out
