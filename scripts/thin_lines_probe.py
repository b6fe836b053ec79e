"""A probe, not a feature: can a hand-made line detector at full resolution add the strings (kite lines, a glider's
lines) that the refinement network misses, without adding background? Scored on DAVIS 2016 *train* sequences only.

The base model runs once per sequence (the shipped settings: variant full, compute window 2, search margin 2) and its
probabilities are cached (``--cache``). Each variant then post-processes the thresholded mask of every frame:

- ``strength``: a symmetric line test on the frame (Gaussian blur 0.8 px): at 8 directions and offsets 2 and 3 px,
  how much darker (or brighter) a pixel is than *both* its neighbours across the line, the largest over the colour
  channels. A step edge fails it (one side only), lines up to about 4 px wide pass.
- ``connected``: every pixel above the threshold connected (8-neighbours) to the mask, or within 3 px of it, is added.
- ``corridor``: the same, but only within 4 px of the previous frame's thin parts (parts narrower than 5 px; on the
  first frame after the start, those of the start mask), so strings are followed from frame to frame rather than
  found anew.
- ``+colour``: candidates must be likelier under a colour histogram (8 bins a channel) of the start mask's thin parts
  than under one of the background around them.
- ``+budget``: at most as many added pixels as the start mask's thin share of the present mask (the strongest first).
- ``carried`` (no line test; session 28): the last output's thin parts, moved onto the frame with the optical flow
  (DIS) of the nearest pixel of the object's thick parts, added where connected to the mask: the strings as a shape
  carried along, for lines too faint for any test.
- ``+evidence``: candidates must have a base-model probability above 0.001 (the network saw *something* there: on
  kite-walk's frame 40 with the hard-fold refiner its thin parts' median probability is 5e-4, that of the background
  within 10 px of the object 1e-6 or less).

Which sequences: by default those whose start mask has at least ``--min-thin`` (0.025) of its pixels in parts
narrower than 5 px, the only ones a rule gated on the start mask would change. ``--sequences`` names others (to see
what the detector does where no such gate is).

    python scripts/thin_lines_probe.py --weights runs/hard-lite0/refiner.pt --davis ~/data/DAVIS \
        --cache runs/thin-probe-cache --out docs/results/accuracy/thin-lines/probe-hardfold.json

``--split val --variants NAME`` is for the one measurement on val of a variant chosen on train (with the shipped
weights, ``--weights frtm``); sequences whose start mask is below ``--min-thin`` are left out, as the gate leaves them
unchanged.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

import reusevos
from reusevos.bench.settings import parse_setting
from reusevos.evaluation.davis_eval import DavisScores, score_sequence
from reusevos.io.davis import DavisDataset, SequenceData, load_sequence
from reusevos.io.files import write_atomically, write_json, write_text
from reusevos.provenance import machine_label, source_commit
from thin_structure_ceiling import without_thin_parts  # scripts/, beside this one

SETTING = "full+c2+search2"  # the base model as shipped
DIRECTIONS = ((1, 0), (0, 1), (1, 1), (1, -1), (2, 1), (1, 2), (2, -1), (1, -2))
THIN_WIDTH = 5  # parts narrower than this are "thin" (scripts/thin_structure_ceiling.py's measure)
VARIANTS = {  # name -> (threshold, corridor, colour, budget, least probability)
    "connected@15": (15, None, False, False, None),
    "corridor@12": (12, 4, False, False, None),
    "corridor@12+colour": (12, 4, True, False, None),
    "corridor@12+colour+budget": (12, 4, True, True, None),
    "corridor@12+evidence": (12, 4, False, False, 1e-3),
    "corridor@12+colour+evidence": (12, 4, True, False, 1e-3),
    "carried": None,  # no line test: the previous output's thin parts moved with the object (carried_thin)
}


def widened(mask: np.ndarray, by: int) -> np.ndarray:
    """The boolean ``mask`` grown by ``by`` pixels (a square dilation)."""
    return cv2.dilate(mask.astype(np.uint8), np.ones((2 * by + 1,) * 2, np.uint8)) > 0


def thin_parts(mask: np.ndarray) -> np.ndarray:
    """The pixels of the boolean ``mask`` in parts narrower than THIN_WIDTH (what an opening with a disc removes)."""
    return mask & ~(without_thin_parts(mask[None].astype(np.uint8), THIN_WIDTH)[0] > 0)


def line_strength(rgb: np.ndarray) -> np.ndarray:
    """``(H, W)`` int16: how much a pixel is darker or brighter than both neighbours across a line (module doc)."""
    image = cv2.GaussianBlur(rgb, (0, 0), 0.8).astype(np.int16)
    h, w = image.shape[:2]
    pad = 3
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    best = np.zeros((h, w), np.int16)
    for dx, dy in DIRECTIONS:
        norm = np.hypot(dx, dy)
        for offset in (2, 3):
            sx, sy = int(round(dx * offset / norm)), int(round(dy * offset / norm))
            a = padded[pad + sy:pad + sy + h, pad + sx:pad + sx + w]
            b = padded[pad - sy:pad - sy + h, pad - sx:pad - sx + w]
            np.maximum(best, np.maximum(np.minimum(a, b) - image, image - np.maximum(a, b)).max(axis=2), out=best)
    return best


class ColourModel:
    """Log-likelihood ratio of a colour under the start mask's thin parts against the background around them."""

    BINS = 8

    def __init__(self, rgb: np.ndarray, thin: np.ndarray, mask: np.ndarray, ring: int = 6):
        around = widened(thin, ring) & ~mask
        index = self.index(rgb)
        ours = np.bincount(index[thin], minlength=self.BINS ** 3) + 0.5
        theirs = np.bincount(index[around], minlength=self.BINS ** 3) + 0.5
        self.ratio = np.log(ours / ours.sum()) - np.log(theirs / theirs.sum())

    def index(self, rgb: np.ndarray) -> np.ndarray:
        q = (rgb // (256 // self.BINS)).astype(np.int32)
        return (q[..., 0] * self.BINS + q[..., 1]) * self.BINS + q[..., 2]

    def log_ratio(self, rgb: np.ndarray) -> np.ndarray:
        return self.ratio[self.index(rgb)]

    def likelier_ours(self, rgb: np.ndarray) -> np.ndarray:
        return self.log_ratio(rgb) > 0


def connected_to(mask: np.ndarray, candidates: np.ndarray, reach: int = 3) -> np.ndarray:
    """The ``candidates`` (boolean, outside ``mask``) connected (8-neighbours) to ``mask`` or within ``reach`` px of
    it: a component of them counts when one of its pixels is that close, or when it joins the mask."""
    _, labels = cv2.connectedComponents((candidates | mask).astype(np.uint8), connectivity=8)
    touching = np.unique(labels[widened(mask, reach) & candidates])
    return np.isin(labels, touching[touching > 0]) & candidates


def extended(mask: np.ndarray, rgb: np.ndarray, threshold: float, corridor_of: np.ndarray | None = None,
             colour: ColourModel | None = None, budget: float | None = None, evidence: np.ndarray | None = None,
             reach: int = 3) -> np.ndarray:
    """``mask`` plus the line pixels above ``threshold`` connected to it (within ``reach`` px); only inside
    ``corridor_of`` where given; only colours ``colour`` favours; only where ``evidence`` (boolean) holds; at most
    ``budget`` times the mask's pixels."""
    strength = line_strength(rgb)
    candidates = (strength > threshold) & ~mask
    if corridor_of is not None:
        candidates &= corridor_of
    if colour is not None:
        candidates &= colour.likelier_ours(rgb)
    if evidence is not None:
        candidates &= evidence
    added = connected_to(mask, candidates, reach)
    if budget is not None and added.sum() > budget * mask.sum():
        added &= strength > np.sort(strength[added])[::-1][int(budget * mask.sum())]
    return mask | added


def carried_thin(flow: cv2.DISOpticalFlow, grey_before: np.ndarray, grey: np.ndarray, thin_before: np.ndarray,
                 mask: np.ndarray) -> np.ndarray:
    """The thin parts of the last output (``thin_before``, boolean) moved onto this frame with the object: each pixel
    takes the optical flow (DIS, this frame to the last) of the nearest pixel of ``mask``'s thick parts, since the
    flow on a line a pixel wide is the background's, not the line's."""
    thick = without_thin_parts(mask[None].astype(np.uint8), THIN_WIDTH)[0] > 0
    if not thick.any() or not thin_before.any():
        return np.zeros_like(mask)
    motion = flow.calc(grey, grey_before, None)  # (H, W, 2): where each pixel of this frame was on the last
    _, nearest = cv2.distanceTransformWithLabels((~thick).astype(np.uint8), cv2.DIST_L2, 5,
                                                 labelType=cv2.DIST_LABEL_PIXEL)
    ys, xs = np.nonzero(thick)  # row-major, as the labels count the thick pixels
    moved = motion[ys, xs][nearest - 1]
    gy, gx = np.mgrid[:mask.shape[0], :mask.shape[1]].astype(np.float32)
    carried = cv2.remap(thin_before.astype(np.float32), gx + moved[..., 0], gy + moved[..., 1], cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return carried > 0.5


def carried_masks(probs: np.ndarray, frames: list[np.ndarray], start: np.ndarray) -> np.ndarray:
    """The ``carried`` variant: each frame's mask with the last output's thin parts carried onto it (carried_thin)
    where they touch it."""
    masks, flow = probs > 0.5, cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    out, thin_before = masks.copy(), thin_parts(start)
    greys = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    for t in range(1, len(masks)):
        carried = carried_thin(flow, greys[t - 1], greys[t], thin_before, masks[t])
        out[t] = masks[t] | connected_to(masks[t], carried & ~masks[t])
        thin_before = thin_parts(out[t])
    return out


def run_variant(name: str, probs: np.ndarray, frames: list[np.ndarray], start: np.ndarray) -> np.ndarray:
    """The masks (``probs`` > 0.5) of every frame after the start, each extended as the variant ``name`` says."""
    if name == "carried":
        return carried_masks(probs, frames, start)
    threshold, corridor, use_colour, use_budget, least = VARIANTS[name]
    masks = probs > 0.5
    start_thin = thin_parts(start)
    share = start_thin.sum() / max(start.sum(), 1)
    colour = ColourModel(frames[0], start_thin, start) if use_colour else None
    out, previous_thin = masks.copy(), start_thin
    for t in range(1, len(masks)):
        around = None if corridor is None else widened(previous_thin, corridor)
        out[t] = extended(masks[t], frames[t], threshold, around, colour, share if use_budget else None,
                          None if least is None else probs[t] > least)
        previous_thin = thin_parts(out[t])
    return out


def probabilities(model, data: SequenceData, cache: Path) -> np.ndarray:
    """The base model's probabilities of the sequence's object ``(T, H, W)`` float16, cached."""
    path = cache / f"{data.name}.npy"
    if path.is_file():
        return np.load(path)
    session = reusevos.Session(model, parse_setting(SETTING).options())
    probs = []
    for t, frame in enumerate(data.frames):
        result = session.step(frame, data.start_masks.get(t), return_probabilities=True)
        probs.append((result.probabilities or {}).get(1, np.zeros(frame.shape[:2], np.float32)))
    probs = np.stack(probs).astype(np.float16)
    cache.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda tmp: np.save(tmp, probs))  # whole or absent: a stopped run computes it again
    return probs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--davis", required=True)
    parser.add_argument("--cache", required=True, help="folder for the base model's probabilities (one per weights file: not checked)")
    parser.add_argument("--out", required=True, help="JSON; a Markdown table is written beside it")
    parser.add_argument("--sequences", default="", help="comma-separated train sequences (default: by --min-thin)")
    parser.add_argument("--min-thin", type=float, default=0.025)
    parser.add_argument("--split", default="train", choices=("train", "val"))
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of: " + ", ".join(VARIANTS))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    variants = [v for v in args.variants.split(",") if v]
    if set(variants) - set(VARIANTS):
        raise SystemExit(f"unknown variants {sorted(set(variants) - set(VARIANTS))}; choose of {', '.join(VARIANTS)}")
    dataset = DavisDataset(args.davis, args.split)
    starts = {name: next(iter(dataset.start_masks(name).values())) > 0 for name in dataset.sequences}
    shares = {name: thin_parts(m).sum() / m.sum() for name, m in starts.items()}
    names = [s for s in args.sequences.split(",") if s] or [n for n in dataset.sequences if shares[n] >= args.min_thin]
    unknown = sorted(set(names) - set(dataset.sequences))
    if unknown:
        raise SystemExit(f"not DAVIS 2016 {args.split} sequences: {', '.join(unknown)}")
    model = reusevos.load_model(args.weights)
    rows = []
    for name in names:
        data = load_sequence(dataset, name)
        probs = probabilities(model, data, Path(args.cache))
        row = {"sequence": name, "thin_share": round(float(shares[name]), 4)}
        for variant in ("base", *variants):
            began = time.perf_counter()
            out = probs > 0.5 if variant == "base" else run_variant(variant, probs, data.frames, starts[name])
            seconds = time.perf_counter() - began  # the post-processing only, not the scoring
            scores = DavisScores(score_sequence(data.ground_truth, out.astype(np.uint8), name)).global_scores()
            row[variant] = {k: round(100 * float(scores[k]), 2) for k in ("J&F-Mean", "J-Mean", "F-Mean")}
            row[variant]["ms_per_frame"] = round(1000 * seconds / len(out), 1)
        rows.append(row)
        print(name, {v: row[v]["J&F-Mean"] for v in ("base", *variants)}, flush=True)
    header = "| sequence | thin share of the start mask | base | " + " | ".join(variants) + " |"
    lines = [header, "|---|---:|---:|" + "---:|" * len(variants)]
    for row in rows:
        base = row["base"]["J&F-Mean"]
        cells = [f"{row[v]['J&F-Mean']:.1f} ({row[v]['J&F-Mean'] - base:+.1f})" for v in variants]
        lines.append(f"| {row['sequence']} | {row['thin_share']:.3f} | {base:.1f} | " + " | ".join(cells) + " |")
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    report = {"command": command, "weights": args.weights, "split": args.split, "setting": SETTING,
              "variants": {v: VARIANTS[v] for v in variants},
              "machine": machine_label(), **source_commit(), "rows": rows}
    write_json(Path(args.out), report)
    table = "\n".join(lines)
    write_text(Path(args.out).with_suffix(".md"), f"Command: {command} ({source_commit()['commit'][:7]})\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
