"""Per-sequence J&F and reuse rate at one tau, from a `reusevos ablation` (or benchmark) report, as Markdown.

    python scripts/ablation_per_sequence.py docs/ablation/ablation.json --tau 0.7 > docs/ablation/per-sequence-tau0.7.md

One row per sequence: its frames, the J&F at tau = 1 (every frame computed), and for each variant at the
given tau its J&F, the change against tau = 1 and the share of frames it reused; a last row over all
sequences (J&F over all objects, as the report's). Only reads the report; computes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", help="ablation.json or a benchmark JSON")
    parser.add_argument("--tau", type=float, default=0.7)
    parser.add_argument("--variants", default="reuse,copy,oracle,flow", help="comma-separated, in column order")
    args = parser.parse_args()
    report = json.loads(open(args.report).read())
    def setting(variant: str, tau: float) -> dict | None:
        """The report's one setting of ``variant`` at ``tau``, whatever its name's suffixes (+c2, +g2+la+mf)."""
        hits = [s for s in report["settings"] if s["variant"] == variant and (variant == "full" or s["tau"] == tau)]
        if len(hits) > 1:
            sys.exit(f"{len(hits)} settings of {variant} at tau {tau:g}: {', '.join(s['setting'] for s in hits)}")
        return hits[0] if hits else None

    base = setting("reuse", 1.0) or setting("full", 1.0)
    if base is None:
        sys.exit("the report has neither reuse at tau 1 nor full: nothing to compare against")
    variants = [v for v in args.variants.split(",") if setting(v, args.tau) is not None]
    if not variants:
        sys.exit(f"the report has no setting at tau {args.tau:g} for {args.variants}")
    columns = [setting(v, args.tau) for v in variants]

    header = ["sequence", "frames", "J&F, tau 1"]
    for v in variants:
        header += [f"{v}: J&F", "change", "reused"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]

    def cells(name: str, frames: int, jf_base: float, per_variant: list[tuple[float, float]]) -> str:
        row = [name, str(frames), f"{100 * jf_base:.1f}"]
        for jf, reused in per_variant:
            row += [f"{100 * jf:.1f}", f"{100 * (jf - jf_base):+.1f}", f"{100 * reused:.0f}%"]
        return "| " + " | ".join(row) + " |"

    per_sequence = {s["sequence"]: s for s in base["per_sequence"]}
    for sequence, entry in per_sequence.items():
        others = [{q["sequence"]: q for q in c["per_sequence"]}[sequence] for c in columns]
        lines.append(cells(sequence, entry["frames"], entry["J&F"], [(q["J&F"], q["reuse_rate"]) for q in others]))
    lines.append(cells("**all**", base["frames"], base["J&F"], [(c["J&F"], c["reuse_rate"]) for c in columns]))
    print(f"Per sequence at tau = {args.tau:g}, from {args.report} ({report.get('command', '')}).\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
