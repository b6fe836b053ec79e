"""The web app (``reusevos app``): the job behind the page (``reusevos.app.job``, no Gradio) run on the shipped model
and a synthetic clip, checked against what ``reusevos segment`` writes for the same box, corrections and settings;
and the page itself, served by ``reusevos app`` and driven in a real headless Chromium through Playwright (skipped,
with the reason, when Gradio, Playwright or Chromium is missing; CI installs them, see the README)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import FAST, one_error, run_segment
from reusevos.api import load_model
from reusevos.app.headless import CHROMIUM, CHROMIUM_ARGS, running_app
from reusevos.app.job import Job
from reusevos.config import LOOKAHEAD_TAU as TAU  # the app's default, its slider's first value
from reusevos.errors import ReusevosError
from reusevos.io.masks import write_mask
from reusevos.io.writers import render_overlay
from reusevos.synthetic import SyntheticConfig, generate_clip

# The demo clip the tests open, as `reusevos synth DIR --frames 12 --objects 1 --size 120x216 --seed 0` writes it.
DEMO = {"frames": 12, "size": (120, 216), "objects": 1, "seed": 0}


@pytest.fixture(scope="module")
def model():
    """The shipped model, run on one thread as the command line's ``--threads 1`` (the same arithmetic)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_model()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def truth():
    """The demo clip's frames and true label maps."""
    clip = generate_clip(SyntheticConfig(size=DEMO["size"], num_frames=DEMO["frames"], num_objects=DEMO["objects"],
                                         seed=DEMO["seed"]))
    return [pair for pair in clip]


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory) -> Path:
    """The demo clip written by ``reusevos synth``: the frame folder the command line segments."""
    root = tmp_path_factory.mktemp("synth")
    proc = subprocess.run([sys.executable, "-m", "reusevos", "synth", str(root), "--frames", str(DEMO["frames"]),
                           "--objects", str(DEMO["objects"]), "--size", "x".join(map(str, DEMO["size"])),
                           "--seed", str(DEMO["seed"])], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return root / "JPEGImages" / "480p" / "synth00000"


def _box_around(labels: np.ndarray, margin: int = 6) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(labels)
    height, width = labels.shape
    return (max(0, xs.min() - margin), max(0, ys.min() - margin), min(width - 1, xs.max() + margin),
            min(height - 1, ys.max() + margin))


def _segment(folder: Path, out: Path, *flags) -> dict:
    """``reusevos segment`` on ``folder`` with the app's default settings; returns its stats.json."""
    proc = run_segment(folder, *flags, "--tau", f"{TAU:g}", "--max-size", "854", "--out", out, *FAST)
    assert proc.returncode == 0, proc.stderr
    return json.loads((out / "stats.json").read_text())


def _labels(path: Path) -> np.ndarray:
    """A palette PNG's indices, as stored."""
    with Image.open(path) as image:
        assert image.mode == "P"
        return np.array(image)


def _same_labels(ours: Path, theirs: Path, names: list[str]) -> None:
    for name in names:
        a, b = _labels(ours / f"{name}.png"), _labels(theirs / f"{name}.png")
        assert a.dtype == b.dtype == np.uint8 and np.array_equal(a, b), f"frame {name} differs"


def _finish(job: Job, timeout: float = 240):
    done = job.wait(timeout)
    assert not done.active, "the run did not finish in time"
    return done


# -- the job, without the web -------------------------------------------------------------------------------------
def test_a_run_writes_what_segment_writes_for_the_same_box(model, truth, demo_folder, tmp_path):
    job = Job(model, tmp_path / "job")
    assert job.open_demo(**DEMO) == "the demo clip synth00000 (12 frames, 120x216, seed 0): 12 frames of 216x120"
    assert [p.read_bytes() for p in sorted(job.frames.path.glob("*.jpg"))] == \
        [p.read_bytes() for p in sorted(demo_folder.glob("*.jpg"))]  # the same clip as `reusevos synth`
    x0, y0, x1, y1 = _box_around(truth[0][1])
    assert job.click(0, x1, y1, "box") == f"box corner at {x1},{y1} on frame 0: click the opposite corner"
    assert job.click(0, x0, y0, "box") == f"object 1: box {x0},{y0},{x1},{y1}"  # any two opposite corners
    assert job.objects() == [f"object 1: box {x0},{y0},{x1},{y1}, from frame 00000"]
    start = np.asarray(job.view(0))
    assert not np.array_equal(start, truth[0][0]) and start.shape == (120, 216, 3)  # the start mask is drawn
    box = f"{x0},{y0},{x1},{y1}"
    assert job.command(TAU, ["coco"]) == (f"reusevos segment INPUT --box {box} --tau {TAU:g} --max-size 854 "
                                           "--format davis,coco --out OUT/ --overlay overlay.mp4")

    job.run(TAU, ["coco"])
    for again in (lambda: job.run(TAU), lambda: job.open_demo(**DEMO)):  # one run at a time per session
        with pytest.raises(ReusevosError, match="a run is going on: wait for it, or press Stop"):
            again()
    done = _finish(job)
    assert (done.state, done.done, done.total, done.latest) == ("done", 12, 12, 11), done.message
    assert done.message.startswith("done: 12 frames")
    theirs = _segment(demo_folder, tmp_path / "cli", "--box", box, "--format", "davis,coco")
    _same_labels(job.results, tmp_path / "cli", job.names)
    ours = json.loads((job.results / "stats.json").read_text())
    assert ours["complete"] and ours["starts"] == theirs["starts"] == {"1": {"frame": "00000", "box": [x0, y0, x1, y1],
                                                                          "method": "model"}}
    assert json.loads((job.results / "coco.json").read_text())["annotations"] == \
        json.loads((tmp_path / "cli" / "coco.json").read_text())["annotations"]
    zipped, overlay = job.downloads()
    assert overlay.name == "overlay.mp4" and overlay.stat().st_size > 0
    with zipfile.ZipFile(zipped) as archive:
        assert {f"{n}.png" for n in job.names} | {"stats.json", "coco.json"} <= set(archive.namelist())
    # The viewer now shows the result: the last frame with its mask drawn over it (a JPEG of the overlay).
    expected = render_overlay(truth[11][0], _labels(tmp_path / "cli" / "00011.png")).astype(int)
    shown = np.array(Image.open(job.view(11))).astype(int)
    assert np.abs(shown - expected).mean() < 3


def _demo_with_a_box(model, truth, tmp_path) -> tuple[Job, tuple[int, int, int, int]]:
    """A job on the demo clip with object 1 started by a box around its first mask, and that box."""
    job = Job(model, tmp_path / "job")
    job.open_demo(**DEMO)
    x0, y0, x1, y1 = _box_around(truth[0][1])
    job.click(0, x0, y0, "box")
    job.click(0, x1, y1, "box")
    return job, (x0, y0, x1, y1)


def test_a_correction_runs_again_as_segment_corrections(model, truth, demo_folder, tmp_path):
    job, (x0, y0, x1, y1) = _demo_with_a_box(model, truth, tmp_path)
    job.run(TAU)
    _finish(job)
    first = {name: _labels(job.results / f"{name}.png") for name in job.names}
    routes = json.loads((job.results / "stats.json").read_text())["objects"]["1"]["routes"]  # frames 1, 2, ...
    # the last frame before the correction that the first run computed: the frames after it were moved and, with
    # the lookahead, blend in the next computed output, which the correction's restart now is
    settled = max([0] + [t for t, route in enumerate(routes[:5], start=1) if route == "computed"])
    with pytest.raises(ReusevosError, match=r"object 2 has not been started; the objects are \[1\]"):
        job.click(6, 10, 10, "box", correct=2)
    cx0, cy0, cx1, cy1 = _box_around(truth[6][1], margin=3)
    job.click(6, cx0, cy0, "box", correct=1)
    said = job.click(6, cx1, cy1, "box", correct=1)
    assert said == f"correction of object 1 at frame 00006: box {cx0},{cy0},{cx1},{cy1}"
    assert job.objects()[-1] == "correction at frame 00006: restarts object(s) 1"
    fix = job.corrections().read("00006")
    assert set(np.unique(fix)) == {0, 1}
    job.run(TAU)
    assert _finish(job).state == "done"
    fixes = tmp_path / "fixes"
    fixes.mkdir()
    write_mask(fixes / "00006.png", fix)
    _segment(demo_folder, tmp_path / "cli", "--box", f"{x0},{y0},{x1},{y1}", "--corrections", fixes)
    _same_labels(job.results, tmp_path / "cli", job.names)
    stats = json.loads((job.results / "stats.json").read_text())
    assert stats["corrections"] == {"00006": [1]} and stats["objects"]["1"]["start_frame"] == 6
    for name in job.names[:settled + 1]:  # before the correction, the run is the first one again
        assert np.array_equal(_labels(job.results / f"{name}.png"), first[name])
    assert np.array_equal(_labels(job.results / "00006.png"), fix)  # a restart's output is its mask


def test_flip_runs_as_segment_flip(model, truth, demo_folder, tmp_path):
    job, corners = _demo_with_a_box(model, truth, tmp_path)
    box = ",".join(map(str, corners))
    assert job.command(TAU, flip=True) == (f"reusevos segment INPUT --box {box} --tau {TAU:g} --flip --max-size 854 "
                                           "--format davis --out OUT/ --overlay overlay.mp4")
    job.run(TAU, flip=True)
    assert _finish(job).state == "done"
    _segment(demo_folder, tmp_path / "cli", "--box", box, "--flip")
    _same_labels(job.results, tmp_path / "cli", job.names)
    assert json.loads((job.results / "stats.json").read_text())["settings"]["flip"] is True


def test_a_backbone_runtime_runs_as_segment_with_it(model, truth, demo_folder, tmp_path):
    """`reusevos app --backbone-runtime R` sets the model's runtime: the page's command names it, and its masks are
    those of `reusevos segment --backbone-runtime R` (torch: on every machine)."""
    runtime = model.backbone.runtime
    model.backbone.runtime = "torch"
    try:
        job, corners = _demo_with_a_box(model, truth, tmp_path)
        box = ",".join(map(str, corners))
        assert job.command(TAU) == (f"reusevos segment INPUT --box {box} --tau {TAU:g} --backbone-runtime torch "
                                    "--max-size 854 --format davis --out OUT/ --overlay overlay.mp4")
        job.run(TAU)
        assert _finish(job).state == "done"
    finally:
        model.backbone.runtime = runtime
    cli = _segment(demo_folder, tmp_path / "cli", "--box", box, "--backbone-runtime", "torch")
    assert cli["settings"]["backbone_runtime"] == "torch"
    _same_labels(job.results, tmp_path / "cli", job.names)


def test_stop_keeps_the_frames_done_and_marks_them_partial(model, truth, tmp_path):
    job = Job(model, tmp_path / "job")
    job.open_demo(**DEMO)
    x0, y0, x1, y1 = _box_around(truth[0][1])
    job.click(0, x0, y0, "box")
    job.click(0, x1, y1, "box")
    on_frame = job._on_frame

    def stop_at_frame_2(result, stats):  # Stop pressed while frame 2 is shown: frame 3 is the last one done
        on_frame(result, stats)
        if result.index == 2:
            job.stop()

    job._on_frame = stop_at_frame_2
    job.run(TAU, warmup=False)
    done = _finish(job)
    assert (done.state, done.done, done.latest) == ("stopped", 4, 3)
    assert done.message.startswith("stopped after 4 of 12 frames")
    assert sorted(p.stem for p in job.results.glob("*.png")) == job.names[:4]
    stats = json.loads((job.results / "stats.json").read_text())
    assert stats["complete"] is False and stats["frames"] == stats["written"] == 4
    assert [p.name for p in job.downloads()] == ["synth00000-masks.zip"]  # no overlay video from a stopped run
    assert job.preview_path("00003") is not None and job.preview_path("00004") is None


def test_bad_input_is_one_message_and_changes_nothing(model, truth, tmp_path):
    job = Job(model, tmp_path / "job")
    with pytest.raises(ReusevosError, match="open a video, the frames of a folder or the demo clip first"):
        job.click(0, 10, 10, "box")
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    (uploads / "notes.mp4").write_text("not a video")
    with pytest.raises(ReusevosError) as error:
        job.open_upload([uploads / "notes.mp4"])
    message = job.public(str(error.value), [uploads / "notes.mp4"])
    assert message.startswith("cannot read video notes.mp4: ") and str(tmp_path) not in message
    assert job.frames is None and list(job.folder.iterdir()) == []  # the copy was removed
    (uploads / "00000.jpg").write_bytes(b"")
    with pytest.raises(ReusevosError, match="notes.mp4 is not a JPEG or PNG frame"):
        job.open_upload([uploads / "00000.jpg", uploads / "notes.mp4"])

    job.open_demo(**DEMO)
    with pytest.raises(ReusevosError, match="nothing starts an object"):
        job.run(TAU)
    job.click(0, 50, 40, "box")
    with pytest.raises(ReusevosError, match="box 50,40,50,40 is empty"):  # two clicks on one point
        job.click(0, 50, 40, "box")
    with pytest.raises(ReusevosError, match="click on the object first"):
        job.click(0, 50, 40, "background")
    small = tmp_path / "small.png"
    write_mask(small, np.ones((50, 100), np.uint8))
    with pytest.raises(ReusevosError, match="is 100x50 but the frames are 216x120; give a mask of the frame size"):
        job.upload_mask(0, small)
    assert job.objects() == [] and job.prompts == [] and job.masks == {}  # every refused edit was undone
    with pytest.raises(ReusevosError, match="frame 12 is not in the input"):
        job.view(12)


def test_reusevos_app_without_gradio_says_how_to_install_it():
    code = "import sys; sys.modules['gradio'] = None; from reusevos.cli import main; sys.exit(main(['app']))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    one_error(proc, "reusevos app: error: the web app needs Gradio", "pip install 'reusevos[app]'")


def test_reusevos_app_with_a_runtime_it_cannot_run_is_one_line():
    pytest.importorskip("gradio", reason="the app extra is not installed (pip install '.[app]')")
    code = ("import sys; sys.modules['openvino'] = None; from reusevos.cli import main; "
            "sys.exit(main(['app', '--backbone-runtime', 'openvino']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    one_error(proc, "reusevos app: error: the openvino backbone runtime needs the packages openvino and onnx")


def test_reusevos_app_on_a_taken_port_is_one_line():
    pytest.importorskip("gradio", reason="the app extra is not installed (pip install '.[app]')")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "reusevos", "app", "--port", str(port), *FAST],
                              capture_output=True, text=True, timeout=180)
    one_error(proc, f"reusevos app: error: cannot listen on 127.0.0.1:{port}", "give another --port")


