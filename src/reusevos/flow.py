"""The flow variant (ours): a reuse path that costs no network at all, and a gate that decides before the backbone.

On a CPU the paper's reuse path keeps what is expensive (the shallow refinement levels), and its gate needs
the backbone to stride 8 and the template matching (about 60 ms of a 210 ms frame) before it can decide.
Here everything happens on half-size grey frames, before the backbone:

1. each object keeps an *anchor*: its last computed frame (grey, half size) and the output there;
2. on a new frame, dense optical flow (OpenCV's DIS, around the object) from this frame back to the anchor
   warps the anchor's output onto this frame: the *proposal*;
3. a small learned gate (:class:`FlowGate`, fitted on DAVIS train by ``reusevos fit-flow-gate``) predicts
   the proposal's IoU with the truth from what the warp left behind (the photometric residual along the
   object's boundary and inside it, how much and how unevenly the object moved, its size, the gap);
4. at P >= tau the object takes the proposal and the network never runs for it; when every object does,
   the frame costs a few milliseconds.

Warping from the anchor (not frame to frame) keeps errors from compounding over a run of reused frames, and
the residual grows with every frame the object drifts from its anchor, so the gate asks for a computed frame
when the proposal stops explaining the image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from reusevos.config import FLOW_GAP_LIMIT as MAX_GAP  # the gate's gap feature is the gap over it
from reusevos.errors import ReusevosError

SCALE = 2  # the flow runs on frames at 1/SCALE of their size
# DIS's medium preset without its variational refinement: 40% less time a call and better warps of DAVIS 2016 train's
# objects, forward and backward (scripts/warp_sim.py; docs/speed.md). A gate is fitted on one flow's features only.
FLOW = "dis-medium-vr0"
UNNAMED_FLOW = "dis-medium"  # what gates and pairs that name no flow were made with (DIS's medium preset)
FEATURES = ("band_residual", "inside_residual", "band_changed", "band_texture", "relative_residual",
            "motion", "motion_spread", "moved_iou", "log_area", "gap", "area_kept", "anchor_uncertainty",
            "at_border")
_KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
_CHANGED = 24  # grey levels: a pixel of the band whose residual exceeds this counts as changed


def grey_at(frame: np.ndarray, scale: int) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 RGB frame as a uint8 grey image at 1/``scale`` of its size (area averaging)."""
    height, width = frame.shape[:2]
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (max(1, width // scale), max(1, height // scale)), interpolation=cv2.INTER_AREA)


def small_grey(frame: np.ndarray) -> np.ndarray:
    """The frame the flow runs on: grey, at 1/:data:`SCALE` of its size, uint8."""
    return grey_at(frame, SCALE)


@dataclass
class Anchor:
    """An object's last computed frame: its grey image (small), its output (full size) and the region
    (in the small image) the flow is computed in."""

    frame: int
    grey: np.ndarray  # (h, w) uint8
    prob: np.ndarray  # (H, W) float32
    small: np.ndarray  # (h, w) float32, prob at the grey image's size
    box: tuple[int, int, int, int] | None  # (y0, y1, x0, x1) in the small image; None: the object is gone


def make_anchor(frame_index: int, grey: np.ndarray, prob: np.ndarray) -> Anchor:
    """The anchor of an object whose output on frame ``frame_index`` (small grey image ``grey``) is ``prob``."""
    prob = np.ascontiguousarray(prob, dtype=np.float32)
    small = cv2.resize(prob, (grey.shape[1], grey.shape[0]), interpolation=cv2.INTER_AREA)
    return Anchor(frame_index, grey, prob, small, _region(small > 0.5))


def _region(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """The object's box grown so that its motion over a few frames stays inside it."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    height, width = mask.shape
    grow = int(16 + 0.25 * max(rows[-1] - rows[0], cols[-1] - cols[0]))
    return (max(rows[0] - grow, 0), min(rows[-1] + 1 + grow, height),
            max(cols[0] - grow, 0), min(cols[-1] + 1 + grow, width))


@dataclass
class Proposal:
    """What the gate reads off the warp of an anchor onto the current frame, and the warped output itself,
    made at full size only when asked for (most rejected proposals never need it)."""

    anchor: Anchor
    flow: np.ndarray  # (h, w, 2) in the anchor's region: where each pixel of this frame was in the anchor's
    features: np.ndarray  # (len(FEATURES),) float32

    @property
    def prob(self) -> np.ndarray:
        """The anchor's output warped onto this frame, ``(H, W)`` float32."""
        return _warp_full(self.anchor, self.flow)


def blend(forward: np.ndarray, backward: np.ndarray, frame: int, earlier: int, later: int) -> np.ndarray:
    """The lookahead's output for ``frame``, between an object's computed frames ``earlier`` and ``later``: the
    earlier output warped forward and the later one warped backward, weighted by how close each is in time
    (``frame`` one third of the way from ``earlier`` takes 2/3 of ``forward``)."""
    if not earlier < frame < later:
        raise ValueError(f"frame {frame} must lie between its computed frames {earlier} and {later}")
    weight = (later - frame) / (later - earlier)
    return weight * forward + (1.0 - weight) * backward


class FlowWarper:
    """Warps anchors onto new frames with DIS optical flow (one instance per session: it holds OpenCV's
    flow object, which is not shared between threads)."""

    def __init__(self):
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)  # the flow :data:`FLOW` names
        self._dis.setVariationalRefinementIterations(0)

    def propose(self, anchor: Anchor, grey: np.ndarray, frame_index: int) -> Proposal | None:
        """The anchor warped onto the frame whose small grey image is ``grey``; None when the anchor has no
        object left to warp (the object is then computed)."""
        flow = self._flow(anchor, grey)
        if flow is None:
            return None
        y0, y1, x0, x1 = anchor.box
        now, then = grey[y0:y1, x0:x1], anchor.grey[y0:y1, x0:x1]
        gx, gy = np.meshgrid(np.arange(x1 - x0, dtype=np.float32), np.arange(y1 - y0, dtype=np.float32))
        map_x, map_y = gx + flow[..., 0], gy + flow[..., 1]
        warped_small = cv2.remap(np.ascontiguousarray(anchor.small[y0:y1, x0:x1]), map_x, map_y, cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
        warped_grey = cv2.remap(np.ascontiguousarray(then), map_x, map_y, cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
        features = _features(anchor, now, warped_grey, warped_small, flow, frame_index)
        return Proposal(anchor, flow, features)

    def warp(self, anchor: Anchor, grey: np.ndarray) -> np.ndarray | None:
        """The anchor's output warped onto the frame whose small grey image is ``grey``, ``(H, W)`` float32, without
        the gate's features (the lookahead's backward warp); None as for :meth:`propose`."""
        flow = self._flow(anchor, grey)
        return None if flow is None else _warp_full(anchor, flow)

    def _flow(self, anchor: Anchor, grey: np.ndarray) -> np.ndarray | None:
        """DIS flow from ``grey`` back to the anchor's frame inside the anchor's region, ``(h, w, 2)``; None when
        the anchor has no object or its region is too small to match."""
        if anchor.box is None:
            return None
        y0, y1, x0, x1 = anchor.box
        now, then = grey[y0:y1, x0:x1], anchor.grey[y0:y1, x0:x1]
        if min(now.shape) < 8:
            return None
        return self._dis.calc(np.ascontiguousarray(now), np.ascontiguousarray(then), None)  # now -> then


def _warp_full(anchor: Anchor, flow: np.ndarray) -> np.ndarray:
    """The full-size anchor output warped by the small region's flow (outside the region: background)."""
    y0, y1, x0, x1 = anchor.box
    height, width = anchor.prob.shape
    fy, fx = height / anchor.grey.shape[0], width / anchor.grey.shape[1]
    top, bottom, left, right = int(round(y0 * fy)), min(int(round(y1 * fy)), height), int(round(x0 * fx)), \
        min(int(round(x1 * fx)), width)
    big = cv2.resize(flow, (right - left, bottom - top), interpolation=cv2.INTER_LINEAR)
    gx, gy = np.meshgrid(np.arange(right - left, dtype=np.float32), np.arange(bottom - top, dtype=np.float32))
    warped = cv2.remap(np.ascontiguousarray(anchor.prob[top:bottom, left:right]), gx + big[..., 0] * fx,
                       gy + big[..., 1] * fy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    out = np.zeros_like(anchor.prob)
    out[top:bottom, left:right] = warped
    return out


def _features(anchor: Anchor, now: np.ndarray, warped_grey: np.ndarray, warped: np.ndarray, flow: np.ndarray,
              frame_index: int) -> np.ndarray:
    """What the gate sees, in the order of :data:`FEATURES`; all computed inside the anchor's region."""
    inside = warped > 0.5
    y0, y1, x0, x1 = anchor.box
    before = anchor.small[y0:y1, x0:x1] > 0.5
    area, area_before = int(inside.sum()), int(before.sum())
    band = (cv2.dilate(inside.view(np.uint8), _KERNEL) > 0) & ~(cv2.erode(inside.view(np.uint8), _KERNEL) > 0)
    if not band.any():
        band = np.ones_like(inside)
    residual = np.abs(now.astype(np.float32) - warped_grey)
    grad_x = cv2.Sobel(now, cv2.CV_32F, 1, 0, ksize=3)
    grad_y = cv2.Sobel(now, cv2.CV_32F, 0, 1, ksize=3)
    texture = float(np.sqrt(grad_x[band] ** 2 + grad_y[band] ** 2).mean()) / 255.0
    band_residual = float(residual[band].mean()) / 255.0
    side = max(np.sqrt(max(area, 1)), 1.0)
    moving = flow[inside] if area else flow.reshape(-1, 2)
    motion = float(np.linalg.norm(moving.mean(axis=0))) / side
    spread = float(moving.std(axis=0).sum()) / side
    union = int((inside | before).sum())
    moved_iou = float((inside & before).sum()) / union if union else 1.0
    prob_band = anchor.small[y0:y1, x0:x1][band]
    uncertainty = float(np.minimum(prob_band, 1.0 - prob_band).mean())
    edges = np.zeros_like(inside)
    edges[0, :] = edges[-1, :] = True
    edges[:, 0] = edges[:, -1] = True
    return np.array([
        band_residual,
        float(residual[inside].mean()) / 255.0 if area else band_residual,
        float((residual[band] > _CHANGED).mean()),
        texture,
        band_residual / (texture + 0.02),
        motion,
        spread,
        moved_iou,
        np.log1p(area),
        (frame_index - anchor.frame) / MAX_GAP,
        area / max(area_before, 1),
        uncertainty,
        float((inside & edges).any()),
    ], dtype=np.float32)


class FlowGate:
    """P = the predicted IoU of a proposal with the truth: a small MLP on :data:`FEATURES` (standardised),
    run in NumPy. Fitted by :func:`reusevos.train.flow_gate.fit`; stored as JSON."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, layers: list[tuple[np.ndarray, np.ndarray]],
                 info: dict | None = None):
        self.mean, self.scale, self.layers, self.info = mean, scale, layers, info or {}

    def __call__(self, features: np.ndarray) -> float:
        """P for one proposal's ``(len(FEATURES),)`` features."""
        return float(self.probabilities(features))

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """P for features ``(..., len(FEATURES))``: ``(...)``."""
        x = (np.asarray(features, np.float32) - self.mean) / self.scale
        for k, (weight, bias) in enumerate(self.layers):
            x = x @ weight.T + bias
            if k < len(self.layers) - 1:
                x = np.maximum(x, 0.0)
        return 1.0 / (1.0 + np.exp(-x[..., 0]))

    def to_json(self) -> dict:
        return {"features": list(FEATURES), "flow": FLOW, "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "layers": [{"weight": w.tolist(), "bias": b.tolist()} for w, b in self.layers], "info": self.info}

    @classmethod
    def from_json(cls, data: dict) -> "FlowGate":
        if list(data.get("features", [])) != list(FEATURES):
            raise ReusevosError("this flow gate was fitted on other features than this version computes; fit it "
                                "again with `reusevos fit-flow-gate`")
        flow = data.get("flow", UNNAMED_FLOW)
        if flow != FLOW:
            raise ReusevosError(f"this flow gate was fitted on the features of another optical flow ({flow}) than "
                                f"this version computes ({FLOW}); fit it again with `reusevos fit-flow-gate`")
        layers = [(np.asarray(layer["weight"], np.float32), np.asarray(layer["bias"], np.float32))
                  for layer in data["layers"]]
        return cls(np.asarray(data["mean"], np.float32), np.asarray(data["scale"], np.float32), layers,
                   data.get("info"))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n")


DEFAULT_FLOW_GATE = Path(__file__).parent / "checkpoints" / "flow_gate.json"


def load_flow_gate(path: str | Path | None = None) -> FlowGate:
    """The flow gate at ``path`` (default: the one shipped with the package)."""
    path = Path(path) if path is not None else DEFAULT_FLOW_GATE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReusevosError(f"no flow gate at {path}; fit one with `reusevos fit-flow-gate`") from None
    except (OSError, ValueError) as exc:
        raise ReusevosError(f"cannot read the flow gate {path}: {exc}") from None
    try:
        return FlowGate.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ReusevosError(f"the flow gate {path} is damaged: {exc}") from None
