"""The web app's page and server, on Gradio: :func:`build` makes the page, :func:`serve` runs it.

Each browser session gets a :class:`~reusevos.app.job.Job` (in a ``gr.State``, its folder removed when the session
ends); every event calls the job and shows what it says. A ReusevosError becomes the page's message, never a
traceback; an unexpected error is one line on the page and a traceback in the server's log. Runs go through one
queue: one at a time on the machine, other sessions wait their turn (Gradio shows their place); clicks, scrubbing
and Stop do not wait for a run.
"""

from __future__ import annotations

import html
import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing leaves the machine

import gradio as gr  # noqa: E402  (after the switch above)

from reusevos.app.job import Job, Progress  # noqa: E402
from reusevos.config import DEFAULT_MAX_SIZE, LOOKAHEAD_TAU  # noqa: E402
from reusevos.errors import ReusevosError  # noqa: E402
from reusevos.io.exports import FORMATS  # noqa: E402
from reusevos.synthetic import parse_size  # noqa: E402

log = logging.getLogger("reusevos.app")
POLL_S = 0.25  # how often a running job's progress is sent to the page
TAU_INFO = ("Lower is faster and less accurate. On DAVIS val, against the base model: 0.9 (the default) 1.39x its "
            "speed for +0.0 J&F; 0.75 1.95x for -0.6; 1 never reuses.")
TOOLS = [("box: click two opposite corners", "box"), ("click on the object", "object"),
         ("click beside it (background)", "background")]
TARGETS = [("start objects", "start"), ("correct an object on this frame", "correct")]
INTRO = ("**reusevos**: open a video, mark each object on its first frame (or any frame: an object that starts "
         "later), press Run, then download the masks. Everything stays on this machine.")