# -- the page, in a browser ---------------------------------------------------------------------------------------
def _browser_or_skip():
    for module, install in (("gradio", "pip install '.[app]'"), ("playwright", "pip install '.[test]'")):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed ({install})")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    return sync_playwright


def _message(page, phrase: str) -> str:
    page.wait_for_function("p => document.querySelector('#message').innerText.includes(p)", arg=phrase)
    return page.locator("#message").inner_text()


@pytest.mark.slow
def test_the_page_in_a_browser_segments_a_box_as_segment_does(truth, demo_folder, tmp_path):
    sync_playwright = _browser_or_skip()
    with running_app(tmp_path / "server.log", threads=1) as app, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS))
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page.set_default_timeout(120_000)
        page.goto(app.url)
        page.locator("#demo-frames input").fill(str(DEMO["frames"]))
        page.locator("#demo-size textarea").fill("x".join(map(str, DEMO["size"])))
        page.locator("#demo-objects input").fill(str(DEMO["objects"]))
        page.click("#demo")
        assert _message(page, "demo clip") == \
            "the demo clip synth00000 (12 frames, 120x216, seed 0): 12 frames of 216x120"

        # Draw a box: two clicks on the frame, at opposite corners (the image may be shown scaled).
        viewer = page.locator("#viewer img")
        shown = viewer.bounding_box()
        scale = shown["width"] / DEMO["size"][1]
        x0, y0, x1, y1 = _box_around(truth[0][1])
        viewer.click(position={"x": (x0 + 0.5) * scale, "y": (y0 + 0.5) * scale})
        _message(page, "click the opposite corner")
        viewer.click(position={"x": (x1 + 0.5) * scale, "y": (y1 + 0.5) * scale})
        _message(page, "object 1: box")
        listed = page.locator("#objects").inner_text()
        box = re.search(r"object 1: box (\d+,\d+,\d+,\d+), from frame 00000", listed).group(1)
        assert abs(np.array(box.split(","), int) - [x0, y0, x1, y1]).max() <= 1

        page.click("#run")
        page.wait_for_selector("#run-progress[data-state=done]")
        assert "12 / 12 frames" in page.locator("#progress").inner_text()
        assert _message(page, "done").startswith("done: 12 frames")
        assert f"--box {box} --tau {TAU:g} --max-size 854" in page.locator("#command").inner_text()

        # The command line, for the same clip, box and settings.
        cli = tmp_path / "cli"
        _segment(demo_folder, cli, "--box", box)

        # The preview: the last frame, with the mask drawn where the command line puts it.
        with urllib.request.urlopen(viewer.get_attribute("src")) as answer:
            preview = np.array(Image.open(answer).convert("RGB")).astype(int)
        frame, labels = truth[11][0].astype(int), _labels(cli / "00011.png")
        assert preview.shape == frame.shape
        assert np.abs(preview - render_overlay(truth[11][0], labels)).mean() < 3
        assert np.abs(preview - frame)[labels == 1].mean() > 20  # the mask is drawn, not the bare frame

        # The download: the masks, byte-equal labels with the command line's.
        with page.expect_download() as download:
            page.locator("#downloads a[download='synth00000-masks.zip']").click()
        archive = tmp_path / "masks.zip"
        download.value.save_as(archive)
        with zipfile.ZipFile(archive) as masks:
            masks.extractall(tmp_path / "page")
        names = [f"{i:05d}" for i in range(DEMO["frames"])]
        _same_labels(tmp_path / "page", cli, names)
        assert json.loads((tmp_path / "page" / "stats.json").read_text())["complete"] is True
        assert page.locator("#downloads a[download='overlay.mp4']").count() == 1

        # Bad input: a file that is not a video, then an empty box; the page says so and goes on.
        bad = tmp_path / "notes.mp4"
        bad.write_text("not a video")
        page.locator("#upload input[type=file]").set_input_files(str(bad))
        said = _message(page, "Error")
        assert said.startswith("Error: cannot read video notes.mp4: ") and "give a valid video file" in said
        assert "Traceback" not in said and tempfile.gettempdir() not in said  # no server paths
        viewer.click(position={"x": 50 * scale, "y": 40 * scale})
        _message(page, "click the opposite corner")
        viewer.click(position={"x": 50 * scale, "y": 40 * scale})
        assert "is empty" in _message(page, "is empty")
        assert app.process.poll() is None  # still serving
        browser.close()

