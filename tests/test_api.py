"""The public Python API: lazy exports, device choice, the README quick start, segment_video, start masks and
the upscaling of masks computed at a reduced size."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import reusevos
from reusevos.config import ModelConfig
from reusevos.errors import ReusevosError
from reusevos.io.frames import FrameSource
from reusevos.io.masks import read_mask, write_mask
from reusevos.model.backbone import Backbone
from reusevos.segment import StartMasks, resize_labels, upscale_labels
from reusevos.synthetic import SyntheticConfig, generate_clip, write_clip


@pytest.fixture(scope="module")
def gate_weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "gate.pt"
    reusevos.save_checkpoint(path, reusevos.VOSNetwork(ModelConfig(reuse_gate=True), Backbone("mobilenet_v2")),
                             meta={"name": "random"})
    return path


def test_import_is_cheap_and_exports_resolve():
    code = ("import sys, reusevos; assert 'torch' not in sys.modules, 'torch imported'; "
            "s = reusevos.Session; assert 'torch' in sys.modules; print(s.__module__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "reusevos.session"
    for name in reusevos.__all__:
        assert getattr(reusevos, name) is not None
        assert name in dir(reusevos)
    assert reusevos.open_frames.__module__ == "reusevos.io.frames"
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        reusevos.nothing  # noqa: B018


def test_resolve_device(monkeypatch):
    from reusevos import api

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(api, "_mps_available", lambda: False)
    assert reusevos.resolve_device("auto") == torch.device("cpu")
    assert reusevos.resolve_device(" CPU ") == torch.device("cpu")
    with pytest.raises(ReusevosError, match="no usable CUDA"):
        reusevos.resolve_device("cuda")
    with pytest.raises(ReusevosError, match="MPS backend is not available"):
        reusevos.resolve_device("mps")
    with pytest.raises(ReusevosError, match="unknown device 'gpu'"):
        reusevos.resolve_device("gpu")
    monkeypatch.setattr(api, "_mps_available", lambda: True)
    assert reusevos.resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert reusevos.resolve_device("auto") == torch.device("cuda")  # CUDA first
    assert reusevos.resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ReusevosError, match="has 1 CUDA device"):
        reusevos.resolve_device("cuda:1")


@pytest.mark.slow
def test_readme_quick_start_loop(gate_weights, tmp_path):
    """The README's Python quick start, on a synthetic clip written as a frame folder plus its first mask."""
    write_clip(tmp_path, "clip", SyntheticConfig(size=(96, 160), num_frames=5, num_objects=2, seed=4))
    frames_dir = tmp_path / "JPEGImages" / "480p" / "clip"
    (tmp_path / "out").mkdir()

    model = reusevos.load_model(gate_weights, device="auto")
    session = reusevos.Session(model, reusevos.SessionConfig(variant="reuse", tau=0.5))
    first = reusevos.read_mask(tmp_path / "Annotations" / "480p" / "clip" / "00000.png")
    results = []
    for i, (name, frame) in enumerate(reusevos.open_frames(frames_dir)):
        result = session.step(frame, first if i == 0 else None)
        reusevos.write_mask(tmp_path / "out" / f"{name}.png", result.labels)
        results.append(result)

    assert model.weights_file == str(gate_weights)
    assert len(results) == 5 and results[0].started == [1, 2]
    assert np.array_equal(results[0].labels, first)
    for r in results[1:]:
        assert r.labels.shape == (96, 160) and set(r.routes) == {1, 2}
        assert all((r.routes[k] != "computed") == (r.gate_probability[k] >= 0.5) for k in (1, 2))
    rates = session.reuse_rates
    assert set(rates) == {1, 2}
    for k in (1, 2):
        assert rates[k] == pytest.approx(sum(r.routes[k] != "computed" for r in results[1:]) / 4)
    assert np.array_equal(read_mask(tmp_path / "out" / "00004.png"), results[-1].labels)


