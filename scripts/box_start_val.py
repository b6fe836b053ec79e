"""How good a start from a box is, on DAVIS 2016 val: the GrabCut mask's IoU on each first frame, and the J&F of
whole runs started from it against runs started from the true first mask (the session's default settings).

Box = the ground truth's bounding box, and the same box grown by 10% of its size on each side. Writes a JSON
file and prints a Markdown table. Measurement only: nothing here chooses a setting.

    python scripts/box_start_val.py ~/data/DAVIS --out docs/results/box-start/box-start-val.json --threads 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import reusevos
from reusevos.evaluation.davis_eval import DavisScores, score_sequence
from reusevos.evaluation.metrics import region_similarity
from reusevos.io.davis import DavisDataset, load_sequence
from reusevos.provenance import machine_label, source_commit


def boxes(mask: np.ndarray) -> dict[str, tuple[int, int, int, int]]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    x0, y0, x1, y1 = int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
    gx, gy = round(0.1 * (x1 - x0)), round(0.1 * (y1 - y0))
    height, width = mask.shape
    return {"tight": (x0, y0, x1, y1),
            "grown 10%": (max(0, x0 - gx), max(0, y0 - gy), min(width, x1 + gx), min(height, y1 + gy))}


def run(model, data, first: np.ndarray) -> float:
    session = reusevos.Session(model)
    labels = np.stack([session.step(f, first if t == 0 else None).labels for t, f in enumerate(data.frames)])
    scores = DavisScores(score_sequence(data.ground_truth, labels, data.name, data.frame_ids))
    return float(scores.global_scores()["J&F-Mean"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("davis")
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-runs", action="store_true", help="only the first frames' IoU")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = reusevos.load_model(device="cpu")
    dataset = DavisDataset(args.davis, split="val")
    rows, started = [], time.time()
    for name in dataset.sequences:
        data = load_sequence(dataset, name)
        truth = (data.ground_truth[0] == 1).astype(np.uint8)
        row = {"sequence": name}
        if not args.no_runs:
            row["J&F, true mask"] = run(model, data, truth)
        for kind, box in boxes(truth).items():
            made = reusevos.mask_from_box(data.frames[0], box)
            row[f"IoU, {kind}"] = float(region_similarity(made > 0, truth > 0))
            if not args.no_runs:
                row[f"J&F, {kind}"] = run(model, data, made)
        rows.append(row)
        print(json.dumps(row), flush=True)
    keys = [k for k in rows[0] if k != "sequence"]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    report = {"command": "python scripts/box_start_val.py " + " ".join(
                  f"{a}" for a in [args.davis, "--out", args.out, "--threads", args.threads]
                  + (["--no-runs"] if args.no_runs else [])),
              "commit": source_commit(), "machine": machine_label(), "threads": args.threads,
              "settings": "the session's default (reusevos.SessionConfig())", "wall_time_s": round(time.time() - started),
              "mean": mean, "sequences": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print("| sequence | " + " | ".join(keys) + " |\n|---|" + "---:|" * len(keys))
    for r in rows + [{"sequence": "**mean**", **mean}]:
        print(f"| {r['sequence']} | " + " | ".join(f"{100 * r[k]:.1f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
