"""The frozen backbone run by ONNX Runtime or OpenVINO, on a CPU.

PyTorch's CPU kernels are weakest on MobileNetV2's depthwise convolutions; ONNX Runtime's are not: the
backbone runs markedly faster under it for the same features up to float rounding (tested; measured in
docs/speed.md). The refinement network's dense convolutions gained little, so only the backbone, whose
weights never change, is handed over.

The backbone's parts (image -> f4, f8; f8 -> f16, f32; image -> f16 for the start frame's augmented
copies) are each exported to ONNX in memory when first used (under a second each), with free batch and
spatial sizes, once per backbone whatever runs them; each runtime compiles each graph for itself
(:class:`GraphBackbone`: an ONNX Runtime session, an OpenVINO compiled model). A compiled part uses as many
threads as torch does when it is called (it is rebuilt when that number changes, e.g. after
``torch.set_num_threads``). The graphs hold the weights the backbone had when they were exported: the backbone
is frozen, so they never change afterwards.

ONNX Runtime's threads do not spin-wait after a call, so they do not take the cores away from the PyTorch work
that follows. OpenVINO (optional, ``pip install openvino``) runs the same graphs, in float32 (``openvino``: the
same features up to float rounding, tested) or in bfloat16 (``openvino-bf16``: faster on CPUs that compute it
natively, AVX512-BF16, AMX or AVX2-VNNI-2, for features that differ slightly; docs/speed.md). On a CPU without
it ``openvino-bf16`` is refused: OpenVINO would quietly run float32, or emulate bfloat16 slowly on AVX-512. With
``openvino-bf16`` FRTM's refinement network also computes in bfloat16 (PyTorch's autocast, where its kernels compute it
natively: :meth:`reusevos.model.network.VOSNetwork.refiner_precision`), so the name stands for the bfloat16 mode. Its
threads (oneTBB's) wait actively for about a millisecond of CPU time after a call (PyTorch's OpenMP threads
about ten) and it has no setting to stop that; they are not pinned to cores, so processes that share a machine
do not all crowd onto its first cores.

``onnxruntime-int8`` runs ONNX Runtime on graphs quantised from stride 8 on (int8 weights and activations, with
activation ranges calibrated on DAVIS train frames and shipped per backbone: :class:`OnnxInt8Backbone`); faster on
every CPU for slightly different features (docs/speed.md "int8").
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import inspect
import io
import json
import logging
import tempfile
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from reusevos.config import BACKBONE_RUNTIMES as RUNTIMES
from reusevos.errors import ReusevosError

# RUNTIMES: ``auto`` is ONNX Runtime for CPU tensors when it is installed, else PyTorch; ``torch`` always
# PyTorch; ``onnxruntime``, ``onnxruntime-int8``, ``openvino`` and ``openvino-bf16`` that runtime for CPU tensors,
# an error when it is missing.
RUNTIME_NAMES = {"torch": "PyTorch", "onnxruntime": "ONNX Runtime", "onnxruntime-int8": "ONNX Runtime int8",
                 "openvino": "OpenVINO", "openvino-bf16": "OpenVINO bf16"}
"""How reports name what ran the backbone."""
RUNTIME_PACKAGES = {"onnxruntime": "onnxruntime", "onnxruntime-int8": "onnxruntime", "openvino": "openvino",
                    "openvino-bf16": "openvino"}
"""The package that runs each runtime's graphs (its version is recorded beside the numbers, see
:func:`runtime_versions`)."""


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


@functools.lru_cache(maxsize=None)
def openvino_available() -> bool:
    """Whether OpenVINO and the ``onnx`` package (which PyTorch's exporter needs) can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in ("openvino", "onnx"))


def openvino_version() -> str | None:
    """The installed OpenVINO's version (``2026.4.1``), or None."""
    if not openvino_available():
        return None
    try:
        return importlib.metadata.version("openvino")
    except importlib.metadata.PackageNotFoundError:  # not installed by pip: the build's own, longer string
        import openvino

        return openvino.__version__


def runtime_versions() -> dict[str, str | None]:
    """The versions of the packages that run the backbone's graphs (None: not installed)."""
    return {"onnxruntime": onnxruntime_version(), "openvino": openvino_version()}


@functools.lru_cache(maxsize=None)
def _openvino_core():
    import openvino

    return openvino.Core()  # one per process: it loads the device plugins


@functools.lru_cache(maxsize=None)
def openvino_cpu() -> tuple[str, tuple[str, ...]]:
    """OpenVINO's name for this CPU and its optimisation capabilities (``BF16`` where it computes bfloat16
    natively: AVX512-BF16, AMX or AVX2-VNNI-2)."""
    core = _openvino_core()
    return (str(core.get_property("CPU", "FULL_DEVICE_NAME")),
            tuple(str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")))


@functools.lru_cache(maxsize=None)
def cpu_computes_bf16() -> bool:
    """Whether PyTorch's CPU kernels compute bfloat16 natively here (AVX512-BF16 or AMX); elsewhere they would
    emulate it, slower than float32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, so looked up with a fall-back
    return any(getattr(torch.cpu, check, lambda: False)() for check in checks)


def bf16_mode_available() -> bool:
    """Whether the bfloat16 mode (``openvino-bf16``) would run here at its speed: OpenVINO installed, and both
    OpenVINO and PyTorch computing bfloat16 natively on this CPU (:func:`check_runtime` checks OpenVINO's side)."""
    if not cpu_computes_bf16():
        return False
    try:
        check_runtime("openvino-bf16")
    except ReusevosError:
        return False
    return True


def check_runtime(runtime: str) -> str:
    """``runtime`` if it is one of :data:`RUNTIMES` and can run here, else a ReusevosError."""
    if runtime not in RUNTIMES:
        raise ReusevosError(f"unknown backbone runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if runtime in ("onnxruntime", "onnxruntime-int8") and not onnxruntime_available():
        raise ReusevosError(f"the {runtime} backbone runtime needs the packages onnxruntime and onnx: "
                            "pip install onnxruntime onnx (or choose the torch runtime)")
    if runtime in ("openvino", "openvino-bf16") and not openvino_available():
        raise ReusevosError(f"the {runtime} backbone runtime needs the packages openvino and onnx: "
                            "pip install openvino onnx (or choose the onnxruntime or torch runtime)")
    if runtime == "openvino-bf16":
        try:
            name, capabilities = openvino_cpu()
        except Exception as exc:  # OpenVINO's CPU plugin cannot load or describe this CPU
            raise ReusevosError(f"OpenVINO cannot describe this CPU ({type(exc).__name__}: {exc}); choose the "
                                "onnxruntime or torch runtime") from exc
        if "BF16" not in capabilities:
            raise ReusevosError(f"the openvino-bf16 backbone runtime needs a CPU that computes bfloat16 natively "
                                f"(AVX512-BF16, AMX or AVX2-VNNI-2); this one ({name}) does not, and OpenVINO would "
                                "run float32 or emulate bfloat16 slowly: choose the openvino runtime (float32)")
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


class GraphBackbone:
    """A :class:`reusevos.model.backbone.Backbone`'s exported parts run by another runtime (CPU tensors).

    ``run(name, x)`` runs part ``name`` (``to_f8``, ``f8_to_f32`` or ``to_f16``) on ``x`` and returns what the
    backbone's method of that name does (outputs are new contiguous float32 CPU tensors that do not require grad).
    The graphs are exported when a part is first used, into ``graphs``: pass the same dict to every runtime of one
    backbone and each part is exported once. A runtime says how it compiles a graph for a number of threads
    (``_compile``, called again when torch's number of threads changes) and runs it on a float32 array
    (``_run``). Any failure of the exporter or of the runtime propagates; the backbone decides what to do about it.
    """

    def __init__(self, backbone: nn.Module, graphs: dict[str, bytes] | None = None):
        self._backbone = backbone
        self._graphs = {} if graphs is None else graphs
        self._sessions: dict = {}  # part -> what _compile made of its graph for self._threads threads
        self._threads = 0

    def _session(self, name: str):
        threads = torch.get_num_threads()
        if threads != self._threads:
            self._sessions, self._threads = {}, threads
        if name not in self._sessions:
            self._sessions[name] = self._compile(self._graph(name), threads)
        return self._sessions[name]

    def _graph(self, name: str) -> bytes:
        """The graph this runtime compiles for part ``name``: the exported one (exported once per backbone)."""
        if name not in self._graphs:
            self._graphs[name] = _export(_Part(self._backbone, name))
        return self._graphs[name]

    def _compile(self, graph: bytes, threads: int):
        raise NotImplementedError

    def _run(self, session, x: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def run(self, name: str, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Part ``name`` (``to_f8``, ``f8_to_f32`` or ``to_f16``) on ``x``."""
        outputs = self._run(self._session(name), x.detach().float().contiguous().numpy())
        return tuple(torch.from_numpy(out) for out in outputs)


class OnnxBackbone(GraphBackbone):
    """The parts in ONNX Runtime sessions (float32)."""

    def __init__(self, backbone: nn.Module, graphs: dict[str, bytes] | None = None):
        import onnxruntime  # noqa: F401  (fail here, not at the first frame)

        super().__init__(backbone, graphs)

    def _compile(self, graph: bytes, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only
        return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    def _run(self, session, x: np.ndarray) -> list[np.ndarray]:
        return session.run(None, {"x": x})


class OpenVinoBackbone(GraphBackbone):
    """The parts as OpenVINO compiled models on the CPU, computing in float32 or, with ``bf16``, in bfloat16
    (inputs and outputs stay float32). Compiled with free shapes, so one compiled part takes any size."""

    def __init__(self, backbone: nn.Module, graphs: dict[str, bytes] | None = None, bf16: bool = False):
        import openvino  # noqa: F401  (fail here, not at the first frame)

        super().__init__(backbone, graphs)
        self.precision = "bf16" if bf16 else "f32"
        self._lock = threading.Lock()  # a compiled model's call reuses one infer request

    def _compile(self, graph: bytes, threads: int):
        core = _openvino_core()
        # The precision is always named: OpenVINO's default is bf16 or f16 wherever the CPU has them. Threads are
        # not pinned: several processes on one machine would otherwise pin theirs to the same first cores.
        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_PRECISION_HINT": self.precision, "ENABLE_CPU_PINNING": False}
        compiled = core.compile_model(core.read_model(graph, b""), "CPU", config)  # ONNX bytes, no file
        got = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if got != self.precision:  # check_runtime refuses bf16 where the CPU lacks it; this is the last guard
            raise RuntimeError(f"OpenVINO compiled the backbone to compute in {got}, not {self.precision}")
        return compiled

    def _run(self, compiled, x: np.ndarray) -> list[np.ndarray]:
        with self._lock:
            return list(compiled({0: x}).to_tuple())  # outputs copied out of the request (share_outputs=False)


INT8_RANGES = Path(__file__).resolve().parent.parent / "checkpoints" / "int8"
"""``<backbone>.json``: the range ``[lowest, highest]`` of every tensor of each exported part that is quantised
(``parts``), measured on DAVIS 2016 train frames by ``scripts/calibrate_int8.py``, which also records how
(``calibration``) and the sha256 of the weights file they were measured with (``weights_sha256``)."""
INT8_FORMAT = "reusevos-int8-ranges"


def int8_ranges(backbone: str, weights_sha256: str | None) -> dict:
    """The int8 calibration shipped for ``backbone`` (its parts' ranges, ``parts``), checked against the weights."""
    path = INT8_RANGES / f"{backbone}.json"
    shipped = sorted(p.stem for p in INT8_RANGES.glob("*.json"))
    if not path.is_file():
        raise ReusevosError(f"the onnxruntime-int8 backbone runtime has no calibration for {backbone} (shipped: "
                            f"{', '.join(shipped) or 'none'}); calibrate it with scripts/calibrate_int8.py, or choose "
                            "the onnxruntime runtime")
    try:
        ranges = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ReusevosError(f"cannot read the int8 calibration {path} ({type(exc).__name__}); reinstall reusevos or "
                            "calibrate again with scripts/calibrate_int8.py") from exc
    if ranges.get("format") != INT8_FORMAT or not isinstance(ranges.get("parts"), dict):
        raise ReusevosError(f"{path} is not an int8 calibration written by scripts/calibrate_int8.py")
    if weights_sha256 != ranges.get("weights_sha256"):
        raise ReusevosError(f"the int8 calibration of {backbone} was measured with the weights file of sha256 "
                            f"{ranges.get('weights_sha256', '?')[:12]}..., and this backbone has "
                            f"{'no ImageNet weights' if weights_sha256 is None else weights_sha256[:12] + '...'}; "
                            "choose the onnxruntime runtime, or calibrate these weights with scripts/calibrate_int8.py")
    return ranges


@contextmanager
def _quiet_logging():
    """ONNX Runtime's quantiser logs advice on the root logger (to stderr when nothing is configured)."""
    before = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(before)


INT8_STAGES = ("/stage16/", "/stage32/")
"""The nodes quantised (by the exported names' prefixes): the backbone from stride 8 on. Quantising the stem and
the stride-4 and stride-8 stages too gained a sixth of the time (measured on val: to_f8 37.0 -> 30.4 ms a frame,
f8_to_f32 27.4 -> 11.6) and moved the masks three times as far from float32's (held-out six, mean IoU with float32's
masks 0.977 against 0.991; docs/speed.md#int8)."""


def quantize_graph(graph: bytes, ranges: dict[str, list[float]]) -> bytes:
    """``graph`` with the nodes of :data:`INT8_STAGES` in int8 (weights per output channel, activations uint8 at the
    calibrated ranges; ONNX Runtime's static quantisation, QDQ format), the rest float32; a graph without such
    nodes comes back as it is. ``ranges`` maps each tensor to its ``[lowest, highest]`` value. Refused
    (ValueError) when they were measured on another export of the graph: a tensor they name is missing, or the
    input of a convolution to quantise has no range."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    model = onnx.load_model_from_string(graph)
    nodes = [node for node in model.graph.node if node.name.startswith(INT8_STAGES)]
    if not nodes:
        return graph
    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        raise ValueError(f"ONNX Runtime {onnxruntime_version()} cannot quantise with stored ranges; upgrade it: "
                         "pip install -U onnxruntime")
    produced = {out for node in model.graph.node for out in node.output} | {i.name for i in model.graph.input}
    conv_inputs = {node.input[0] for node in nodes if node.op_type == "Conv"}
    unknown, unranged = set(ranges) - produced, conv_inputs - set(ranges)
    if unknown or unranged:
        raise ValueError(f"the ranges do not fit this graph ({len(unknown)} of their tensors are not in it, "
                         f"{len(unranged)} convolution inputs have none)")
    with tempfile.TemporaryDirectory(prefix="reusevos-int8-") as folder, _quiet_logging():
        folder = Path(folder)
        (folder / "float.onnx").write_bytes(graph)
        measured = {name: TensorData(lowest=np.array([low], np.float32), highest=np.array([high], np.float32))
                    for name, (low, high) in ranges.items()}
        save_tensors_data(TensorsData(CalibrationMethod.MinMax, measured), folder / "ranges.json")
        quantize_static(folder / "float.onnx", folder / "int8.onnx", None, quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        calibrate_method=CalibrationMethod.MinMax, calibration_cache_path=folder / "ranges.json",
                        nodes_to_quantize=[node.name for node in nodes])
        return (folder / "int8.onnx").read_bytes()


class OnnxInt8Backbone(OnnxBackbone):
    """The parts in ONNX Runtime sessions, from stride 8 on quantised to int8 with the calibrated ranges of
    ``ranges`` (:func:`int8_ranges`, :func:`quantize_graph`): ``to_f8`` runs in float32, ``f8_to_f32`` in int8, and
    ``to_f16`` (the start frame's copies) in float32 to stride 8 and int8 after it, as the frame loop does. Inputs and
    outputs stay float32."""

    def __init__(self, backbone: nn.Module, graphs: dict[str, bytes] | None, ranges: dict):
        super().__init__(backbone, graphs)
        self._ranges = ranges
        self._quantized: dict[str, bytes] = {}

    def _graph(self, name: str) -> bytes:
        if name not in self._quantized:
            self._quantized[name] = quantize_graph(super()._graph(name), self._ranges["parts"].get(name, {}))
        return self._quantized[name]
