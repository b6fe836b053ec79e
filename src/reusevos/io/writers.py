"""Writers: palette PNG folders, overlay rendering, and videos written frame by frame (mp4; webm and mov with alpha).

Frames are ``(H, W, 3)`` uint8 RGB arrays, label maps ``(H, W)`` uint8 (0 = background).
"""

from __future__ import annotations

import os
import tempfile
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import av
import cv2
import numpy as np

from reusevos.errors import ReusevosError
from reusevos.io.masks import DAVIS_PALETTE, write_mask

_AV_ERRORS = (av.FFmpegError, OSError, ValueError)
_VIDEO_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}


def render_overlay(
    frame: np.ndarray, labels: np.ndarray, alpha: float = 0.5, contour_width: int = 2
) -> np.ndarray:
    """Blend each object's DAVIS palette colour over ``frame`` and outline it in that colour.

    Args:
        frame: ``(H, W, 3)`` uint8 RGB.
        labels: ``(H, W)`` integer label map; 0 is left untouched.
        alpha: weight of the object colour inside the objects (0 = frame only, 1 = colour only).
        contour_width: outline thickness in pixels, centred on the object border; 0 for none.

    Returns:
        A new ``(H, W, 3)`` uint8 RGB array.
    """
    frame = np.asarray(frame)
    labels = np.asarray(labels)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
    if labels.shape != frame.shape[:2]:
        raise ValueError(f"labels {labels.shape} do not match frame {frame.shape[:2]}")
    if labels.dtype != np.uint8:
        labels = labels.astype(np.uint8)
    out = frame.copy()
    ids = np.flatnonzero(np.bincount(labels.ravel(), minlength=256))
    ids = ids[ids != 0]
    if ids.size == 0:
        return out
    colours = DAVIS_PALETTE[labels]
    inside = labels != 0
    blended = cv2.addWeighted(frame, 1.0 - alpha, colours, alpha, 0.0)
    out[inside] = blended[inside]
    if contour_width > 0:
        for obj in ids.tolist():
            contours, _ = cv2.findContours(
                (labels == obj).view(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE
            )
            colour = tuple(int(c) for c in DAVIS_PALETTE[obj])
            cv2.drawContours(out, contours, -1, colour, thickness=contour_width, lineType=cv2.LINE_8)
    return out


def make_folder(folder: Path, what: str) -> None:
    """Create ``folder`` and its parents; a file in the way is named in the error."""
    for ancestor in (folder, *folder.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise ReusevosError(
                    f"cannot write {what}: {ancestor} is a file, not a folder; choose another output path"
                )
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReusevosError(
            f"cannot write {what}: cannot create folder {folder} ({exc.strerror or exc}); "
            "choose a folder you can write to"
        ) from exc


class MaskWriter:
    """Writes one DAVIS palette PNG per frame, ``folder/<name>.png``, creating the folder.

    Construction fails with ReusevosError when the folder cannot be created or written to, before
    any frame is processed.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder).expanduser()
        if self.folder.exists() and not self.folder.is_dir():
            raise ReusevosError(
                f"output folder {self.folder} is a file; choose a folder name (it is created if missing)"
            )
        make_folder(self.folder, f"masks to {self.folder}")
        try:
            # A real write is the only reliable test (permission bits lie for root and on some mounts).
            with tempfile.TemporaryFile(dir=self.folder):
                pass
        except OSError as exc:
            raise ReusevosError(
                f"cannot write to output folder {self.folder}: {exc.strerror or exc}; choose a folder you can write to"
            ) from exc
        self.written = 0

    def write(self, name: str, labels: np.ndarray) -> Path:
        """Write the ``(H, W)`` label map of frame ``name`` as ``folder/<name>.png``; returns its path."""
        path = self.folder / f"{name}.png"
        write_mask(path, labels)
        self.written += 1
        return path


class VideoWriter:
    """An mp4 (or mov/mkv) video written one ``(H, W, 3)`` uint8 RGB frame at a time.

    H.264 (``libx264``, yuv420p) when FFmpeg has it, else MPEG-4 Part 2. yuv420p needs even sizes,
    so a frame of odd height or width is padded by one replicated row or column: the video is then
    ``(H + H % 2, W + W % 2)`` and every frame pixel is kept.

    The video goes to a hidden temporary file next to ``path`` and replaces ``path`` only when
    closed without error, so a failed run never leaves a broken file or damages an older one. Use
    as a context manager, or call :meth:`close`. The output file is opened at construction, so an
    unwritable destination fails before any frame is computed.

    Args:
        path: the output file; its folder is created if missing.
        fps: frames per second (DAVIS was filmed at 24).
        crf: H.264 quality, 0 (lossless) .. 51; 18 is visually lossless.
        codec: force an FFmpeg encoder name; ``None`` picks libx264 or mpeg4.
    """

    FORMATS = _VIDEO_FORMATS  # file suffix -> container format
    SUFFIXES = ".mp4 (or .mov, .mkv)"
    CHANNELS = 3  # RGB frames
    pix_fmt = "yuv420p"

    def __init__(self, path: str | os.PathLike, fps: float = 24.0, crf: int = 18, codec: str | None = None) -> None:
        self.path = Path(path).expanduser()
        self.fps = fps
        self.crf = crf
        self.frames_written = 0
        self.size: tuple[int, int] | None = None  # (H, W) of the frames given
        if not fps or fps <= 0:
            raise ReusevosError(f"video frame rate must be positive, got {fps}")
        container_format = self.FORMATS.get(self.path.suffix.lower())
        if container_format is None:
            raise ReusevosError(
                f"cannot write video {self.path}: use a file name ending in {self.SUFFIXES}"
            )
        if self.path.is_dir():
            raise ReusevosError(f"video output {self.path} is a folder; give a file name ending in {self.SUFFIXES}")
        self.codec = codec or self._pick_codec()
        self._tmp = self.path.with_name(f".{self.path.name}.partial")
        make_folder(self.path.parent, f"video {self.path}")
        try:
            options = {"movflags": "+faststart"} if container_format in ("mp4", "mov") else {}
            self._container = av.open(str(self._tmp), mode="w", format=container_format, options=options)
        except _AV_ERRORS as exc:
            raise ReusevosError(
                f"cannot write video {self.path}: {getattr(exc, 'strerror', None) or exc}; "
                "choose a path in a folder you can write to"
            ) from exc
        self._stream = None
        self._closed = False

    def _start(self, height: int, width: int) -> None:
        rate = Fraction(self.fps).limit_denominator(1001)
        stream = self._container.add_stream(self.codec, rate=rate)
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = self.pix_fmt
        self._configure(stream, rate)
        self._time_base = Fraction(1) / rate
        self._stream = stream
        self.size = (height, width)

    def _configure(self, stream, rate: Fraction) -> None:
        """The encoder's quality settings."""
        if self.codec == "libx264":
            stream.options = {"crf": str(self.crf), "preset": "fast"}
        else:
            # mpeg4's default 200 kb/s is unwatchable; about 0.3 bit per pixel is clean on most content.
            stream.bit_rate = max(1_000_000, int(0.3 * stream.width * stream.height * float(rate)))

    def _pick_codec(self) -> str:
        return _pick_codec()

    def write(self, frame: np.ndarray) -> None:
        """Append one ``(H, W, 3)`` uint8 RGB frame; all frames must have the first one's size."""
        if self._closed:
            raise ValueError(f"video {self.path} is already closed")
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != self.CHANNELS or frame.dtype != np.uint8:
            raise ValueError(f"frame must be (H, W, {self.CHANNELS}) uint8, got {frame.shape} {frame.dtype}")
        if self._stream is None:
            self._start(*frame.shape[:2])
        elif frame.shape[:2] != self.size:
            raise ValueError(f"frame is {frame.shape[:2]} but the video is {self.size}")
        height, width = frame.shape[:2]
        if height % 2 or width % 2:
            frame = cv2.copyMakeBorder(frame, 0, height % 2, 0, width % 2, cv2.BORDER_REPLICATE)
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame),
                                                 format="rgb24" if self.CHANNELS == 3 else "rgba")
        video_frame.pts = self.frames_written
        video_frame.time_base = self._time_base
        try:
            for packet in self._stream.encode(video_frame):
                self._container.mux(packet)
        except _AV_ERRORS as exc:
            raise ReusevosError(f"cannot write video {self.path}: {getattr(exc, 'strerror', None) or exc}") from exc
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and move the finished video to ``path``."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._stream is not None:
                for packet in self._stream.encode():
                    self._container.mux(packet)
            self._container.close()
        except _AV_ERRORS as exc:
            self._tmp.unlink(missing_ok=True)
            raise ReusevosError(f"cannot write video {self.path}: {getattr(exc, 'strerror', None) or exc}") from exc
        if self.frames_written == 0:
            self._tmp.unlink(missing_ok=True)
            raise ReusevosError(f"no frames were given for video {self.path}; nothing written")
        try:
            os.replace(self._tmp, self.path)
        except OSError as exc:
            self._tmp.unlink(missing_ok=True)
            raise ReusevosError(f"cannot write video {self.path}: {exc.strerror or exc}") from exc

    def abort(self) -> None:
        """Stop without writing ``path`` (an existing file there is left as it was)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._container.close()
        except _AV_ERRORS:
            pass  # the partial file is deleted anyway
        self._tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class OverlayVideoWriter(VideoWriter):
    """A :class:`VideoWriter` whose frames are :func:`render_overlay` of a frame and its label map.

    Args:
        path, fps, crf, codec: as for :class:`VideoWriter`.
        alpha, contour_width: as for :func:`render_overlay`.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float = 24.0,
        alpha: float = 0.5,
        contour_width: int = 2,
        crf: int = 18,
        codec: str | None = None,
    ) -> None:
        super().__init__(path, fps=fps, crf=crf, codec=codec)
        self.alpha = alpha
        self.contour_width = contour_width

    def write(self, frame: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Append ``frame`` ``(H, W, 3)`` with ``labels`` ``(H, W)`` drawn over it (``None``: frame only)."""
        if labels is not None:
            frame = render_overlay(frame, labels, self.alpha, self.contour_width)
        super().write(frame)


class MatteVideoWriter(VideoWriter):
    """A video with an alpha channel, written one ``(H, W, 3)`` RGB frame and ``(H, W)`` alpha at a time: VP9 in
    WebM (``libvpx-vp9``, yuva420p) for ``.webm``, ProRes 4444 (``prores_ks``, yuva444p10le) for ``.mov``.

    As :class:`VideoWriter` otherwise (a hidden temporary file until :meth:`close`, odd sizes padded). Check first
    with :func:`check_matte_video` that this FFmpeg build keeps the alpha; :func:`read_matte_video` reads it back.
    """

    FORMATS = {".webm": "webm", ".mov": "mov"}
    SUFFIXES = ".webm or .mov"
    CHANNELS = 4
    CODECS = {".webm": ("libvpx-vp9", "yuva420p"), ".mov": ("prores_ks", "yuva444p10le")}

    def __init__(self, path: str | os.PathLike, fps: float = 24.0) -> None:
        super().__init__(path, fps=fps)
        self.pix_fmt = self.CODECS[self.path.suffix.lower()][1]

    def _pick_codec(self) -> str:
        return self.CODECS.get(self.path.suffix.lower(), ("",))[0]

    def _configure(self, stream, rate: Fraction) -> None:
        if self.codec == "prores_ks":
            stream.options = {"profile": "4"}  # 4444, the ProRes profile with alpha
        else:  # constant quality; the default 256 kb/s would blur the matte's edge
            stream.options = {"crf": "20", "b": "0", "cpu-used": "4", "row-mt": "1"}

    def write(self, frame: np.ndarray, alpha: np.ndarray) -> None:
        """Append ``frame`` ``(H, W, 3)`` uint8 RGB with its ``alpha`` ``(H, W)`` uint8 (255 = opaque)."""
        frame, alpha = np.asarray(frame), np.asarray(alpha)
        if frame.ndim != 3 or frame.shape[2] != 3 or alpha.shape != frame.shape[:2]:
            raise ValueError(f"frame must be (H, W, 3) and alpha (H, W); got {frame.shape} and {alpha.shape}")
        super().write(np.dstack([frame, alpha.astype(np.uint8, copy=False)]))


def read_matte_video(path: str | os.PathLike) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The frames of a :class:`MatteVideoWriter` video: ``(H, W, 3)`` uint8 RGB and ``(H, W)`` uint8 alpha each.

    VP9 is decoded by libvpx, which reads the alpha that FFmpeg's own VP9 decoder drops."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.codec_context.name == "vp9":
            decoder = av.codec.CodecContext.create("libvpx-vp9", "r")
            frames = (f for packet in container.demux(stream) for f in decoder.decode(packet))
        else:
            frames = container.decode(stream)
        for frame in frames:
            rgba = frame.to_ndarray(format="rgba")
            yield np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3])


@lru_cache(maxsize=None)
def check_matte_video(suffix: str) -> None:
    """Raise ReusevosError, naming the reason, unless a ``suffix`` (``.webm``, ``.mov``) video written here keeps its
    alpha: a small one is written and read back (an encoder can exist and still drop the alpha)."""
    codec = MatteVideoWriter.CODECS[suffix][0]
    try:
        av.codec.Codec(codec, "w")
    except (av.FFmpegError, ValueError, KeyError):
        raise ReusevosError(f"this FFmpeg build (PyAV) has no {codec} encoder, so it cannot write {suffix} videos "
                            "with alpha") from None
    alpha = np.zeros((32, 48), np.uint8)
    alpha[8:24, 12:36] = 255
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"probe{suffix}"
        try:
            with MatteVideoWriter(path) as video:
                for _ in range(2):
                    video.write(np.full((32, 48, 3), 128, np.uint8), alpha)
            read = [a for _, a in read_matte_video(path)]
        except (*_AV_ERRORS, ReusevosError) as exc:
            raise ReusevosError(f"this FFmpeg build (PyAV) cannot write {suffix} videos with alpha ({exc})") from None
    if not read or np.abs(read[0].astype(int) - alpha).max() > 8:
        raise ReusevosError(f"this FFmpeg build (PyAV) writes {suffix} videos ({codec}) without their alpha: a test "
                            "video read back opaque")


def _pick_codec() -> str:
    for name in ("libx264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
            return name
        except (av.FFmpegError, ValueError, KeyError):
            continue
    raise ReusevosError(
        "this FFmpeg build (PyAV) has neither libx264 nor mpeg4; install PyAV from PyPI (pip install av)"
    )
