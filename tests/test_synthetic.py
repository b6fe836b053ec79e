"""Synthetic clips: determinism, labels that match the pixels, speed, late objects, occlusion, layout."""

from __future__ import annotations

import tracemalloc
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from reusevos.cli import main
from reusevos.errors import ReusevosError
from reusevos.io.masks import read_mask
from reusevos.synthetic import (
    SyntheticConfig,
    consecutive_iou,
    cutouts_from_davis,
    generate_clip,
    parse_size,
    write_clip,
)

BLACKSWAN_ROOT = Path("/work/shared/data/davis2016-blackswan")


def _procedural_cutout() -> tuple[np.ndarray, np.ndarray]:
    """A stand-in for a real cut-out: a noisy image with a crescent-shaped mask."""
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    mask = np.zeros((90, 120), np.uint8)
    cv2.circle(mask, (60, 45), 40, 1, -1)
    cv2.circle(mask, (75, 40), 30, 0, -1)
    return image, mask


def _all_frames(clip):
    frames, labels = zip(*clip)
    return np.stack(frames), np.stack(labels)


def test_same_seed_same_clip_other_seed_other_clip():
    config = SyntheticConfig(size=(64, 96), num_frames=12, num_objects=3, speed=3.0, seed=11, late_objects=1,
                             background_speed=1.0)
    cutouts = [_procedural_cutout()]
    f1, l1 = _all_frames(generate_clip(config, cutouts))
    f2, l2 = _all_frames(generate_clip(config, cutouts))
    assert f1.shape == (12, 64, 96, 3) and f1.dtype == np.uint8
    assert l1.shape == (12, 64, 96) and l1.dtype == np.uint8
    assert np.array_equal(f1, f2) and np.array_equal(l1, l2)
    clip = generate_clip(config, cutouts)
    f3, l3 = _all_frames(clip)
    f4, l4 = _all_frames(clip)  # iterating again renders the same clip
    assert np.array_equal(f1, f4) and np.array_equal(l1, l4)

    config.seed = 12
    f5, l5 = _all_frames(generate_clip(config, cutouts))
    assert not np.array_equal(f1, f5) and not np.array_equal(l1, l5)
    assert np.abs(f1.astype(int) - f5.astype(int)).mean() > 10


def _check_labels_match_pixels(clip, frames_to_check):
    """Each object's labelled interior shows exactly that object; unlabelled pixels show the background."""
    kernel = np.ones((3, 3), np.uint8)
    checked = 0
    interior_total = region_total = 0
    for t in frames_to_check:
        frame, labels = clip.render(t)
        background, empty = clip.render(t, only=[])
        assert not empty.any()
        for obj in clip.objects:
            k = obj.object_id
            region = (labels == k).astype(np.uint8)
            if region.sum() < 50:
                continue
            interior = cv2.erode(region, kernel, iterations=2).astype(bool)
            solo, solo_labels = clip.render(t, only=[k])
            interior_total += int(interior.sum())
            region_total += int(region.sum())
            # The full frame shows object k alone wherever it is labelled k (its interior: edges blend).
            assert np.array_equal(frame[interior], solo[interior])
            # ... and that is the object, not the background showing through.
            differs = np.any(solo[interior] != background[interior], axis=1).mean()
            assert differs > 0.95
            # The label is a subset of where the object is when drawn alone.
            assert not (region.astype(bool) & (solo_labels != k)).any()
            checked += 1
        # Away from labelled pixels the frame is the background; the only exceptions are slivers of an
        # object thinner than a pixel, where its alpha never exceeds 0.5 (so they are faint, and unlabelled).
        far = ~cv2.dilate((labels > 0).astype(np.uint8), kernel, iterations=3).astype(bool)
        diff = np.abs(frame[far].astype(int) - background[far].astype(int)).max(axis=1)
        assert (diff == 0).mean() > 0.999 and (diff > 0).sum() < 10
    assert interior_total >= 0.6 * region_total  # most labelled pixels are checked exactly
    return checked


def test_labels_match_the_objects_pixels():
    config = SyntheticConfig(size=(120, 200), num_frames=20, num_objects=4, speed=4.0, seed=3, late_objects=1,
                             background_speed=2.0, object_size=(0.35, 0.55))
    clip = generate_clip(config, [_procedural_cutout()])
    kinds = {obj.kind for obj in clip.objects}
    assert "cutout" in kinds and kinds - {"cutout"}  # both real-style and procedural objects
    assert _check_labels_match_pixels(clip, [0, 7, 13, 19]) >= 12


