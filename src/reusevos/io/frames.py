"""Frame sources: a folder of images or a video file, streamed one frame at a time.

Every source yields ``(name, frame)`` pairs, ``frame`` an ``(H, W, 3)`` uint8 RGB array, and never
holds more than the frame being decoded: a 10,000-frame video runs in the memory of one frame.

- A folder of JPEG/PNG images: frames in natural order of their file names (``2.jpg`` before
  ``10.jpg``), each named by its file stem, so masks are matched to frames by name.
- A video file (mp4, avi, mov, webm, mkv, anything FFmpeg reads) through PyAV: frames named
  ``00000``, ``00001``, ... as DAVIS names its frames; a display rotation (phone videos) is applied.

Resizing: ``open_frames(path, max_size=N)`` makes the source yield frames whose longer side is at most
``N`` pixels (``cv2.INTER_AREA``); ``size`` is then the reduced size and ``source_size`` the size in
the file. A caller that needs the full-size frame too (e.g. an overlay at the input size) opens the
source without ``max_size`` and calls :func:`resize_frame` with :func:`fit_size` itself.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from reusevos.errors import ReusevosError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
"""Suffixes of the frame files a folder source reads (case-insensitive)."""

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".webm", ".mkv", ".m4v")
"""Suffixes named in messages; any file FFmpeg can demux is tried."""

_PIL_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)
_AV_ERRORS = (av.FFmpegError, OSError, ValueError)


def natural_key(name: str) -> list:
    """Sort key that orders digit runs by value: ``frame2`` before ``frame10``."""
    return [(0, int(part), part) if part.isdigit() else (1, 0, part.lower()) for part in re.split(r"(\d+)", name)]


def fit_size(size: tuple[int, int], max_size: int | None) -> tuple[int, int]:
    """``(H, W)`` scaled so the longer side is at most ``max_size``, aspect kept; unchanged if it fits."""
    height, width = size
    if max_size is None or max(height, width) <= max_size:
        return height, width
    scale = max_size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an ``(H, W, 3)`` frame to ``size = (H', W')``; area averaging, which does not alias."""
    if frame.shape[:2] == tuple(size):
        return frame
    return cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def _check_max_size(max_size: int | None) -> None:
    if max_size is not None and (not isinstance(max_size, (int, np.integer)) or max_size < 1):
        raise ReusevosError(f"max_size must be a positive number of pixels, got {max_size!r}")


class FrameSource(ABC):
    """A sequence of frames read lazily from ``path``.

    Iterating yields ``(name, frame)`` with ``frame`` an ``(H, W, 3)`` uint8 RGB array of shape
    ``size``, writable and owned by the caller; each iteration starts again from the first frame.
    ``len()`` is the frame count.

    Attributes:
        path: the folder or video file.
        size: ``(H, W)`` of the yielded frames (after ``max_size``).
        source_size: ``(H, W)`` of the frames as stored.
        fps: frames per second of a video; ``None`` for a folder (unknown).
    """

    path: Path
    source_size: tuple[int, int]
    fps: float | None

    def __init__(self, max_size: int | None = None) -> None:
        _check_max_size(max_size)
        self.max_size = max_size

    @property
    def size(self) -> tuple[int, int]:
        return fit_size(self.source_size, self.max_size)

    @property
    @abstractmethod
    def names(self) -> list[str]:
        """The frame names, in order (file stems for a folder, ``00000``... for a video)."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def _frames(self) -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(name, frame)`` at the stored size."""

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        size = self.size
        for name, frame in self._frames():
            yield name, resize_frame(frame, size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, size={self.size})"


