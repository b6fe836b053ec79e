"""How an object's mask goes wrong over a video: the share of the object it misses, and the share it adds beside the
object or far from it, per quarter of the video.

J-Decay says that J falls from the first quarter to the last, not how. A mask that covers less and less of a growing
object (missed) asks for other remedies than one that spreads onto look-alikes next to the object (added near) or
jumps to a distractor elsewhere (added far). Per object and frame, with G its ground truth and P its mask:
missed = |G \\ P| / |G|, near = |P \\ G within `--near` pixels of G| / |G|, far = the rest of P \\ G over |G|
(frames where the object is absent from the ground truth are left out). Runs the base model (full, compute window
2 unless told) with the given weights on DAVIS sequences.

    python scripts/coverage_drift.py --davis ~/data/DAVIS --split val \\
        --sequences horsejump-high,car-roundabout,bmx-trees,camel,cows,libby,breakdance --out drift.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

import numpy as np
import torch
import torch.nn.functional as F

import reusevos
from reusevos.config import SessionConfig
from reusevos.io.davis import DavisDataset, load_sequence
from reusevos.io.files import write_text
from reusevos.provenance import machine_label, source_commit

QUARTERS = 4


def near_region(truth: np.ndarray, pixels: int) -> np.ndarray:
    """The pixels within ``pixels`` (a square neighbourhood) of ``truth`` ``(H, W)`` bool, itself included."""
    k = 2 * pixels + 1  # a square is a row then a column: two thin poolings instead of one wide one
    grown = F.max_pool2d(torch.from_numpy(truth).float()[None, None], (1, k), stride=1, padding=(0, pixels))
    grown = F.max_pool2d(grown, (k, 1), stride=1, padding=(pixels, 0))
    return grown[0, 0].numpy() > 0


def frame_errors(truth: np.ndarray, mask: np.ndarray, near: int) -> tuple[float, float, float] | None:
    """(missed, added near, added far) as shares of the object's area; None where the object is absent."""
    area = int(truth.sum())
    if area == 0:
        return None
    extra = mask & ~truth
    close = near_region(truth, near)
    return (float((truth & ~mask).sum()) / area, float((extra & close).sum()) / area,
            float((extra & ~close).sum()) / area)


def by_quarter(errors: list[tuple[int, tuple[float, float, float]]], frames: int) -> list[list[float]]:
    """The mean (missed, near, far) over the frames of each quarter of the video (frame 0, the start, left out)."""
    out = []
    for q in range(QUARTERS):
        low, high = 1 + q * (frames - 1) / QUARTERS, 1 + (q + 1) * (frames - 1) / QUARTERS
        rows = [e for t, e in errors if low <= t < high]
        out.append([round(float(np.mean([r[k] for r in rows])), 4) if rows else None for k in range(3)])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--davis", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--sequences", required=True, help="comma-separated")
    parser.add_argument("--weights", default=None, help="a checkpoint (default: the shipped one)")
    parser.add_argument("--compute-window", type=int, default=2)
    parser.add_argument("--search-margin", type=int, default=0, help="SessionConfig.search_margin")
    parser.add_argument("--near", type=int, default=32, help="pixels around the object that count as beside it")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = reusevos.load_model(args.weights) if args.weights else reusevos.load_model()
    dataset = DavisDataset(args.davis, split=args.split, sequences=args.sequences.split(","))
    options = SessionConfig("full", 1.0, compute_window=args.compute_window, search_margin=args.search_margin)
    results = {}
    print(f"{'sequence':20s} {'object':>6s}  missed / added near / added far, % of the object, by quarter")
    for name in dataset.sequences:
        data = load_sequence(dataset, name)
        session = reusevos.Session(model, options)
        with torch.no_grad():
            labels = [session.step(f, data.start_masks.get(t)).labels for t, f in enumerate(data.frames)]
        ids = sorted(int(i) for i in np.unique(np.stack(data.ground_truth)) if i)
        for obj in ids:
            errors = [(t, e) for t, (gt, lab) in enumerate(zip(data.ground_truth, labels))
                      if (e := frame_errors(gt == obj, lab == obj, args.near)) is not None]
            quarters = by_quarter(errors, len(labels))
            results[f"{name}/{obj}"] = quarters
            cells = "  ".join("/".join("-" if v is None else f"{100 * v:.0f}" for v in q) for q in quarters)
            print(f"{name:20s} {obj:6d}  {cells}", flush=True)
    report = {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "commit": source_commit(),
              "machine": machine_label(), "split": args.split, "session": "full, compute window "
              f"{args.compute_window}, search margin {args.search_margin}", "near_pixels": args.near,
              "columns": "per quarter of the video: [missed, added near, added far] as shares of the object's area",
              "objects": results}
    write_text(args.out, json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
