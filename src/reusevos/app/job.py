"""One browser session's work in the web app, without the web: the input, the objects' starts, the corrections,
the runs and their files. :mod:`reusevos.app.page` turns the page's events into calls here; tests call it directly.

A :class:`Job` owns a private folder (the uploaded frames, the demo clip, the latest run's results and previews) and
reads no files but the uploads it is handed. Everything it computes comes from the library, by the command line's
rules: starts are :func:`reusevos.segment.make_start_masks` (boxes by the model's default box method, clicks by GrabCut, numbered after the uploaded
masks' objects), corrections :func:`reusevos.segment.make_corrections`, and a run is one
:func:`reusevos.segment.segment_video` in a worker thread, so its files are those ``reusevos segment`` writes for
the same input, starts and settings (:meth:`Job.command` says which command). Frames stream as on the command line:
a run holds one frame at a time, and the viewer decodes only the frame it shows (images at most :data:`VIEW_MAX`
pixels long; a run's overlays are kept as JPEG files, one per frame, for scrubbing).
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from reusevos.config import DEFAULT_MAX_SIZE, offline_config
from reusevos.errors import ReusevosError
from reusevos.io.exports import check_formats
from reusevos.io.frames import IMAGE_SUFFIXES, FrameSource, fit_size, open_frames, resize_frame
from reusevos.io.masks import object_ids, read_mask
from reusevos.io.writers import render_overlay
from reusevos.segment import StartMasks, make_corrections, make_start_masks, resize_labels, segment_video
from reusevos.session import check_frame_size
from reusevos.start import Prompt, frames_at
from reusevos.synthetic import SyntheticConfig, write_clip

VIEW_MAX = 854  # the viewer's images: longer side at most this (clicks are scaled back to the input's pixels)
TOOLS = ("box", "object", "background")  # what a click on the viewer does: a box corner, a click on or beside it
PREVIEW_QUALITY = 90
log = logging.getLogger("reusevos.app")


class _Stopped(Exception):
    """Raised from the run's frame callback when Stop is pressed: segment_video keeps the frames done."""


@dataclass
class Progress:
    """Where the job's run stands: ``state`` is ``idle``, ``starting`` (checks, warm-up), ``running``, ``done``,
    ``stopped`` or ``failed``; ``latest`` the index of the last frame done (None before the first)."""

    state: str = "idle"
    done: int = 0
    total: int = 0
    fps: float = 0.0
    reuse_rate: float = 0.0
    latest: int | None = None
    message: str = ""

    @property
    def active(self) -> bool:
        return self.state in ("starting", "running")


class _Watched(FrameSource):
    """The job's frames as a run reads them, remembering the last one for the live preview."""

    def __init__(self, frames: FrameSource):
        super().__init__(None)
        self.inner, self.path, self.source_size, self.fps = frames, frames.path, frames.size, frames.fps
        self.last: tuple[int, np.ndarray] | None = None  # (index, frame) of the frame the run is at

    @property
    def names(self) -> list[str]:
        return self.inner.names

    def __len__(self) -> int:
        return len(self.inner)

    def _frames(self):
        for index, (name, frame) in enumerate(self.inner):
            self.last = (index, frame)
            yield name, frame