@pytest.mark.slow
def test_segment_video_in_memory_with_callbacks(gate_weights):
    clip = generate_clip(SyntheticConfig(size=(96, 160), num_frames=4, num_objects=1, seed=5))
    items = [(f"{t:05d}", frame) for t, (frame, _) in enumerate(clip)]
    first = clip.render(0, with_frame=False)[1]

    class Source(FrameSource):  # an in-memory source: any FrameSource works
        path, source_size, fps = "memory", (96, 160), None
        names = [n for n, _ in items]

        def __len__(self):
            return len(items)

        def _frames(self):
            yield from items

    model = reusevos.load_model(gate_weights)
    seen, started = [], []
    stats = reusevos.segment_video(model, Source(), {"00000": first}, None, warmup=False,
                                   on_start=lambda s: started.append(s.frames),
                                   on_frame=lambda r, s: seen.append((r.index, s.frames)))
    assert started == [0] and seen == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert stats.frames == 4 and stats.resolution == (96, 160) and stats.process_resolution == (96, 160)
    assert stats.settings["variant"] == "flow" and stats.settings["tau"] == 0.9  # the whole-video default:
    assert stats.settings["lookahead"] is True and stats.settings["memory_clock"] == "frames"  # offline_config()
    assert stats.objects[1].start_frame == 0 and len(stats.objects[1].routes) == 3
    assert stats.fps == pytest.approx(4 / stats.process_s)


def test_start_masks_from_folder(tmp_path):
    labels = np.zeros((20, 30), np.uint8)
    labels[2:10, 2:10] = 1
    later = labels.copy()
    later[12:18, 15:25] = 2
    later[0, :] = 255  # DAVIS void: background here
    folder = tmp_path / "masks"
    folder.mkdir()
    write_mask(folder / "0.png", labels)  # numbers match frames by value: 0 -> 00000
    write_mask(folder / "00003.png", labels)  # no new object: dropped
    write_mask(folder / "5.png", later)
    (folder / "notes.txt").write_text("ignored")
    names = [f"{i:05d}" for i in range(8)]
    masks = StartMasks.from_path(folder, names)
    masks.check(names, (20, 30))
    assert masks.names == ["00000", "00005"] and masks.starts == {1: "00000", 2: "00005"}
    assert masks.read("00003") is None
    assert set(np.unique(masks.read("00005")).tolist()) == {0, 1, 2}
    # Nearest-neighbour halving keeps every other row and column: object 1 keeps 4x4 pixels, object 2 3x5.
    StartMasks.from_path(folder, names).check(names, (20, 30), (10, 15), min_pixels=15)
    with pytest.raises(ReusevosError, match=r"object 2 in mask .*5.png covers 15 pixels at the processing size "
                                            r"15x10 \(raise --max-size\); at least 16"):
        StartMasks.from_path(folder, names).check(names, (20, 30), (10, 15), min_pixels=16)
    write_mask(folder / "00005.png", later)
    with pytest.raises(ReusevosError, match="both for frame 00005"):
        StartMasks.from_path(folder, names)
    with pytest.raises(ReusevosError, match="mask not found"):
        StartMasks.from_path(tmp_path / "absent", names)


def test_resize_and_upscale_labels_hand_computed():
    labels = np.array([[0, 1], [2, 2]], np.uint8)
    assert np.array_equal(resize_labels(labels, (4, 4)), np.repeat(np.repeat(labels, 2, 0), 2, 1))
    # One object, probability 1 in the left column and 0 in the right, upsampled 2x in width: bilinear values
    # per row are 1, 0.75, 0.25, 0 (pixel centres), so the object covers the left half.
    probs = {1: np.array([[1.0, 0.0], [1.0, 0.0]], np.float32)}
    assert upscale_labels(probs, (2, 4)).tolist() == [[1, 1, 0, 0], [1, 1, 0, 0]]
    # Two objects: background is 1 - sum. At 0.3 / 0.3 background (0.4) wins; at 0.6 / 0.3 object 1 does.
    probs = {1: np.array([[0.3, 0.6]], np.float32), 3: np.array([[0.3, 0.1]], np.float32)}
    assert upscale_labels(probs, (1, 2)).tolist() == [[0, 1]]
    # An object starting this frame takes its given mask exactly, over what the probabilities say.
    start = np.array([[0, 0, 3, 3], [0, 0, 0, 3]], np.uint8)
    probs = {1: np.full((1, 2), 0.9, np.float32), 3: np.zeros((1, 2), np.float32)}
    assert upscale_labels(probs, (2, 4), start, started=[3]).tolist() == [[1, 1, 3, 3], [1, 1, 1, 3]]
    assert upscale_labels({}, (2, 3)).tolist() == [[0, 0, 0], [0, 0, 0]]
