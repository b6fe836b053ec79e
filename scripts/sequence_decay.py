"""Per-sequence J&F and J-Decay of every setting in a benchmark's per-sequence log (``<out>.partial.jsonl``, which
keeps each object's per-frame J and F), as Markdown, with the scores over all sequences and over all but those
named by ``--without``. Only reads the log; computes nothing but the scores.

    python scripts/sequence_decay.py docs/results/accuracy/flip/val-flip-bf16-ea85c3c.partial.jsonl \
        --without paragliding-launch

J-Decay is DAVIS's (the first quarter's mean J minus the last quarter's, per object), as the report gives it; the
rows are sorted by it, largest first, so the table shows where a setting's decay comes from.
"""

from __future__ import annotations

import argparse
import json

from reusevos.bench.measure import SequenceResult
from reusevos.evaluation.davis_eval import DavisScores, ObjectScores


def load(path: str) -> dict[str, dict[str, list[ObjectScores]]]:
    """``{setting: {sequence: [ObjectScores, ...]}}`` from a benchmark's ``.partial.jsonl`` (a later line for the
    same setting and sequence, a resumed run's, replaces an earlier one)."""
    out: dict[str, dict[str, list[ObjectScores]]] = {}
    with open(path) as lines:
        for line in lines:
            result = SequenceResult.from_dict(json.loads(line)["result"])
            out.setdefault(result.setting, {})[result.sequence] = result.object_scores()  # the report's scores
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log", nargs="+", help="a benchmark's .partial.jsonl (several: one table each)")
    parser.add_argument("--without", default="", help="comma-separated sequences for a last row without them")
    args = parser.parse_args()
    left_out = {s for s in args.without.split(",") if s}

    def cells(objects: list[ObjectScores]) -> str:
        g = DavisScores(objects).global_scores()
        return " | ".join(f"{100 * g[k]:.1f}" for k in ("J&F-Mean", "J-Mean", "F-Mean", "J-Decay", "F-Decay"))

    for path in args.log:
        for setting, sequences in load(path).items():
            print(f"\n{path}: **{setting}**\n")
            print("| sequence | J&F | J | F | J-Decay | F-Decay |\n|---|---:|---:|---:|---:|---:|")
            decay = {name: DavisScores(objs).global_scores()["J-Decay"] for name, objs in sequences.items()}
            for name in sorted(sequences, key=lambda n: -decay[n]):
                print(f"| {name} | {cells(sequences[name])} |")
            print(f"| **all {len(sequences)}** | {cells([o for objs in sequences.values() for o in objs])} |")
            if left_out:
                kept = [o for name, objs in sequences.items() if name not in left_out for o in objs]
                print(f"| all but {', '.join(sorted(left_out))} | {cells(kept)} |")


if __name__ == "__main__":
    main()
