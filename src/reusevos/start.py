"""Start masks without a mask file: an object's first mask from a box or from clicks.

- :func:`mask_from_box`: by one of :data:`BOX_METHODS`. ``"model"`` (:func:`mask_from_box_by_model`, the default when
  a loaded model is given) asks the model itself: a target model fitted to the box against its outside, the
  refinement network on its damped score, GrabCut seeded with that mask, and the refinement network again from a
  target model fitted to GrabCut's result. ``"grabcut"`` (no weights) is GrabCut initialised with the box (inside
  probably the object, outside background).
- :func:`mask_from_points`: GrabCut initialised with small disks around the clicks (foreground clicks definitely
  the object, background clicks definitely not), a generous box around the foreground clicks probably the object
  and the rest background.
- :class:`Prompt`: one object's box or clicks at a frame, and :func:`prompt_masks`, which turns prompts into the
  start label maps of their frames (what ``reusevos segment --box / --points`` does: with GrabCut alone before the
  model loads, with the model's method once it has loaded; :func:`check_prompts` checks frames and corners before).

Frames are ``(H, W, 3)`` uint8 RGB, masks ``(H, W)`` uint8 0/1; coordinates are pixels, x to the right and y down.
GrabCut fits colour models to the frame itself, so it finds objects whose colours differ from what surrounds them;
the model's method adds what the backbone's features and the refinement network know about objects (on DAVIS
first frames it is right far more often: docs/results/box-start). Both need a box that holds the whole object with
some background around it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import cv2
import numpy as np

from reusevos.config import DEFAULT_MAX_SIZE
from reusevos.errors import ReusevosError
from reusevos.io.frames import FrameSource, fit_size, resize_frame

if TYPE_CHECKING:
    from reusevos.model.network import VOSNetwork

Box = tuple[int, int, int, int]  # x0, y0, x1, y1: x0, y0 inclusive, x1, y1 exclusive
Point = tuple[int, int]  # x, y
GRABCUT_ITERATIONS = 5
CLICK_GROWTH = 0.25  # the box around clicks grows by at least this fraction of the frame's shorter side each way
BOX_METHODS = ("model", "grabcut")
# The model's method, chosen on the first frames of the 30 DAVIS 2016 train sequences (docs/results/box-start):
BOX_SCORE_SCALES = (0.4, 0.6, 1.0)  # the box-fitted target model's score, damped (at full strength the network
# returns the box); a stronger one when the mask fills less than BOX_MIN_FILL of the box
BOX_MIN_FILL = 0.1
BOX_REFITS = 1  # rounds of target model + refinement network from the last mask, after GrabCut


def check_box_method(method: str | None, network: VOSNetwork | None = None) -> str:
    """The box method to use: ``method`` if it is one of :data:`BOX_METHODS`; None (the default) is ``"model"`` when
    a loaded FRTM ``network`` is given and ``"grabcut"`` otherwise. ``"model"`` needs FRTM's target model and
    refinement network, so it is refused without a network or with another base model (TTVOS)."""
    frtm = network is not None and getattr(network, "base", "frtm") == "frtm"
    if method is None:
        return "model" if frtm else "grabcut"
    if method not in BOX_METHODS:
        raise ReusevosError(f"box method {method!r} is not one of {', '.join(BOX_METHODS)}: model (the default with "
                            "weights) or grabcut (no weights)")
    if method == "model" and network is None:
        raise ReusevosError("box method 'model' needs the loaded model: pass network=reusevos.load_model(), or use "
                            "method='grabcut' (no weights)")
    if method == "model" and not frtm:
        raise ReusevosError(f"box method 'model' uses FRTM's target model and refinement network, which the "
                            f"{network.base} weights do not have; use the box method grabcut")
    return method


def mask_from_box(frame: np.ndarray, box: Sequence[int], iterations: int = GRABCUT_ITERATIONS, *,
                  method: str | None = None, network: VOSNetwork | None = None) -> np.ndarray:
    """The object inside ``box = (x0, y0, x1, y1)`` (x1, y1 exclusive) of ``frame`` ``(H, W, 3)``: ``(H, W)`` uint8 0/1.

    ``method`` is ``"model"`` (:func:`mask_from_box_by_model` with ``network``, a loaded model) or ``"grabcut"``
    (GrabCut alone, no weights); None (the default) takes ``"model"`` when ``network`` is given, else ``"grabcut"``.
    ``iterations``: GrabCut's. Raises ReusevosError when the box is not inside the frame or leaves no background
    around it, or when nothing is found in it.
    """
    method = check_box_method(method, network)
    if method == "model":
        return mask_from_box_by_model(frame, box, network, iterations=iterations)
    frame = _check_frame(frame)
    x0, y0, x1, y1 = _check_box_in(box, frame)
    mask = np.zeros(frame.shape[:2], np.uint8)
    _grabcut(frame, mask, (x0, y0, x1 - x0, y1 - y0), cv2.GC_INIT_WITH_RECT, iterations)
    return _object_or_error(mask, f"box {x0},{y0},{x1},{y1}", "draw a larger box that holds the whole object "
                            "with some background around it")


def mask_from_box_by_model(frame: np.ndarray, box: Sequence[int], network: VOSNetwork,
                           score_scales: Sequence[float] = BOX_SCORE_SCALES, min_fill: float = BOX_MIN_FILL,
                           refits: int = BOX_REFITS, iterations: int = GRABCUT_ITERATIONS,
                           max_size: int | None = DEFAULT_MAX_SIZE) -> np.ndarray:
    """The object inside ``box`` of ``frame`` ``(H, W, 3)`` by the model ``network``'s own parts: ``(H, W)`` uint8 0/1.

    On the frame shrunk to ``max_size`` (the model's working size; None: as it is):

    1. A target model (the session's, :class:`~reusevos.model.target_model.TargetModel`) is fitted to the box's
       inside as the object and its outside as background, and the refinement network runs on its score damped by
       the first of ``score_scales``: at full strength the network trusts the score and returns the box; damped, it
       keeps what its features say is an object. A mask covering less than ``min_fill`` of the box (an object too
       small for the damped score to carry) takes the next, stronger scale.
    2. GrabCut starts from that mask (the mask probably the object, the rest of the box probably background, the
       outside background) and fits its colour models; when the network finds nothing, from the box alone. When
       GrabCut finds nothing (an object in the background's colours, told apart by texture only), the network's
       mask goes on.
    3. ``refits`` times: a target model fitted to the mask so far, as at a session's start, and the refinement
       network on its score (full strength) give the next mask, kept inside the box.

    The mask is brought back to the frame's size by bilinear resizing of the last probabilities.
    """
    frame = _check_frame(frame)
    x0, y0, x1, y1 = _check_box_in(box, frame)
    if not score_scales or not all(0 < s <= 1 for s in score_scales) or refits < 0:
        raise ReusevosError(f"score_scales {tuple(score_scales)} and refits {refits}: give scales in (0, 1] and "
                            "refits >= 0")
    size = fit_size(frame.shape[:2], max_size or None)
    small = resize_frame(frame, size)
    sy, sx = size[0] / frame.shape[0], size[1] / frame.shape[1]
    inside = np.zeros(size, bool)
    inside[int(y0 * sy):math.ceil(y1 * sy), int(x0 * sx):math.ceil(x1 * sx)] = True
    features = _features(network, small)
    score = _fitted_score(network, features, inside)
    for scale in score_scales:  # from the most damped: the first that leaves a mask filling enough of the box
        seen = (_probabilities(network, features, scale * score, size) * inside) > 0.5
        if seen[inside].mean() >= min_fill:
            break
    found = _grabcut_from(small, seen, inside, iterations)
    if not found.any():  # GrabCut's colour models could not part them (same colours, other texture)
        found = seen
    if not found.any():
        raise ReusevosError(f"found no object in box {x0},{y0},{x1},{y1}: the mask is empty; draw a larger box that "
                            "holds the whole object with some background around it")
    prob = found.astype(np.float32)
    for _ in range(refits):
        refined = _probabilities(network, features, _fitted_score(network, features, prob > 0.5), size) * inside
        if not (refined > 0.5).any():
            break  # nothing left: keep the mask before
        prob = refined
    if size != frame.shape[:2]:
        prob = cv2.resize(prob, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_LINEAR)
    return (prob > 0.5).astype(np.uint8)


def _grabcut_from(image: np.ndarray, seen: np.ndarray, inside: np.ndarray, iterations: int) -> np.ndarray:
    """GrabCut's object ``(H, W)`` bool: ``seen`` probably the object, the rest of ``inside`` (the box) probably
    background, the outside background; with nothing seen, GrabCut from the box alone."""
    seeds = np.full(inside.shape, cv2.GC_BGD, np.uint8)
    seeds[inside] = np.where(seen[inside], cv2.GC_PR_FGD, cv2.GC_PR_BGD)
    if seen.any():
        _grabcut(image, seeds, None, cv2.GC_INIT_WITH_MASK, iterations)
    else:
        x0, y0, x1, y1 = box_of(inside)
        _grabcut(image, seeds, (x0, y0, x1 - x0, y1 - y0), cv2.GC_INIT_WITH_RECT, iterations)
    return (seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)


def _features(network: VOSNetwork, image: np.ndarray) -> tuple:
    """The backbone's (f4, f8, f16, f32) of ``image`` ``(H, W, 3)``, as the session computes them."""
    import torch

    from reusevos.model.backbone import images_to_tensor
    from reusevos.session import check_frame_size

    check_frame_size(image.shape[:2])
    with torch.no_grad():
        f4, f8 = network.backbone.to_f8(images_to_tensor(image, network.device))
        return (f4, f8, *network.backbone.f8_to_f32(f8))


def _fitted_score(network: VOSNetwork, features: tuple, labels: np.ndarray):
    """The score ``(1, 1, H/16, W/16)`` of a target model fitted to ``labels`` ``(H, W)`` (1 the object, 0
    background) on the image's f16 ``features[2]``, as a session's start fits one (without augmented copies)."""
    import torch

    from reusevos.model.target_model import TargetModel

    f16 = features[2]
    with torch.no_grad():
        target = TargetModel(network.config.target)
        target.initialise(f16, torch.from_numpy(labels.astype(np.float32))[None, None].to(f16.device))
        return target.apply(f16)


def _probabilities(network: VOSNetwork, features: tuple, score, size: tuple[int, int]) -> np.ndarray:
    """The refinement network's probabilities ``(H, W)`` = ``size`` float32 on ``score`` ``(1, 1, H/16, W/16)``."""
    import torch

    with torch.no_grad():
        return torch.sigmoid(network.refiner(features, score, size))[0, 0].float().cpu().numpy()


def _check_box_in(box: Sequence[int], frame: np.ndarray) -> Box:
    """:func:`check_box`, and refuse a box that leaves no background around the object."""
    x0, y0, x1, y1 = check_box(box, frame.shape[:2])
    if (x1 - x0) * (y1 - y0) >= frame.shape[0] * frame.shape[1]:
        raise ReusevosError(f"box {x0},{y0},{x1},{y1} covers the whole frame; a box start needs background around "
                            "the object: draw the box just around it")
    return x0, y0, x1, y1


def mask_from_points(frame: np.ndarray, foreground: Iterable[Sequence[int]], background: Iterable[Sequence[int]] = (),
                     iterations: int = GRABCUT_ITERATIONS) -> np.ndarray:
    """The object under the ``foreground`` clicks ``[(x, y), ...]`` of ``frame`` ``(H, W, 3)``: ``(H, W)`` uint8 0/1.

    Each click is a small disk (radius :func:`click_radius`), definitely the object (``foreground``) or definitely
    not (``background``). The rest of :func:`click_box`, a box around the foreground clicks grown generously, is
    probably the object, and everything outside it background: GrabCut then works as from a box, with the clicks
    fixed (with the rest probably background instead, GrabCut kept little more than the disks of a single click on
    synthetic clips). Of what GrabCut finds, the parts connected to a foreground click are kept.
    """
    frame = _check_frame(frame)
    size = frame.shape[:2]
    fg = [check_point(p, size) for p in foreground]
    bg = [check_point(p, size) for p in background]
    if not fg:
        raise ReusevosError("give at least one foreground click on the object (x, y)")
    x0, y0, x1, y1 = click_box(fg, size)
    mask = np.full(size, cv2.GC_BGD, np.uint8)
    mask[y0:y1, x0:x1] = cv2.GC_PR_FGD
    radius = click_radius(size)
    for value, points in ((cv2.GC_BGD, bg), (cv2.GC_FGD, fg)):  # foreground last: it wins where disks overlap
        for x, y in points:
            cv2.circle(mask, (x, y), radius, int(value), thickness=-1)
    _grabcut(frame, mask, None, cv2.GC_INIT_WITH_MASK, iterations)
    found = _object_or_error(mask, f"the clicks at {_points_text(fg)}", "click on the object's middle, or add "
                             "background clicks (-x,y) around it")
    return _connected_to(found, fg)


def click_radius(size: tuple[int, int]) -> int:
    """The radius in pixels of a click's disk on a frame of ``size = (H, W)``: 1/60 of the shorter side, at least 3."""
    return max(3, min(size) // 60)


def click_box(points: Sequence[Point], size: tuple[int, int]) -> Box:
    """The box around ``points`` grown on each side by their extent, and by at least :data:`CLICK_GROWTH` of the
    frame's shorter side, clipped to the frame ``size = (H, W)``."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    floor = int(CLICK_GROWTH * min(size))
    grow_x, grow_y = max(floor, max(xs) - min(xs)), max(floor, max(ys) - min(ys))
    return (max(0, min(xs) - grow_x), max(0, min(ys) - grow_y),
            min(size[1], max(xs) + 1 + grow_x), min(size[0], max(ys) + 1 + grow_y))


def box_of(mask: np.ndarray, grow: float = 0.0) -> Box:
    """The box around the pixels of ``mask`` ``(H, W)`` (non-zero), grown by ``grow`` times its width and height on
    each side (rounded) and clipped to the frame: the box a user would draw around the object."""
    rows, cols = np.flatnonzero(np.any(mask, axis=1)), np.flatnonzero(np.any(mask, axis=0))
    if rows.size == 0:
        raise ReusevosError("the mask is empty: there is no box around it")
    x0, y0, x1, y1 = int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
    gx, gy = round(grow * (x1 - x0)), round(grow * (y1 - y0))
    height, width = mask.shape
    return max(0, x0 - gx), max(0, y0 - gy), min(width, x1 + gx), min(height, y1 + gy)


def check_box(box: Sequence[int], size: tuple[int, int]) -> Box:
    """``box`` as four ints, or a ReusevosError unless ``0 <= x0 < x1 <= W`` and ``0 <= y0 < y1 <= H``."""
    values = _ints(box, 4, "a box")
    x0, y0, x1, y1 = values
    height, width = size
    if x1 <= x0 or y1 <= y0:
        raise ReusevosError(f"box {x0},{y0},{x1},{y1} is empty: give X0,Y0,X1,Y1 with X1 > X0 and Y1 > Y0 (the "
                            "top-left and bottom-right corners)")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise ReusevosError(f"box {x0},{y0},{x1},{y1} is not inside the {width}x{height} frame: give corners with "
                            f"0 <= X0 < X1 <= {width} and 0 <= Y0 < Y1 <= {height}")
    return values


def check_point(point: Sequence[int], size: tuple[int, int]) -> Point:
    """``point`` as two ints, or a ReusevosError unless it lies in the frame ``size = (H, W)``."""
    x, y = _ints(point, 2, "a click")
    if not (0 <= x < size[1] and 0 <= y < size[0]):
        raise ReusevosError(f"click {x},{y} is not inside the {size[1]}x{size[0]} frame")
    return x, y


@dataclass(frozen=True)
class Prompt:
    """One object's start, without a mask: a ``box`` or clicks (``foreground``, ``background``) at frame index
    ``frame``. ``text`` is what the user wrote (``--box 10,20,90,80@5``), for messages."""

    frame: int = 0
    box: Box | None = None
    foreground: tuple[Point, ...] = ()
    background: tuple[Point, ...] = ()
    text: str = ""

    def __post_init__(self):
        if (self.box is None) == (not self.foreground):
            raise ReusevosError(f"{self.text or 'a prompt'}: give either a box or foreground clicks")

    def mask(self, frame: np.ndarray, box_method: str | None = None, network: VOSNetwork | None = None) -> np.ndarray:
        """The object's mask in ``frame`` (its start frame): ``(H, W)`` uint8 0/1. A box is made into a mask by
        ``box_method`` (see :func:`mask_from_box`: None is ``"model"`` with a ``network``, else ``"grabcut"``);
        clicks by GrabCut."""
        try:
            if self.box is not None:
                return mask_from_box(frame, self.box, method=box_method, network=network)
            return mask_from_points(frame, self.foreground, self.background)
        except ReusevosError as exc:
            raise ReusevosError(f"{self.text}: {exc}" if self.text else str(exc)) from None

    def to_dict(self) -> dict:
        """How the object was started, for ``stats.json``."""
        if self.box is not None:
            return {"box": list(self.box)}
        return {"points": {"foreground": [list(p) for p in self.foreground],
                           "background": [list(p) for p in self.background]}}


def prompt_masks(prompts: Sequence[Prompt], frames: FrameSource, first_id: int = 1,
                 given: Mapping[str, np.ndarray] | None = None, box_method: str | None = None,
                 network: VOSNetwork | None = None) -> dict[str, np.ndarray]:
    """The start label maps ``{frame name: (H, W) uint8}`` that ``prompts`` make, object ``first_id + k`` from
    ``prompts[k]``, boxes by ``box_method`` (:func:`mask_from_box`). ``given`` holds label maps already known for
    some frames (from mask files): an object made here takes only pixels they leave as background, as it does those
    of the prompts before it."""
    check_prompts(prompts, frames)
    if any(p.box is not None for p in prompts):
        box_method = check_box_method(box_method, network)
    names = frames.names
    wanted = frames_at(frames, {p.frame for p in prompts})
    labels = {name: np.array(m, np.uint8) for name, m in (given or {}).items()}
    for k, prompt in enumerate(prompts):
        name = names[prompt.frame]
        frame = wanted[prompt.frame]
        found = prompt.mask(frame, box_method, network).astype(bool)
        mapped = labels.setdefault(name, np.zeros(frame.shape[:2], np.uint8))
        _refuse_same_object(prompt, found, mapped, name)
        mapped[found & (mapped == 0)] = first_id + k
    return {name: labels[name] for name in names if name in labels}


def check_prompts(prompts: Sequence[Prompt], frames: FrameSource) -> None:
    """Refuse, without making any mask, prompts whose frame is not in ``frames`` or whose box or clicks are not
    inside the frame."""
    names, size = frames.names, frames.size
    for prompt in prompts:
        what = prompt.text or "a prompt"
        if not 0 <= prompt.frame < len(names):
            raise ReusevosError(f"{what}: frame {prompt.frame} is not in the input, which has {len(names)} frames "
                                f"(0 to {len(names) - 1})")
        try:
            if prompt.box is not None:
                check_box(prompt.box, size)
            for point in prompt.foreground + prompt.background:
                check_point(point, size)
        except ReusevosError as exc:
            raise ReusevosError(f"{what}: {exc}") from None


def _refuse_same_object(prompt: Prompt, found: np.ndarray, mapped: np.ndarray, name: str) -> None:
    """Every prompt starts an object of its own: one whose mask lies mostly (over half) on an object already given
    for that frame (by a mask, or an earlier prompt) names that object again."""
    under = mapped[found]
    counts = np.bincount(under, minlength=256)
    counts[0] = 0
    if counts.sum() * 2 > under.size:
        obj = int(counts.argmax())
        raise ReusevosError(f"{prompt.text or 'a prompt'}: its object lies mostly ({counts.sum() / under.size:.0%}) on "
                            f"object {obj}, already given for frame {name}; each box or set of clicks starts a new "
                            "object, so mark another one, or give that object only once")


def frames_at(frames: FrameSource, indices: set[int]) -> dict[int, np.ndarray]:
    """The frames at ``indices``, decoding no further than the last of them."""
    found: dict[int, np.ndarray] = {}
    if not indices:
        return found
    for index, (_, frame) in enumerate(frames):
        if index in indices:
            found[index] = frame
            if len(found) == len(indices):
                break  # the generator is dropped: the file is closed
    missing = sorted(indices - set(found))
    if missing:
        raise ReusevosError(f"{frames.path} ended before frame {missing[0]}; give a frame index inside the video")
    return found


def _grabcut(frame: np.ndarray, mask: np.ndarray, rect, mode: int, iterations: int) -> None:
    if iterations < 1:
        raise ReusevosError(f"iterations {iterations}: give 1 or more")
    models = (np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64))
    cv2.setRNGSeed(0)  # GrabCut's k-means draws from OpenCV's global generator: the same box, the same mask
    try:
        cv2.grabCut(frame, mask, rect, *models, int(iterations), mode)
    except cv2.error as exc:  # e.g. too few pixels on one side to fit a colour model
        message = str(exc).strip().splitlines()[-1]
        raise ReusevosError(f"GrabCut could not run ({message}); draw a larger box or add clicks") from None


def _object_or_error(mask: np.ndarray, what: str, hint: str) -> np.ndarray:
    found = ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.uint8)
    if not found.any():
        raise ReusevosError(f"GrabCut found no object in {what}: the mask is empty; {hint}")
    return found


def _connected_to(mask: np.ndarray, points: Sequence[Point]) -> np.ndarray:
    """The connected parts of ``mask`` (8-connected) that hold one of ``points``; all of it if none does."""
    _, parts = cv2.connectedComponents(mask, connectivity=8)
    keep = {int(parts[y, x]) for x, y in points} - {0}
    return np.isin(parts, sorted(keep)).astype(np.uint8) if keep else mask


def _check_frame(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ReusevosError(f"the frame must be an (H, W, 3) uint8 RGB array; got {frame.shape} {frame.dtype}")
    return np.ascontiguousarray(frame)


def _ints(values: Sequence[int], count: int, what: str) -> tuple[int, ...]:
    values = tuple(values)
    if len(values) != count or not all(isinstance(v, (int, np.integer)) for v in values):
        raise ReusevosError(f"{what} is {count} whole pixel coordinates (int); got {values}")
    return tuple(int(v) for v in values)


def _points_text(points: Sequence[Point]) -> str:
    return " ".join(f"{x},{y}" for x, y in points)
