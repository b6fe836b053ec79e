"""Probe: do torch.compile (inductor, freezing) or ONNX Runtime pay on this CPU for the two big stages?

    python scripts/runtime_probe.py eager ort compile      # any of the three; 2 threads

Times, outside the frame loop, the backbone to stride 8 at 480x854 and the shallow refinement (levels 8, 4
and the head) on the whole frame and on a window of 14x28 cells (the compute window's size on a large
object), each in PyTorch (eager) and under torch.compile and ONNX Runtime, with the shipped weights on
random inputs, and prints the milliseconds, the ratio to eager and the largest difference of the outputs.
This is how the backbone was chosen for ONNX Runtime; the frame-loop numbers come from `reusevos
benchmark --backbone-runtime torch,onnxruntime`.
"""
import sys
import tempfile
import time
from pathlib import Path

import torch

from reusevos.model.network import load_model

torch.set_num_threads(2)
torch.manual_seed(0)
which = sys.argv[1:] or ["eager", "compile", "ort"]
model = load_model()
bb, ref = model.backbone, model.refiner
bb.runtime = "torch"  # "eager" means PyTorch here; this script does the exporting and compiling itself
image = torch.rand(1, 3, 480, 854)
with torch.no_grad():
    f4, f8 = bb.to_f8(image)
    f16, f32 = bb.f8_to_f32(f8)
    score = torch.randn(1, 1, 30, 54)
    r16, r32 = ref.reduce_deep(f16, f32)
    state = ref.deep(r16, r32, score)


def crop(x, box=(6, 20, 10, 38), grid=(30, 54)):
    h, w = x.shape[-2:]
    return x[..., box[0] * h // grid[0]:box[1] * h // grid[0], box[2] * w // grid[1]:box[3] * w // grid[1]]


class Shallow(torch.nn.Module):
    def __init__(self, refiner):
        super().__init__()
        self.refiner = refiner

    def forward(self, state, f4, f8, score):
        r4, r8 = self.refiner.reduce_shallow(f4, f8)
        size = (f4.shape[-2] * 4, f4.shape[-1] * 4)
        return self.refiner.shallow(state, r4, r8, score, size)


class ToF8(torch.nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, image):
        return self.backbone.to_f8(image)


shallow = Shallow(ref).eval()
to_f8 = ToF8(bb).eval()
cases = {
    "to_f8 480p": (to_f8, (image,)),
    "shallow full": (shallow, (state, f4, f8, score)),
    "shallow window": (shallow, (crop(state), crop(f4).contiguous(), crop(f8).contiguous(), crop(score))),
}


def timeit(fn, args, n=5):
    with torch.no_grad():
        out = fn(*args)
        start = time.perf_counter()
        for _ in range(n):
            fn(*args)
    return (time.perf_counter() - start) / n * 1000, out


def first(x):
    return x[0] if isinstance(x, (tuple, list)) else x


results = {}
for name, (mod, args) in cases.items():
    ms, ref_out = timeit(mod, args)
    results[name] = {"eager": ms}
    print(f"{name:16s} eager   {ms:8.1f} ms", flush=True)
    if "compile" in which:
        import torch._inductor.config as icfg
        icfg.freezing = True
        torch._dynamo.reset()
        compiled = torch.compile(mod, dynamic=False)
        t0 = time.perf_counter()
        with torch.no_grad():
            compiled(*args)
        ct = time.perf_counter() - t0
        ms2, out = timeit(compiled, args)
        diff = (first(out) - first(ref_out)).abs().max().item()
        print(f"{name:16s} compile {ms2:8.1f} ms  (x{ms / ms2:.2f}; compile {ct:.0f} s; max diff {diff:.2e})", flush=True)
    if "ort" in which:
        import onnxruntime as ort
        path = str(Path(tempfile.gettempdir()) / f"reusevos-probe-{name.replace(' ', '_')}.onnx")
        names = [f"in{i}" for i in range(len(args))]
        t0 = time.perf_counter()
        with torch.no_grad():
            torch.onnx.export(mod, args, path, input_names=names, dynamo=False, opset_version=17)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        feeds = {n: a.contiguous().numpy() for n, a in zip(names, args)}
        run = lambda *_: sess.run(None, feeds)
        et = time.perf_counter() - t0
        ms3, out = timeit(run, ())
        diff = (torch.from_numpy(out[0]) - first(ref_out)).abs().max().item()
        print(f"{name:16s} ort     {ms3:8.1f} ms  (x{ms / ms3:.2f}; export {et:.0f} s; max diff {diff:.2e})", flush=True)