class Job:
    """The input, starts, corrections and runs of one browser session, in ``folder`` (created; removed by
    :meth:`close`). ``network`` is the loaded model the runs use; ``max_size`` the longer side the model runs at
    (0 or None: the input's size), which the checks of the starts follow."""

    def __init__(self, network, folder: str | Path, max_size: int | None = DEFAULT_MAX_SIZE):
        self.network = network
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._max_size = max_size
        self.frames: FrameSource | None = None
        self.input_name = ""  # what the person opened, for messages and the command
        self.masks: dict[str, np.ndarray] = {}  # uploaded start masks, by frame name (their own object ids)
        self.prompts: list[Prompt] = []  # boxes and clicks, objects numbered after the masks' (as on the CLI)
        self.fix_masks: dict[str, np.ndarray] = {}  # uploaded corrections, by frame name
        self.fix_prompts: dict[tuple[int, int], Prompt] = {}  # (frame index, object id) -> its correction
        self.corner: tuple[int, int, int, int | None] | None = None  # a box's first corner: (index, x, y, object)
        self.new_object = True  # the next box or click starts another object
        self.stale = False  # the starts changed since the latest run: the viewer shows them, not its results
        self.progress = Progress()
        self.run_folder: Path | None = None
        self._starts: StartMasks | None = None
        self._frame: tuple[int, np.ndarray] | None = None  # the last frame decoded for the viewer
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watched: _Watched | None = None
        self._input_folder: Path | None = None
        self._fixes: StartMasks | None = None
        self._count = 0

    # -- the input ------------------------------------------------------------------------------------------------
    def open_upload(self, paths: Sequence[str | Path]) -> str:
        """A video file, or the images of one folder (several JPEG/PNG files, in natural order of their names),
        copied into the job's folder: the input from now on. Returns what was opened, in words."""
        self._refuse_while_running("opening another input")
        paths = [Path(p) for p in paths]
        if not paths:
            raise ReusevosError("nothing was uploaded; choose a video file, or all the frames of a folder")
        video = len(paths) == 1 and paths[0].suffix.lower() not in IMAGE_SUFFIXES
        others = [p.name for p in paths if p.suffix.lower() not in IMAGE_SUFFIXES]
        if others and not video:
            raise ReusevosError(f"{others[0]} is not a JPEG or PNG frame; upload a video file alone, or only the "
                                "frames of a folder")
        def copy(folder: Path) -> FrameSource:
            for path in paths:
                shutil.copyfile(path, folder / path.name)
            return open_frames(folder / paths[0].name if video else folder)

        return self._set_input(copy, paths[0].name if video else f"{len(paths)} frames")

    def open_demo(self, frames: int = 40, size: tuple[int, int] = (240, 432), objects: int = 2,
                  seed: int = 0) -> str:
        """A synthetic clip (:mod:`reusevos.synthetic`), the same as ``reusevos synth DIR --frames F --objects K
        --size HxW --seed S`` writes to ``DIR/JPEGImages/480p/synth<S>``."""
        self._refuse_while_running("opening another input")
        config = SyntheticConfig(size=tuple(size), num_frames=int(frames), num_objects=int(objects), seed=int(seed))
        config.validate()
        name = f"synth{config.seed:05d}"

        def write(folder: Path) -> FrameSource:
            write_clip(folder, name, config)
            return open_frames(folder / "JPEGImages" / "480p" / name)

        return self._set_input(write, f"the demo clip {name} ({frames} frames, {size[0]}x{size[1]}, seed {seed})")

    def _set_input(self, make, name: str) -> str:
        """``make(folder)`` fills a fresh folder and opens it as the new input (a failure leaves the old one); the
        starts, corrections and runs of the old input go."""
        folder = self._fresh("input")
        try:
            frames = make(folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        if self._input_folder is not None:
            shutil.rmtree(self._input_folder, ignore_errors=True)
        self.frames, self._input_folder, self.input_name = frames, folder, name
        self.masks, self.prompts, self.fix_masks, self.fix_prompts = {}, [], {}, {}
        self.corner, self.new_object, self.stale = None, True, False
        self._starts, self._fixes, self._frame = None, None, None
        self.progress = Progress(total=len(frames))
        self._drop_run()
        return self.describe_input()

    def describe_input(self) -> str:
        frames = self._need_input()
        height, width = frames.size
        return f"{self.input_name}: {len(frames)} frames of {width}x{height}"

    @property
    def names(self) -> list[str]:
        return self._need_input().names

    @property
    def view_size(self) -> tuple[int, int]:
        """``(H, W)`` of the viewer's images."""
        return fit_size(self._need_input().size, VIEW_MAX)

    def to_input(self, x: float, y: float) -> tuple[int, int]:
        """A pixel of the viewer's image as a pixel of the input."""
        (height, width), (vh, vw) = self._need_input().size, self.view_size
        return min(width - 1, int(x * width / vw)), min(height - 1, int(y * height / vh))

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` of the input at its size, ``(H, W, 3)`` uint8 (the last one asked for is kept)."""
        frames = self._need_input()
        if not 0 <= index < len(frames):
            raise ReusevosError(f"frame {index} is not in the input ({len(frames)} frames: 0 to {len(frames) - 1})")
        if self._frame is None or self._frame[0] != index:
            self._frame = (index, frames_at(frames, {index})[index])
        return self._frame[1]

    # -- starts and corrections -----------------------------------------------------------------------------------
    def click(self, index: int, x: int, y: int, tool: str, correct: int | None = None) -> str:
        """One click on frame ``index`` at pixel ``(x, y)`` of the input. ``tool``: ``box`` (a corner; the second
        corner closes the box), ``object`` (a click on the object) or ``background`` (a click beside it). It edits
        the current object's start, or with ``correct`` (an object id) that object's correction on this frame.
        Returns what changed, in words; an edit the library refuses is undone and raises its ReusevosError."""
        if tool not in TOOLS:
            raise ReusevosError(f"unknown tool {tool!r}; choose one of {', '.join(TOOLS)}")
        self.frame(index)  # the index is checked
        x, y = int(x), int(y)
        if correct is not None:
            self._check_object(correct)
        if tool == "box":
            if self.corner is None or self.corner[0] != index or self.corner[3] != correct:
                self.corner = (index, x, y, correct)
                return f"box corner at {x},{y} on frame {index}: click the opposite corner"
            _, x0, y0, _ = self.corner
            self.corner = None
            prompt = Prompt(index, box=(min(x0, x), min(y0, y), max(x0, x), max(y0, y)))
        else:
            self.corner = None
            prompt = self._with_click(self._editing(index, correct), index, (x, y), tool == "object")
        prompt = Prompt(prompt.frame, prompt.box, prompt.foreground, prompt.background, _prompt_text(prompt))
        if correct is not None:
            return self._set_fix_prompt(index, correct, prompt)
        return self._set_prompt(prompt)

    def next_object(self) -> str:
        """The next box or click starts another object."""
        self.new_object, self.corner = True, None
        return "the next box or click starts a new object"

    def remove_object(self) -> str:
        """Forget the last object started from a box or clicks."""
        if not self.prompts:
            raise ReusevosError("no object from a box or clicks to remove")
        self.prompts.pop()
        self._starts, self.new_object, self.corner, self.stale = None, True, None, self.run_folder is not None
        return "removed the last object"

    def upload_mask(self, index: int, path: str | Path, correct: bool = False) -> str:
        """A mask file for frame ``index`` (the rules of ``--mask``: palette, label or black-and-white PNG): objects
        that start there or, with ``correct``, a correction that restarts the objects it marks."""
        name = self.names[self._check_index(index)]
        labels = read_mask(path)
        store = self.fix_masks if correct else self.masks
        before = store.get(name)
        store[name] = labels
        self._starts, self._fixes = None, None
        try:
            self.corrections() if correct else self._refresh_starts()
        except ReusevosError:
            if before is None:
                del store[name]
            else:
                store[name] = before
            self._starts, self._fixes = None, None
            raise
        self.stale = self.stale or (not correct and self.run_folder is not None)
        what = "a correction of" if correct else "the start of"
        ids = ", ".join(map(str, object_ids(labels)))
        return f"mask for frame {name}: {what} object(s) {ids}"

    def clear_corrections(self) -> str:
        self.fix_masks, self.fix_prompts, self.corner, self._fixes = {}, {}, None, None
        return "corrections cleared"

    def start_masks(self) -> StartMasks:
        """The checked start masks of the uploaded masks and the prompts (:func:`make_start_masks`)."""
        if self._starts is None:
            self._refresh_starts()
        return self._starts

    def corrections(self) -> StartMasks | None:
        """The checked corrections (:func:`make_corrections`), or None: on each corrected frame the uploaded mask
        with each correction prompt's object painted over it."""
        if not self.fix_masks and not self.fix_prompts:
            return None
        if self._fixes is None:
            fixes = {name: labels.copy() for name, labels in self.fix_masks.items()}
            for (index, obj), prompt in sorted(self.fix_prompts.items()):
                labels = fixes.setdefault(self.names[index], np.zeros(self._need_input().size, np.uint8))
                labels[labels == obj] = 0
                labels[prompt.mask(self.frame(index), network=self.network) > 0] = obj
            self._fixes = make_corrections(self._need_input(), fixes, self.process_size, self.min_pixels)
        return self._fixes

    def objects(self) -> list[str]:
        """One line per object: its id, where it starts and from what; then the corrections."""
        if not self.masks and not self.prompts:
            return []
        lines = []
        for obj, start in self.start_masks().describe().items():
            how = ("box " + ",".join(map(str, start["box"])) if "box" in start else
                   _clicks(start["points"]) if "points" in start else "an uploaded mask")
            lines.append(f"object {obj}: {how}, from frame {start['frame']}")
        fixes = self.corrections()
        for name, objs in (fixes.marks.items() if fixes else ()):
            lines.append(f"correction at frame {name}: restarts object(s) {', '.join(map(str, objs))}")
        return lines

    @property
    def max_size(self) -> int | None:
        return self._max_size

    @max_size.setter
    def max_size(self, value: int | None) -> None:
        """The starts and corrections are checked at the processing size: a new size checks them again."""
        if value is not None and value < 0:
            raise ReusevosError(f"max size {value}: give a number of pixels, or 0 for the input's size")
        if value != self._max_size:
            self._max_size, self._starts, self._fixes = value, None, None

    @property
    def process_size(self) -> tuple[int, int]:
        return fit_size(self._need_input().size, self.max_size or None)

    @property
    def min_pixels(self) -> int:
        return getattr(getattr(self.network.config, "target", None), "min_object_pixels", 1)

    def _editing(self, index: int, correct: int | None) -> Prompt | None:
        """The prompt a click adds to: the current object's (or the corrected object's on this frame), if it is
        clicks on this frame."""
        if correct is not None:
            prompt = self.fix_prompts.get((index, correct))
        else:
            prompt = None if self.new_object or not self.prompts else self.prompts[-1]
        return prompt if prompt is not None and prompt.box is None and prompt.frame == index else None

    @staticmethod
    def _with_click(prompt: Prompt | None, index: int, point: tuple[int, int], on_object: bool) -> Prompt:
        foreground = (prompt.foreground if prompt else ()) + ((point,) if on_object else ())
        background = (prompt.background if prompt else ()) + (() if on_object else (point,))
        if not foreground:
            raise ReusevosError("click on the object first (tool: object), then beside it (tool: background)")
        return Prompt(index, foreground=foreground, background=background)

    def _set_prompt(self, prompt: Prompt) -> str:
        before = list(self.prompts)
        if self.new_object or not self.prompts:
            self.prompts.append(prompt)
        else:
            self.prompts[-1] = prompt
        try:
            self._refresh_starts()
        except ReusevosError:
            self.prompts, self._starts = before, None
            raise
        self.new_object, self.stale = False, self.run_folder is not None
        obj = max(self._starts.prompts)  # the prompts' objects are numbered last, in order
        return f"object {obj}: {prompt.text.removeprefix('--')}"

    def _set_fix_prompt(self, index: int, obj: int, prompt: Prompt) -> str:
        before = self.fix_prompts.get((index, obj))
        self.fix_prompts[(index, obj)] = prompt
        self._fixes = None
        try:
            self.corrections()
        except ReusevosError:
            if before is None:
                del self.fix_prompts[(index, obj)]
            else:
                self.fix_prompts[(index, obj)] = before
            self._fixes = None
            raise
        how = prompt.text.removeprefix("--").partition("@")[0]  # the frame is named already
        return f"correction of object {obj} at frame {self.names[index]}: {how}"

    def _refresh_starts(self) -> None:
        self._starts = None
        self._starts = make_start_masks(self._need_input(), dict(self.masks) or None, self.prompts,
                                        self.process_size, self.min_pixels, network=self.network)

    def _check_object(self, obj: int) -> None:
        known = sorted(self.start_masks().starts) if (self.masks or self.prompts) else []
        if obj not in known:
            raise ReusevosError(f"object {obj} has not been started; the objects are {known or 'none yet'}")

    def _check_index(self, index: int) -> int:
        self.frame(index)
        return index

    # -- what the viewer shows ------------------------------------------------------------------------------------
    def view(self, index: int) -> np.ndarray | Path:
        """Frame ``index`` as the viewer shows it, ``(h, w, 3)`` uint8 at :attr:`view_size` or a JPEG's path: the
        frame with its correction, else its result (the latest run's overlay, unless the starts changed since), else
        its start masks drawn over it."""
        name = self.names[self._check_index(index)]
        fixes = self.corrections()
        labels = fixes.read(name) if fixes is not None else None
        if labels is None:
            preview = self.preview_path(name)
            if preview is not None:
                return preview
            labels = self.start_masks().read(name) if (self.masks or self.prompts) else None
        frame = resize_frame(self.frame(index), self.view_size)
        if labels is None:
            return frame
        return render_overlay(frame, resize_labels(labels, self.view_size))

    def preview_path(self, name: str) -> Path | None:
        """The latest run's overlay of frame ``name``, if that frame is done."""
        if self.run_folder is None or self.stale:
            return None
        path = self.run_folder / "preview" / f"{name}.jpg"
        return path if path.is_file() else None

    # -- runs -----------------------------------------------------------------------------------------------------
    def command(self, tau: float, formats: Sequence[str] = ("davis",), flip: bool = False) -> str:
        """The ``reusevos segment`` command that writes the same masks as :meth:`run` with these settings
        (INPUT, MASKS/ and FIXES/ stand for the opened input and the uploaded masks and corrections)."""
        parts = ["reusevos segment INPUT"]
        if self.masks:
            parts.append("--mask MASKS/")
        parts += [p.text for p in self.prompts]
        if self.fix_masks or self.fix_prompts:
            parts.append("--corrections FIXES/")
        runtime = self.network.backbone.runtime  # as `reusevos app --backbone-runtime` set it
        parts += [f"--tau {tau:g}", *(["--flip"] if flip else []),
                  *([f"--backbone-runtime {runtime}"] if runtime != "auto" else []), f"--max-size {self.max_size or 0}",
                  "--format " + ",".join(_formats(formats)), "--out OUT/ --overlay overlay.mp4"]
        return " ".join(parts)

    def run(self, tau: float, formats: Sequence[str] = ("davis",), warmup: bool = True, flip: bool = False) -> None:
        """Start a run in a worker thread: :func:`segment_video` with the starts, the corrections and these
        settings (``flip``: test-time flip, :attr:`reusevos.SessionConfig.flip`) into a fresh folder (the previous
        run's is removed). Read :attr:`progress`; :meth:`stop` ends it after the frame at hand, keeping the frames
        done."""
        self._refuse_while_running("running again")
        frames = self._need_input()
        # as `reusevos segment --tau T [--flip]`: the whole-video default
        options = replace(offline_config(), tau=float(tau), flip=bool(flip))
        options.validate()
        formats = check_formats(_formats(formats))
        check_frame_size(self.process_size)
        if not self.masks and not self.prompts:
            raise ReusevosError("nothing starts an object: draw a box or click on each object, or upload a mask")
        starts, fixes = self.start_masks(), self.corrections()
        self._drop_run()
        self.run_folder, self.stale = self._fresh("run"), False
        (self.run_folder / "preview").mkdir()
        self._stop.clear()
        self._watched = _Watched(frames)
        self.progress = Progress("starting", total=len(frames), message="checking and warming up")
        self._thread = threading.Thread(target=self._work, name="reusevos-app-run", daemon=True,
                                        args=(starts, fixes, options, formats, warmup))
        self._thread.start()

    def stop(self) -> None:
        """Ask the run to stop after the frame at hand; the frames done stay (``stats.json``: complete false)."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> Progress:
        """Wait for the run to end (tests, and the page's last update)."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.progress

    def downloads(self) -> list[Path]:
        """The latest run's files: the masks folder as a zip, and the overlay video when the run completed."""
        if self.run_folder is None or self.progress.active:
            return []
        return [p for p in (self.run_folder / f"{self._stem()}-masks.zip", self.run_folder / "overlay.mp4")
                if p.is_file()]

    @property
    def results(self) -> Path | None:
        """The latest run's masks folder (what ``--out`` of the command would hold)."""
        return None if self.run_folder is None else self.run_folder / "masks"

    def _work(self, starts, fixes, options, formats, warmup) -> None:
        progress, outcome = self.progress, ("failed", "unexpected error; see the server's log")
        try:
            stats = segment_video(self.network, self._watched, starts, self.results, corrections=fixes,
                                  formats=formats, overlay=self.run_folder / "overlay.mp4", options=options,
                                  max_size=self.max_size or None, warmup=warmup, on_start=self._on_start,
                                  on_frame=self._on_frame, extra={"made_by": "reusevos app"})
            outcome = "done", f"done: {stats.frames} frames, {stats.fps:.1f} FPS (model), {stats.reuse_rate:.0%} reused"
        except _Stopped:
            outcome = "stopped", (f"stopped after {progress.done} of {progress.total} frames: their masks are in the "
                                  "download (its stats.json says complete: false); the overlay video is made by "
                                  "complete runs only")
        except ReusevosError as exc:
            outcome = "failed", self.public(str(exc))
        except Exception:  # a bug: the page says so in a line, the log keeps the traceback
            log.exception("run failed")
        finally:
            self._watched = None
            try:
                if progress.done:
                    shutil.make_archive(str(self.run_folder / f"{self._stem()}-masks"), "zip", self.results)
            except OSError as exc:
                outcome = "failed", f"cannot make the download: {exc.strerror or exc}"
            progress.state, progress.message = outcome  # last: the page waits for this

    def _on_start(self, stats) -> None:
        self.progress.state, self.progress.message = "running", "running"

    def _on_frame(self, result, stats) -> None:
        """After each frame: its overlay for the viewer (the frame the run is at, its labels at the processing size),
        the live numbers, and Stop."""
        index, frame = self._watched.last
        if index == result.index:
            view = render_overlay(resize_frame(frame, self.view_size), resize_labels(result.labels, self.view_size))
            Image.fromarray(view).save(self.run_folder / "preview" / f"{self.names[index]}.jpg",
                                       quality=PREVIEW_QUALITY)
        progress = self.progress
        progress.done, progress.fps, progress.reuse_rate, progress.latest = (
            stats.frames, stats.fps, stats.reuse_rate, result.index)
        if self._stop.is_set():
            raise _Stopped

    # -- housekeeping ---------------------------------------------------------------------------------------------
    def public(self, text: str, uploads: Sequence[str | Path] = ()) -> str:
        """A message without the server's folders in it (the job's, and those ``uploads`` came from), keeping the
        last name of each path: the page names files, not where the server keeps them."""
        for folder in sorted({str(self.folder), *(str(Path(p).parent) for p in uploads)}, key=len, reverse=True):
            text = re.sub(re.escape(folder) + r"(?:/[^/\s]+)*/", "", text)
        return text

    def close(self) -> None:
        """Stop any run and remove the job's folder."""
        self.stop()
        self.wait(30)
        shutil.rmtree(self.folder, ignore_errors=True)

    def _refuse_while_running(self, what: str) -> None:
        if self.progress.active:
            raise ReusevosError(f"a run is going on: wait for it, or press Stop, before {what}")

    def _need_input(self) -> FrameSource:
        if self.frames is None:
            raise ReusevosError("open a video, the frames of a folder or the demo clip first")
        return self.frames

    def _fresh(self, what: str) -> Path:
        self._count += 1
        folder = self.folder / f"{what}-{self._count}"
        folder.mkdir(parents=True)
        return folder

    def _drop_run(self) -> None:
        if self.run_folder is not None:
            shutil.rmtree(self.run_folder, ignore_errors=True)
        self.run_folder = None

    def _stem(self) -> str:
        path = self._need_input().path
        return path.name if path.is_dir() else path.stem


def _formats(formats: Sequence[str]) -> list[str]:
    """The formats a run writes: ``davis`` always (the viewer and the comparison with the command read it)."""
    return list(dict.fromkeys(["davis", *formats]))


def _prompt_text(prompt: Prompt) -> str:
    """The ``--box`` / ``--points`` flag that gives ``prompt`` on the command line."""
    at = f"@{prompt.frame}" if prompt.frame else ""
    if prompt.box is not None:
        return "--box " + ",".join(map(str, prompt.box)) + at
    pairs = [f"{x},{y}" for x, y in prompt.foreground] + [f"-{x},{y}" for x, y in prompt.background]
    return "--points " + ",".join(pairs) + at


def _clicks(points: dict) -> str:
    """``{"foreground": [[x, y]], "background": [...]}`` in words."""
    text = "clicks on it at " + " ".join(f"{x},{y}" for x, y in points["foreground"])
    return text + ("; beside it at " + " ".join(f"{x},{y}" for x, y in points["background"])
                   if points["background"] else "")