@pytest.mark.skipif(not BLACKSWAN_ROOT.is_dir(), reason=f"{BLACKSWAN_ROOT} not present")
def test_swan_cutouts_from_a_davis_root():
    cutouts = cutouts_from_davis(BLACKSWAN_ROOT, split="val", every=10)
    assert len(cutouts) == 5  # frames 0, 10, 20, 30, 40; one object each
    for image, mask in cutouts:
        assert image.shape[:2] == mask.shape and mask.dtype == bool
        assert mask[0].any() and mask[-1].any() and mask[:, 0].any() and mask[:, -1].any()  # cropped to the box
    config = SyntheticConfig(size=(240, 432), num_frames=10, num_objects=2, speed=3.0, seed=5, cutout_fraction=1.0,
                             object_size=(0.5, 0.6))
    clip = generate_clip(config, cutouts)
    assert [obj.kind for obj in clip.objects] == ["cutout", "cutout"]
    assert _check_labels_match_pixels(clip, [0, 9]) >= 3
    frame, labels = clip.render(0)
    # Swans are dark: their labelled pixels are darker than the swan-free background on average.
    assert frame[labels > 0].mean() < 100


def test_slow_clips_change_less_than_fast_clips():
    """Mean consecutive-frame IoU, 240x432, 30 frames, 3 objects, seeds 0 / 1 / 2: measured 1.0 at speed 0,
    0.976 / 0.975 / 0.980 at speed 0.5, 0.910 / 0.901 / 0.927 at 2, 0.835 / 0.754 / 0.864 at 4."""
    for seed in range(3):
        mean_iou = {}
        for speed in (0.0, 0.5, 4.0):
            clip = generate_clip(SyntheticConfig(num_frames=30, num_objects=3, speed=speed, seed=seed))
            ious = consecutive_iou(clip.labels(), 3)
            assert ious.shape == (29, 3)
            mean_iou[speed] = float(np.nanmean(ious))
        assert mean_iou[0.0] == 1.0
        assert mean_iou[0.5] > 0.95
        assert mean_iou[4.0] < 0.9
        assert mean_iou[0.5] - mean_iou[4.0] > 0.08


def test_consecutive_iou_on_a_hand_made_case():
    a = np.zeros((4, 4), np.uint8)
    a[0, :2] = 1  # object 1: 2 pixels
    b = np.zeros((4, 4), np.uint8)
    b[0, 1:3] = 1  # shifted by one: IoU 1/3
    b[3, 3] = 2  # object 2 appears
    ious = consecutive_iou([a, b, b], 2)
    assert ious.shape == (2, 2)
    assert ious[0, 0] == pytest.approx(1 / 3) and ious[0, 1] == 0.0
    assert ious[1, 0] == 1.0 and ious[1, 1] == 1.0
    assert np.isnan(consecutive_iou([a, a], 2)[0, 1])  # absent from both frames


def test_late_objects_appear_at_their_start_frame():
    config = SyntheticConfig(size=(96, 160), num_frames=24, num_objects=4, speed=2.0, seed=21, late_objects=2)
    clip = generate_clip(config)
    starts = [obj.start_frame for obj in clip.objects]
    assert starts[:2] == [0, 0] and all(1 <= s <= 12 for s in starts[2:]) and starts == sorted(starts)
    labels = np.stack(list(clip.labels()))
    for obj in clip.objects:
        present = (labels == obj.object_id).reshape(len(labels), -1).sum(axis=1)
        assert (present[: obj.start_frame] == 0).all()
        assert present[obj.start_frame] > 0
        assert np.isnan(obj.poses[: obj.start_frame]).all() and not np.isnan(obj.poses[obj.start_frame:]).any()
    for seed in range(10):  # every object starts with a usable mask
        clip = generate_clip(SyntheticConfig(size=(96, 160), num_frames=16, num_objects=5, late_objects=3, seed=seed))
        for obj in clip.objects:
            assert (clip.render(obj.start_frame, with_frame=False)[1] == obj.object_id).sum() >= 20


