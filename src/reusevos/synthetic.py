"""Synthetic VOS clips with exact ground truth: textured objects moving by smooth affine motion.

Objects are procedural shapes (ellipses, polygons, blobs) filled with procedural textures (noise,
stripes, checker, gradient) or cut-outs of real images given by the caller. They move over a
textured background (procedural or a caller's image) by translation, rotation and scale, occlude
one another in a fixed z-order, and may enter after the first frame. One knob, ``speed``, sets how
far things move per frame, so it controls how similar consecutive frames are.

Everything is drawn from ``numpy.random.default_rng(seed)``: the same config gives identical clips.
Only the motion parameters (a few floats per object per frame) are precomputed; frames are rendered
on demand, so a clip of any length streams in constant memory.

Frames are ``(H, W, 3)`` uint8 RGB; label maps are ``(H, W)`` uint8 with 0 = background and
1..K = object ids. An object's label is the part of it that is visible (alpha > 0.5 and not covered
by an object in front of it with alpha > 0.5).
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import cv2
import numpy as np

from reusevos.errors import ReusevosError

MAX_OBJECTS = 5
SHAPES = ("ellipse", "polygon", "blob")
TEXTURES = ("noise", "stripes", "checker", "gradient")

Cutout = tuple[np.ndarray, np.ndarray]  # (image (h, w, 3) uint8 RGB, mask (h, w) bool/0-1)


@dataclass
class SyntheticConfig:
    """How to make one synthetic clip.

    Attributes:
        size: ``(H, W)`` of the frames.
        num_frames: number of frames ``T``.
        num_objects: 1..5 objects.
        speed: mean translation of an object's centre in pixels per frame; rotation and scale change
            are tied to it (their boundary displacement is at most about half of it). 0 = static.
        seed: seed of the random generator; the same config always gives the same clip.
        late_objects: how many objects start after frame 0 (at a frame in ``[1, T // 2]``); their
            label first appears at their start frame. At least one object starts at frame 0.
        background_speed: peak speed of the background (camera pan), pixels per frame; 0 = still.
        object_size: range of object diameters as fractions of ``min(H, W)``.
        cutout_fraction: fraction of objects made from the given cut-outs (at least one when
            cut-outs are given and this is > 0); the rest are procedural.
        min_visible: minimum visible fraction of each object at its start frame (placement is
            re-drawn until it holds), so every object has a usable first mask.
    """

    size: tuple[int, int] = (240, 432)
    num_frames: int = 30
    num_objects: int = 2
    speed: float = 2.0
    seed: int = 0
    late_objects: int = 0
    background_speed: float = 0.0
    object_size: tuple[float, float] = (0.25, 0.5)
    cutout_fraction: float = 0.5
    min_visible: float = 0.3

    def validate(self) -> None:
        """Raise ReusevosError for settings no clip can satisfy."""
        h, w = self.size
        if h < 16 or w < 16:
            raise ReusevosError(f"synthetic clip size {h}x{w} is too small; use at least 16x16")
        if self.num_frames < 1:
            raise ReusevosError(f"num_frames must be at least 1, got {self.num_frames}")
        if not 1 <= self.num_objects <= MAX_OBJECTS:
            raise ReusevosError(f"num_objects must be 1..{MAX_OBJECTS}, got {self.num_objects}")
        if not 0 <= self.late_objects < self.num_objects:
            raise ReusevosError(
                f"late_objects must be 0..{self.num_objects - 1} (one object must start at frame 0), "
                f"got {self.late_objects}"
            )
        if self.late_objects and self.num_frames < 2:
            raise ReusevosError("late objects need at least 2 frames")
        if self.speed < 0 or self.background_speed < 0:
            raise ReusevosError("speed and background_speed must be >= 0")
        lo, hi = self.object_size
        if not 0 < lo <= hi <= 1:
            raise ReusevosError(f"object_size must satisfy 0 < low <= high <= 1, got {self.object_size}")
        if not 0 <= self.cutout_fraction <= 1 or not 0 <= self.min_visible <= 1:
            raise ReusevosError("cutout_fraction and min_visible must lie in [0, 1]")


@dataclass
class SyntheticObject:
    """One object of a clip.

    ``poses`` is ``(T, 4)`` float64: centre x, centre y (pixels), angle (radians), scale; NaN before
    ``start_frame``. ``z`` is the depth rank (higher = in front).
    """

    object_id: int
    start_frame: int
    z: int
    kind: str  # "cutout" or one of SHAPES
    texture: str  # "image" for cut-outs, else one of TEXTURES
    poses: np.ndarray
    rgb: np.ndarray = field(repr=False)  # (h, w, 3) float32 sprite colours
    alpha: np.ndarray = field(repr=False)  # (h, w) float32 sprite opacity in [0, 1]


class SyntheticClip:
    """A synthetic clip: iterate it for ``(frame, labels)`` pairs, rendered one at a time.

    Iterating twice gives identical arrays. ``render(t)`` gives any single frame.
    """

    def __init__(self, config: SyntheticConfig, objects: list[SyntheticObject], background: np.ndarray,
                 offsets: np.ndarray, margin: int) -> None:
        self.config = config
        self.objects = objects
        self._background = background  # (H + 2m, W + 2m, 3) float32
        self.background_offsets = offsets  # (T, 2) float64: x, y shift of the background
        self._margin = margin
        self._by_depth = sorted(objects, key=lambda o: o.z)

    @property
    def num_objects(self) -> int:
        return len(self.objects)

    def __len__(self) -> int:
        return self.config.num_frames

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for t in range(len(self)):
            frame, labels = self.render(t)
            yield frame, labels

    def labels(self) -> Iterator[np.ndarray]:
        """The ``(H, W)`` uint8 label maps only, frame by frame (no colour rendering)."""
        for t in range(len(self)):
            yield self.render(t, with_frame=False)[1]

    def render(self, t: int, only: Iterable[int] | None = None,
               with_frame: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
        """Frame ``t``: ``(H, W, 3)`` uint8 RGB (None if ``with_frame`` is false) and ``(H, W)`` uint8 labels.

        ``only``: object ids to draw (the others are left out, the background stays); None = all.
        """
        if not 0 <= t < len(self):
            raise IndexError(f"frame {t} outside 0..{len(self) - 1}")
        h, w = self.config.size
        keep = None if only is None else set(only)
        labels = np.zeros((h, w), dtype=np.uint8)
        frame = self._render_background(t) if with_frame else None
        for obj in self._by_depth:
            if t < obj.start_frame or (keep is not None and obj.object_id not in keep):
                continue
            placed = _warp_sprite(obj, obj.poses[t], (h, w), with_rgb=with_frame)
            if placed is None:
                continue
            (y0, y1, x0, x1), alpha, rgb = placed
            labels[y0:y1, x0:x1][alpha > 0.5] = obj.object_id
            if frame is not None:
                a = alpha[..., None]
                region = frame[y0:y1, x0:x1]
                region *= 1.0 - a
                region += rgb * a
        if frame is not None:
            frame = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
        return frame, labels

    def _render_background(self, t: int) -> np.ndarray:
        h, w = self.config.size
        m = self._margin
        dx, dy = self.background_offsets[t]
        if dx == 0 and dy == 0:
            return self._background[m:m + h, m:m + w].copy()
        matrix = np.array([[1.0, 0.0, -(m + dx)], [0.0, 1.0, -(m + dy)]])
        return cv2.warpAffine(self._background, matrix, (w, h), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT)


def generate_clip(config: SyntheticConfig, cutouts: Sequence[Cutout] | None = None,
                  background: np.ndarray | None = None) -> SyntheticClip:
    """Make a clip; frames are rendered lazily when it is iterated.

    Args:
        config: the clip's settings.
        cutouts: optional real objects, each ``(image (h, w, 3) uint8 RGB, mask (h, w))``; an image may
            be a whole frame, only the mask's bounding box is used (see ``cutouts_from_davis``).
        background: optional ``(h, w, 3)`` uint8 RGB image, resized and cropped to cover the frame;
            None draws a procedural texture.
    """
    config.validate()
    usable = [_prepare_cutout(image, mask) for image, mask in (cutouts or ())]
    usable = [c for c in usable if c is not None]
    rng = np.random.default_rng(config.seed)
    h, w = config.size
    t_total = config.num_frames

    margin = int(math.ceil(0.1 * min(h, w))) if config.background_speed > 0 else 0
    if background is None:
        bg = _texture(rng, h + 2 * margin, w + 2 * margin, str(rng.choice(TEXTURES)), contrast=0.8)
    else:
        bg = _cover(np.asarray(background), h + 2 * margin, w + 2 * margin)
    offsets = _background_path(rng, t_total, config.background_speed, 0.9 * margin)

    k = config.num_objects
    starts = [0] * (k - config.late_objects)
    high = max(1, t_total // 2)
    starts += sorted(int(s) for s in rng.integers(1, high + 1, size=config.late_objects))
    if usable and config.cutout_fraction > 0:
        n_cut = max(1, int(round(config.cutout_fraction * k)))
        from_cutout = set(rng.choice(k, size=n_cut, replace=False).tolist())
    else:
        from_cutout = set()
    depth = rng.permutation(k)

    objects = []
    min_side = min(h, w)
    for index in range(k):
        diameter = max(8, int(round(rng.uniform(*config.object_size) * min_side)))
        if index in from_cutout:
            rgb, alpha = _cutout_sprite(usable[int(rng.integers(len(usable)))], diameter)
            kind, texture = "cutout", "image"
        else:
            kind, texture = str(rng.choice(SHAPES)), str(rng.choice(TEXTURES))
            alpha = _shape_alpha(rng, diameter, kind)
            rgb = _texture(rng, alpha.shape[0], alpha.shape[1], texture)
        objects.append(SyntheticObject(index + 1, starts[index], int(depth[index]), kind, texture,
                                       np.empty((0, 4)), rgb, alpha))

    for obj in objects:
        obj.poses = _trajectory(rng, obj, config)
    clip = SyntheticClip(config, objects, bg, offsets, margin)
    _ensure_visible(clip, rng)
    return clip


def write_clip(root: str | os.PathLike, name: str, config: SyntheticConfig,
               cutouts: Sequence[Cutout] | None = None, background: np.ndarray | None = None, *,
               split: str = "train", jpeg_quality: int = 95, overwrite: bool = False,
               layout: str = "davis") -> SyntheticClip:
    """Generate a clip and write it under ``root``; returns the clip.

    ``layout="davis"`` (DAVIS 2017): ``JPEGImages/480p/<name>/00000.jpg ...``, ``Annotations/480p/<name>/00000.png
    ...`` (DAVIS palette PNGs, a mask for every frame) and ``name`` appended to ``ImageSets/2017/<split>.txt``.
    ``layout="youtube"`` (a YouTube-VOS split's folder, ``split`` unused): ``JPEGImages/<name>/`` every frame,
    ``Annotations/<name>/`` every 5th frame's mask only (so a late object starts on the first 5th frame that shows
    it) and the clip's objects in ``meta.json``. Frames stream from the generator to disk one at a time.
    """
    from reusevos.io.davis import write_davis_sequence
    from reusevos.io.youtube import write_youtube_video

    if layout not in ("davis", "youtube"):
        raise ReusevosError(f"layout {layout!r}: choose davis or youtube")
    clip = generate_clip(config, cutouts, background)
    a, b = itertools.tee(iter(clip))  # frames and masks are consumed alternately: tee holds one pair
    frames, labels = (frame for frame, _ in a), (labels for _, labels in b)
    if layout == "youtube":
        write_youtube_video(root, name, frames, labels, category="synthetic", jpeg_quality=jpeg_quality,
                            overwrite=overwrite)
    else:
        write_davis_sequence(root, name, frames, labels, split=split, jpeg_quality=jpeg_quality, overwrite=overwrite)
    return clip


def cutouts_from_davis(root: str | os.PathLike, split: str = "train", sequences: Iterable[str] | None = None,
                       every: int = 10) -> list[Cutout]:
    """Cut-outs ``(image, mask)`` of every object in every ``every``-th annotated frame of a DAVIS root.

    Each image is cropped to its object's bounding box, so the list stays small. Objects smaller than
    64 pixels are skipped. Raises ReusevosError if the root holds no usable object.
    """
    from reusevos.io.davis import DavisDataset
    from reusevos.io.frames import read_image

    dataset = DavisDataset(root, split=split, sequences=sequences)
    result: list[Cutout] = []
    for sequence in dataset.sequences:
        frames, masks = dataset.frame_paths(sequence), dataset.mask_paths(sequence)
        by_stem = {p.stem: p for p in frames}
        for mask_path in masks[:: max(1, every)]:
            frame_path = by_stem.get(mask_path.stem)
            if frame_path is None:
                continue
            labels = dataset.read_mask(mask_path)
            rgb = read_image(frame_path)
            if rgb.shape[:2] != labels.shape:
                raise ReusevosError(f"mask {mask_path} is {labels.shape}, frame {frame_path} is {rgb.shape[:2]}; "
                                    "fix or remove the pair")
            for object_id in np.unique(labels):
                if object_id in (0, 255):
                    continue
                mask = labels == object_id
                if mask.sum() < 64:
                    continue
                ys, xs = np.nonzero(mask)
                box = slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1)
                result.append((rgb[box].copy(), mask[box].copy()))
    if not result:
        raise ReusevosError(f"no object masks found in {root} (split {split}); give a DAVIS root with annotations")
    return result


def consecutive_iou(labels: Iterable[np.ndarray], num_objects: int) -> np.ndarray:
    """IoU of each object's mask between consecutive frames: ``(T - 1, num_objects)`` float64.

    NaN where the object is absent from both frames (e.g. before a late object starts).
    """
    rows = []
    previous = None
    ids = np.arange(1, num_objects + 1, dtype=np.uint8)
    for current in labels:
        masks = np.asarray(current)[None] == ids[:, None, None]
        if previous is not None:
            inter = (masks & previous).sum(axis=(1, 2))
            union = (masks | previous).sum(axis=(1, 2))
            with np.errstate(invalid="ignore", divide="ignore"):
                rows.append(np.where(union > 0, inter / np.maximum(union, 1), np.nan))
        previous = masks
    return np.array(rows, dtype=np.float64).reshape(-1, num_objects)


# --- motion ---------------------------------------------------------------------------------------

def _trajectory(rng: np.random.Generator, obj: SyntheticObject, config: SyntheticConfig) -> np.ndarray:
    """Smooth affine motion from the object's start frame: ``(T, 4)`` (x, y, angle, scale), NaN before."""
    h, w = config.size
    t_total = config.num_frames
    radius = 0.5 * math.hypot(*obj.alpha.shape) * 0.7  # typical distance of the boundary from the centre
    speed = config.speed * rng.uniform(0.6, 1.4)
    # Start fully in view where the object fits, else centred on that axis.
    half = 0.5 * max(obj.alpha.shape)
    x = rng.uniform(half, w - half) if w > 2 * half else w / 2
    y = rng.uniform(half, h - half) if h > 2 * half else h / 2
    heading = rng.uniform(0, 2 * math.pi)
    vel = speed * np.array([math.cos(heading), math.sin(heading)])
    omega_max = 0.5 * speed / radius  # rotation moves the boundary by at most ~speed / 2 per frame
    omega = rng.uniform(-1, 1) * omega_max
    angle = rng.uniform(0, 2 * math.pi)
    amp = 0.12  # log-scale amplitude: +-13%
    scale_freq = min(0.3, 0.3 * speed / (amp * radius))
    scale_phase = rng.uniform(0, 2 * math.pi)
    lo = np.array([0.2 * w, 0.2 * h])
    hi = np.array([0.8 * w, 0.8 * h])

    poses = np.full((t_total, 4), np.nan)
    pos = np.array([x, y])
    for t in range(obj.start_frame, t_total):
        age = t - obj.start_frame
        poses[t] = (pos[0], pos[1], angle, math.exp(amp * math.sin(scale_freq * age + scale_phase)))
        # Small random acceleration, plus a pull back towards the middle when near the borders.
        accel = rng.normal(0.0, 0.1, 2) * speed
        outside = np.clip(pos, lo, hi) - pos
        norm = np.linalg.norm(outside)
        if norm > 0:
            accel += 0.15 * speed * outside / norm
        vel = vel + accel
        v_norm = np.linalg.norm(vel)
        vel = vel * (speed / v_norm) if v_norm > 1e-12 else vel * 0.0
        pos = pos + vel
        for axis, limit in ((0, w), (1, h)):  # keep the centre in the frame: bounce off the edges
            if pos[axis] < 0 or pos[axis] > limit:
                pos[axis] = min(max(pos[axis], 0.0), float(limit))
                vel[axis] = -vel[axis]
        omega = float(np.clip(omega + rng.normal(0.0, 0.1) * omega_max, -omega_max, omega_max))
        angle += omega
    return poses


def _background_path(rng: np.random.Generator, t_total: int, speed: float, amplitude: float) -> np.ndarray:
    """A smooth bounded pan: ``(T, 2)`` offsets, sinusoids whose peak speed per axis is ``speed``."""
    if speed <= 0 or amplitude <= 0:
        return np.zeros((t_total, 2))
    t = np.arange(t_total)[:, None]
    freq = speed / amplitude * rng.uniform(0.7, 1.0, size=2)
    phase = rng.uniform(0, 2 * math.pi, size=2)
    return amplitude * (np.sin(freq * t + phase) - np.sin(phase))


def _ensure_visible(clip: SyntheticClip, rng: np.random.Generator, rounds: int = 50) -> None:
    """Re-draw the motion of objects that are too hidden at their start frame."""
    config = clip.config
    for _ in range(rounds):
        failing = [obj for obj in clip.objects if _visible_fraction(clip, obj) < config.min_visible]
        if not failing:
            return
        for obj in failing:
            obj.poses = _trajectory(rng, obj, config)
    hidden = [obj.object_id for obj in clip.objects if _visible_fraction(clip, obj) == 0.0]
    if hidden:
        raise ReusevosError(
            f"could not place objects {hidden} visibly at their start frames (seed {config.seed}); "
            "use fewer or smaller objects, a larger frame size, or another seed"
        )


def _visible_fraction(clip: SyntheticClip, obj: SyntheticObject) -> float:
    t = obj.start_frame
    _, labels = clip.render(t, with_frame=False)
    visible = int((labels == obj.object_id).sum())
    if visible == 0:
        return 0.0
    placed = _warp_sprite(obj, obj.poses[t], clip.config.size, with_rgb=False)
    alone = int((placed[1] > 0.5).sum()) if placed is not None else 0
    full = max(1, int((obj.alpha > 0.5).sum() * obj.poses[t, 3] ** 2))
    # Both occlusion and leaving the frame count as hidden.
    return min(visible / max(alone, 1), alone / full)


def _warp_sprite(obj: SyntheticObject, pose: np.ndarray, size: tuple[int, int], with_rgb: bool = True):
    """Place a sprite at ``pose``: ((y0, y1, x0, x1), alpha (h', w') float32, rgb (h', w', 3) or None)."""
    x, y, angle, scale = pose
    sh, sw = obj.alpha.shape
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
    # Sprite pixel (u, v) -> frame (x, y): rotate and scale about the sprite centre, then translate.
    matrix = np.array([[cos, -sin, 0.0], [sin, cos, 0.0]])
    cu, cv = (sw - 1) / 2.0, (sh - 1) / 2.0
    matrix[:, 2] = [x - (cos * cu - sin * cv), y - (sin * cu + cos * cv)]
    corners = np.array([[0, 0, 1], [sw - 1, 0, 1], [0, sh - 1, 1], [sw - 1, sh - 1, 1]], dtype=np.float64)
    mapped = corners @ matrix.T
    h, w = size
    x0 = max(0, int(math.floor(mapped[:, 0].min())) - 1)
    x1 = min(w, int(math.ceil(mapped[:, 0].max())) + 2)
    y0 = max(0, int(math.floor(mapped[:, 1].min())) - 1)
    y1 = min(h, int(math.ceil(mapped[:, 1].max())) + 2)
    if x1 <= x0 or y1 <= y0:
        return None
    local = matrix.copy()
    local[:, 2] -= (x0, y0)
    dsize = (x1 - x0, y1 - y0)
    alpha = cv2.warpAffine(obj.alpha, local, dsize, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    rgb = None
    if with_rgb:
        rgb = cv2.warpAffine(obj.rgb, local, dsize, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return (y0, y1, x0, x1), alpha, rgb


# --- appearance -----------------------------------------------------------------------------------

def _colour_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    first = rng.uniform(0, 255, 3)
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction) + 1e-12
    second = np.clip(first + direction * rng.uniform(90, 200), 0, 255)
    return first.astype(np.float32), second.astype(np.float32)


def _texture(rng: np.random.Generator, h: int, w: int, kind: str, contrast: float = 1.0) -> np.ndarray:
    """A procedural texture, ``(h, w, 3)`` float32 in [0, 255]."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0, math.pi)
    u = xx * math.cos(theta) + yy * math.sin(theta)
    v = -xx * math.sin(theta) + yy * math.cos(theta)
    noise = _value_noise(rng, h, w)
    if kind == "noise":
        t = noise
    elif kind == "stripes":
        period = rng.uniform(6, 20)
        t = 0.5 + 0.5 * np.tanh(3 * np.sin(2 * math.pi * u / period))
    elif kind == "checker":
        cell = rng.uniform(6, 20)
        t = ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
    elif kind == "gradient":
        t = (u - u.min()) / max(float(u.max() - u.min()), 1e-6)
    else:
        raise ValueError(f"unknown texture {kind!r}")
    if kind != "noise":
        t = 0.7 * t + 0.3 * noise  # blotches on every pattern, so no two places look alike
    first, second = _colour_pair(rng)
    second = first + contrast * (second - first)
    image = first + t[..., None] * (second - first)
    image += rng.normal(0, 4, (h, w, 1)).astype(np.float32)  # grain (luminance, like a camera's), never flat
    return np.clip(image, 0, 255).astype(np.float32)


def _value_noise(rng: np.random.Generator, h: int, w: int, octaves: int = 5) -> np.ndarray:
    """Multi-octave value noise, ``(h, w)`` float32 in [0, 1]."""
    t = np.zeros((h, w), np.float32)
    for octave in range(octaves):
        cells = 2 ** (octave + 2)
        grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
        t += cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC) / (1.6 ** octave)
    return (t - t.min()) / max(float(t.max() - t.min()), 1e-6)


def _shape_alpha(rng: np.random.Generator, diameter: int, kind: str, supersample: int = 4) -> np.ndarray:
    """An anti-aliased shape mask on a ``(d + 4, d + 4)`` canvas, float32 in [0, 1]."""
    side = diameter + 4
    big = np.zeros((side * supersample, side * supersample), np.uint8)
    centre = np.array([side / 2, side / 2]) * supersample
    radius = diameter / 2 * supersample
    if kind == "ellipse":
        axes = (int(radius), int(radius * rng.uniform(0.45, 1.0)))
        cv2.ellipse(big, (int(centre[0]), int(centre[1])), axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
    else:
        if kind == "polygon":
            n = int(rng.integers(3, 9))
            # Jittered even spacing: irregular, but never a sliver.
            angles = (np.arange(n) + rng.uniform(-0.3, 0.3, n)) * (2 * math.pi / n) + rng.uniform(0, 2 * math.pi)
            radii = radius * rng.uniform(0.6, 1.0, n)
        elif kind == "blob":
            angles = np.linspace(0, 2 * math.pi, 96, endpoint=False)
            wobble = sum(rng.uniform(0, 0.15) * np.cos(k * angles + rng.uniform(0, 2 * math.pi)) for k in (2, 3, 4))
            radii = radius * (1 + wobble) / (1 + np.abs(wobble).max())
        else:
            raise ValueError(f"unknown shape {kind!r}")
        points = centre + np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
        cv2.fillPoly(big, [np.round(points).astype(np.int32)], 255)
    alpha = cv2.resize(big, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    return alpha


def _prepare_cutout(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Crop a cut-out to its mask's bounding box; None if the mask has fewer than 16 pixels."""
    image, mask = np.asarray(image), np.asarray(mask) > 0
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != mask.shape:
        raise ValueError(f"a cut-out needs an (h, w, 3) image and an (h, w) mask, got {image.shape} and {mask.shape}")
    if mask.sum() < 16:
        return None
    ys, xs = np.nonzero(mask)
    box = slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1)
    return image[box].astype(np.uint8), mask[box]


def _cutout_sprite(cutout: tuple[np.ndarray, np.ndarray], diameter: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize a cut-out so its longer side is ``diameter``; pad 2 px so the alpha is 0 at the border."""
    image, mask = cutout
    h, w = mask.shape
    factor = diameter / max(h, w)
    size = (max(1, int(round(w * factor))), max(1, int(round(h * factor))))
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    rgb = cv2.resize(image.astype(np.float32), size, interpolation=interpolation)
    alpha = cv2.resize(mask.astype(np.float32), size, interpolation=interpolation)
    pad = ((2, 2), (2, 2))
    rgb = np.pad(rgb, pad + ((0, 0),), mode="edge")
    alpha = np.pad(alpha, pad)
    return rgb.astype(np.float32), np.clip(alpha, 0, 1).astype(np.float32)


def _cover(image: np.ndarray, h: int, w: int) -> np.ndarray:
    """Resize (keeping the aspect ratio) and centre-crop an RGB image to ``(h, w, 3)`` float32."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"background must be an (h, w, 3) RGB image, got {image.shape}")
    ih, iw = image.shape[:2]
    factor = max(h / ih, w / iw)
    size = (max(w, int(math.ceil(iw * factor))), max(h, int(math.ceil(ih * factor))))
    resized = cv2.resize(image.astype(np.float32), size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
    top, left = (resized.shape[0] - h) // 2, (resized.shape[1] - w) // 2
    return np.ascontiguousarray(resized[top:top + h, left:left + w])


def parse_size(text: str) -> tuple[int, int]:
    """``"240x432"`` -> ``(240, 432)`` (height x width); ReusevosError if malformed."""
    try:
        h, w = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ReusevosError(f"size {text!r} is not HxW, e.g. 240x432") from None
    return h, w
