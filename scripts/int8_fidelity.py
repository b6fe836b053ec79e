"""How far the ``onnxruntime-int8`` backbone moves the masks from float32's, on held-out DAVIS 2016 *train* sequences:
how its quantised stages were chosen (never on val).

    python scripts/int8_fidelity.py --davis ~/data/DAVIS --out docs/results/int8/fidelity-held-out.json

Runs the shipped model in its default loop on each sequence with the backbone in ONNX Runtime float32, then in int8
quantising the stages of each ``--stages`` choice (``16``: from stride 8 on, the runtime's; ``all``: the whole
backbone), and reports per sequence the mean IoU of each frame's mask with float32's, J&F and the frames per second
(one pass each; compare speeds only within one run).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from reusevos.evaluation.davis_eval import DavisScores, score_sequence
from reusevos.evaluation.metrics import region_similarity
from reusevos.io.davis import DavisDataset, load_sequence
from reusevos.io.files import write_text
from reusevos.model import onnx_backbone
from reusevos.model.network import load_model
from reusevos.provenance import machine_label, source_commit
from reusevos.session import Session
from holdout_eval import HELD_OUT  # scripts/, beside this one

STAGES = {"16": ("/stage16/", "/stage32/"), "all": ("/stage4/", "/stage8/", "/stage16/", "/stage32/")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--davis", required=True)
    parser.add_argument("--sequences", default=",".join(HELD_OUT))
    parser.add_argument("--stages", default="16,all", help=f"comma-separated, of {', '.join(STAGES)}")
    parser.add_argument("--weights", default=None,
                        help="a checkpoint whose backbone has a shipped calibration (default: the shipped model)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = DavisDataset(args.davis, "train")
    sequences = args.sequences.split(",")
    data = {name: load_sequence(dataset, name) for name in sequences}
    network = load_model(args.weights)
    labels, rows = {}, {}
    for variant in ["float32"] + [f"int8-{s}" for s in args.stages.split(",")]:
        if variant != "float32":
            onnx_backbone.INT8_STAGES = STAGES[variant.removeprefix("int8-")]
            network.backbone._runners.pop("onnxruntime-int8", None)  # quantise again with these stages
        network.backbone.runtime = "onnxruntime" if variant == "float32" else "onnxruntime-int8"
        scored, seconds, frames, ious = [], 0.0, 0, {}
        for name, seq in data.items():
            session = Session(network)
            start = time.perf_counter()
            labels[variant, name] = [session.step(f, seq.start_masks.get(t)).labels for t, f in enumerate(seq.frames)]
            seconds += time.perf_counter() - start
            frames += len(seq.frames)
            scored += score_sequence(seq.ground_truth, np.stack(labels[variant, name]), name, seq.frame_ids)
            ious[name] = round(float(np.mean([region_similarity(a > 0, b > 0) for a, b in
                                              zip(labels[variant, name][1:], labels["float32", name][1:])])), 4)
        rows[variant] = {"iou_with_float32": ious,
                         "mean_iou_with_float32": round(float(np.mean(list(ious.values()))), 4),
                         "J&F": round(100 * DavisScores(scored).global_scores()["J&F-Mean"], 2),
                         "fps": round(frames / seconds, 2)}
        print(variant, json.dumps(rows[variant]), flush=True)
    record = {"command": "python " + shlex.join(sys.argv), **source_commit(), "machine": machine_label(),
              "threads": args.threads, "split": "DAVIS 2016 train", "sequences": sequences,
              "weights": args.weights or "shipped",
              "setting": "the model's default loop (Session defaults)", "variants": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
