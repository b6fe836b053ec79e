"""How good and how dear the flow variant's warps are with DIS tuned for speed: a simulation on DAVIS 2016 *train*.

No network and no gate: every object is "computed" on every third frame (the ground truth is its output there, its
anchor) and "moved" on the two between (a longest gap of 2, the default's pattern). A moved frame takes the last
anchor warped forward, or with ``--lookahead`` that blended with the next anchor warped back, exactly as the session
does (:class:`reusevos.flow.FlowWarper`, :func:`reusevos.flow.blend`). Per DIS setting of the forward and the
backward warp: J and F of the moved frames against the ground truth, and the milliseconds of each DIS call.

    python scripts/warp_sim.py ~/data/DAVIS --out docs/results/flow-gate/warp-sim.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from reusevos.evaluation.metrics import boundary_f_measure, region_similarity
from reusevos.flow import FlowWarper, blend, make_anchor, small_grey
from reusevos.io.davis import DavisDataset, load_sequence
from reusevos.provenance import machine_label, source_commit

# name -> (gradient descent iterations, patch stride, variational refinement iterations, finest scale); medium: the
# preset the session uses
DIS = {"medium": (25, 3, 5, 1), "vr2": (25, 3, 2, 1), "vr1": (25, 3, 1, 1), "vr0": (25, 3, 0, 1),
       "gd12-st4-vr3": (12, 4, 3, 1), "fast": (16, 4, 5, 2)}


def warper(name: str) -> FlowWarper:
    """A :class:`FlowWarper` whose DIS runs with setting ``name`` of :data:`DIS`, timing its calls."""
    gd, stride, vr, scale = DIS[name]
    flow = FlowWarper()
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    dis.setGradientDescentIterations(gd)
    dis.setPatchStride(stride)
    dis.setVariationalRefinementIterations(vr)
    dis.setFinestScale(scale)

    class Timed:
        seconds, calls = 0.0, 0

        def calc(self, *args):
            start = time.perf_counter()
            out = dis.calc(*args)
            Timed.seconds += time.perf_counter() - start
            Timed.calls += 1
            return out

    flow._dis = Timed()
    flow.timing = Timed
    return flow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("davis")
    parser.add_argument("--out", required=True)
    parser.add_argument("--pairs", default="medium:medium,medium:vr2,medium:vr1,medium:vr0,medium:gd12-st4-vr3,"
                        "medium:fast,medium:none",
                        help="comma-separated forward:backward DIS settings (none: no lookahead)")
    parser.add_argument("--sequences", default=None, help="comma-separated train sequences (default: all)")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    pairs = [tuple(p.split(":")) for p in args.pairs.split(",")]
    dataset = DavisDataset(args.davis, split="train",
                           sequences=args.sequences.split(",") if args.sequences else None)
    scores = {p: {"J": [], "F": []} for p in pairs}
    warpers = {name: warper(name) for pair in pairs for name in pair if name != "none"}
    for name in dataset.sequences:
        data = load_sequence(dataset, name)
        truth = [np.asarray(g) for g in data.ground_truth]
        greys = [small_grey(f) for f in data.frames]
        for forward_name, backward_name in pairs:
            forward, backward = warpers[forward_name], warpers.get(backward_name)
            for earlier in range(0, len(truth) - 1, 3):
                later = min(earlier + 3, len(truth) - 1)
                first = make_anchor(earlier, greys[earlier], (truth[earlier] == 1).astype(np.float32))
                last = make_anchor(later, greys[later], (truth[later] == 1).astype(np.float32))
                for t in range(earlier + 1, later):
                    prob = forward.warp(first, greys[t])
                    prob = np.zeros(truth[t].shape, np.float32) if prob is None else prob
                    if backward is not None:
                        back = backward.warp(last, greys[t])
                        if back is not None:
                            prob = blend(prob, back, t, earlier, later)
                    gt, pred = truth[t] == 1, prob > 0.5
                    scores[(forward_name, backward_name)]["J"].append(float(region_similarity(gt, pred)))
                    scores[(forward_name, backward_name)]["F"].append(float(boundary_f_measure(gt, pred)))
        print(name, flush=True)
    summary = {}
    for (forward_name, backward_name), s in scores.items():
        j, f = float(np.mean(s["J"])), float(np.mean(s["F"]))
        summary[f"{forward_name}:{backward_name}"] = {"J&F": (j + f) / 2, "J": j, "F": f, "frames": len(s["J"])}
    timing = {name: 1e3 * w.timing.seconds / max(w.timing.calls, 1) for name, w in warpers.items()}
    report = {"command": f"python scripts/warp_sim.py {args.davis} --out {args.out} --pairs {args.pairs}"
              + (f" --sequences {args.sequences}" if args.sequences else ""),
              "commit": source_commit(), "machine": machine_label(), "dis": {k: DIS[k] for k in warpers},
              "sequences": list(dataset.sequences), "summary": summary, "dis_ms_per_call": timing}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print("| forward : backward | J&F | J | F | backward DIS ms |\n|---|---:|---:|---:|---:|")
    for pair, s in summary.items():
        back = pair.split(":")[1]
        print(f"| {pair} | {100 * s['J&F']:.2f} | {100 * s['J']:.2f} | {100 * s['F']:.2f} | "
              f"{timing.get(back, 0.0):.1f} |")


if __name__ == "__main__":
    main()