class FolderFrames(FrameSource):
    """The JPEG/PNG images of one folder, in natural order of their names.

    Hidden files (``._00000.jpg`` from macOS) and other files are ignored. All frames must have the
    size of the first one. EXIF orientation is ignored, as the DAVIS tools ignore it.
    """

    def __init__(self, folder: str | os.PathLike, max_size: int | None = None) -> None:
        super().__init__(max_size)
        self.path = Path(folder)
        self.fps = None
        if not self.path.is_dir():
            raise ReusevosError(
                f"frame folder not found: {self.path}; give a folder of JPEG/PNG frames or a video file"
            )
        try:
            entries = [p for p in self.path.iterdir() if not p.name.startswith(".")]
        except OSError as exc:
            raise ReusevosError(f"cannot list frame folder {self.path}: {exc.strerror or exc}") from exc
        if not entries:
            raise ReusevosError(f"frame folder {self.path} is empty; put the frames (JPEG or PNG) in it")
        files = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        if not files:
            shown = ", ".join(sorted(p.name for p in entries)[:5])
            more = "" if len(entries) <= 5 else f" and {len(entries) - 5} more"
            raise ReusevosError(
                f"frame folder {self.path} holds no JPEG/PNG frames (found {shown}{more}); "
                "give a folder of .jpg/.png frames or a video file"
            )
        files.sort(key=lambda p: natural_key(p.name))
        stems: dict[str, Path] = {}
        for p in files:
            if p.stem in stems:
                raise ReusevosError(
                    f"frame folder {self.path} holds both {stems[p.stem].name} and {p.name}; frames are "
                    "matched to masks by name, so keep one file per frame name"
                )
            stems[p.stem] = p
        self.paths: list[Path] = files
        # Every frame's header, read without decoding: an unreadable or different-size frame is found before
        # the first frame is processed, not when the loop reaches it.
        sizes = {}
        for path in files:
            try:
                with Image.open(path) as image:
                    sizes[path] = image.size
            except _PIL_ERRORS as exc:
                raise _unreadable(path, exc) from exc
            if sizes[path] != sizes[files[0]]:
                (w, h), (w0, h0) = sizes[path], sizes[files[0]]
                raise ReusevosError(f"frame {path} is {w}x{h} but {files[0].name} is {w0}x{h0}; all frames of a folder "
                                    "must have the same size")
        width, height = sizes[files[0]]
        self.source_size = (height, width)

    @property
    def names(self) -> list[str]:
        return [p.stem for p in self.paths]

    def __len__(self) -> int:
        return len(self.paths)

    def _frames(self) -> Iterator[tuple[str, np.ndarray]]:
        for path in self.paths:
            frame = read_image(path)
            if frame.shape[:2] != self.source_size:
                h, w = self.source_size
                raise ReusevosError(
                    f"frame {path} is {frame.shape[1]}x{frame.shape[0]} but {self.paths[0].name} is {w}x{h}; "
                    "all frames of a folder must have the same size"
                )
            yield path.stem, frame


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read one image file as an ``(H, W, 3)`` uint8 RGB array (alpha dropped, grey expanded)."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()  # PIL raises on truncated files; OpenCV would warn on stderr and return half
            if image.mode != "RGB":
                image = image.convert("RGB")
            return np.array(image)  # a writable copy: np.asarray would give PIL's read-only buffer
    except FileNotFoundError as exc:
        raise ReusevosError(f"frame file not found: {path}") from exc
    except _PIL_ERRORS as exc:
        raise _unreadable(path, exc) from exc


def _unreadable(path: Path, exc: BaseException) -> ReusevosError:
    return ReusevosError(f"cannot read frame {path}: {exc}; replace or remove the file (JPEG/PNG expected)")


