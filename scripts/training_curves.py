"""Training curves of base-model runs: the loss over iterations (from each run's ``log.jsonl``, smoothed) and, where
given, held-out J&F at snapshots (``scripts/holdout_eval.py`` reports). One PNG, one JSON of what was plotted.

    python scripts/training_curves.py runs/r17-tracked --holdout 4000=docs/results/accuracy/holdout-r17-tracked.json \
        --reference docs/results/accuracy/holdout-shipped.json --out docs/results/accuracy/curves.png

``--earlier CURVES.json`` draws, dashed, what an earlier call plotted (its JSON beside its PNG): runs whose folders
are gone can still be compared with new ones.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def smoothed(values: np.ndarray, window: int) -> np.ndarray:
    """Running mean over ``window`` points (shorter at the start)."""
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    starts = np.maximum(np.arange(1, len(values) + 1) - window, 0)
    return (cumulative[1:] - cumulative[starts]) / (np.arange(1, len(values) + 1) - starts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders holding log.jsonl")
    parser.add_argument("--holdout", action="append", default=[], metavar="ITERATION=REPORT",
                        help="a held-out report of the first run's snapshot at ITERATION (repeatable)")
    parser.add_argument("--reference", default=None, help="a held-out report drawn as a horizontal line")
    parser.add_argument("--earlier", action="append", default=[], metavar="CURVES.json",
                        help="the JSON an earlier call wrote: its runs' loss and first run's held-out J&F, dashed")
    parser.add_argument("--window", type=int, default=20, help="log lines averaged for the loss curve")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    data = {"runs": {}, "holdout": {}, "reference": None}
    fig, (loss_ax, jf_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    colours = []  # each run's loss colour, reused for its held-out line
    for run in args.runs:
        lines = [json.loads(line) for line in (Path(run) / "log.jsonl").read_text().splitlines() if line.strip()]
        its = np.array([line["iteration"] for line in lines])
        loss = smoothed(np.array([line["loss"] for line in lines]), args.window)
        colours.append(loss_ax.plot(its, loss, label=Path(run).name)[0].get_color())
        data["runs"][Path(run).name] = {"iterations": its.tolist(), "loss_smoothed": np.round(loss, 5).tolist()}
    for path in args.earlier:
        earlier = json.loads(Path(path).read_text())
        earlier_colours = [loss_ax.plot(run["iterations"], run["loss_smoothed"], linestyle="--",
                                        label=f"{name} (earlier)")[0].get_color()
                           for name, run in earlier["runs"].items()]
        points = sorted((int(k), v) for k, v in earlier["holdout"].items())
        if points:
            jf_ax.plot([p[0] for p in points], [100 * p[1] for p in points], "o--", color=earlier_colours[0],
                       label=f"{next(iter(earlier['runs']))} (earlier)")
        data.setdefault("earlier", {})[path] = earlier
    loss_ax.set(xlabel="iteration", ylabel=f"BCE (mean of {args.window} log lines)", title="training loss")
    loss_ax.legend()
    for item in args.holdout:
        iteration, _, report = item.partition("=")
        data["holdout"][int(iteration)] = json.loads(Path(report).read_text())["global"]["J&F-Mean"]
    if data["holdout"]:
        points = sorted(data["holdout"].items())
        jf_ax.plot([p[0] for p in points], [100 * p[1] for p in points], "o-", color=colours[0],
                   label=Path(args.runs[0]).name)
    if args.reference:
        data["reference"] = json.loads(Path(args.reference).read_text())["global"]["J&F-Mean"]
        jf_ax.axhline(100 * data["reference"], color="grey", linestyle="--", label="reference")
    jf_ax.set(xlabel="iteration", ylabel="J&F (held-out train sequences)", title="held-out J&F")
    jf_ax.legend()
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    Path(args.out).with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
