"""Measure the activation ranges that the ``onnxruntime-int8`` backbone runtime quantises with, on DAVIS 2016 *train*
frames, and write them where the package looks for them (``src/reusevos/checkpoints/int8/<backbone>.json``).

    python scripts/calibrate_int8.py --davis ~/data/DAVIS --backbone efficientnet_lite0

The frames come from the 24 train sequences the held-out protocol fits on (never the held-out six, never val), a few
evenly spaced per sequence, at 480p. Each exported part of the backbone is run on them by ONNX Runtime's calibrator
(min and max of every tensor); ``f8_to_f32`` on the float f8 of the same frames. The runtime quantises only from stride
8 on (``to_f8`` stays float32); ``to_f8``'s ranges are kept for ``scripts/int8_fidelity.py --stages all``, the
comparison that chose that.
The file records the weights file's sha256 (the runtime refuses other weights), the frames, the command and the
commit. Rerun it after anything that changes the exported graphs (the runtime refuses ranges whose tensors are not
in the graph).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime
import torch

import reusevos
from reusevos.config import BACKBONES
from reusevos.io.davis import DavisDataset, load_sequence
from reusevos.io.files import write_text
from reusevos.model.backbone import images_to_tensor, load_backbone
from reusevos.model.onnx_backbone import INT8_FORMAT, INT8_RANGES, _export, _Part, _quiet_logging
from reusevos.provenance import source_commit
from holdout_eval import HELD_OUT  # scripts/, beside this one


def measure(graph: bytes, inputs: list[np.ndarray]) -> dict[str, list[float]]:
    """ONNX Runtime's MinMax calibration of ``graph`` on ``inputs``: each tensor's ``[lowest, highest]``."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.calibrate import load_tensors_data

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(inputs)

        def get_next(self):
            x = next(self.items, None)
            return None if x is None else {"x": x}

    with tempfile.TemporaryDirectory() as folder, _quiet_logging():
        folder = Path(folder)
        (folder / "float.onnx").write_bytes(graph)
        quantize_static(folder / "float.onnx", folder / "int8.onnx", Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        calibrate_method=CalibrationMethod.MinMax, calibration_cache_path=folder / "ranges.json")
        measured = load_tensors_data(folder / "ranges.json").data
        return {name: [float(np.ravel(r.lowest)[0]), float(np.ravel(r.highest)[0])]
                for name, r in sorted(measured.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--davis", required=True)
    parser.add_argument("--backbone", default="efficientnet_lite0", choices=BACKBONES)
    parser.add_argument("--per-sequence", type=int, default=2, help="frames per sequence, evenly spaced")
    parser.add_argument("--out", default=None, help=f"default: {INT8_RANGES}/<backbone>.json")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    dataset = DavisDataset(args.davis, "train")
    sequences = [s for s in dataset.sequences if s not in HELD_OUT]
    images, used = [], {}
    for name in sequences:
        data = load_sequence(dataset, name)
        picks = sorted({i * len(data.frames) // args.per_sequence for i in range(args.per_sequence)})
        used[name] = [data.frame_ids[i] for i in picks]
        images += [images_to_tensor(data.frames[i]).numpy() for i in picks]
    backbone = load_backbone(args.backbone)
    with backbone.runtime_as("torch"), torch.no_grad():
        f8s = [backbone.to_f8(torch.from_numpy(x))[1].numpy() for x in images]
    parts = {}
    for part in ("to_f8", "f8_to_f32", "to_f16"):
        parts[part] = measure(_export(_Part(backbone, part)), f8s if part == "f8_to_f32" else images)
        print(f"{part}: {len(parts[part])} tensors", flush=True)

    out = Path(args.out) if args.out else INT8_RANGES / f"{args.backbone}.json"
    record = {
        "format": INT8_FORMAT, "backbone": args.backbone, "weights_sha256": backbone.weights_sha256(),
        "calibration": {"method": "MinMax (ONNX Runtime's calibrator), per-channel int8 weights, uint8 activations",
                        "split": "DAVIS 2016 train, the 24 sequences outside the held-out six",
                        "frames": used, "size": list(images[0].shape[-2:]),
                        "command": "python " + shlex.join(sys.argv), **source_commit(),
                        "reusevos": reusevos.__version__, "torch": torch.__version__,
                        "onnxruntime": onnxruntime.__version__},
        "parts": parts,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record, indent=1)
    text = re.sub(r"\[\s+(\S+),\s+(\S+)\s+\]", r"[\1, \2]", text)  # a range on its tensor's line
    write_text(out, text + "\n")
    print(f"{sum(len(v) for v in used.values())} frames of {len(used)} sequences -> {out}")


if __name__ == "__main__":
    main()
