"""The per-video session: feed frames one at a time, get label maps.

The frame loop follows the paper's Fig. 2: extract features to stride 8, match each object's
template and ask its gate, then either the full path (rest of the backbone once per frame, target
model, deep refinement) or the reuse path (S_prev + Delta_t, refine-translator), refine the shallow
levels for every object, merge the objects. The session holds only what the next frame needs: per
object its target model (bounded memory), template, last computed score map and refinement state.
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
from reusevos.model.merge import label_slots, soft_aggregate
from reusevos.model.network import VOSNetwork
from reusevos.model.target_model import TargetModel


@dataclass
class ObjectState:
    """What the session keeps for one object between frames."""

    object_id: int
    start_frame: int
    target: TargetModel
    template: torch.Tensor | None = None  # T, (1, 64, 64), built once at the start frame
    score_prev: torch.Tensor | None = None  # S of the last computed frame, (1, 1, H/16, W/16)
    state_prev: torch.Tensor | None = None  # R of the last computed frame, (1, 64, H/16, W/16)
    prob_prev: torch.Tensor | None = None  # last output, (H, W); copy, fusion and the windows only
    gt_prev: np.ndarray | None = None  # ground truth of the last computed frame; oracle only
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
    reused: dict[int, bool] = field(default_factory=dict)  # object id -> skipped the full path
    paths: dict[int, str] = field(default_factory=dict)  # object id -> "full", "reuse" or "copy"
    reoptimised: list[int] = field(default_factory=list)  # objects whose target model was refitted
    gate_probability: dict[int, float] = field(default_factory=dict)  # object id -> P_gate (or g_IoU)
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
        has_gate = network.has_gate
        self.options = options or (SessionConfig() if has_gate else SessionConfig(variant="full", tau=1.0))
        self.options.validate()
        if not has_gate and self.options.variant != "full":
            if self.options.tau < 1.0:
                raise ReusevosError(f"these weights have no trained reuse gate, so variant {self.options.variant!r} "
                                    "cannot run; use variant 'full' (or tau 1) or weights that include the gate")
            self.options = SessionConfig(variant="full", tau=1.0)  # tau = 1 never reuses: the base model
        self.device = network.device
        self.objects: dict[int, ObjectState] = {}
        self.frame_index = -1
        self.image_size: tuple[int, int] | None = None
        self.timings: dict[str, float] = defaultdict(float)  # seconds per stage, summed over frames
        self.init_seconds = 0.0
        self._deep_cache: tuple[torch.Tensor, torch.Tensor] | None = None

    # -- public ------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, frame: np.ndarray, mask: np.ndarray | None = None, return_probabilities: bool = False,
             ground_truth: np.ndarray | None = None) -> FrameResult:
        """Process the next frame ``(H, W, 3)`` uint8 RGB; ``mask`` ``(H, W)`` starts new objects.

        ``ground_truth`` (this frame's ``(H, W)`` label map) is needed by the ``oracle`` variant only.
        """
        self.frame_index += 1
        frame = self._check_frame(frame)
        image = torch.from_numpy(frame).to(self.device).permute(2, 0, 1)[None].float().div_(255)
        f4, f8 = self._timed("backbone_to_f8", self.network.backbone.to_f8, image)
        new_ids = self._new_objects(mask, frame.shape[:2]) if mask is not None else []
        tracked = [obj for obj in self.objects.values() if obj.start_frame < self.frame_index]

        paths, gate_probs, change = self.decide(tracked, f8, ground_truth)
        compute = [obj for obj in tracked if paths[obj.object_id] == "full"]
        reuse = [obj for obj in tracked if paths[obj.object_id] == "reuse"]
        f16 = f32 = None
        self._deep_cache = None
        if compute or new_ids:
            # The rest of the backbone runs once per frame, however many objects need it.
            f16, f32 = self._timed("backbone_f8_to_f32", self.network.backbone.f8_to_f32, f8)

        probs: dict[int, torch.Tensor] = {}
        if compute or reuse:
            scores, states = [], []
            if compute:
                scores.append(self._timed("target_model_apply",
                                          lambda: torch.cat([obj.target.apply(f16) for obj in compute])))
                states.append(self.full_path(scores[-1], f16, f32))
            if reuse:
                rows = [tracked.index(obj) for obj in reuse]
                score_hat, state_hat = self.reuse_path(reuse, change[rows])
                scores.append(score_hat)
                states.append(state_hat)
            scores, states = torch.cat(scores), torch.cat(states)
            ordered = compute + reuse
            # Reused objects refined only around their last output, computed ones around their coarse score.
            boxes = self._boxes(compute, scores[:len(compute)], reuse)
            whole = [i for i, obj in enumerate(ordered) if obj.object_id not in boxes]
            if whole:
                picked = whole if len(whole) < len(ordered) else slice(None)
                logits = self.refine_shallow(states[picked], f4, f8, scores[picked])
                for row, i in enumerate(whole):
                    probs[ordered[i].object_id] = torch.sigmoid(logits[row, 0])
            for i, obj in enumerate(ordered):
                if obj.object_id in boxes:
                    outside = obj.prob_prev if i >= len(compute) else None  # computed: background outside
                    probs[obj.object_id] = self.refine_window(boxes[obj.object_id], states[i:i + 1], f4, f8,
                                                              scores[i:i + 1], outside)
            for i, obj in enumerate(compute):  # S_prev and R_prev change only on computed frames
                obj.score_prev, obj.state_prev = scores[i:i + 1], states[i:i + 1]
        for obj in tracked:
            if paths[obj.object_id] == "copy":
                probs[obj.object_id] = obj.prob_prev  # the previous output, unchanged
            if paths[obj.object_id] == "full":
                obj.computed_frames += 1
            else:
                obj.reused_frames += 1
        for obj_id in new_ids:
            start = time.perf_counter()
            probs[obj_id] = self._start_object(obj_id, frame, mask == obj_id, f8, f16, f32)
            self.init_seconds += time.perf_counter() - start

        result, soft = self._merge(probs, new_ids, return_probabilities)
        result.paths = {obj.object_id: paths[obj.object_id] for obj in tracked}
        result.reused = {obj_id: path != "full" for obj_id, path in result.paths.items()}
        result.gate_probability = gate_probs
        result.reoptimised = self._remember(compute, f16, soft, ground_truth)
        return result

    @property
    def reuse_rates(self) -> dict[int, float]:
        return {obj_id: obj.reuse_rate for obj_id, obj in self.objects.items()}

    # -- the paper's paths ---------------------------------------------------------------------
    def decide(self, tracked: list[ObjectState], f8: torch.Tensor, ground_truth: np.ndarray | None):
        """Per object: the path (``full``, ``reuse`` or ``copy``), P_gate, and D_t ``(K, 64, H/8, W/8)``."""
        opts = self.options
        if opts.variant == "full" or not tracked:
            return {obj.object_id: "full" for obj in tracked}, {}, None
        change = self._timed("template_match", self.network.matcher, torch.cat([o.template for o in tracked]), f8,
                             torch.cat([o.score_prev for o in tracked]))
        if opts.variant == "oracle":
            if ground_truth is None:
                raise ReusevosError("the oracle variant needs the ground truth of every frame")
            probs = [self._oracle_iou(obj, np.asarray(ground_truth) == obj.object_id) for obj in tracked]
        else:
            probs = self._timed("gate", self.network.gate, change).tolist()
        paths = {}
        for obj, p in zip(tracked, probs):
            if opts.variant == "fusion" and opts.tau2 < 1.0 and p >= opts.tau2:
                paths[obj.object_id] = "copy"
            elif opts.tau < 1.0 and p >= opts.tau:  # tau = 1 never reuses, even if P rounds to 1
                paths[obj.object_id] = "copy" if opts.variant == "copy" else "reuse"
            else:
                paths[obj.object_id] = "full"
        return paths, {obj.object_id: float(p) for obj, p in zip(tracked, probs)}, change

    def full_path(self, scores: torch.Tensor, f16: torch.Tensor, f32: torch.Tensor) -> torch.Tensor:
        """The deep refinement levels on this frame's scores ``(B, 1, H/16, W/16)``: R ``(B, 64, H/16, W/16)``."""
        refiner = self.network.refiner
        if self._deep_cache is None:  # the object-independent part, once per frame
            self._deep_cache = self._timed("refine_reduce_deep", refiner.reduce_deep, f16, f32)
        return self._timed("refine_deep", refiner.deep, *self._deep_cache, scores)

    def reuse_path(self, objects: list[ObjectState], change: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """S_hat = S_prev + Delta_t and R_hat = translator(R_prev, Delta_t), without the deep network."""
        score_prev = torch.cat([obj.score_prev for obj in objects])
        delta = self._timed("delta", self.network.delta, change, score_prev.shape[-2:])
        state = self._timed("translator", self.network.translator,
                            torch.cat([obj.state_prev for obj in objects]), delta)
        return score_prev + delta, state

    def refine_shallow(self, state, f4, f8, scores) -> torch.Tensor:
        """The stride-8 and stride-4 levels and the head: logits ``(B, 1, H, W)``."""
        refiner = self.network.refiner
        r4, r8 = self._timed("refine_reduce_shallow", refiner.reduce_shallow, f4, f8)
        return self._timed("refine_shallow", refiner.shallow, state, r4, r8, scores, self.image_size)

    def refine_window(self, box: tuple[int, int, int, int], state, f4, f8, score,
                      outside: torch.Tensor | None) -> torch.Tensor:
        """The shallow levels and the head inside ``box`` (cells of the stride-16 grid) only; outside it the
        probabilities are those of ``outside`` ``(H, W)`` (None: 0, background). Returns the object's
        probabilities ``(H, W)``."""
        refiner = self.network.refiner
        grid = score.shape[-2:]

        def crop(x: torch.Tensor) -> torch.Tensor:  # the box at x's resolution, by the same proportion
            return x[..., _span(box[0], box[1], grid[0], x.shape[-2]), _span(box[2], box[3], grid[1], x.shape[-1])]

        r4, r8 = self._timed("refine_reduce_shallow", refiner.reduce_shallow, crop(f4), crop(f8))
        rows = _span(box[0], box[1], grid[0], self.image_size[0])
        cols = _span(box[2], box[3], grid[1], self.image_size[1])
        size = (rows.stop - rows.start, cols.stop - cols.start)
        logits = self._timed("refine_shallow", refiner.shallow, crop(state), r4, r8, crop(score), size)
        prob = torch.zeros(self.image_size, device=score.device) if outside is None else outside.clone()
        prob[rows, cols] = torch.sigmoid(logits[0, 0])
        return prob

    def _boxes(self, compute: list[ObjectState], scores: torch.Tensor,
               reuse: list[ObjectState]) -> dict[int, tuple[int, int, int, int]]:
        """Object id -> its refinement box: computed objects (``scores`` ``(K, 1, h, w)``) with
        ``compute_window`` (:func:`score_box`), reused ones with ``reuse_window`` (:func:`window_box`). An
        object without a box (nothing to follow, or a box as large as the frame) is refined whole."""
        opts, boxes = self.options, {}
        if opts.compute_window:
            for obj, score in zip(compute, scores):
                boxes[obj.object_id] = score_box(score[0], obj.prob_prev, opts.compute_window)
        if opts.reuse_window:
            for obj in reuse:
                boxes[obj.object_id] = window_box(obj.prob_prev, obj.score_prev.shape[-2:], opts.reuse_window)
        return {obj_id: box for obj_id, box in boxes.items() if box is not None}

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

    def _start_object(self, obj_id: int, frame: np.ndarray, mask: np.ndarray, f8, f16, f32) -> torch.Tensor:
        """Fit a target model on the start frame and its augmented copies; the output is the given mask.

        The start frame counts as computed: its score and refinement state are the first S_prev, R_prev.
        """
        cfg = self.config.target
        copies = augment_first_frame(frame, mask, cfg.num_augmented)
        features = [f16]
        if copies:
            batch = torch.from_numpy(np.stack([c[0] for c in copies])).to(self.device)
            batch = batch.permute(0, 3, 1, 2).float().div_(255)
            features.append(self.network.backbone.to_f16(batch))
        masks = np.stack([mask] + [c[1] for c in copies]).astype(np.float32)
        target = TargetModel(cfg)
        target.initialise(torch.cat(features), torch.from_numpy(masks)[:, None].to(self.device))
        obj = ObjectState(obj_id, self.frame_index, target)
        given = torch.from_numpy(mask.astype(np.float32)).to(self.device)
        if self.options.variant != "full":
            obj.template = self.network.matcher.template(f8, given[None, None])
            obj.score_prev = target.apply(f16)
            obj.state_prev = self.full_path(obj.score_prev, f16, f32)
        if self.options.variant == "oracle":
            obj.gt_prev = mask
        self.objects[obj_id] = obj
        return given

    def _remember(self, computed: list[ObjectState], f16, soft: dict[int, torch.Tensor],
                  ground_truth: np.ndarray | None) -> list[int]:
        """Keep what later frames need: target-model samples and refits for computed objects, the
        output for the copy variants, the ground truth of computed frames for the oracle.
        Returns the ids of the objects whose target model was re-optimised."""
        start = time.perf_counter()
        refitted = []
        for obj in computed:
            obj.target.add_sample(f16, soft[obj.object_id][None, None])
            if obj.computed_frames % self.config.target.update_every == 0:
                obj.target.update()
                refitted.append(obj.object_id)
        self.timings["target_model_update"] += time.perf_counter() - start
        if self.options.variant == "oracle":
            for obj in computed:
                obj.gt_prev = np.asarray(ground_truth) == obj.object_id
        if self.options.variant in ("copy", "fusion") or self.options.reuse_window or self.options.compute_window:
            for obj_id, prob in soft.items():
                self.objects[obj_id].prob_prev = prob
        return refitted

    @staticmethod
    def _oracle_iou(obj: ObjectState, gt: np.ndarray) -> float:
        """g_IoU: the ground-truth IoU between this frame and the object's last computed frame."""
        union = np.logical_or(gt, obj.gt_prev).sum()
        return float(np.logical_and(gt, obj.gt_prev).sum() / union) if union else 1.0

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
            labels = lookup[label_slots(merged)].cpu().numpy()
            soft = {obj_id: merged[k + 1] for k, obj_id in enumerate(ids)}
        else:
            labels = np.zeros(self.image_size, np.uint8)
        result = FrameResult(self.frame_index, labels, started=list(new_ids))
        if return_probabilities:
            result.probabilities = {i: p.float().cpu().numpy() for i, p in soft.items()}
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


def _span(start: int, stop: int, cells: int, size: int) -> slice:
    """Cells ``start:stop`` of a grid of ``cells`` as a slice of an axis of ``size`` (same proportion)."""
    return slice(start * size // cells, stop * size // cells)


def _cells_above(prob: torch.Tensor, grid: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """The cells ``(y0, y1, x0, x1)`` of a ``grid`` over ``prob`` ``(H, W)`` holding its values above 0.5; None
    when there are none. ``prob`` may be at the grid's own resolution (a score map) or finer (an output)."""
    inside = prob > 0.5
    rows = torch.nonzero(inside.any(dim=1)).flatten()
    if rows.numel() == 0:
        return None
    cols = torch.nonzero(inside.any(dim=0)).flatten()
    (height, width), (grid_h, grid_w) = prob.shape, grid
    return (int(rows[0]) * grid_h // height, int(rows[-1]) * grid_h // height + 1,
            int(cols[0]) * grid_w // width, int(cols[-1]) * grid_w // width + 1)


def _grown(boxes: list[tuple[int, int, int, int] | None], grid: tuple[int, int],
           margin: int) -> tuple[int, int, int, int] | None:
    """The box holding every box of ``boxes`` grown by ``margin`` cells and clipped to the ``grid``; None
    when all are None or the result is the whole grid."""
    boxes = [b for b in boxes if b is not None]
    if not boxes:
        return None
    grid_h, grid_w = grid
    y0, x0 = max(min(b[0] for b in boxes) - margin, 0), max(min(b[2] for b in boxes) - margin, 0)
    y1, x1 = min(max(b[1] for b in boxes) + margin, grid_h), min(max(b[3] for b in boxes) + margin, grid_w)
    if (y0, y1, x0, x1) == (0, grid_h, 0, grid_w):
        return None
    return y0, y1, x0, x1


def window_box(prob: torch.Tensor, grid: tuple[int, int], margin: int) -> tuple[int, int, int, int] | None:
    """The cells ``(y0, y1, x0, x1)`` of a ``grid`` over the image that hold ``prob > 0.5`` (``(H, W)``),
    grown by ``margin`` cells and clipped; None when nothing is above 0.5 or the box is the whole grid."""
    return _grown([_cells_above(prob, grid)], grid, margin)


def score_box(score: torch.Tensor, prob_prev: torch.Tensor | None, margin: int) -> tuple[int, int, int, int] | None:
    """The box of a computed frame: the cells where the coarse ``score`` ``(h, w)`` exceeds 0.5 together with
    those of the last output ``prob_prev`` ``(H, W)``, grown by ``margin`` cells; None when neither has
    anything above 0.5 (the object is not found: refine the whole frame) or the box is the whole grid."""
    grid = tuple(score.shape)
    last = None if prob_prev is None else _cells_above(prob_prev, grid)
    return _grown([_cells_above(score, grid), last], grid, margin)
