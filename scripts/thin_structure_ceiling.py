"""What a segmenter that is perfect except for thin structures would score: each ground-truth mask opened with a
disc of ``--width`` pixels (so every part narrower than that, a paraglider's lines, a bicycle's spokes, is removed)
and scored against the ground truth itself, per sequence and over the split, as Markdown. A bound, not a model: a
network whose output cannot draw structures that thin scores at most about this on them. Reads only the ground truth.

    python scripts/thin_structure_ceiling.py --davis ~/data/DAVIS --split val --width 5 --width 3
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from reusevos.evaluation.davis_eval import DavisScores, score_sequence
from reusevos.io.davis import DavisDataset, load_sequence


def without_thin_parts(labels: np.ndarray, width: int) -> np.ndarray:
    """A ``(T, H, W)`` label map with each object's parts narrower than ``width`` pixels removed (an opening with a
    disc, per object, so objects never grow into each other)."""
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (width, width))
    out = np.zeros_like(labels)
    for obj_id in np.unique(labels):
        if obj_id == 0 or obj_id == 255:  # background, DAVIS's void label
            continue
        for t, frame in enumerate(labels):
            kept = cv2.morphologyEx((frame == obj_id).astype(np.uint8), cv2.MORPH_OPEN, disc).astype(bool)
            out[t][kept] = obj_id
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--davis", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--width", type=int, action="append", help="the disc's diameter in pixels (repeatable)")
    args = parser.parse_args()
    widths = args.width or [5]
    dataset = DavisDataset(args.davis, split=args.split)
    scored = {w: {} for w in widths}
    for name in dataset.sequences:
        data = load_sequence(dataset, name)
        for w in widths:
            scored[w][name] = score_sequence(data.ground_truth, without_thin_parts(data.ground_truth, w), name,
                                             data.frame_ids)
    keys = ("J&F-Mean", "J-Mean", "F-Mean", "J-Decay")
    for w in widths:
        print(f"\n**{args.split}, parts narrower than {w} px removed**\n")
        print("| sequence | J&F | J | F | J-Decay |\n|---|---:|---:|---:|---:|")
        rows = {name: DavisScores(objs).global_scores() for name, objs in scored[w].items()}
        for name in sorted(rows, key=lambda n: rows[n]["J&F-Mean"]):
            print(f"| {name} | " + " | ".join(f"{100 * rows[name][k]:.1f}" for k in keys) + " |")
        overall = DavisScores([o for objs in scored[w].values() for o in objs]).global_scores()
        print(f"| **all {len(rows)}** | " + " | ".join(f"{100 * overall[k]:.1f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
