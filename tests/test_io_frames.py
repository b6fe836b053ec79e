"""Frame sources: folders and video files, streamed; resizing; every bad input a user can give."""

from __future__ import annotations

import os
import weakref
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from reusevos.errors import ReusevosError
from reusevos.io import frames as frames_module
from reusevos.io.frames import (
    FolderFrames,
    VideoFrames,
    fit_size,
    frame_name,
    natural_key,
    open_frames,
    resize_frame,
)
from reusevos.io.writers import VideoWriter

SHARED = Path(os.environ.get("REUSEVOS_SHARED", Path(__file__).resolve().parents[2] / "shared"))
BLACKSWAN_FRAMES = SHARED / "data" / "davis2016-blackswan" / "JPEGImages" / "480p" / "blackswan"

# Mean absolute difference (grey levels, 0..255) allowed between a smooth frame and its H.264
# (crf 18, yuv420p) copy. Chroma subsampling and the colour conversion alone cost about 1.9 on the
# clip below; measured 2.3 with the codec.
CODEC_TOLERANCE = 3.0


def smooth_frame(index: int, height: int, width: int) -> np.ndarray:
    """A smooth moving colour pattern, ``(H, W, 3)`` uint8; each index gives a distinct frame."""
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    r = 128 + 100 * np.sin((xx + 3 * index) / 17)
    g = 128 + 100 * np.cos((yy - 2 * index) / 13)
    b = 128 + 80 * np.sin((xx + yy + index) / 23)
    return np.stack([r, g, b], axis=-1).round().astype(np.uint8)


def write_video(path: Path, count: int, height: int, width: int, fps: float = 24.0) -> Path:
    with VideoWriter(path, fps=fps) as writer:
        for i in range(count):
            writer.write(smooth_frame(i, height, width))
    return path


def write_pngs(folder: Path, names: list[str], height: int = 24, width: int = 32) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    frames = []
    for i, name in enumerate(names):
        frame = smooth_frame(i, height, width)
        Image.fromarray(frame).save(folder / f"{name}.png")
        frames.append(frame)
    return frames


# --- folders ---------------------------------------------------------------------------------------


def test_natural_sort_of_frame_names():
    names = ["frame10", "frame2", "frame1", "Frame3", "frame0100", "frame20"]
    assert sorted(names, key=natural_key) == ["frame1", "frame2", "Frame3", "frame10", "frame20", "frame0100"]


def test_folder_source_streams_frames_by_natural_name_order(tmp_path):
    names = ["1", "10", "2", "100", "20"]
    frames = dict(zip(names, write_pngs(tmp_path / "clip", names)))
    (tmp_path / "clip" / "notes.txt").write_text("ignored")
    (tmp_path / "clip" / "._1.png").write_bytes(b"macOS resource fork, ignored")
    source = open_frames(tmp_path / "clip")
    assert isinstance(source, FolderFrames)
    assert source.names == ["1", "2", "10", "20", "100"]
    assert len(source) == 5 and source.size == (24, 32) and source.fps is None
    seen = list(source)
    assert [name for name, _ in seen] == source.names
    for name, frame in seen:
        assert frame.dtype == np.uint8 and frame.shape == (24, 32, 3)
        assert frame.flags.writeable  # torch.from_numpy warns on read-only arrays
        np.testing.assert_array_equal(frame, frames[name])  # PNG is lossless
    assert [name for name, _ in source] == source.names  # a second pass starts again


