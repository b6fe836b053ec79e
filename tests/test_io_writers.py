"""Writers: the overlay renderer, the overlay mp4, the palette PNG folder, and their failures."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from reusevos.errors import ReusevosError
from reusevos.io.frames import open_frames
from reusevos.io.masks import DAVIS_PALETTE, read_mask
from reusevos.io.writers import MaskWriter, OverlayVideoWriter, VideoWriter, render_overlay

# A folder no one can create files in, root included (Linux procfs).
UNWRITABLE = "/proc/self/reusevos-out"
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc as an unwritable place")


def two_objects(height: int = 40, width: int = 60) -> np.ndarray:
    labels = np.zeros((height, width), np.uint8)
    labels[5:25, 5:25] = 1
    labels[10:35, 35:55] = 2
    return labels


# --- render_overlay --------------------------------------------------------------------------------


def test_overlay_blends_palette_colours_and_draws_contours():
    frame = np.full((40, 60, 3), 100, np.uint8)
    labels = two_objects()
    out = render_overlay(frame, labels, alpha=0.5, contour_width=2)
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert np.array_equal(frame, np.full((40, 60, 3), 100))  # input untouched
    # Interiors: half frame, half DAVIS colour; object 1 (128, 0, 0), object 2 (0, 128, 0).
    assert tuple(out[15, 15]) == (114, 50, 50)
    assert tuple(out[22, 45]) == (50, 114, 50)
    # Far from any object the frame is unchanged.
    assert tuple(out[38, 2]) == (100, 100, 100)
    # Object borders are drawn in the object's own colour, over the border pixel and one outside it.
    assert tuple(out[15, 5]) == (128, 0, 0) and tuple(out[15, 4]) == (128, 0, 0)
    assert tuple(out[10, 45]) == (0, 128, 0) and tuple(out[9, 45]) == (0, 128, 0)
    assert tuple(out[15, 2]) == (100, 100, 100)


def test_overlay_without_contours_and_with_full_alpha():
    frame = np.full((40, 60, 3), 100, np.uint8)
    labels = two_objects()
    labels[30:38, 2:10] = 9
    out = render_overlay(frame, labels, alpha=1.0, contour_width=0)
    expected = np.where(labels[..., None] > 0, DAVIS_PALETTE[labels], frame)
    np.testing.assert_array_equal(out, expected)
    assert tuple(out[33, 5]) == (192, 0, 0)


def test_overlay_of_empty_mask_is_the_frame():
    frame = np.random.default_rng(1).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    out = render_overlay(frame, np.zeros((10, 12), np.uint8))
    np.testing.assert_array_equal(out, frame)
    assert out is not frame


def test_overlay_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        render_overlay(np.zeros((10, 12, 3), np.uint8), np.zeros((10, 13), np.uint8))
    with pytest.raises(ValueError):
        render_overlay(np.zeros((10, 12), np.uint8), np.zeros((10, 12), np.uint8))


# --- overlay video ---------------------------------------------------------------------------------


def test_overlay_video_round_trip(tmp_path):
    path = tmp_path / "out" / "overlay.mp4"  # the folder is created
    frame = np.full((40, 60, 3), 100, np.uint8)
    labels = two_objects()
    with OverlayVideoWriter(path, fps=12, alpha=0.5) as writer:
        for t in range(10):
            writer.write(frame, np.roll(labels, t, axis=1))
        writer.write(frame)  # a frame without masks
    assert writer.frames_written == 11
    assert sorted(p.name for p in path.parent.iterdir()) == ["overlay.mp4"]  # no temporary left
    source = open_frames(path)
    assert len(source) == 11 and source.size == (40, 60) and source.fps == pytest.approx(12)
    decoded = [f for _, f in source]
    for t in (0, 9):
        expected = render_overlay(frame, np.roll(labels, t, axis=1))
        interior = np.zeros((40, 60), bool)
        interior[8:22, 8 + t : 22 + t] = True  # object 1 away from its outline
        assert np.abs(decoded[t][interior].astype(int) - expected[interior]).mean() < 4
        # object 1 is red-ish in the video: R well above G and B
        r, g, b = decoded[t][15, 15 + t].astype(int)
        assert r > g + 40 and r > b + 40
    assert np.abs(decoded[10].astype(int) - 100).mean() < 2


def test_video_writer_keeps_an_older_file_when_the_run_fails(tmp_path):
    path = tmp_path / "overlay.mp4"
    path.write_bytes(b"previous result")
    with pytest.raises(RuntimeError):
        with VideoWriter(path) as writer:
            writer.write(np.zeros((8, 8, 3), np.uint8))
            raise RuntimeError("segmentation failed half way")
    assert path.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["overlay.mp4"]


def test_video_writer_with_no_frames_is_an_error(tmp_path):
    path = tmp_path / "empty.mp4"
    with pytest.raises(ReusevosError, match="no frames") as info:
        with VideoWriter(path):
            pass
    assert str(path) in str(info.value) and not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_video_writer_mpeg4_fallback(tmp_path):
    path = tmp_path / "m4.mp4"
    with VideoWriter(path, fps=10, codec="mpeg4") as writer:
        for _ in range(5):
            writer.write(np.full((32, 48, 3), (200, 60, 30), np.uint8))
    frames = [f for _, f in open_frames(path)]
    assert len(frames) == 5
    assert np.abs(frames[2].astype(int) - (200, 60, 30)).mean() < 4


def test_video_writer_rejects_a_frame_of_another_size(tmp_path):
    with VideoWriter(tmp_path / "a.mp4") as writer:
        writer.write(np.zeros((8, 8, 3), np.uint8))
        with pytest.raises(ValueError):
            writer.write(np.zeros((8, 10, 3), np.uint8))


def test_video_output_errors(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    cases = {
        blocker / "overlay.mp4": "file.txt",  # parent is a file
        tmp_path: str(tmp_path),  # a folder, not a file
        tmp_path / "overlay.gif": "overlay.gif",  # not a video container we write
    }
    (tmp_path / "adir.mp4").mkdir()
    cases[tmp_path / "adir.mp4"] = "adir.mp4"
    for path, named in cases.items():
        with pytest.raises(ReusevosError) as info:
            VideoWriter(path)
        assert named in str(info.value), path


@linux_only
def test_video_output_in_unwritable_place(tmp_path):
    with pytest.raises(ReusevosError) as info:
        OverlayVideoWriter(f"{UNWRITABLE}/overlay.mp4")
    assert "overlay.mp4" in str(info.value)


# --- palette PNG folder ----------------------------------------------------------------------------


def test_mask_writer_creates_the_folder_and_writes_palette_pngs(tmp_path):
    folder = tmp_path / "results" / "blackswan"
    writer = MaskWriter(folder)
    assert folder.is_dir()
    labels = two_objects()
    path = writer.write("00000", labels)
    writer.write("00001", np.zeros_like(labels))
    assert path == folder / "00000.png" and writer.written == 2
    assert sorted(p.name for p in folder.iterdir()) == ["00000.png", "00001.png"]
    np.testing.assert_array_equal(read_mask(path), labels)
    MaskWriter(folder)  # an existing folder is fine


def test_mask_writer_output_is_a_file(tmp_path):
    target = tmp_path / "out"
    target.write_text("not a folder")
    with pytest.raises(ReusevosError, match="is a file") as info:
        MaskWriter(target)
    assert str(target) in str(info.value)
    assert target.read_text() == "not a folder"


def test_mask_writer_below_a_file(tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(ReusevosError) as info:
        MaskWriter(tmp_path / "out" / "seq")
    assert str(tmp_path / "out" / "seq") in str(info.value)


@linux_only
def test_mask_writer_unwritable_folder():
    with pytest.raises(ReusevosError, match="cannot write") as info:
        MaskWriter(UNWRITABLE)
    assert UNWRITABLE in str(info.value)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores permission bits")
def test_mask_writer_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(ReusevosError, match="cannot write"):
            MaskWriter(folder)
    finally:
        folder.chmod(0o700)
