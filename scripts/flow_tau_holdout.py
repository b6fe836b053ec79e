"""How the flow variant's default tau was chosen: a tau sweep on held-out DAVIS 2016 *train* sequences, with the
flow gate fitted without them (``OUT/flow_gate_holdout.json`` of ``reusevos fit-flow-gate``). Never val.

J&F, reuse rate and FPS per sequence and setting (compute window 2 throughout), one process; writes JSON. With
``--max-gaps`` each tau < 1 also runs at each of the flow variant's longest gaps (``SessionConfig.flow_max_gap``),
and with ``--lookahead both`` each of those also with the lookahead (``SessionConfig.lookahead``, ``+la``).

    reusevos fit-flow-gate --davis ~/data/DAVIS --out runs/flow-gate --threads 1
    python scripts/flow_tau_holdout.py ~/data/DAVIS --gate runs/flow-gate/flow_gate_holdout.json \
        --out docs/results/flow-gate/tau-holdout.json --threads 2
    python scripts/flow_tau_holdout.py ~/data/DAVIS --gate docs/results/flow-gate/flow_gate_holdout.json \
        --taus 1,0.92,0.9,0.85,0.8 --max-gaps 12,4,2 --out docs/results/flow-gate/gap-holdout.json --threads 2
    python scripts/flow_tau_holdout.py ~/data/DAVIS --gate docs/results/flow-gate/flow_gate_holdout.json \
        --taus 1,0.92,0.9,0.88,0.85,0.8 --max-gaps 2,3,4 --lookahead both \
        --out docs/results/flow-gate/lookahead-holdout.json --threads 2

With the gates of five disjoint folds (``reusevos fit-flow-gate --holdout-offset 0`` to ``4``) every training
sequence is held out of the gate that runs on it: all 30, fast objects included (the six of offset 0 are slow).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import reusevos
from reusevos.config import FLOW_GAP_LIMIT, SessionConfig
from reusevos.evaluation.davis_eval import DavisScores, score_sequence
from reusevos.io.davis import DavisDataset, load_sequence
from reusevos.io.files import write_json
from reusevos.provenance import machine_label, source_commit

TAUS = (1.0, 0.95, 0.92, 0.9, 0.88, 0.85)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("davis")
    parser.add_argument("--gate", required=True,
                        help="the gate fitted without the held-out sequences, or comma-separated gates of disjoint "
                             "folds (reusevos fit-flow-gate --holdout-offset): each runs its own held-out sequences")
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--taus", default=",".join(f"{t:g}" for t in TAUS), help="comma-separated; 1 first")
    parser.add_argument("--max-gaps", default=str(FLOW_GAP_LIMIT), help="comma-separated longest gaps")
    parser.add_argument("--lookahead", choices=("off", "on", "both"), default="off",
                        help="run tau < 1 without the lookahead, with it, or both")
    parser.add_argument("--memory-clock", choices=("computed", "frames"), default="computed",
                        help="SessionConfig.memory_clock of every setting (names end in +mf for frames)")
    parser.add_argument("--scaled-refits", action="store_true",
                        help="TargetModelConfig.scale_refits below tau 1 (names end in +sr): with the memory clock in "
                             "frames, each refit's CG iterations in proportion to the frames computed since the last")
    parser.add_argument("--refit-every", type=int, default=None,
                        help="an experiment: FRTM's target model refits every N frames (frames clock) or computed "
                             "frames in the settings with tau < 1 (names end in +rN); tau 1 keeps the model's own")
    args = parser.parse_args()
    taus = [float(t) for t in args.taus.split(",")]
    gaps = [int(g) for g in args.max_gaps.split(",")]
    aheads = {"off": [False], "on": [True], "both": [False, True]}[args.lookahead]
    settings = [(tau, gap, ahead) for tau in taus for gap in (gaps if tau < 1.0 else [FLOW_GAP_LIMIT])
                for ahead in (aheads if tau < 1.0 else [False])]
    torch.set_num_threads(args.threads)
    gates: dict[str, str] = {}  # held-out sequence -> the gate fitted without it
    for path in args.gate.split(","):
        for name in json.loads(Path(path).read_text())["info"]["fitted_without"]:
            if name in gates:
                raise SystemExit(f"{name} is held out of two gates ({gates[name]}, {path}): give disjoint folds")
            gates[name] = path
    held = sorted(gates)
    model = reusevos.load_model(device="cpu")
    own_refit = model.config.target.update_every
    dataset = DavisDataset(args.davis, split="train", sequences=held)
    rows = []
    for name in dataset.sequences:
        data = load_sequence(dataset, name)
        for tau, gap, ahead in settings:
            options = SessionConfig("flow", tau, compute_window=2, flow_gate=gates[name], flow_max_gap=gap,
                                    lookahead=ahead, memory_clock=args.memory_clock)
            model.config.target.update_every = args.refit_every if args.refit_every and tau < 1.0 else own_refit
            model.config.target.scale_refits = args.scaled_refits and tau < 1.0
            session = reusevos.Session(model, options)
            start = time.perf_counter()
            results = [r for t, f in enumerate(data.frames) for r in session.push(f, data.start_masks.get(t))]
            results += session.finish()
            seconds = time.perf_counter() - start
            labels = np.stack([r.labels for r in results])
            scores = DavisScores(score_sequence(data.ground_truth, labels, name, data.frame_ids)).global_scores()
            rows.append({"sequence": name, "tau": tau, "max_gap": gap, "lookahead": ahead, "J&F": scores["J&F-Mean"],
                         "J": scores["J-Mean"], "reused": session.reuse_rates[1], "fps": len(data.frames) / seconds})
            print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for tau, gap, ahead in settings:
        mine = [r for r in rows if r["tau"] == tau and r["max_gap"] == gap and r.get("lookahead", False) == ahead]
        frames = sum(len(dataset.frame_paths(r["sequence"])) for r in mine)
        name = f"{tau:g}" + (f"+g{gap}" if gap != FLOW_GAP_LIMIT else "") + ("+la" if ahead else "") \
            + ("+mf" if args.memory_clock == "frames" else "") \
            + (f"+r{args.refit_every}" if args.refit_every and tau < 1.0 else "") \
            + ("+sr" if args.scaled_refits and tau < 1.0 else "")
        summary[name] = {"J&F": float(np.mean([r["J&F"] for r in mine])),
                         "reused": float(np.mean([r["reused"] for r in mine])),
                         "fps": frames / sum(len(dataset.frame_paths(r["sequence"])) / r["fps"] for r in mine)}
    command = (f"python scripts/flow_tau_holdout.py {args.davis} --gate {args.gate} --out {args.out} "
               f"--threads {args.threads} --taus {args.taus} --max-gaps {args.max_gaps} --lookahead {args.lookahead} "
               f"--memory-clock {args.memory_clock}" + (f" --refit-every {args.refit_every}" if args.refit_every else "")
               + (" --scaled-refits" if args.scaled_refits else ""))
    report = {"command": command, "commit": source_commit(), "machine": machine_label(),
              "held_out": held, "gates": gates, "summary": summary, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    base = summary["1" + ("+mf" if args.memory_clock == "frames" else "")]
    print("| tau | J&F | vs tau 1 | reused | FPS ratio |\n|---|---:|---:|---:|---:|")
    for tau, s in summary.items():
        print(f"| {tau} | {100 * s['J&F']:.1f} | {100 * (s['J&F'] - base['J&F']):+.1f} | {100 * s['reused']:.0f}% | "
              f"{s['fps'] / base['fps']:.2f}x |")


if __name__ == "__main__":
    main()
