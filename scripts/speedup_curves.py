"""J&F against the speed-up over the same run's ``full+c2``, one line per variant (flow: per longest gap and with or
without the lookahead), from one or more benchmark JSONs.

Runs on a noisy machine are compared only through ratios inside each run, so several runs can share one figure.

    python scripts/speedup_curves.py docs/results/speed/flow-val-3ae3097.json docs/results/speed/curves-val-607eb48.json \
        docs/results/speed/gap-val-e56dd59.json docs/results/speed/lookahead-val-edb21c6.json \
        docs/results/speed/lookahead-val-f5d3f48.json docs/results/speed/clock-val-c4dde47.json \
        docs/results/speed/vr0-val-7435122.json=vr0 --out docs/results/speed/flow-curves.png

A report given as ``PATH=TAG`` draws its lines apart from the other runs' (the same settings with other code), their
labels ending in the tag: vr0 is the flow without DIS's variational refinement, with its default tau 0.75.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LABELS = {"flow": "flow (ours), longest gap 12", "flow+g2": "flow (ours), longest gap 2 (online)",
          "flow+g2+la": "flow (ours), longest gap 2, lookahead",
          "flow+g2+la+mf": "flow (ours), longest gap 2, lookahead, memory clock in frames",
          "flow+g2+la+mf vr0": "the same, flow without variational refinement (the default)",
          "flow+g3+la": "flow (ours), longest gap 3, lookahead",
          "reuse": "reuse path (paper), both windows 2", "copy": "copy", "motion": "motion (ours)"}


def points(paths: list[str]) -> tuple[dict[str, list[tuple[float, float, float]]], list[float]]:
    """Per variant, (speed-up, J&F, tau) of every setting with a tau below 1; and the reference J&F of each run."""
    lines, references = defaultdict(list), []
    for given in paths:
        path, _, tag = given.partition("=")
        report = json.loads(Path(path).read_text())
        by_key = {s["setting"]: s for s in report["settings"]}
        base = by_key["full+c2"]
        references.append(100 * base["J&F"])
        for s in report["settings"]:
            if s["variant"] != "full":
                gap = re.search(r"\+g\d+", s["setting"])
                line = s["variant"] + (gap.group(0) if gap else "") + ("+la" if s.get("lookahead") else "") \
                    + ("+mf" if s.get("memory_clock") == "frames" else "") + (f" {tag}" if tag else "")
                lines[line].append((s["fps"] / base["fps"], 100 * s["J&F"], s["tau"]))
    return lines, references


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", help="benchmark JSONs, each PATH or PATH=TAG")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    lines, references = points(args.reports)
    figure, axes = plt.subplots(figsize=(6.4, 4.4))
    for variant, values in lines.items():
        values.sort()
        axes.plot([v[0] for v in values], [v[1] for v in values], marker="o", label=LABELS.get(variant, variant))
        for x, y, tau in values:
            axes.annotate(f"{tau:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    for jf in references:
        axes.axhline(jf, color="black", linewidth=0.8, linestyle=":")
    axes.plot([1.0], [references[0]], marker="*", color="black", markersize=10, linestyle="none",
              label="full+c2 (the base model), 1.0x")
    axes.set_xlabel("speed-up over full+c2 in the same run (FPS ratio)")
    axes.set_ylabel("J&F-Mean, DAVIS 2016 val (%)")
    axes.set_title("DAVIS 2016 val, 2 threads, each point labelled with its tau", fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(args.out, dpi=120)
    for variant, values in lines.items():
        print(variant, [(round(x, 2), round(y, 1), t) for x, y, t in sorted(values)])


if __name__ == "__main__":
    main()
