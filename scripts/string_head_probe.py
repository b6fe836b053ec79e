"""A probe of the plan's learned full-resolution stage: a small network that adds strings to the base model's masks.

The base model stays as it is (its probabilities at the shipped settings, cached by ``thin_lines_probe.py``'s
``--cache``); the "string head" looks at the frame at full resolution and adds pixels to the mask. Its inputs, per
pixel: the frame (RGB), the base model's logit, the line strength of ``thin_lines_probe.line_strength`` and a
corridor: where the object's thin parts were on the previous frame, widened by 4 px (in training the previous
frame's ground truth, at test time the previous output's; on the first frame after the start, the start mask's).
Its output: which pixels outside the base mask belong to the object; only those connected to the mask are added
(``+corridor``: only inside the corridor; ``+evidence``: only where the base probability is above 0.001, a
restraint the head cannot learn from drawn strings, which the base model never saw).

Strings are rare in DAVIS 2016 train (kite-walk is the only sequence with many), so training draws them: each crop
gets up to five strings (1-4 px, antialiased, straight or bent, dark, bright or coloured, one or both ends on the
object's outline, their corridor drawn 0-3 px off) and up to three loose lines of the same kinds that touch nothing
(background). Trained on the train sequences that neither the hard fold holds out nor the probe scores on (the
hard-fold refiner's fitting set minus boat, lucia and swing: 21), scored like ``thin_lines_probe.py`` on the
train sequences whose start mask has 2.5% or more of its pixels in thin parts (kite-walk and bmx-bumps are held out
of the base too). A probe: nothing here is part of the package.

    python scripts/string_head_probe.py train --cache runs/thin-probe-cache --davis ~/data/DAVIS --out runs/string-head
    python scripts/string_head_probe.py score --cache runs/thin-probe-cache --davis ~/data/DAVIS --out runs/string-head \\
        --report docs/results/accuracy/thin-lines/string-head-hardfold.json

The second try (``synth``, then ``train --synth``) gives the head what the first lacked. ``FollowingStrings`` draws
strings on whole sequences, attached to the object from the first frame to the last (the start mask has them), and
loose lines in the background, some in a string's colour; the base model (``--weights``, the hard-fold refiner) then
tracks the object with its strings, so its probabilities on them are its own (over the 42 sequences drawn, 21% of the
strings' pixels above 0.5, 41% above 0.001; per sequence from none to 83% above 0.5, median 17%). The head gets a
seventh input, the colour model of ``thin_lines_probe.py`` (the start mask's thin parts against the background around
them), as a log-likelihood ratio. Results: docs/accuracy.md, "The string head's second try".

    python scripts/string_head_probe.py synth --davis ~/data/DAVIS --synth runs/string-synth
    python scripts/string_head_probe.py train --davis ~/data/DAVIS --synth runs/string-synth --out runs/string-head-2 \\
        --steps 1500
    python scripts/string_head_probe.py score --cache runs/thin-probe-cache --davis ~/data/DAVIS \\
        --out runs/string-head-2 --threshold 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import reusevos
from reusevos.evaluation.davis_eval import DavisScores, score_sequence
from reusevos.io.davis import DavisDataset, load_sequence
from reusevos.io.files import write_json, write_text
from reusevos.provenance import machine_label, source_commit
from thin_lines_probe import (ColourModel, connected_to, line_strength, probabilities, thin_parts,  # scripts/
                              widened)

HARD_SIX = ("bmx-bumps", "breakdance-flare", "dance-jump", "drift-turn", "kite-walk", "motocross-bumps")
SCORED = ("bmx-bumps", "boat", "kite-walk", "lucia", "swing")
CROP = 160
CORRIDOR = 4
EVIDENCE = 1e-3  # thin_lines_probe.py's least base probability
VARIANTS = ("head", "head+corridor", "head+evidence", "head+corridor+evidence")


class StringHead(nn.Module):
    """6 inputs (7 with the colour plane) -> 1 logit at full resolution; dilated 3x3 convolutions, receptive field
    31 px."""

    def __init__(self, channels: int = 6, width: int = 24):
        super().__init__()
        layers = []
        for dilation in (1, 2, 4, 8):
            layers += [nn.Conv2d(channels, width, 3, padding=dilation, dilation=dilation), nn.ReLU(inplace=True)]
            channels = width
        self.body = nn.Sequential(*layers, nn.Conv2d(width, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def inputs(rgb: np.ndarray, prob: np.ndarray, corridor: np.ndarray, colour: ColourModel | None = None
           ) -> torch.Tensor:
    """``(6, h, w)`` float32: RGB in [-1, 1], the base logit / 12 (clipped), line strength / 64, corridor; with
    ``colour`` a seventh plane, its log-likelihood ratio / 4 (clipped to [-1, 1]): the start mask's thin parts
    against the background around them."""
    p = np.clip(prob.astype(np.float32), 1e-6, 1 - 1e-6)
    logit = np.clip(np.log(p / (1 - p)), -12, 12) / 12
    planes = [rgb.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1, logit[None],
              np.minimum(line_strength(rgb), 128)[None].astype(np.float32) / 64, corridor[None].astype(np.float32)]
    if colour is not None:
        planes.append(np.clip(colour.log_ratio(rgb), -4, 4)[None].astype(np.float32) / 4)
    return torch.from_numpy(np.concatenate(planes))


def outline_points(mask: np.ndarray) -> np.ndarray:
    """``(n, 2)`` (row, column) of the boolean ``mask``'s pixels with a 4- or 8-neighbour outside it."""
    return np.argwhere(mask & ~(cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0))


