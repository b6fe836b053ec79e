"""How good a start from a box is, on DAVIS 2016: each box method's mask IoU on the first frames, the seconds a start
takes, and the J&F of whole runs started from a method's mask against runs started from the true first mask (the
session's default settings).

Box = the ground truth's bounding box ("tight"), and the same box grown by 10% of its size on each side ("grown
10%"). The methods are ``reusevos.mask_from_box``'s: ``grabcut``, and ``model`` at its shipped settings or, for
choosing them, at every combination of ``--score-scales`` (the first, most damped scale; the stronger ones of
``reusevos.start.BOX_SCORE_SCALES`` follow it) and ``--refits`` (choose on the train split's first frames with
``--no-runs``, then measure the choice on val). Writes a JSON file and prints Markdown tables.

    python scripts/box_start_val.py ~/data/DAVIS --split train --no-runs --score-scales 0.3,0.4,0.5,0.6 \\
        --refits 0,1,2 --out docs/results/box-start/box-start-train.json --threads 1
    python scripts/box_start_val.py ~/data/DAVIS --runs model --out docs/results/box-start/box-start-val.json --threads 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import reusevos
from reusevos.errors import ReusevosError
from reusevos.evaluation.davis_eval import DavisScores, score_sequence
from reusevos.evaluation.metrics import region_similarity
from reusevos.io.davis import DavisDataset, load_sequence
from reusevos.provenance import machine_label, source_commit
from reusevos.start import BOX_REFITS, BOX_SCORE_SCALES, box_of, mask_from_box, mask_from_box_by_model


def boxes(mask: np.ndarray) -> dict[str, tuple[int, int, int, int]]:
    return {"tight": box_of(mask), "grown 10%": box_of(mask, 0.1)}


def methods(model, scales: list[float], refits: list[int]) -> dict:
    """``{name: (frame, box) -> mask}``: GrabCut, and the model's method at each setting ("model" at the shipped
    one)."""
    found = {"grabcut": lambda frame, box: mask_from_box(frame, box, method="grabcut")}
    for scale in scales:
        ladder = (scale, *(s for s in BOX_SCORE_SCALES if s > scale))
        for refit in refits:
            shipped = ladder == BOX_SCORE_SCALES and refit == BOX_REFITS
            found["model" if shipped else f"model s{scale:g} r{refit}"] = (
                lambda frame, box, s=ladder, r=refit: mask_from_box_by_model(frame, box, model, s, refits=r))
    return found


def run(model, data, first: np.ndarray) -> float:
    session = reusevos.Session(model)
    labels = np.stack([session.step(f, first if t == 0 else None).labels for t, f in enumerate(data.frames)])
    scores = DavisScores(score_sequence(data.ground_truth, labels, data.name, data.frame_ids))
    return float(scores.global_scores()["J&F-Mean"])


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("davis")
    parser.add_argument("--split", default="val")
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--score-scales", default=str(BOX_SCORE_SCALES[0]),
                        help="the model's method, its first score scale: comma-separated")
    parser.add_argument("--refits", default=str(BOX_REFITS), help="the model's method: comma-separated")
    parser.add_argument("--runs", default="model", help="methods whose masks start whole runs, comma-separated")
    parser.add_argument("--no-runs", action="store_true", help="only the first frames' IoU and times")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = reusevos.load_model(device="cpu")
    candidates = methods(model, _floats(args.score_scales), [int(v) for v in _floats(args.refits)])
    runs = [] if args.no_runs else args.runs.split(",")
    unknown = [m for m in runs if m not in candidates]
    if unknown:
        parser.error(f"--runs {','.join(unknown)}: not among the methods measured ({', '.join(candidates)})")
    dataset = DavisDataset(args.davis, split=args.split)
    try:  # warm-up: the first call's one-off costs do not count in the times
        mask_from_box(np.full((64, 64, 3), 128, np.uint8), (8, 8, 40, 40), method="model", network=model)
    except ReusevosError:
        pass  # a grey frame holds no object; the network has run
    rows, seconds, started = [], {name: [] for name in candidates}, time.time()
    for name in dataset.sequences:
        data = load_sequence(dataset, name, max_frames=None if runs else 3)
        truth = (data.ground_truth[0] == 1).astype(np.uint8)
        row = {"sequence": name}
        if runs:
            row["J&F, true mask"] = run(model, data, truth)
        for kind, box in boxes(truth).items():
            for method, make in candidates.items():
                clock = time.perf_counter()
                made = make(data.frames[0], box)
                seconds[method].append(time.perf_counter() - clock)
                row[f"IoU, {method}, {kind}"] = float(region_similarity(made > 0, truth > 0))
                if method in runs:
                    row[f"J&F, {method}, {kind}"] = run(model, data, made)
        rows.append(row)
        print(json.dumps(row), flush=True)
    keys = [k for k in rows[0] if k != "sequence"]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    timing = {m: {"mean_s": round(float(np.mean(s)), 3), "max_s": round(float(np.max(s)), 3)}
              for m, s in seconds.items()}
    command = ["python scripts/box_start_val.py", args.davis, "--split", args.split, "--out", args.out, "--threads",
               args.threads, "--score-scales", args.score_scales, "--refits", args.refits]
    command += ["--no-runs"] if args.no_runs else ["--runs", args.runs]
    report = {"command": " ".join(str(c) for c in command), "commit": source_commit(), "machine": machine_label(),
              "threads": args.threads, "split": args.split, "frame_size": list(data.frames.shape[1:3]),
              "settings": "the session's default (reusevos.SessionConfig())", "wall_time_s": round(time.time() - started),
              "seconds_per_start": timing, "mean": mean, "sequences": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print("| method | IoU, tight | IoU, grown 10% | seconds a start (mean, max) |\n|---|---:|---:|---:|")
    for method in candidates:
        print(f"| {method} | {100 * mean[f'IoU, {method}, tight']:.1f} | {100 * mean[f'IoU, {method}, grown 10%']:.1f} "
              f"| {timing[method]['mean_s']:.2f}, {timing[method]['max_s']:.2f} |")
    if len(candidates) <= 2:
        print("\n| sequence | " + " | ".join(keys) + " |\n|---|" + "---:|" * len(keys))
        for r in rows + [{"sequence": "**mean**", **mean}]:
            print(f"| {r['sequence']} | " + " | ".join(f"{100 * r[k]:.1f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
