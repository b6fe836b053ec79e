"""Which part of FRTM's reuse path costs the accuracy: the paper's path with its parts switched off one at a time.

    python scripts/reuse_path_parts.py --weights frtm frtm-mobilenet_v2 --json reuse-path-parts.json

On a reused frame the paper's path takes the last computed frame's score and deep state and moves them on:
S_hat = S_prev + Delta and R_hat = translator(R_prev, Delta); the shallow refinement then runs on this frame's
features. Each mode replaces part of that (a probe: it swaps ``FrtmBase.reuse_path`` for the run):

- ``paper``: as shipped;
- ``no-translator``: R_hat = R_prev (S_hat as the paper's);
- ``no-delta``: S_hat = S_prev (R_hat as the paper's);
- ``copy-state``: S_hat = S_prev and R_hat = R_prev (only the shallow refinement sees the new frame).

Runs the reuse variant at ``--tau`` (default 0.3: almost every frame reused, so the reuse path is what is measured)
on a synthetic clip (default: the slow one of tests/test_shipped_model.py) and prints, per weights and mode, the
reuse rate, the mean IoU over frames 1.. and the first frame's, and writes them as JSON with the command.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager

import numpy as np
import torch

import reusevos
from reusevos import base_models
from reusevos.config import SessionConfig
from reusevos.errors import ReusevosError
from reusevos.evaluation.metrics import region_similarity
from reusevos.io.files import write_json
from reusevos.provenance import machine_label, source_commit
from reusevos.synthetic import SyntheticConfig, generate_clip

MODES = ("paper", "no-translator", "no-delta", "copy-state")


@contextmanager
def reuse_path_as(mode: str):
    """FRTM's reuse path with ``mode``'s parts switched off, inside the block."""
    shipped = base_models.FrtmBase.reuse_path

    def reuse_path(self, tracks, features, timed):
        score_prev = torch.cat([t.obj.score_prev for t in tracks])
        state_prev = torch.cat([t.obj.state_prev for t in tracks])
        delta = self.network.delta(torch.cat([t.change for t in tracks]), score_prev.shape[-2:])
        states = state_prev if mode in ("no-translator", "copy-state") else self.network.translator(state_prev, delta)
        scores = score_prev if mode in ("no-delta", "copy-state") else score_prev + delta
        for row, track in enumerate(tracks):
            track.score, track.state = scores[row:row + 1], states[row:row + 1]

    base_models.FrtmBase.reuse_path = shipped if mode == "paper" else reuse_path
    try:
        yield
    finally:
        base_models.FrtmBase.reuse_path = shipped


def run(model, mode: str, tau: float, frames, masks) -> dict:
    with reuse_path_as(mode):
        session = reusevos.Session(model, SessionConfig("reuse", tau))
        labels = [session.step(f, masks[0] if t == 0 else None).labels for t, f in enumerate(frames)]
    ious = [float(region_similarity(m == 1, lab == 1)) for lab, m in zip(labels[1:], masks[1:])]
    return {"mode": mode, "reuse_rate": round(session.reuse_rates[1], 4), "mean_iou": round(float(np.mean(ious)), 4),
            "first_iou": round(ious[0], 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", nargs="+", default=["frtm"], help="weights files or shipped names")
    parser.add_argument("--tau", type=float, default=0.3)
    parser.add_argument("--speed", type=float, default=1.0, help="the synthetic clip's speed, px/frame")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", required=True, metavar="OUT.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clip = SyntheticConfig(size=(240, 432), num_frames=24, num_objects=1, speed=args.speed, seed=args.seed,
                           cutout_fraction=0.0)
    frames, masks = map(list, zip(*generate_clip(clip)))
    rows = []
    try:
        for weights in args.weights:
            model = reusevos.load_model(weights, device="cpu")
            for mode in MODES:
                rows.append({"weights": weights, **run(model, mode, args.tau, frames, masks)})
                r = rows[-1]
                print(f"{weights:<22}{mode:<15}reused {r['reuse_rate']:.2f}  mean IoU {r['mean_iou']:.3f}  "
                      f"first reused frame {r['first_iou']:.3f}", flush=True)
    except ReusevosError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_json(args.json, {"command": " ".join(sys.argv), "commit": source_commit(), "machine": machine_label(),
                           "tau": args.tau, "clip": {"speed": args.speed, "seed": args.seed}, "rows": rows})
    print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