def _colour(rng: np.random.Generator) -> np.ndarray:
    kind = rng.integers(3)
    if kind == 0:
        return rng.uniform(0, 70, 3)  # dark
    if kind == 1:
        return rng.uniform(190, 255, 3)  # bright
    hsv = np.uint8([[[rng.integers(180), rng.integers(120, 256), rng.integers(80, 256)]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64)


def _path(start: np.ndarray, end: np.ndarray, bend: float) -> np.ndarray:
    """A polyline from start to end, bent ``bend`` times its length at the middle: ``(n, 1, 2)`` int32 (x, y)."""
    bend = bend * np.linalg.norm(end - start)
    normal = np.array([-(end - start)[1], (end - start)[0]]) / max(np.linalg.norm(end - start), 1)
    s = np.linspace(0, 1, 24)[:, None]
    pts = (1 - s) * start + s * end + (4 * s * (1 - s)) * bend * normal
    return np.round(pts).astype(np.int32)[:, None, :]


def draw_strings(rgb: np.ndarray, mask: np.ndarray, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``rgb`` with strings and loose lines drawn; the mask with the strings; the strings' corridor (drawn 0-3 px off)."""
    out, mask, corridor = rgb.astype(np.float64), mask.copy(), np.zeros(mask.shape, bool)
    h, w = mask.shape
    outline = outline_points(mask)
    if len(outline) == 0:
        return rgb, mask, corridor
    for attached in [True] * rng.integers(0, 6) + [False] * rng.integers(0, 4):
        if attached:
            start = outline[rng.integers(len(outline))][::-1].astype(np.float64)
            if rng.random() < 0.3:  # both ends on the object (a glider's lines between pilot and canopy)
                end = outline[rng.integers(len(outline))][::-1].astype(np.float64)
            else:
                angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(20, 160)
                end = start + length * np.array([np.cos(angle), np.sin(angle)])
        else:
            start = np.array([rng.uniform(0, w), rng.uniform(0, h)])
            angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(20, 160)
            end = start + length * np.array([np.cos(angle), np.sin(angle)])
        if np.linalg.norm(end - start) < 12:
            continue
        pts = _path(start, end, rng.normal(0, 0.08) if rng.random() < 0.5 else 0.0)
        width = int(rng.integers(1, 5))
        alpha = np.zeros((h, w), np.uint8)
        cv2.polylines(alpha, [pts], False, 255, width, cv2.LINE_AA)
        a = alpha.astype(np.float64)[..., None] / 255
        if not attached and (widened(mask, 10) & (alpha > 0)).any():
            continue  # a loose line must not touch the object
        out = out * (1 - a) + _colour(rng) * a
        if attached:
            mask |= alpha > 127
            shifted = np.zeros((h, w), np.uint8)
            cv2.polylines(shifted, [pts + rng.integers(-3, 4, 2).astype(np.int32)], False, 1, width)
            corridor |= widened(shifted, CORRIDOR)
    return np.clip(out, 0, 255).astype(np.uint8), mask, corridor


def _last_on_ray(mask: np.ndarray, centre: np.ndarray, angle: float) -> np.ndarray | None:
    """The last pixel of ``mask`` (x, y) on the ray from ``centre`` at ``angle``: a point of its outline that
    follows the object from frame to frame; None if the ray misses it."""
    h, w = mask.shape
    r = np.arange(0.0, np.hypot(h, w))
    xs = np.round(centre[0] + r * np.cos(angle)).astype(int)
    ys = np.round(centre[1] + r * np.sin(angle)).astype(int)
    inside = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    xs, ys = xs[inside], ys[inside]
    hits = np.flatnonzero(mask[ys, xs])
    return None if len(hits) == 0 else np.array([xs[hits[-1]], ys[hits[-1]]], np.float64)


class FollowingStrings:
    """Strings that stay attached to a sequence's object from its first frame to its last, and loose lines that stay
    in the background: drawn on the frames *before* the base model runs, so its evidence on them is its own.

    One to three groups of strings, each anchored where a ray from the object's centroid leaves it (so the anchor
    moves with the object): a single string with a free end (a kite line), a fan of 3-7 strings to free ends spread
    over an arc (a glider's lines), or a bent string to a second anchor. Free ends sway slowly; lengths follow the
    object's size. Widths 1-4 px (fans 1-2), one colour a group (dark, bright or coloured). Up to four loose lines of
    the same kinds, some in a string's colour, cut 8 px short of the object wherever they would touch it."""

    def __init__(self, truth: np.ndarray, rng: np.random.Generator):
        h, w = truth.shape[1:]
        self.area0 = max(int(truth[0].sum()), 1)
        self.groups = []
        for _ in range(rng.integers(1, 4)):
            kind = ("free", "fan", "between")[rng.integers(3)]
            count = int(rng.integers(3, 8)) if kind == "fan" else 1
            self.groups.append({
                "kind": kind, "angle": rng.uniform(0, 2 * np.pi), "to_angle": rng.uniform(0, 2 * np.pi),
                "direction": rng.uniform(0, 2 * np.pi), "length": rng.uniform(40, 400), "spread": rng.uniform(0.3, 1.2),
                "count": count, "width": int(rng.integers(1, 3 if kind == "fan" else 5)), "colour": _colour(rng),
                "bends": (rng.choice([-1, 1]) * rng.uniform(0.2, 0.6, count) if kind == "between"  # round the object
                          else rng.normal(0, 0.1, count) * (rng.random(count) < 0.6)), "sway": rng.uniform(0, 0.3),
                "period": rng.uniform(20, 80), "phase": rng.uniform(0, 2 * np.pi)})
        self.loose = []
        for _ in range(rng.integers(0, 5)):
            start = np.array([rng.uniform(0, w), rng.uniform(0, h)])
            angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(40, 400)
            colour = self.groups[rng.integers(len(self.groups))]["colour"] if rng.random() < 0.4 else _colour(rng)
            self.loose.append({"start": start, "end": start + length * np.array([np.cos(angle), np.sin(angle)]),
                               "width": int(rng.integers(1, 5)), "colour": colour,
                               "bend": rng.normal(0, 0.1) if rng.random() < 0.6 else 0.0,
                               "drift": rng.normal(0, 0.5, 2)})

    def draw(self, t: int, rgb: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``t`` with the lines drawn, and its object (boolean ``truth``) with the strings."""
        out, union = rgb.astype(np.float64), truth.copy()

        def paint(pts: np.ndarray, width: int, colour: np.ndarray, keep_out: np.ndarray | None = None) -> np.ndarray:
            alpha = np.zeros(truth.shape, np.uint8)
            cv2.polylines(alpha, [pts], False, 255, width, cv2.LINE_AA)
            if keep_out is not None:
                alpha[keep_out] = 0
            drawn = alpha > 0
            a = alpha[drawn].astype(np.float64)[:, None] / 255
            out[drawn] = out[drawn] * (1 - a) + colour * a
            return alpha > 127

        near = widened(truth, 8)
        for line in self.loose:
            shift = line["drift"] * t
            paint(_path(line["start"] + shift, line["end"] + shift, line["bend"]), line["width"], line["colour"], near)
        area = int(truth.sum())
        if area >= 50:
            ys, xs = np.nonzero(truth)
            centre = np.array([xs.mean(), ys.mean()])
            scale = float(np.clip(np.sqrt(area / self.area0), 0.5, 2.0))
            for g in self.groups:
                anchor = _last_on_ray(truth, centre, g["angle"])
                if anchor is None:
                    continue
                sway = g["sway"] * np.sin(2 * np.pi * t / g["period"] + g["phase"])
                if g["kind"] == "between":
                    end = _last_on_ray(truth, centre, g["to_angle"])
                    ends = [] if end is None else [end]
                else:
                    offsets = np.linspace(-0.5, 0.5, g["count"]) * g["spread"] if g["count"] > 1 else [0.0]
                    ends = [anchor + g["length"] * scale * np.array([np.cos(a), np.sin(a)])
                            for a in g["direction"] + sway + np.asarray(offsets)]
                for end, bend in zip(ends, g["bends"]):
                    if np.linalg.norm(end - anchor) >= 12:
                        union |= paint(_path(anchor, end, bend), g["width"], g["colour"])
        return np.clip(out, 0, 255).astype(np.uint8), union


class Frames:
    """Every frame after the start of some train sequences, with the base probabilities and the ground truth."""

    def __init__(self, davis: str, cache: Path, names: list[str]):
        dataset = DavisDataset(davis, "train")
        self.items = []
        for name in names:
            data = load_sequence(dataset, name)
            probs = np.load(cache / f"{name}.npy")
            truth = data.ground_truth > 0
            for t in range(1, len(data.frames)):
                self.items.append((data.frames[t], probs[t], truth[t], thin_parts(truth[t - 1])))

    def sample(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One crop around the object's outline: inputs ``(6, C, C)``, target and loss weight ``(1, C, C)``."""
        rgb, prob, truth, thin_before = self.items[rng.integers(len(self.items))]
        outline = outline_points(truth)
        box = crop_box(truth.shape, outline[rng.integers(len(outline))] if len(outline) else None, rng)
        rgb, prob, truth, thin_before = (np.ascontiguousarray(a[box]) for a in (rgb, prob, truth, thin_before))
        rgb, truth, string_corridor = draw_strings(rgb, truth, rng)
        return example(inputs(rgb, prob, widened(thin_before, CORRIDOR) | string_corridor), prob, truth)


def crop_box(shape: tuple[int, int], centre: np.ndarray | None, rng: np.random.Generator) -> tuple[slice, slice]:
    """A CROP-pixel square around ``centre`` (row, column; the frame's middle if None), mirrored half the time."""
    h, w = shape
    cy, cx = centre if centre is not None else (h // 2, w // 2)
    y0, x0 = int(np.clip(cy - CROP // 2, 0, h - CROP)), int(np.clip(cx - CROP // 2, 0, w - CROP))
    box = (slice(y0, y0 + CROP), slice(x0, x0 + CROP))
    if rng.random() < 0.5:
        box = (box[0], slice(x0 + CROP - 1, x0 - 1 if x0 else None, -1))
    return box


def example(x: torch.Tensor, prob: np.ndarray, truth: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs, target and loss weight: the head only adds, so it is scored where the base mask is not, the object's
    pixels there five times."""
    weight = (prob < 0.5) * np.where(truth, 5.0, 1.0)
    as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None]  # noqa: E731
    return x, as_tensor(truth), as_tensor(weight)


def fitting_sequences(davis: str) -> list[str]:
    """The train sequences neither the hard fold holds out nor the probes score on (21)."""
    return [n for n in DavisDataset(davis, "train").sequences if n not in HARD_SIX + SCORED]


def synth(args) -> None:
    """Each fitting sequence with FollowingStrings drawn (``--versions`` of them), and the base model's
    probabilities on it, started from the start mask with the strings: ``{name}+strings{k}.frames.npy``,
    ``.truth.npy`` and ``.npy`` (the probabilities, written last: a sequence with them is done)."""
    model = reusevos.load_model(args.weights)
    dataset = DavisDataset(args.davis, "train")
    folder = Path(args.synth)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "synth.json", {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "weights": args.weights,
        "seed": args.seed, "versions": args.versions, "machine": machine_label(), **source_commit()})
    for i, name in enumerate(fitting_sequences(args.davis)):
        data = load_sequence(dataset, name)
        truth = data.ground_truth > 0
        for k in range(args.versions):
            tag = f"{name}+strings{k}"
            if (folder / f"{tag}.npy").is_file():
                continue
            began = time.perf_counter()
            strings = FollowingStrings(truth, np.random.default_rng([args.seed, i, k]))
            frames, union = (np.stack(a) for a in zip(*(strings.draw(t, f, m) for t, (f, m) in
                                                        enumerate(zip(data.frames, truth)))))
            np.save(folder / f"{tag}.frames.npy", frames)
            np.save(folder / f"{tag}.truth.npy", union)
            stringed = dataclasses.replace(data, name=tag, frames=frames, ground_truth=union.astype(np.uint8),
                                           start_masks={0: union[0].astype(np.uint8)})
            probabilities(model, stringed, folder)
            print(f"{tag}: {len(frames)} frames, {time.perf_counter() - began:.0f} s", flush=True)


class SynthFrames:
    """Every frame after the start of ``synth``'s sequences (memory-mapped), with the base model's probabilities on
    them, the ground truth with the strings and a colour model of the start mask's thin parts."""

    def __init__(self, folder: Path):
        self.sequences, self.items = [], []
        for path in sorted(folder.glob("*+strings*.truth.npy")):
            tag = path.name[:-len(".truth.npy")]
            if not (folder / f"{tag}.npy").is_file():
                continue  # not finished
            frames, truth = np.load(folder / f"{tag}.frames.npy", mmap_mode="r"), np.load(path, mmap_mode="r")
            start = np.asarray(truth[0])
            colour = ColourModel(np.asarray(frames[0]), thin_parts(start), start)
            self.sequences.append((frames, np.load(folder / f"{tag}.npy", mmap_mode="r"), truth, colour))
            self.items += [(len(self.sequences) - 1, t) for t in range(1, len(frames))]
        if not self.items:
            raise SystemExit(f"no finished sequences in {folder}: run the synth action first")

    def sample(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One crop: half around the object's outline, three tenths on its thin parts, the rest anywhere."""
        index, t = self.items[rng.integers(len(self.items))]
        frames, probs, truth, colour = self.sequences[index]
        mask, pick = np.asarray(truth[t]), rng.random()
        points = outline_points(mask) if pick < 0.5 else np.argwhere(thin_parts(mask)) if pick < 0.8 else []
        if len(points):
            centre = points[rng.integers(len(points))]
        else:
            centre = np.array([rng.integers(mask.shape[0]), rng.integers(mask.shape[1])])
        box = crop_box(mask.shape, centre, rng)
        thin_before = thin_parts(np.asarray(truth[t - 1]))
        rgb, prob, mask, thin_before = (np.ascontiguousarray(a[box]) for a in (frames[t], probs[t], mask, thin_before))
        prob = prob.astype(np.float32)
        return example(inputs(rgb, prob, widened(thin_before, CORRIDOR), colour), prob, mask)


def train(args) -> None:
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    fit = fitting_sequences(args.davis)
    frames = SynthFrames(Path(args.synth)) if args.synth else Frames(args.davis, Path(args.cache), fit)
    channels = 7 if args.synth else 6
    head = StringHead(channels)
    optimiser = torch.optim.Adam(head.parameters(), lr=args.lr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "head.pt"
    step = 0
    if checkpoint.is_file():  # resume
        saved = torch.load(checkpoint, weights_only=False)
        head.load_state_dict(saved["head"])
        optimiser.load_state_dict(saved["optimiser"])
        step, rng = saved["step"], saved["rng"]
    began = time.perf_counter()
    with open(out / "log.jsonl", "a") as log:
        while step < args.steps:
            batch = [frames.sample(rng) for _ in range(args.batch)]
            x, y, weight = (torch.stack(parts) for parts in zip(*batch))
            loss = (F.binary_cross_entropy_with_logits(head(x), y, reduction="none") * weight).sum() / weight.sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            step += 1
            if step % 20 == 0:
                log.write(json.dumps({"step": step, "loss": round(loss.item(), 5),
                                      "seconds": round(time.perf_counter() - began, 1)}) + "\n")
                log.flush()
            if step % 100 == 0 or step == args.steps:
                torch.save({"head": head.state_dict(), "optimiser": optimiser.state_dict(), "step": step, "rng": rng,
                            "fit": fit, "inputs": channels, "synth": args.synth,
                            "command": " ".join(shlex.quote(a) for a in sys.argv), **source_commit()},
                           checkpoint.with_suffix(".tmp"))
                checkpoint.with_suffix(".tmp").replace(checkpoint)
                print(f"step {step} loss {loss.item():.4f}", flush=True)


@torch.no_grad()
def apply_head(head: StringHead, rgb: np.ndarray, prob: np.ndarray, corridor: np.ndarray, within_corridor: bool,
               least: float | None = None, colour: ColourModel | None = None, threshold: float = 0.0,
               reach: int = 3) -> np.ndarray:
    """The base mask with the head's pixels connected to it added (``within_corridor``: only there; ``least``: only
    where the base probability is above it, thin_lines_probe.py's evidence; ``colour``: the seventh input, for a
    head trained with it; ``threshold``: the least logit of a pixel added)."""
    mask = prob > 0.5
    region = widened(mask | corridor, 32)
    ys, xs = np.nonzero(region)
    if len(ys) == 0:
        return mask
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    crop_in = inputs(np.ascontiguousarray(rgb[box]), prob[box], corridor[box], colour)
    candidates = np.zeros_like(mask)
    candidates[box] = (head(crop_in[None])[0, 0] > threshold).numpy()
    candidates &= ~mask
    if within_corridor:
        candidates &= corridor
    if least is not None:
        candidates &= prob > least
    return mask | connected_to(mask, candidates, reach)


def score(args) -> None:
    saved = torch.load(Path(args.out) / "head.pt", weights_only=False)
    channels = saved.get("inputs", 6)  # 6: a first-try head, without the colour input
    head = StringHead(channels)
    head.load_state_dict(saved["head"])
    head.eval()
    dataset = DavisDataset(args.davis, args.split)
    names = [n for n in args.sequences.split(",") if n] or list(SCORED)
    variants = [v for v in args.variants.split(",") if v]
    if set(variants) - set(VARIANTS):
        raise SystemExit(f"unknown variants {sorted(set(variants) - set(VARIANTS))}; choose of {', '.join(VARIANTS)}")
    rows = []
    for name in names:
        data = load_sequence(dataset, name)
        probs = np.load(Path(args.cache) / f"{name}.npy").astype(np.float32)
        start = data.ground_truth[0] > 0
        colour = ColourModel(data.frames[0], thin_parts(start), start) if channels == 7 else None
        row = {"sequence": name}
        for variant in ("base", *variants):
            out, thin_before, began = probs > 0.5, thin_parts(start), time.perf_counter()
            if variant != "base":
                for t in range(1, len(out)):
                    corridor = widened(thin_before, CORRIDOR)
                    out[t] = apply_head(head, data.frames[t], probs[t], corridor, "corridor" in variant,
                                        EVIDENCE if "evidence" in variant else None, colour, args.threshold)
                    thin_before = thin_parts(out[t])
            seconds = time.perf_counter() - began  # the head and its restraints only, not the scoring
            scores = DavisScores(score_sequence(data.ground_truth, out.astype(np.uint8), name)).global_scores()
            row[variant] = {k: round(100 * float(scores[k]), 2) for k in ("J&F-Mean", "J-Mean", "F-Mean")}
            row[variant]["ms_per_frame"] = round(1000 * seconds / len(out), 1)
        rows.append(row)
        print(name, {v: row[v]["J&F-Mean"] for v in ("base", *variants)}, flush=True)
    lines = ["| sequence | base | " + " | ".join(variants) + " |", "|---|---:|" + "---:|" * len(variants)]
    for row in rows:
        base = row["base"]["J&F-Mean"]
        lines.append(f"| {row['sequence']} | {base:.1f} | " + " | ".join(
            f"{row[v]['J&F-Mean']:.1f} ({row[v]['J&F-Mean'] - base:+.1f})" for v in variants) + " |")
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    if args.report:
        report = {"command": command, "split": args.split, "threshold": args.threshold, "head_steps": saved["step"],
                  "head_fit": saved["fit"], "head_inputs": saved.get("inputs", 6), "head_synth": saved.get("synth", ""),
                  "head_command": saved["command"], "head_commit": saved.get("commit"), "machine": machine_label(),
                  **source_commit(), "rows": rows}
        write_json(Path(args.report), report)
        write_text(Path(args.report).with_suffix(".md"), f"Command: {command} ({source_commit()['commit'][:7]}); "
                   f"head: {saved['command']} ({saved['step']} steps)\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("synth", "train", "score"))
    parser.add_argument("--davis", required=True)
    parser.add_argument("--cache", default="", help="the base probabilities (thin_lines_probe.py --cache): the train "
                        "action's without --synth, the score action's")
    parser.add_argument("--out", default="", help="the head's folder (checkpoint, log)")
    parser.add_argument("--synth", default="", help="the folder of sequences with strings drawn before the base model "
                        "ran (the synth action's output; train: train on them, with the colour input)")
    parser.add_argument("--weights", default="runs/hard-lite0/refiner.pt", help="synth: the base model")
    parser.add_argument("--versions", type=int, default=2, help="synth: strings drawn on each sequence, so many ways")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--split", default="train", choices=("train", "val"))
    parser.add_argument("--sequences", default="", help="score: comma-separated (default: the five gated train ones)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="score: comma-separated, of: "
                        + ", ".join(VARIANTS) + " (on val: the one chosen on train)")
    parser.add_argument("--threshold", type=float, default=0.0, help="score: the least logit of a pixel added")
    parser.add_argument("--report", default="", help="score: a JSON (and a Markdown table beside it)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    {"synth": synth, "train": train, "score": score}[args.action](args)


if __name__ == "__main__":
    main()
