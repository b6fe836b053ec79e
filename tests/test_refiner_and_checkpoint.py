import numpy as np
import pytest
import torch
import torchvision

from reusevos.config import ModelConfig, SessionConfig
from reusevos.errors import ReusevosError
from reusevos.model.backbone import Backbone
from reusevos.model.merge import label_slots, merge, soft_aggregate
from reusevos.model.network import VOSNetwork, load_model, read_checkpoint, save_checkpoint
from reusevos.model.refiner import Refiner


def test_backbone_feature_shapes_and_split_match_the_whole():
    net = Backbone("mobilenet_v2")
    x = torch.rand(1, 3, 480, 854)
    with torch.no_grad():
        f4, f8 = net.to_f8(x)
        f16, f32 = net.f8_to_f32(f8)
        whole = net(x)
    assert [tuple(f.shape) for f in (f4, f8, f16, f32)] == [
        (1, 24, 120, 214), (1, 32, 60, 107), (1, 96, 30, 54), (1, 320, 15, 27)]
    assert all(torch.equal(a, b) for a, b in zip((f4, f8, f16, f32), whole))
    with torch.no_grad():
        assert torch.equal(net.to_f16(x), f16)
    assert not any(p.requires_grad for p in net.parameters())
    net.train()
    assert not net.training  # batch-norm statistics never move



def test_folded_channels_last_backbone_gives_torchvisions_features(tmp_path):
    """Batch norms folded and channels-last memory: the same features as torchvision's own network."""
    torch.manual_seed(0)
    reference = torchvision.models.mobilenet_v2().eval()
    for module in reference.modules():  # statistics unlike the initial ones, so folding has work to do
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    torch.save(reference.state_dict(), tmp_path / "mnv2.pth")
    net = Backbone("mobilenet_v2", str(tmp_path / "mnv2.pth"))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    image = torch.rand(1, 3, 96, 136)
    with torch.no_grad():
        ours = net(image)
        x = (image - net.mean) / net.std
        expected, layers = [], reference.features
        for start, stop in ((0, 4), (4, 7), (7, 14), (14, 18)):
            x = layers[start:stop](x)
            expected.append(x)
    for got, want in zip(ours, expected):
        assert got.is_contiguous() and got.shape == want.shape
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))

def test_refiner_shapes_and_split_paths_equal_the_full_forward():
    torch.manual_seed(0)
    refiner = Refiner((24, 32, 96, 320)).eval()
    feats = (torch.randn(1, 24, 32, 48), torch.randn(1, 32, 16, 24), torch.randn(1, 96, 8, 12),
             torch.randn(1, 320, 4, 6))
    scores = torch.randn(3, 1, 8, 12)  # three objects share one frame's features
    with torch.no_grad():
        logits = refiner(feats, scores, (128, 190))
        r16, r32 = refiner.reduce_deep(feats[2], feats[3])
        state = refiner.deep(r16, r32, scores)
        r4, r8 = refiner.reduce_shallow(feats[0], feats[1])
        split = refiner.shallow(state, r4, r8, scores, (128, 190))
        single = refiner(feats, scores[1:2], (128, 190))
    assert logits.shape == (3, 1, 128, 190)
    assert state.shape == (3, 64, 8, 12)
    assert torch.allclose(logits, split)
    assert torch.allclose(logits[1:2], single, atol=1e-5)  # objects do not leak into each other


def test_soft_aggregation_hand_computed():
    probs = torch.tensor([[[0.9]], [[0.5]]])  # two objects, one pixel
    merged = soft_aggregate(probs)
    bg = min(1 - 0.9, 1 - 0.5)
    odds = np.array([bg / (1 - bg), 0.9 / 0.1, 0.5 / 0.5])
    assert np.allclose(merged[:, 0, 0].numpy(), odds / odds.sum(), atol=1e-6)
    assert int(merged.argmax(0)) == 1
    low = soft_aggregate(torch.tensor([[[0.2]]]))
    assert int(low.argmax(0)) == 0  # background wins where no object is likely



def test_label_slots_equal_argmax_including_ties():
    generator = torch.Generator().manual_seed(0)
    merged = soft_aggregate(torch.rand(3, 40, 50, generator=generator))
    assert torch.equal(label_slots(merged), merged.argmax(dim=0))
    tied = torch.tensor([[[0.4, 0.2]], [[0.4, 0.4]], [[0.2, 0.4]]])  # (3, 1, 2): ties in both pixels
    assert label_slots(tied).tolist() == [[0, 1]]  # the lower channel wins, as with argmax


def test_merging_inside_the_objects_box_equals_the_whole_frame():
    generator = torch.Generator().manual_seed(1)
    ids = [3, 7, 200]
    cases = {"windowed": torch.zeros(3, 60, 90), "none": torch.zeros(3, 60, 90), "whole": torch.rand(3, 60, 90)}
    cases["windowed"][0, 5:30, 10:40] = torch.rand(25, 30, generator=generator)
    cases["windowed"][1, 20:50, 30:70] = torch.rand(30, 40, generator=generator)
    cases["windowed"][2, 25:28, 35:38] = 1.0  # overlapping the others, certain
    for name, probs in cases.items():
        labels, merged = merge(probs, ids)
        whole = soft_aggregate(probs)
        assert torch.equal(merged, whole), name  # bit for bit, outside the box too
        assert torch.equal(labels, torch.tensor([0, *ids], dtype=torch.uint8)[label_slots(whole)]), name
    assert merge(cases["windowed"], ids)[0][26, 36] == 200 and merge(cases["none"], ids)[0].max() == 0
    labels, merged = merge(torch.zeros(0, 4, 5), [])
    assert labels.shape == (4, 5) and labels.max() == 0 and merged.shape == (1, 4, 5)
    with pytest.raises(ValueError, match="one object id"):
        merge(cases["none"], [1, 2])