class VideoFrames(FrameSource):
    """The frames of a video file, decoded one at a time by PyAV (FFmpeg).

    ``len()`` is the stream's declared frame count, or, when the container has none (webm, some
    mkv), the number of video packets counted by demuxing without decoding. Iteration yields the
    frames the decoder produces, named by their index, so on a badly muxed file their number can
    differ from ``len()`` by a frame or so.
    """

    def __init__(self, path: str | os.PathLike, max_size: int | None = None) -> None:
        super().__init__(max_size)
        self.path = Path(path)
        if not self.path.is_file():
            raise ReusevosError(f"video file not found: {self.path}; give a video file or a folder of frames")
        self._count: int | None = None
        with self._open() as container:
            stream = self._stream(container)
            rate = stream.average_rate or stream.guessed_rate
            self.fps = float(rate) if rate else None
            if stream.frames > 0:
                self._count = int(stream.frames)
            # Decode the first frame: proves the file decodes and gives the displayed size.
            frames = self._decode(container, stream)
            try:
                first = next(frames, None)
            finally:
                frames.close()
            if first is None:
                raise ReusevosError(f"video {self.path} has no frames; give a video with at least one frame")
        self.source_size = first.shape[:2]

    def _open(self):
        try:
            return av.open(str(self.path), mode="r")
        except _AV_ERRORS as exc:
            raise ReusevosError(
                f"cannot read video {self.path}: {_av_message(exc)}; give a valid video file "
                f"({', '.join(VIDEO_SUFFIXES)}) or a folder of JPEG/PNG frames"
            ) from exc

    def _stream(self, container):
        try:
            stream = container.streams.best("video")  # skips cover-art pictures
        except (AttributeError, ValueError):
            stream = container.streams.video[0] if container.streams.video else None
        if stream is None:
            raise ReusevosError(f"{self.path} has no video stream; give a video file or a folder of frames")
        return stream

    def _decode(self, container, stream) -> Iterator[np.ndarray]:
        index = 0
        try:
            for frame in container.decode(stream):
                array = frame.to_ndarray(format="rgb24")
                turns = round((getattr(frame, "rotation", 0) or 0) / 90) % 4
                if turns:
                    # ``rotation`` is counter-clockwise degrees to apply for display, as np.rot90 turns.
                    array = np.ascontiguousarray(np.rot90(array, turns))
                yield array
                index += 1
        except _AV_ERRORS as exc:
            raise ReusevosError(
                f"cannot decode frame {index} of video {self.path}: {_av_message(exc)}; "
                "the file may be truncated or corrupt, re-encode it (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4)"
            ) from exc

    def __len__(self) -> int:
        if self._count is None:
            self._count = self._count_packets()
        return self._count

    def _count_packets(self) -> int:
        count = 0
        with self._open() as container:
            stream = self._stream(container)
            try:
                for packet in container.demux(stream):
                    if packet.size:  # the demuxer ends with an empty flush packet
                        count += 1
            except _AV_ERRORS as exc:
                raise ReusevosError(
                    f"cannot read video {self.path}: {_av_message(exc)}; the file may be corrupt"
                ) from exc
        return count

    @property
    def names(self) -> list[str]:
        n = len(self)
        return [frame_name(i, n) for i in range(n)]

    def _frames(self) -> Iterator[tuple[str, np.ndarray]]:
        n = len(self)
        with self._open() as container:
            for index, frame in enumerate(self._decode(container, self._stream(container))):
                yield frame_name(index, n), frame


def frame_name(index: int, count: int = 0) -> str:
    """The name of a video's ``index``-th frame: five digits as in DAVIS, more if ``count`` needs them."""
    return str(index).zfill(max(5, len(str(max(count - 1, 0)))))


def _av_message(exc: BaseException) -> str:
    # FFmpeg errors carry "[Errno N] text: 'path'"; the text alone reads better next to our path.
    return getattr(exc, "strerror", None) or str(exc)


def open_frames(path: str | os.PathLike, max_size: int | None = None) -> FrameSource:
    """Open a folder of frames or a video file as a :class:`FrameSource`.

    Args:
        path: a folder of JPEG/PNG images, or a video file.
        max_size: if given, frames are resized (area averaging) so their longer side is at most this
            many pixels; smaller frames are left as they are.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        return FolderFrames(path, max_size)
    if not path.exists():
        raise ReusevosError(f"input not found: {path}; give a video file or a folder of JPEG/PNG frames")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise ReusevosError(
            f"{path} is a single image; give the folder that holds all the frames ({path.parent}) or a video file"
        )
    return VideoFrames(path, max_size)