def build(network, root: str | Path) -> gr.Blocks:
    """The page; ``network`` is the loaded model every run uses, ``root`` the folder the sessions' jobs live in."""
    root = Path(root)

    def new_job(job: Job | None) -> Job:
        return job if job is not None else Job(network, root / uuid.uuid4().hex)

    with gr.Blocks(title="reusevos", analytics_enabled=False, delete_cache=(3600, 43200)) as page:
        state = gr.State(None, delete_callback=lambda job: job.close() if job is not None else None)
        gr.Markdown(INTRO)
        message = gr.Markdown("", elem_id="message")
        with gr.Row():
            with gr.Column(scale=3):
                viewer = gr.Image(None, label="Frame: draw here", interactive=False, format="png",
                                  elem_id="viewer", buttons=["fullscreen"],
                                  placeholder="Open a video, the frames of a folder or the demo clip (right)")
                frame = gr.Slider(0, 1, value=0, step=1, label="Frame", elem_id="frame")
                with gr.Row():
                    run = gr.Button("Run", variant="primary", elem_id="run")
                    stop = gr.Button("Stop", variant="stop", interactive=False, elem_id="stop")
                progress = gr.HTML(_progress_html(Progress()), elem_id="progress")
                downloads = gr.File(None, file_count="multiple", label="Download: the masks (zip) and the overlay "
                                    "video", interactive=False, elem_id="downloads")
                command = gr.Markdown("", elem_id="command")
            with gr.Column(scale=2):
                with gr.Accordion("1. Open a video", open=True):
                    upload = gr.File(None, file_count="multiple", label="A video file, or all the frames of a "
                                     "folder (JPEG/PNG)", height=110, elem_id="upload")
                    with gr.Row():
                        demo_frames = gr.Number(40, label="frames", precision=0, minimum=1, maximum=500,
                                                elem_id="demo-frames")
                        demo_size = gr.Textbox("240x432", label="size (HxW)", elem_id="demo-size")
                        demo_objects = gr.Number(2, label="objects", precision=0, minimum=1, maximum=5,
                                                 elem_id="demo-objects")
                    demo = gr.Button("Open a synthetic demo clip", elem_id="demo")
                with gr.Accordion("2. Mark the objects", open=True):
                    target = gr.Radio(TARGETS, value="start", label="Drawing", elem_id="target")
                    tool = gr.Radio(TOOLS, value="box", label="A click on the frame", elem_id="tool")
                    with gr.Row():
                        next_object = gr.Button("New object", size="sm", elem_id="new-object")
                        remove = gr.Button("Remove last object", size="sm", elem_id="remove-object")
                    with gr.Row():
                        fix_object = gr.Number(1, label="object to correct", precision=0, minimum=1,
                                               elem_id="fix-object")
                        clear_fixes = gr.Button("Clear corrections", size="sm", elem_id="clear-corrections")
                    mask_upload = gr.File(None, file_types=[".png"], label="Or upload a mask (PNG) for this frame",
                                          height=120, elem_id="mask-upload")
                    objects = gr.Markdown("No object yet.", elem_id="objects")
                with gr.Accordion("3. Settings", open=True):
                    tau = gr.Slider(0.5, 1.0, value=LOOKAHEAD_TAU, step=0.01, label="tau", info=TAU_INFO, elem_id="tau")
                    max_size = gr.Number(DEFAULT_MAX_SIZE, label="max size", precision=0, minimum=0,
                                         info="the model runs on frames at most this long (0: the input's size); "
                                              "masks are written at the input's size", elem_id="max-size")
                    flip = gr.Checkbox(False, label="flip: a second tracker on the mirrored video",
                                       info="better masks (+1.6 to +2.6 J&F on held-out DAVIS train sequences) for "
                                            "about half the speed", elem_id="flip")
                    formats = gr.CheckboxGroup(list(FORMATS), value=["davis"], label="formats (davis is always "
                                               "written)", elem_id="formats")

        shown = [state, viewer, frame, objects, message]  # what an edit changes

        def show(job: Job, index: int, said: str) -> dict:
            """The page after an edit: the frame as the job shows it, the objects, the message."""
            lines = job.objects()
            listed = "\n".join(f"- {line}" for line in lines) if lines else "No object yet."
            return {state: job, viewer: job.view(index), objects: listed, message: said}

        def act(job: Job | None, index: float | None, action, uploads=()) -> dict:
            """``action(job, frame index)``, then the page as the job shows it; or the message of its error."""
            job, index = new_job(job), int(index or 0)
            ok, result = _attempt(job, lambda: show(job, index, action(job, index)), uploads)
            return result if ok else {state: job, message: result}

        def opened(job: Job, said: str) -> dict:
            last = len(job.names) - 1
            return {**show(job, 0, said), frame: gr.Slider(0, max(last, 1), value=0, step=1, interactive=last > 0),
                    downloads: None, progress: _progress_html(job.progress), command: ""}

        def on_upload(job, files):
            files = [getattr(f, "name", f) for f in (files or [])]
            result = act(job, 0, lambda j, _: j.open_upload(files), files)
            return opened(result[state], result[message]) if viewer in result else {**result, upload: None}

        def on_demo(job, frames, size, count):
            result = act(job, 0, lambda j, _: j.open_demo(int(frames or 0), parse_size(str(size)), int(count or 0)))
            return opened(result[state], result[message]) if viewer in result else result

        def on_click(job, index, tool_name, target_name, obj, evt: gr.SelectData):
            def click(j: Job, i: int) -> str:
                x, y = j.to_input(*evt.index)
                return j.click(i, x, y, tool_name, int(obj or 0) if target_name == "correct" else None)
            return act(job, index, click)

        def on_mask(job, index, path, target_name):
            uploads = [path] if path else []
            result = act(job, index, lambda j, i: j.upload_mask(i, path, target_name == "correct"), uploads)
            return {**result, mask_upload: None}

        def on_max_size(job, value, index):
            if job is None or job.frames is None:
                return {}
            return act(job, index, lambda j, _: _set_max_size(j, value))

        def on_run(job, tau_value, size, chosen, flipped):
            job, chosen = new_job(job), chosen or []
            ok, said = _attempt(job, lambda: _start_run(job, tau_value, size, chosen, flipped))
            if not ok:
                yield {state: job, message: said}
                return
            same = job.command(tau_value, chosen, bool(flipped))
            said = f"The same from the command line (INPUT: what is open here): `{same}`"
            yield {state: job, run: gr.Button(interactive=False), stop: gr.Button(interactive=True), downloads: None,
                   message: "running ...", command: said, progress: _progress_html(job.progress)}
            latest = None
            try:
                while job.progress.active:
                    time.sleep(POLL_S)
                    now = job.progress
                    update = {progress: _progress_html(now)}
                    if now.latest is not None and now.latest != latest:
                        latest = now.latest
                        update.update({viewer: job.view(latest), frame: gr.Slider(value=latest)})
                    yield update
            finally:
                if job.progress.active:  # the page was closed or reloaded mid-run
                    job.stop()
            done = job.wait()
            update = {progress: _progress_html(done), downloads: [str(p) for p in job.downloads()] or None,
                      message: done.message if done.state != "failed" else _error(done.message),
                      run: gr.Button(interactive=True), stop: gr.Button(interactive=False)}
            if done.latest is not None:
                update.update({viewer: job.view(done.latest), frame: gr.Slider(value=done.latest)})
            yield update

        def on_stop(job):
            if job is not None:
                job.stop()
            return {message: "stopping after the frame at hand ..."}

        upload.upload(on_upload, [state, upload], [*shown, upload, progress, downloads, command],
                      show_progress="hidden")
        demo.click(on_demo, [state, demo_frames, demo_size, demo_objects], [*shown, progress, downloads, command])
        viewer.select(on_click, [state, frame, tool, target, fix_object], shown, show_progress="hidden",
                      trigger_mode="multiple")  # a box's second corner, clicked at once, is not dropped
        frame.input(lambda job, i: act(job, i, lambda j, _: ""), [state, frame], shown, show_progress="hidden",
                    trigger_mode="always_last")  # scrubbing: only the frame where the slider rests is shown
        next_object.click(lambda job, i: act(job, i, lambda j, _: j.next_object()), [state, frame], shown)
        remove.click(lambda job, i: act(job, i, lambda j, _: j.remove_object()), [state, frame], shown)
        clear_fixes.click(lambda job, i: act(job, i, lambda j, _: j.clear_corrections()), [state, frame], shown)
        mask_upload.upload(on_mask, [state, frame, mask_upload, target], [*shown, mask_upload])
        max_size.blur(on_max_size, [state, max_size, frame], shown)
        run.click(on_run, [state, tau, max_size, formats, flip],
                  [state, viewer, frame, progress, downloads, message, run, stop, command],
                  concurrency_limit=1, concurrency_id="run", show_progress="minimal")
        stop.click(on_stop, [state], [message], concurrency_limit=None, show_progress="hidden")
    return page