def test_checkpoint_round_trip_is_strict(tmp_path, monkeypatch):
    import reusevos.weights as weights

    net = VOSNetwork(ModelConfig(), Backbone("mobilenet_v2"))
    torch.nn.init.constant_(net.refiner.head2.bias, 0.25)
    path = tmp_path / "w.pt"
    save_checkpoint(path, net, meta={"name": "test"})
    assert read_checkpoint(path)["meta"] == {"name": "test"}
    # Any backbone weight file will do here: the checkpoint never holds the backbone.
    backbone_file = tmp_path / "bb.pt"
    torch.save(torchvision.models.mobilenet_v2().state_dict(), backbone_file)
    monkeypatch.setattr(weights, "backbone_weights", lambda name, fetch=True: backbone_file)
    loaded = load_model(path)
    assert float(loaded.refiner.head2.bias.detach()) == pytest.approx(0.25)
    assert not any(k.startswith("backbone.") for k in read_checkpoint(path)["state_dict"])

    payload = torch.load(path, weights_only=True)
    del payload["state_dict"]["refiner.head2.bias"]
    torch.save(payload, tmp_path / "missing.pt")
    with pytest.raises(ReusevosError, match="missing: refiner.head2.bias"):
        load_model(tmp_path / "missing.pt")
    (tmp_path / "corrupt.pt").write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ReusevosError, match="damaged"):
        load_model(tmp_path / "corrupt.pt")
    torch.save({"hello": 1}, tmp_path / "other.pt")
    with pytest.raises(ReusevosError, match="not a reusevos checkpoint"):
        load_model(tmp_path / "other.pt")
    with pytest.raises(ReusevosError, match="not found"):
        load_model(tmp_path / "absent.pt")


@pytest.mark.parametrize("image_size", [(64, 96), (61, 94)])
def test_head_with_taps_at_half_resolution_is_the_plain_head(image_size):
    """Refiner.head computes its last 3x3 conv as nine 1x1 taps before the upsampling: the same logits
    (and gradients) as upsampling, conv3x3 and relu, upsampling and resizing, then conv3x3, also when the
    image size is not four times the level-4 size."""
    torch.manual_seed(0)
    refiner = Refiner((24, 32, 96, 320), 16)
    torch.nn.init.normal_(refiner.head2.bias)
    x4 = torch.randn(2, 16, (image_size[0] + 3) // 4, (image_size[1] + 3) // 4, requires_grad=True)

    def plain(x):
        x = torch.nn.functional.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        x = torch.relu(refiner.head1(x))
        x = torch.nn.functional.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return refiner.head2(torch.nn.functional.interpolate(x, size=image_size, mode="bilinear",
                                                             align_corners=False))

    expected, got = plain(x4), refiner.head(x4, image_size)
    assert got.shape == (2, 1, *image_size)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    grad_expected = torch.autograd.grad(expected.square().sum(), [x4, refiner.head2.weight])
    grad_got = torch.autograd.grad(got.square().sum(), [x4, refiner.head2.weight])
    for a, b in zip(grad_got, grad_expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_the_refiner_runs_in_bfloat16_only_in_the_bfloat16_mode(monkeypatch):
    """The refinement network computes in bfloat16 exactly when the backbone runs in OpenVINO bf16 on a CPU whose
    PyTorch kernels compute bfloat16 natively; a session then still hands on float32 states and probabilities."""
    import reusevos.model.network as network_module
    from reusevos.session import Session

    torch.manual_seed(0)
    network = VOSNetwork(ModelConfig(), Backbone("mobilenet_v2")).eval()

    def inside() -> bool:
        with network.refiner_precision():
            return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16

    monkeypatch.setattr(network_module, "cpu_computes_bf16", lambda: True)
    assert not inside()  # auto: ONNX Runtime or PyTorch, float32
    # The bfloat16 mode without OpenVINO: PyTorch runs the backbone (its graph runner declines), the refiner is
    # switched by the runtime's name alone.
    monkeypatch.setattr(network.backbone, "active_runtime", lambda device="cpu": "openvino-bf16")
    monkeypatch.setattr(network.backbone, "_graph_run", lambda part, x: None)
    assert inside()
    monkeypatch.setattr(network_module, "cpu_computes_bf16", lambda: False)
    assert not inside()  # PyTorch would emulate bfloat16, slower than float32
    monkeypatch.setattr(network_module, "cpu_computes_bf16", lambda: True)

    dtypes = []
    for level in (network.refiner.level16, network.refiner.level4):
        level.register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    frame = (torch.rand(64, 96, 3) * 255).to(torch.uint8).numpy()
    mask = np.zeros((64, 96), np.uint8)
    mask[20:40, 30:60] = 1
    session = Session(network, SessionConfig(variant="full"))
    session.step(frame, mask)
    out = session.step(frame, return_probabilities=True)
    assert dtypes and set(dtypes) == {torch.bfloat16}
    assert out.probabilities[1].dtype == np.float32 and out.labels.shape == (64, 96)
