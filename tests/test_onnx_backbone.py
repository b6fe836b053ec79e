"""The backbone under ONNX Runtime: the same features as PyTorch up to float rounding, the same masks on the
real clip, the runtime switch and its errors, and ONNX Runtime's threads following torch's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reusevos.errors import ReusevosError
from reusevos.model import onnx_backbone


def _features(backbone, runtime: str, image: torch.Tensor):
    with backbone.runtime_as(runtime), torch.no_grad():
        f4, f8 = backbone.to_f8(image)
        f16, f32 = backbone.f8_to_f32(f8)
        return f4, f8, f16, f32, backbone.to_f16(image)


def test_features_match_pytorch(backbone):
    torch.manual_seed(0)
    image = torch.rand(2, 3, 72, 100)  # sizes that do not divide by 32: 18x25, 9x13, 5x7, 3x4
    reference = _features(backbone, "torch", image)
    onnx = _features(backbone, "onnxruntime", image)
    assert set(backbone._onnx._sessions) == {"to_f8", "f8_to_f32", "to_f16"}  # it ran, each part in its graph
    for ours, theirs in zip(onnx, reference):
        assert ours.shape == theirs.shape and ours.dtype == torch.float32 and ours.is_contiguous()
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_runtime_choice_and_errors(backbone, monkeypatch):
    before = backbone.runtime
    with backbone.runtime_as("onnxruntime"):
        assert backbone.active_runtime("cpu") == "onnxruntime"
        assert backbone.active_runtime("cuda") == "torch"  # GPUs always run PyTorch
        with backbone.runtime_as(None):  # None leaves it as it is
            assert backbone.runtime == "onnxruntime"
    with pytest.raises(RuntimeError), backbone.runtime_as("torch"):
        raise RuntimeError("inside")
    assert backbone.runtime == before  # restored after an exception too
    with backbone.runtime_as("torch"):
        assert backbone.active_runtime("cpu") == "torch"
    with backbone.runtime_as("onnxruntime"):
        # an input that wants gradients goes through PyTorch, which keeps the graph; ONNX Runtime would not
        assert backbone.to_f8(torch.rand(1, 3, 32, 32, requires_grad=True))[1].requires_grad
    with pytest.raises(ReusevosError, match="unknown backbone runtime 'tensorrt'"):
        backbone.runtime = "tensorrt"
    # Without ONNX Runtime, auto falls back to PyTorch and asking for it is a clear error.
    monkeypatch.setattr(onnx_backbone, "onnxruntime_available", lambda: False)
    with backbone.runtime_as("auto"):
        assert backbone.active_runtime("cpu") == "torch"
    with pytest.raises(ReusevosError, match="pip install onnxruntime onnx"):
        backbone.runtime = "onnxruntime"
    assert onnx_backbone.onnxruntime_version() is None


@pytest.mark.parametrize("where", ["export", "run"])
def test_a_failure_falls_back_or_says_why(monkeypatch, where):
    from reusevos.model import backbone as backbone_module

    def broken(*_):
        raise RuntimeError("no such operator")

    if where == "export":
        monkeypatch.setattr(backbone_module, "OnnxBackbone", broken)
    else:
        monkeypatch.setattr(onnx_backbone.OnnxBackbone, "run", broken)
    image = torch.rand(1, 3, 32, 32)
    strict = backbone_module.Backbone(runtime="onnxruntime")
    with pytest.raises(ReusevosError, match="ONNX Runtime cannot run this backbone .RuntimeError: no such operator"):
        strict.to_f8(image)
    lenient = backbone_module.Backbone(runtime="auto")
    with pytest.warns(RuntimeWarning, match="it runs in PyTorch"):
        f4, f8 = lenient.to_f8(image)
    assert lenient.active_runtime("cpu") == "torch" and f8.shape == (1, 32, 4, 4)
    with lenient.runtime_as("torch"):
        torch.testing.assert_close(lenient.to_f8(image)[1], f8)


def test_inside_inference_mode():
    """Callers may run the model under torch.inference_mode, where PyTorch's exporter cannot trace."""
    from reusevos.model.backbone import Backbone

    fresh = Backbone(runtime="onnxruntime")  # random weights, nothing exported yet
    image = torch.rand(1, 3, 48, 64)
    with torch.inference_mode():
        f8 = fresh.to_f8(image)[1]
    with fresh.runtime_as("torch"), torch.no_grad():
        torch.testing.assert_close(f8, fresh.to_f8(image)[1], atol=1e-4, rtol=1e-4)
    assert "to_f8" in fresh._onnx._sessions


def test_onnxruntime_threads_follow_torch(backbone):
    threads = torch.get_num_threads()
    image = torch.rand(1, 3, 32, 32)
    try:
        with backbone.runtime_as("onnxruntime"), torch.no_grad():
            for wanted in (1, 2, 1):
                torch.set_num_threads(wanted)
                backbone.to_f8(image)
                session = backbone._onnx._sessions["to_f8"]
                assert session.get_session_options().intra_op_num_threads == wanted
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_same_masks_as_pytorch_on_the_real_clip(blackswan):
    """The shipped model on the first 6 frames of blackswan at 480p, backbone in each runtime."""
    from reusevos.model.network import load_model
    from reusevos.session import Session

    frames, masks = blackswan
    network = load_model(fetch_backbone=False)
    labels = {}
    for runtime in ("torch", "onnxruntime"):
        network.backbone.runtime = runtime
        session = Session(network)
        labels[runtime] = [session.step(frame, masks[0] if t == 0 else None).labels
                           for t, frame in enumerate(frames[:6])]
    for ours, theirs in zip(labels["onnxruntime"], labels["torch"]):
        assert np.mean(ours != theirs) < 1e-3  # float rounding moves a few boundary pixels at most
    assert any((frame_labels == 1).any() for frame_labels in labels["onnxruntime"][1:])
