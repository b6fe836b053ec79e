"""The frozen backbone run by ONNX Runtime, on a CPU.

PyTorch's CPU kernels are weakest on MobileNetV2's depthwise convolutions; ONNX Runtime's are not: the
backbone runs markedly faster under it for the same features up to float rounding (tested; measured in
docs/speed.md). The refinement network's dense convolutions gained little, so only the backbone, whose
weights never change, is handed over.

The backbone's parts (image -> f4, f8; f8 -> f16, f32; image -> f16 for the start frame's augmented
copies) are each exported to ONNX in memory when first used (under a second each), with free batch and
spatial sizes, and each runs in its own ONNX Runtime session. A session uses as many threads as torch does
when it is called (it is rebuilt when that number changes, e.g. after ``torch.set_num_threads``), and its
threads do not spin-wait after a call, so they do not take the cores away from the PyTorch work that
follows. The graphs hold the weights the backbone had when they were exported: the backbone is frozen, so
they never change afterwards.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import warnings

import torch
from torch import nn

from reusevos.config import BACKBONE_RUNTIMES as RUNTIMES
from reusevos.errors import ReusevosError

# RUNTIMES: ``auto`` is ONNX Runtime for CPU tensors when it is installed, else PyTorch; ``torch`` always
# PyTorch; ``onnxruntime`` ONNX Runtime for CPU tensors, an error when it is missing.
RUNTIME_NAMES = {"torch": "PyTorch", "onnxruntime": "ONNX Runtime"}
"""How reports name what ran the backbone."""


@functools.lru_cache(maxsize=None)
def onnxruntime_available() -> bool:
    """Whether ONNX Runtime and the ``onnx`` package (which PyTorch's exporter needs) can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def onnxruntime_version() -> str | None:
    """The installed ONNX Runtime's version, or None."""
    if not onnxruntime_available():
        return None
    import onnxruntime

    return onnxruntime.__version__


def check_runtime(runtime: str) -> str:
    """``runtime`` if it is one of :data:`RUNTIMES` and can run here, else a ReusevosError."""
    if runtime not in RUNTIMES:
        raise ReusevosError(f"unknown backbone runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if runtime == "onnxruntime" and not onnxruntime_available():
        raise ReusevosError("the onnxruntime backbone runtime needs the packages onnxruntime and onnx: "
                            "pip install onnxruntime onnx (or choose the torch runtime)")
    return runtime


class _Part(nn.Module):
    """One part of the backbone for export: ``to_f8``, ``f8_to_f32`` or ``to_f16`` (see the Backbone)."""

    OUTPUTS = {"to_f8": ("f4", "f8"), "f8_to_f32": ("f16", "f32"), "to_f16": ("f16",)}

    def __init__(self, backbone: nn.Module, name: str):
        super().__init__()
        self.backbone, self.name = backbone, name

    def example(self) -> torch.Tensor:
        image = torch.zeros(1, 3, 64, 64)
        return self.backbone.stage8(self.backbone.stage4(image)).contiguous() if self.name == "f8_to_f32" else image

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b = self.backbone
        if self.name == "f8_to_f32":
            f16 = b.stage16(x)
            return f16, b.stage32(f16)
        f4 = b.stage4((x - b.mean) / b.std)
        f8 = b.stage8(f4)
        return (f4, f8) if self.name == "to_f8" else (b.stage16(f8),)


def _export(part: _Part) -> bytes:
    """``part`` as an ONNX graph with input ``x`` ``(B, C, H, W)`` free in B, H and W."""
    buffer = io.BytesIO()
    free = {0: "batch", 2: "height", 3: "width"}
    outputs = _Part.OUTPUTS[part.name]
    # Also inside torch.inference_mode (a caller's), which the exporter cannot trace in.
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter announces its deprecation
        torch.onnx.export(part.eval(), (part.example(),), buffer, input_names=["x"], output_names=list(outputs),
                          dynamic_axes={"x": free, **{name: free for name in outputs}}, dynamo=False,
                          opset_version=17)
    return buffer.getvalue()


class OnnxBackbone:
    """ONNX Runtime sessions for a :class:`reusevos.model.backbone.Backbone` (float32, CPU).

    ``to_f8(image)``, ``f8_to_f32(f8)`` and ``to_f16(image)`` take and return tensors as the backbone's
    methods of the same names do (outputs are new contiguous CPU tensors that do not require grad). Any
    failure of the exporter or of ONNX Runtime propagates; the backbone decides what to do about it.
    """

    def __init__(self, backbone: nn.Module):
        import onnxruntime  # noqa: F401  (fail here, not at the first frame)

        self._backbone = backbone
        self._graphs: dict[str, bytes] = {}
        self._sessions: dict = {}
        self._threads = 0

    def _session(self, name: str):
        import onnxruntime as ort

        threads = torch.get_num_threads()
        if threads != self._threads:
            self._sessions, self._threads = {}, threads
        if name not in self._sessions:
            if name not in self._graphs:
                self._graphs[name] = _export(_Part(self._backbone, name))
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.log_severity_level = 3  # errors only
            self._sessions[name] = ort.InferenceSession(self._graphs[name], options,
                                                        providers=["CPUExecutionProvider"])
        return self._sessions[name]

    def run(self, name: str, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Part ``name`` (``to_f8``, ``f8_to_f32`` or ``to_f16``) on ``x``."""
        outputs = self._session(name).run(None, {"x": x.detach().float().contiguous().numpy()})
        return tuple(torch.from_numpy(out) for out in outputs)
