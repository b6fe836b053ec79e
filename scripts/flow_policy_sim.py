"""The flow variant's decisions simulated with a perfect base model: on held-out DAVIS 2016 *train* sequences,
each frame either takes its object's anchor warped by the flow gate's rule (P >= tau and the gap at most the
longest gap) or is "computed", which here means it takes the ground truth and becomes the anchor. No network runs,
so a grid of settings costs minutes; what it measures is the reuse rate and the J&F the warps lose against the
truth, the part of the flow variant's loss that comes from warping (the end-to-end loss against the real base
model is measured by ``scripts/flow_tau_holdout.py``). Never val.

    python scripts/flow_policy_sim.py ~/data/DAVIS --gate docs/results/flow-gate/flow_gate_holdout.json \\
        --taus 0.92,0.9,0.85,0.8 --max-gaps 12,6,4,3,2 --out docs/results/flow-gate/policy-sim-iou.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from reusevos.evaluation.metrics import boundary_f_measure, region_similarity
from reusevos.flow import FlowWarper, load_flow_gate, make_anchor, small_grey
from reusevos.io.davis import DavisDataset, load_sequence
from reusevos.provenance import machine_label, source_commit

C = 0.13  # a moved frame's cost over a computed one's on DAVIS val (docs/speed.md), for the speed-up column


def simulate(frames: list[np.ndarray], truth: np.ndarray, gate, tau: float, max_gap: int) -> tuple[int, list[float]]:
    """Frames reused and each frame's (J + F) / 2 after frame 0, one object (the truth's non-zero labels)."""
    greys = [small_grey(f) for f in frames]
    warper = FlowWarper()
    anchor = make_anchor(0, greys[0], truth[0].astype(np.float32))
    reused, scores = 0, []
    for t in range(1, len(frames)):
        proposal = None
        if t - anchor.frame <= max_gap:
            proposal = warper.propose(anchor, greys[t], t)
        if proposal is not None and gate(proposal.features) >= tau:
            warped = proposal.prob > 0.5
            j, f = float(region_similarity(truth[t], warped)), float(boundary_f_measure(truth[t], warped))
            scores.append((j + f) / 2)
            reused += 1
        else:
            scores.append(1.0)
            anchor = make_anchor(t, greys[t], truth[t].astype(np.float32))
    return reused, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("davis")
    parser.add_argument("--gate", required=True, help="a gate fitted without the held-out sequences")
    parser.add_argument("--taus", default="0.92,0.9,0.85,0.8")
    parser.add_argument("--max-gaps", default="12,6,4,3,2")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    gate = load_flow_gate(args.gate)
    held = gate.info["fitted_without"]
    dataset = DavisDataset(args.davis, split="train", sequences=held)
    data = {name: load_sequence(dataset, name) for name in dataset.sequences}
    rows = []
    for tau in (float(t) for t in args.taus.split(",")):
        for gap in (int(g) for g in args.max_gaps.split(",")):
            reused, scores, per = 0, [], {}
            for name, seq in data.items():
                n, s = simulate(list(seq.frames), seq.ground_truth > 0, gate, tau, gap)
                reused, scores, per[name] = reused + n, scores + s, round(1 - float(np.mean(s)), 4)
            r = reused / len(scores)
            rows.append({"tau": tau, "max_gap": gap, "reused": round(r, 4),
                         "jf_lost": round(1 - float(np.mean(scores)), 4),
                         "speedup_at_c": round(1 / ((1 - r) + C * r), 2), "per_sequence_lost": per})
            print(json.dumps(rows[-1]), flush=True)
    command = (f"python scripts/flow_policy_sim.py {args.davis} --gate {args.gate} --taus {args.taus} "
               f"--max-gaps {args.max_gaps} --out {args.out}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"command": command, "commit": source_commit(), "machine": machine_label(),
                                          "held_out": held, "c": C, "rows": rows}, indent=1) + "\n")
    print("| tau | longest gap | reused | J&F lost | speed-up at c = 0.13 |\n|---|---:|---:|---:|---:|")
    for row in sorted(rows, key=lambda r: r["reused"]):
        print(f"| {row['tau']:g} | {row['max_gap']} | {100 * row['reused']:.1f}% | {100 * row['jf_lost']:.2f} | "
              f"{row['speedup_at_c']:.2f}x |")


if __name__ == "__main__":
    main()