def serve(network, host: str = "127.0.0.1", port: int = 7860, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve the page at ``http://host:port/`` until interrupted (Ctrl-C, SIGTERM); ``on_ready(url)`` once it
    listens. The sessions' files live in a temporary folder, removed at the end. A port that cannot be had is a
    ReusevosError."""
    root = Path(tempfile.mkdtemp(prefix="reusevos-app-"))
    try:
        page = build(network, root)
        page.queue(default_concurrency_limit=1, max_size=64)
        try:
            page.launch(server_name=host, server_port=port, ssr_mode=False, show_error=False, quiet=True,
                        footer_links=[], max_file_size="4gb", enable_monitoring=False, prevent_thread_lock=True)
        except OSError as exc:
            raise ReusevosError(f"cannot listen on {host}:{port} ({str(exc).split('.')[0]}); give another --port, or "
                                "stop what uses it") from None
        if on_ready is not None:
            on_ready(page.local_url)
        page.block_thread()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _attempt(job: Job, action, uploads=()) -> tuple[bool, object]:
    """``(True, action())``, or ``(False, the page's message)`` when it raises: a ReusevosError's text without the
    server's folders, or, for a bug, one line here and the traceback in the log."""
    try:
        return True, action()
    except ReusevosError as exc:
        return False, _error(job.public(str(exc), uploads))
    except Exception as exc:
        log.exception("page event failed")
        return False, _error(f"unexpected error ({type(exc).__name__}); see the server's log")


def _start_run(job: Job, tau, size, formats, flip=False) -> None:
    job.max_size = int(size or 0)
    job.run(float(tau), formats, flip=bool(flip))


def _set_max_size(job: Job, value) -> str:
    job.max_size = int(value or 0)
    return f"the model runs at {job.process_size[1]}x{job.process_size[0]}"


def _error(text: str) -> str:
    return f"**Error:** {text}"


def _progress_html(progress: Progress) -> str:
    """The progress bar: frames done of all, the live FPS of the model and the share of frames reused; its
    ``data-state`` says where the run is (``idle``, ``starting``, ``running``, ``done``, ``stopped``, ``failed``)."""
    numbers = (f"{progress.done} / {progress.total} frames, {progress.fps:.1f} FPS (model), "
               f"{progress.reuse_rate:.0%} reused" if progress.state != "idle" else "not run yet")
    return (f'<div id="run-progress" data-state="{progress.state}" data-done="{progress.done}" '
            f'data-total="{progress.total}"><progress max="{max(progress.total, 1)}" value="{progress.done}" '
            f'style="width:100%"></progress><div>{html.escape(numbers)} &middot; {html.escape(progress.state)}'
            '</div></div>')
