"""The frozen backbones' speed on this CPU: MobileNetV2 against EfficientNet-Lite0 (or any of BACKBONES), part by part.

    python scripts/backbone_speed.py --json backbone_speed.json                  # both, both runtimes, 2 threads
    python scripts/backbone_speed.py --backbones efficientnet_lite0 --runtimes torch --repeats 5 --json out.json
    python scripts/backbone_speed.py --backbones efficientnet_lite0,efficientnet_lite1,efficientnet_lite2 --json l.json
    python scripts/backbone_speed.py --runtimes onnxruntime,openvino,openvino-bf16 --json ov.json

For each backbone (its ImageNet weights: ``reusevos weights fetch [--backbone NAME]``) and runtime
(PyTorch, ONNX Runtime, OpenVINO in float32 or bfloat16), times the two parts the frame loop calls, ``to_f8``
(image -> f4, f8: every frame) and ``f8_to_f32`` (f8 -> f16, f32: computed frames only), on one random frame of the
given size, each call timed on its own over ``--repeats`` calls after ``--warmup`` calls (the first exports the ONNX
graph). Prints a table of the median and mean milliseconds and writes them as JSON with the machine, the versions
and the command. Time only on an otherwise idle machine: anything else running on its cores shows up in these
numbers.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time

import torch

from reusevos.config import BACKBONES
from reusevos.errors import ReusevosError
from reusevos.io.files import write_json
from reusevos.model.backbone import load_backbone
from reusevos.model.onnx_backbone import RUNTIME_NAMES, check_runtime
from reusevos.provenance import machine_info, machine_label, source_commit, versions

PARTS = ("to_f8", "f8_to_f32")


def time_calls(fn, x: torch.Tensor, repeats: int, warmup: int) -> list[float]:
    """Milliseconds of each of ``repeats`` calls ``fn(x)`` after ``warmup`` untimed ones."""
    with torch.no_grad():
        for _ in range(warmup):
            fn(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(x)
            times.append((time.perf_counter() - start) * 1000)
    return times


def measure(name: str, runtimes: list[str], size: tuple[int, int], repeats: int, warmup: int) -> list[dict]:
    """One row per runtime and part for the backbone ``name``."""
    backbone = load_backbone(name, fetch=False)
    image = torch.rand(1, 3, *size)
    rows = []
    for runtime in runtimes:
        with backbone.runtime_as(runtime):
            with torch.no_grad():
                f8 = backbone.to_f8(image)[1]
            inputs = {"to_f8": image, "f8_to_f32": f8}
            for part in PARTS:
                times = time_calls(getattr(backbone, part), inputs[part], repeats, warmup)
                rows.append({"backbone": name, "runtime": runtime, "part": part,
                             "median_ms": round(statistics.median(times), 3),
                             "mean_ms": round(statistics.fmean(times), 3),
                             "min_ms": round(min(times), 3), "repeats": repeats, "warmup": warmup})
    return rows


def table(rows: list[dict]) -> str:
    lines = [f"{'backbone':<20}{'runtime':<14}{'part':<11}{'median ms':>10}{'mean ms':>10}{'min ms':>10}"]
    for r in rows:
        lines.append(f"{r['backbone']:<20}{RUNTIME_NAMES[r['runtime']]:<14}{r['part']:<11}"
                     f"{r['median_ms']:>10.1f}{r['mean_ms']:>10.1f}{r['min_ms']:>10.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", default="mobilenet_v2,efficientnet_lite0",
                        help=f"comma-separated, of: {', '.join(BACKBONES)}")
    parser.add_argument("--runtimes", default="torch,onnxruntime",
                        help="comma-separated: torch, onnxruntime, openvino, openvino-bf16")
    parser.add_argument("--size", default="480x854", metavar="HxW", help="frame size (default: DAVIS 480p)")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per part")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before them")
    parser.add_argument("--threads", type=int, default=2, help="torch (and ONNX Runtime's, OpenVINO's) threads")
    parser.add_argument("--json", required=True, metavar="OUT.json", help="where to write the results")
    args = parser.parse_args()
    if args.repeats < 1 or args.warmup < 1:
        parser.error("--repeats and --warmup must be at least 1 (the first call exports the ONNX graph)")
    unknown = [name for name in args.backbones.split(",") if name not in BACKBONES]
    if unknown:
        parser.error(f"--backbones: unknown {', '.join(unknown)}; choose from {', '.join(BACKBONES)}")
    height, width = (int(v) for v in args.size.lower().split("x"))
    runtimes = [check_runtime(r) for r in args.runtimes.split(",")]
    if "auto" in runtimes:
        parser.error("--runtimes: name torch, onnxruntime, openvino or openvino-bf16, not auto")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for name in args.backbones.split(","):
        rows += measure(name, runtimes, (height, width), args.repeats, args.warmup)
    print(f"{machine_label()}, {args.threads} threads, {height}x{width}, {args.repeats} repeats after "
          f"{args.warmup} warm-up calls")
    print(table(rows))
    write_json(args.json, {"command": shlex.join(["python", *sys.argv]), "machine": machine_label(),
                           "machine_info": machine_info(), "versions": versions(),
                           "source": source_commit(), "threads": args.threads, "size": [height, width],
                           "rows": rows})
    print(f"JSON: {args.json}")


if __name__ == "__main__":
    try:
        main()
    except ReusevosError as exc:  # missing weights, an unknown backbone or runtime: one line, no traceback
        sys.exit(f"backbone_speed.py: error: {exc}")
