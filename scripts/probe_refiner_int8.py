"""Timing probe (not an accuracy measurement): the refinement network's level4 in PyTorch, ONNX Runtime fp32 and
ONNX Runtime int8 (static QDQ quantisation), on a whole 480p frame's stride-4 shapes.

    python scripts/probe_refiner_int8.py --threads 2

level4 is the largest single part of a computed frame (on DAVIS val with compute window 2 it takes about a quarter
of the base model's time; docs/speed.md, where the default's time goes). The int8 model is calibrated on random
inputs, so its outputs say nothing about the masks it would give: a J&F measurement needs calibration on real
features and the windows' changing shapes (dynamic axes). Prints the median milliseconds of each, twice, and the
largest output differences against PyTorch.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import reusevos

NAMES = ("r4", "score", "x8")


def _inputs(height: int, width: int) -> tuple[torch.Tensor, ...]:
    """Reduced stride-4 features, a stride-16 score and the stride-8 level's output, at a 480x854 frame's sizes."""
    return (torch.randn(1, 64, height, width).relu(), torch.randn(1, 1, height // 4, -(-width // 4)),
            torch.randn(1, 64, height // 2, -(-width // 2)).relu())


def _median_ms(run, repeats: int = 15) -> float:
    run()
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main() -> None:
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    refiner = reusevos.load_model(device="cpu").refiner.eval()

    class Level4(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.level = refiner.level4

        def forward(self, r4, score, x8):
            return self.level(r4, score, x8)

    class Calibration(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([dict(zip(NAMES, (t.numpy() for t in _inputs(120, 214)))) for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    model = Level4().eval()
    inputs = _inputs(120, 214)
    feeds = dict(zip(NAMES, (t.numpy() for t in inputs)))
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "level4.onnx", Path(tmp) / "level4_int8.onnx"
        torch.onnx.export(model, inputs, fp32, input_names=list(NAMES), output_names=["out"], opset_version=17,
                          dynamo=False)
        quantize_static(str(fp32), str(int8), Calibration(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        sessions = {name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                    for name, path in (("onnxruntime fp32", fp32), ("onnxruntime int8", int8))}
        with torch.inference_mode():
            reference = model(*inputs).numpy()
            for _ in range(2):
                timings = {"pytorch fp32": _median_ms(lambda: model(*inputs))}
                timings.update({name: _median_ms(lambda s=s: s.run(None, feeds)) for name, s in sessions.items()})
                print("  ".join(f"{name} {ms:.1f} ms" for name, ms in timings.items()))
        for name, session in sessions.items():
            print(f"{name}: largest difference {np.abs(session.run(None, feeds)[0] - reference).max():.4f} "
                  f"(outputs up to {np.abs(reference).max():.1f})")


if __name__ == "__main__":
    main()