def test_occlusion_hides_the_object_behind():
    config = SyntheticConfig(size=(96, 128), num_frames=40, num_objects=2, speed=3.0, seed=1,
                             object_size=(0.6, 0.7), min_visible=0.0)
    clip = generate_clip(config)
    back, front = sorted(clip.objects, key=lambda o: o.z)
    hidden_frames = 0
    for t in range(len(clip)):
        labels = clip.render(t, with_frame=False)[1]
        for obj in (back, front):
            alone = clip.render(t, only=[obj.object_id], with_frame=False)[1]
            area, area_alone = (labels == obj.object_id).sum(), (alone == obj.object_id).sum()
            if obj is front:
                assert area == area_alone  # nothing covers the front object
            else:
                assert area <= area_alone
                hidden_frames += area < area_alone
    assert hidden_frames >= 10  # measured: the back object is partly hidden in 22 of the 40 frames


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5])
def test_one_to_five_objects(count):
    clip = generate_clip(SyntheticConfig(size=(96, 128), num_frames=3, num_objects=count, seed=count))
    assert clip.num_objects == count
    _, labels = clip.render(0)
    assert set(np.unique(labels).tolist()) == set(range(count + 1))


def test_bad_settings_are_user_errors():
    for bad in (dict(num_objects=0), dict(num_objects=6), dict(late_objects=2, num_objects=2),
                dict(speed=-1.0), dict(num_frames=0), dict(size=(8, 8))):
        with pytest.raises(ReusevosError):
            generate_clip(SyntheticConfig(**bad))
    assert parse_size("240x432") == (240, 432)
    with pytest.raises(ReusevosError, match="HxW"):
        parse_size("240")


def test_long_clips_stream_in_constant_memory():
    clip = generate_clip(SyntheticConfig(size=(48, 64), num_frames=3000, num_objects=2, speed=2.0, late_objects=1))
    stream = iter(clip)
    assert isinstance(stream, types.GeneratorType)
    tracemalloc.start()
    try:
        count = sum(1 for _ in stream)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 3000
    assert peak < 2_000_000  # holding the frames would take 3000 * 48 * 64 * 4 bytes = 37 MB


def test_written_layout_reads_back(tmp_path):
    root = tmp_path / "synth"
    configs = {
        "clip-a": SyntheticConfig(size=(64, 96), num_frames=6, num_objects=2, speed=2.0, seed=1),
        "clip-b": SyntheticConfig(size=(64, 96), num_frames=5, num_objects=3, speed=2.0, seed=2, late_objects=1),
    }
    for name, config in configs.items():
        clip = write_clip(root, name, config, split="train")
        for t, (frame, labels) in enumerate(clip):
            mask = read_mask(root / "Annotations" / "480p" / name / f"{t:05d}.png")
            assert np.array_equal(mask, labels)
            with Image.open(root / "JPEGImages" / "480p" / name / f"{t:05d}.jpg") as image:
                jpeg = np.asarray(image.convert("RGB"))
            assert jpeg.shape == frame.shape
            mse = np.mean((jpeg.astype(float) - frame) ** 2)
            assert 10 * np.log10(255**2 / mse) > 28  # JPEG quality 95 (4:2:0) on fine colour textures: ~30 dB
        assert len(list((root / "JPEGImages" / "480p" / name).glob("*.jpg"))) == config.num_frames
    assert (root / "ImageSets" / "2017" / "train.txt").read_text().split() == ["clip-a", "clip-b"]
    with Image.open(root / "Annotations" / "480p" / "clip-a" / "00000.png") as image:
        assert image.mode == "P"
    with pytest.raises(ReusevosError, match="overwrite"):
        write_clip(root, "clip-a", configs["clip-a"])
    write_clip(root, "clip-a", configs["clip-a"], overwrite=True)
    assert (root / "ImageSets" / "2017" / "train.txt").read_text().split() == ["clip-a", "clip-b"]


def test_synth_command(tmp_path, capsys):
    root = tmp_path / "out"
    assert main(["synth", str(root), "--num", "2", "--frames", "4", "--objects", "2", "--speed", "1.5",
                 "--seed", "7", "--size", "48x80", "--late", "1"]) == 0
    assert "wrote 2 clips" in capsys.readouterr().out
    names = (root / "ImageSets" / "2017" / "train.txt").read_text().split()
    assert names == ["synth00007", "synth00008"]
    # Clip i is the library's clip with seed SEED + i.
    expected = generate_clip(SyntheticConfig(size=(48, 80), num_frames=4, num_objects=2, speed=1.5, seed=8,
                                             late_objects=1))
    for t, labels in enumerate(expected.labels()):
        assert np.array_equal(read_mask(root / "Annotations" / "480p" / "synth00008" / f"{t:05d}.png"), labels)
    assert main(["synth", str(root), "--objects", "6"]) == 2
    assert "num_objects must be 1..5" in capsys.readouterr().err
