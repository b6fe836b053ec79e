"""Experiment: the refinement network's stride-8 and stride-4 levels under ONNX Runtime, fp32 or int8, against PyTorch
fp32, in J&F and time, on DAVIS 2016 train sequences with the base model (full, compute window 2).

    python scripts/refiner_int8_holdout.py ~/data/DAVIS --out docs/results/speed/refiner-int8-holdout.json --threads 2

int8 is ONNX Runtime's static QDQ quantisation (uint8 activations, int8 weights, per-tensor), calibrated on the
levels' real inputs from the first ``--calibration-frames`` frames of the ``--calibration`` sequences (train
sequences apart from the scored ones). The levels are exported with dynamic sizes, since the compute window changes
their input sizes from frame to frame. A runtime check, not a choice of weights: the refinement network is the
shipped one in every setting.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import reusevos
from reusevos.config import SessionConfig
from reusevos.evaluation.davis_eval import DavisScores, score_sequence
from reusevos.io.davis import DavisDataset, load_sequence
from reusevos.io.files import write_json
from reusevos.provenance import machine_label, source_commit

SCORED = ("bear", "car-turn", "flamingo", "lucia", "paragliding", "stroller")  # the held-out six (docs/accuracy.md)
CALIBRATION = ("boat", "dog-agility", "hike", "kite-walk")
NAMES = ("reduced", "score", "deeper")
LEVELS = ("level8", "level4")


class OrtLevel(torch.nn.Module):
    """A refiner level run by an ONNX Runtime session: same inputs and output as :class:`Level`; the per-frame
    ``tse.reduce`` (outside the exported part) stays the PyTorch level's."""

    def __init__(self, session, level: torch.nn.Module):
        super().__init__()
        self.session = session
        self.tse = level.tse

    def forward(self, reduced, score, deeper):
        reduced = reduced.expand(score.shape[0], -1, -1, -1)
        feeds = {n: np.ascontiguousarray(t.numpy()) for n, t in zip(NAMES, (reduced, score, deeper))}
        return torch.from_numpy(self.session.run(None, feeds)[0]).contiguous(memory_format=torch.channels_last)


def _run(model, dataset, name, options):
    data = load_sequence(dataset, name)
    session = reusevos.Session(model, options)
    start = time.perf_counter()
    results = [r for t, f in enumerate(data.frames) for r in session.push(f, data.start_masks.get(t))]
    results += session.finish()
    seconds = time.perf_counter() - start
    labels = np.stack([r.labels for r in results])
    scores = DavisScores(score_sequence(data.ground_truth, labels, name, data.frame_ids)).global_scores()
    return {"sequence": name, "J&F": scores["J&F-Mean"], "frames": len(data.frames), "seconds": seconds}


def main() -> None:
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("davis")
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sequences", default=",".join(SCORED))
    parser.add_argument("--calibration", default=",".join(CALIBRATION))
    parser.add_argument("--calibration-frames", type=int, default=8)
    parser.add_argument("--no-mem-pattern", action="store_true",
                        help="ONNX Runtime's memory pattern off (it is planned for one input shape)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = reusevos.load_model(device="cpu")
    refiner = model.refiner
    options = SessionConfig("full", 1.0, compute_window=2)
    train = DavisDataset(args.davis, split="train")

    # the levels' real inputs, for calibration and as export examples
    seen: dict[str, list[tuple[np.ndarray, ...]]] = {level: [] for level in LEVELS}
    hooks = [getattr(refiner, level).register_forward_pre_hook(
        lambda _, inputs, level=level: seen[level].append(tuple(
            np.ascontiguousarray(t.expand(inputs[1].shape[0], -1, -1, -1).numpy() if i == 0 else t.numpy())
            for i, t in enumerate(inputs)))) for level in LEVELS]
    for name in args.calibration.split(","):
        data = load_sequence(train, name, max_frames=args.calibration_frames)
        session = reusevos.Session(model, options)
        for t, f in enumerate(data.frames):
            session.step(f, data.start_masks.get(t))
    for hook in hooks:
        hook.remove()

    class Calibration(CalibrationDataReader):
        def __init__(self, batches):
            self.batches = iter([dict(zip(NAMES, b)) for b in batches])

        def get_next(self):
            return next(self.batches, None)

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.enable_mem_pattern = not args.no_mem_pattern
    runtimes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for level in LEVELS:
            module = getattr(refiner, level).eval()
            example = tuple(torch.from_numpy(a) for a in seen[level][0])
            fp32 = Path(tmp) / f"{level}.onnx"
            axes = {"reduced": {0: "b", 2: "h", 3: "w"}, "score": {0: "b", 2: "hs", 3: "ws"},
                    "deeper": {0: "b", 2: "hd", 3: "wd"}, "out": {0: "b", 2: "h", 3: "w"}}
            torch.onnx.export(module, example, fp32, input_names=list(NAMES), output_names=["out"],
                              dynamic_axes=axes, opset_version=17, dynamo=False)
            int8 = Path(tmp) / f"{level}_int8.onnx"
            quantize_static(str(fp32), str(int8), Calibration(seen[level]), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
            for kind, path in (("fp32", fp32), ("int8", int8)):
                runtimes.setdefault(kind, {})[level] = OrtLevel(
                    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]), module)
    plain = {level: getattr(refiner, level) for level in LEVELS}
    settings = {"pytorch": plain, "onnxruntime fp32": runtimes["fp32"], "onnxruntime int8": runtimes["int8"]}
    rows = []
    for name in args.sequences.split(","):
        for label, levels in settings.items():
            for level, module in levels.items():
                setattr(refiner, level, module)
            rows.append({"setting": label, **_run(model, train, name, options)})
            print(json.dumps(rows[-1]), flush=True)
    for level, module in plain.items():
        setattr(refiner, level, module)
    summary = {}
    for label in settings:
        mine = [r for r in rows if r["setting"] == label]
        summary[label] = {"J&F": float(np.mean([r["J&F"] for r in mine])),
                          "fps": sum(r["frames"] for r in mine) / sum(r["seconds"] for r in mine)}
    report = {"command": f"python scripts/refiner_int8_holdout.py {args.davis} --out {args.out} --threads "
                         f"{args.threads} --sequences {args.sequences} --calibration {args.calibration} "
                         f"--calibration-frames {args.calibration_frames}"
                         + (" --no-mem-pattern" if args.no_mem_pattern else ""),
              "commit": source_commit(), "machine": machine_label(), "summary": summary, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    base = summary["pytorch"]
    print("| levels 8 and 4 in | J&F | vs PyTorch | FPS | vs PyTorch |\n|---|---:|---:|---:|---:|")
    for label, s in summary.items():
        print(f"| {label} | {100 * s['J&F']:.1f} | {100 * (s['J&F'] - base['J&F']):+.1f} | {s['fps']:.2f} | "
              f"{s['fps'] / base['fps']:.2f}x |")


if __name__ == "__main__":
    main()