def test_folder_of_mixed_jpeg_png_grey_and_rgba(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    rgb = smooth_frame(0, 16, 20)
    Image.fromarray(rgb).save(folder / "00000.jpg", quality=95)
    Image.fromarray(rgb[..., 0]).save(folder / "00001.png")  # grey
    Image.fromarray(np.dstack([rgb, np.full((16, 20), 7, np.uint8)])).save(folder / "00002.PNG")  # RGBA
    frames = dict(open_frames(folder))
    assert list(frames) == ["00000", "00001", "00002"]
    assert np.abs(frames["00000"].astype(int) - rgb).mean() < 3  # JPEG q95
    np.testing.assert_array_equal(frames["00001"], np.repeat(rgb[..., :1], 3, axis=2))
    np.testing.assert_array_equal(frames["00002"], rgb)


def test_real_blackswan_folder():
    if not BLACKSWAN_FRAMES.is_dir():
        pytest.skip(f"shared blackswan clip not found at {BLACKSWAN_FRAMES} (set REUSEVOS_SHARED)")
    source = open_frames(BLACKSWAN_FRAMES)
    assert len(source) == 50
    assert source.size == (480, 854)
    assert source.names == [f"{i:05d}" for i in range(50)]
    count = 0
    for (name, frame), expected in zip(source, source.names):
        assert name == expected and frame.shape == (480, 854, 3) and frame.dtype == np.uint8
        if count in (0, 49):
            reference = np.array(Image.open(BLACKSWAN_FRAMES / f"{name}.jpg").convert("RGB"))
            np.testing.assert_array_equal(frame, reference)
        count += 1
    assert count == 50


def test_max_size_resizes_with_area_averaging():
    if not BLACKSWAN_FRAMES.is_dir():
        pytest.skip(f"shared blackswan clip not found at {BLACKSWAN_FRAMES} (set REUSEVOS_SHARED)")
    source = open_frames(BLACKSWAN_FRAMES, max_size=427)
    assert source.source_size == (480, 854) and source.size == (240, 427)
    name, frame = next(iter(source))
    full = np.array(Image.open(BLACKSWAN_FRAMES / f"{name}.jpg").convert("RGB"))
    np.testing.assert_array_equal(frame, cv2.resize(full, (427, 240), interpolation=cv2.INTER_AREA))
    # A limit above the frame size leaves frames untouched.
    assert open_frames(BLACKSWAN_FRAMES, max_size=1000).size == (480, 854)


def test_fit_size_and_resize_frame():
    assert fit_size((480, 854), None) == (480, 854)
    assert fit_size((480, 854), 854) == (480, 854)
    assert fit_size((1080, 1920), 960) == (540, 960)
    assert fit_size((1920, 1080), 640) == (640, 360)
    assert fit_size((3, 5000), 100) == (1, 100)  # never a zero side
    frame = np.zeros((4, 6, 3), np.uint8)
    frame[:, :3] = 200
    np.testing.assert_array_equal(resize_frame(frame, (2, 3))[:, 0], [[200] * 3] * 2)
    assert resize_frame(frame, (4, 6)) is frame


def test_frame_names_widen_past_99999():
    assert frame_name(0) == "00000" and frame_name(49, 50) == "00049"
    assert frame_name(7, 123_456) == "000007" and frame_name(123_455, 123_456) == "123455"


# --- video files -----------------------------------------------------------------------------------


def test_mp4_round_trip(tmp_path):
    path = write_video(tmp_path / "clip.mp4", count=24, height=96, width=128, fps=24)
    source = open_frames(path)
    assert isinstance(source, VideoFrames)
    assert len(source) == 24 and source.size == (96, 128) and source.fps == pytest.approx(24.0)
    assert source.names == [f"{i:05d}" for i in range(24)]
    names = []
    for i, (name, frame) in enumerate(source):
        names.append(name)
        assert frame.shape == (96, 128, 3) and frame.dtype == np.uint8 and frame.flags.writeable
        diff = np.abs(frame.astype(np.int16) - smooth_frame(i, 96, 128))
        assert diff.mean() < CODEC_TOLERANCE, (i, diff.mean())
        # Frames come back in order: each is far closer to its own original than to its neighbour's.
        other = smooth_frame(i + 1, 96, 128)
        assert np.abs(frame.astype(np.int16) - other).mean() > 3 * diff.mean()
    assert names == source.names


@pytest.mark.parametrize("suffix", [".mkv", ".mov"])
def test_other_containers_and_frame_count_without_header(tmp_path, suffix):
    path = write_video(tmp_path / f"clip{suffix}", count=17, height=32, width=48, fps=30)
    source = open_frames(path)
    # Matroska declares no frame count: len() counts packets without decoding.
    assert len(source) == 17 == sum(1 for _ in source)
    assert source.fps == pytest.approx(30.0)


def test_webm_vp9(tmp_path):
    path = tmp_path / "clip.webm"
    try:
        container = av.open(str(path), "w")
        stream = container.add_stream("libvpx-vp9", rate=25)
    except (av.FFmpegError, ValueError) as exc:
        pytest.skip(f"no VP9 encoder in this FFmpeg build: {exc}")
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    stream.options = {"crf": "20", "b": "0", "deadline": "realtime", "cpu-used": "8"}
    for i in range(9):
        for packet in stream.encode(av.VideoFrame.from_ndarray(smooth_frame(i, 48, 64), format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    source = open_frames(path)
    frames = list(source)
    assert len(source) == 9 == len(frames) and source.size == (48, 64)
    assert np.abs(frames[4][1].astype(int) - smooth_frame(4, 48, 64)).mean() < 2 * CODEC_TOLERANCE


def test_odd_sized_video_is_padded_to_even(tmp_path):
    path = write_video(tmp_path / "odd.mp4", count=3, height=45, width=61)
    source = open_frames(path)
    assert source.size == (46, 62)
    _, frame = next(iter(source))
    original = smooth_frame(0, 45, 61)
    assert np.abs(frame[:45, :61].astype(int) - original).mean() < CODEC_TOLERANCE
    # The added row and column repeat the border (within codec error), they are not black.
    assert np.abs(frame[45, :61].astype(int) - original[44]).mean() < 3 * CODEC_TOLERANCE


def test_display_rotation_is_applied(tmp_path):
    """A phone video stored landscape with a rotation tag reads back upright (portrait)."""
    path = tmp_path / "phone.mp4"
    stored = np.zeros((48, 64, 3), np.uint8)
    stored[:16, :16] = 255  # white block at the stored top-left
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=24)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    if not hasattr(stream, "set_display_rotation"):
        container.close()
        pytest.skip("this PyAV cannot tag a rotation")
    stream.set_display_rotation(90)
    for _ in range(2):
        for packet in stream.encode(av.VideoFrame.from_ndarray(stored, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    with av.open(str(path)) as check:
        rotation = next(check.decode(video=0)).rotation
    assert rotation in (90, -90)
    source = open_frames(path)
    assert source.size == (64, 48)
    _, frame = next(iter(source))
    # ``rotation`` is counter-clockwise: +90 takes the stored top-left to the bottom-left, -90 to the top-right.
    corner = frame[-16:, :16] if rotation == 90 else frame[:16, -16:]
    assert corner.mean() > 200 and frame.mean() < 80


def _long_clip(tmp_path: Path, kind: str, count: int, height: int, width: int):
    if kind == "video":
        return open_frames(write_video(tmp_path / "long.mp4", count, height, width))
    folder = tmp_path / "long"
    folder.mkdir()
    frame = smooth_frame(0, height, width)
    for i in range(count):
        cv2.imwrite(str(folder / f"{i:05d}.png"), frame)
    return open_frames(folder)


@pytest.mark.parametrize("kind", ["video", "folder"])
def test_sources_hold_no_frame_once_the_caller_drops_it(tmp_path, kind):
    """Of 300 frames, at most the current one and the one being decoded are alive at any time."""
    source = _long_clip(tmp_path, kind, 300, 48, 64)
    refs, most_alive = [], 0
    for _, frame in source:
        refs.append(weakref.ref(frame))
        del frame
        most_alive = max(most_alive, sum(ref() is not None for ref in refs[-50:]))
    assert len(refs) == 300
    assert most_alive <= 2


class _CountingContainer:
    """Wraps a PyAV input container and counts the frames its decoder hands out."""

    def __init__(self, inner, decoded: list):
        self._inner, self._decoded = inner, decoded

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._inner.close()

    def decode(self, *args, **kwargs):
        for frame in self._inner.decode(*args, **kwargs):
            self._decoded.append(frame.pts)
            yield frame


def test_video_decodes_lazily(tmp_path, monkeypatch):
    """Taking the first frame of a 300-frame video decodes one frame, not the video."""
    source = _long_clip(tmp_path, "video", 300, 24, 32)
    decoded: list = []
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *a, **k: _CountingContainer(real_open(*a, **k), decoded))
    iterator = iter(source)
    name, _ = next(iterator)
    assert name == "00000" and len(decoded) == 1
    next(iterator)
    assert len(decoded) == 2
    iterator.close()


def test_folder_decodes_lazily(tmp_path, monkeypatch):
    """Taking the first frame of a 300-frame folder decodes one file, not the folder."""
    source = _long_clip(tmp_path, "folder", 300, 24, 32)
    decoded = []
    original = frames_module.read_image
    monkeypatch.setattr(frames_module, "read_image", lambda path: decoded.append(path) or original(path))
    iterator = iter(source)
    name, _ = next(iterator)
    assert name == "00000" and len(decoded) == 1
    next(iterator)
    assert len(decoded) == 2


# --- bad input -------------------------------------------------------------------------------------


def _error(path, **kwargs) -> str:
    with pytest.raises(ReusevosError) as info:
        source = open_frames(path, **kwargs)
        for _ in source:
            pass
    return str(info.value)


def test_missing_path(tmp_path):
    message = _error(tmp_path / "nowhere.mp4")
    assert "not found" in message and "nowhere.mp4" in message


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    message = _error(tmp_path / "empty")
    assert "empty" in message and str(tmp_path / "empty") in message


def test_folder_without_images(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "readme.txt").write_text("hi")
    (folder / "sub").mkdir()
    message = _error(folder)
    assert "no JPEG/PNG" in message and "readme.txt" in message and str(folder) in message


def test_corrupt_first_image_fails_at_open(tmp_path):
    folder = tmp_path / "clip"
    write_pngs(folder, ["00001", "00002"])
    (folder / "00000.jpg").write_text("this is not a JPEG")
    with pytest.raises(ReusevosError) as info:
        open_frames(folder)
    assert str(folder / "00000.jpg") in str(info.value)


def test_corrupt_image_inside_folder_names_the_file(tmp_path):
    folder = tmp_path / "clip"
    write_pngs(folder, ["00000", "00001", "00003"])
    good = (folder / "00001.png").read_bytes()
    (folder / "00002.png").write_bytes(good[: len(good) // 2])  # truncated
    source = open_frames(folder)
    got = []
    with pytest.raises(ReusevosError) as info:
        for name, _ in source:
            got.append(name)
    assert got == ["00000", "00001"]
    assert str(folder / "00002.png") in str(info.value)


def test_frames_of_different_sizes(tmp_path):
    folder = tmp_path / "clip"
    write_pngs(folder, ["00000", "00001"], height=24, width=32)
    Image.fromarray(smooth_frame(2, 20, 32)).save(folder / "00002.png")
    message = _error(folder)
    assert str(folder / "00002.png") in message and "32x20" in message and "32x24" in message


def test_same_frame_name_twice(tmp_path):
    folder = tmp_path / "clip"
    write_pngs(folder, ["00000", "00001"])
    Image.fromarray(smooth_frame(0, 24, 32)).save(folder / "00001.jpg")
    message = _error(folder)
    assert "00001.jpg" in message and "00001.png" in message


def test_single_image_instead_of_folder(tmp_path):
    write_pngs(tmp_path / "clip", ["00000"])
    message = _error(tmp_path / "clip" / "00000.png")
    assert "single image" in message and str(tmp_path / "clip") in message


def test_text_file_named_mp4(tmp_path, capfd):
    path = tmp_path / "movie.mp4"
    path.write_text("this is not a video\n" * 20)
    message = _error(path)
    assert str(path) in message and "cannot read video" in message
    assert capfd.readouterr().err == ""  # FFmpeg's own log stays quiet: the library never prints


def test_truncated_mp4(tmp_path):
    path = write_video(tmp_path / "cut.mp4", count=10, height=32, width=48)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # faststart puts the index first: frames are missing
    message = _error(path)
    assert str(path) in message


def test_file_without_video_stream(tmp_path):
    path = tmp_path / "sound.mkv"
    container = av.open(str(path), "w")
    stream = container.add_stream("pcm_s16le", rate=8000)
    stream.layout = "mono"
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
    frame.sample_rate = 8000
    for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    message = _error(path)
    assert str(path) in message and "no video stream" in message


@pytest.mark.parametrize("bad", [0, -5, 2.5])
def test_bad_max_size(tmp_path, bad):
    write_pngs(tmp_path / "clip", ["00000"])
    assert "max_size" in _error(tmp_path / "clip", max_size=bad)
