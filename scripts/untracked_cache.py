"""A training cache without the ``tracked`` anchor kind, derived from one built with ``--tracked-scores``: the control
run of the tracked-scores experiment (docs/accuracy.md) trains on exactly the same features, masks and
ground-truth-updated and stale scores, only without the tracked ones.

The features and masks are hard-linked (no copy, no recomputation); ``scores.npy`` and ``meta.json`` are written anew
with the tracked anchor dropped. The other anchors never depend on it, so this equals a cache built without
``--tracked-scores`` from the same data.

    python scripts/untracked_cache.py runs/r17-tracked/cache runs/r17-control-cache
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a cache folder built with --tracked-scores")
    parser.add_argument("out", help="the new cache folder (must not exist)")
    args = parser.parse_args()
    source, out = Path(args.source), Path(args.out)
    if out.exists():
        parser.error(f"{out} exists")
    dropped = 0
    for sequence in sorted(p for p in source.iterdir() if p.is_dir()):
        target = out / sequence.name
        shutil.copytree(sequence, target, copy_function=os.link)
        meta = json.loads((sequence / "meta.json").read_text())
        if meta.get("anchor_kinds", [])[-1:] == ["tracked"]:
            scores = np.load(sequence / "scores.npy")[:-1]
            meta["anchors"], meta["anchor_kinds"] = meta["anchors"][:-1], meta["anchor_kinds"][:-1]
            for name in ("scores.npy", "meta.json"):  # linked to the source: unlink before writing
                (target / name).unlink()
            np.save(target / "scores.npy", scores)
            (target / "meta.json").write_text(json.dumps(meta, indent=1))
            dropped += 1
    for item in source.iterdir():
        if item.is_file():
            shutil.copy(item, out / item.name)
    print(f"{out}: {dropped} sequences without their tracked anchor")


if __name__ == "__main__":
    main()
