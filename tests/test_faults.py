"""The reliability suite: every way a user's files could be lost or two runs mixed, and every bad input that
must be refused before the first frame. Each test runs the real command (or the Python API), and checks the
exit code, the one-line message and the files on disk before and after.

The weights are random (conftest), so masks after the first frame mean nothing; what is tested is what
happens to files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import FAST, cli, one_error, run_segment, snapshot
from reusevos.errors import ReusevosError
from reusevos.io.masks import read_mask, to_label_map, write_mask
from reusevos.synthetic import SyntheticConfig, generate_clip, write_clip

pytestmark = pytest.mark.slow


def _clip(folder: Path, frames: int = 6, suffix: str = ".png", seed: int = 1) -> tuple[Path, Path]:
    """A frame folder and its first mask (a palette PNG in a mask folder of its own)."""
    clip = list(generate_clip(SyntheticConfig(size=(96, 160), num_frames=frames, num_objects=1, seed=seed)))
    (folder / "frames").mkdir(parents=True)
    (folder / "masks").mkdir()
    for t, (frame, _) in enumerate(clip):
        Image.fromarray(frame).save(folder / "frames" / f"{t:05d}{suffix}")
    write_mask(folder / "masks" / "00000.png", clip[0][1])
    return folder / "frames", folder / "masks" / "00000.png"


@pytest.fixture()
def clip(tmp_path):
    return _clip(tmp_path)


def _segment(frames, mask, out, weights, *more, new_process: bool = False):
    """``reusevos segment`` in this process (conftest.cli), or with ``new_process`` as ``python -m reusevos``."""
    args = (frames, "--mask", mask, "--out", out, "--weights", weights["base"], "--no-warmup", *FAST, *more)
    return run_segment(*args) if new_process else cli("segment", *args)


def _reusevos(*args, env=None) -> subprocess.CompletedProcess:
    return cli(*args, env={**os.environ, **env} if env else None)


# -- 1. outputs never overwrite inputs ----------------------------------------------------------------------------
def test_out_as_the_frame_folder_is_refused(clip, weights, tmp_path):
    frames, mask = clip
    before = snapshot(tmp_path)
    one_error(_segment(frames, mask, frames, weights), "outputs never overwrite inputs", str(frames))
    assert snapshot(tmp_path) == before


def test_out_as_the_mask_folder_or_a_folder_holding_the_frames_is_refused(clip, weights, tmp_path):
    frames, mask = clip
    before = snapshot(tmp_path)
    one_error(_segment(frames, mask, mask.parent, weights), "--out", "holds the input", "outputs never overwrite")
    one_error(_segment(frames, mask, tmp_path, weights), "holds the input")
    assert snapshot(tmp_path) == before


def test_out_through_a_symbolic_link_to_the_frames_is_refused(clip, weights, tmp_path):
    frames, mask = clip
    (tmp_path / "link").symlink_to(frames, target_is_directory=True)
    before = snapshot(frames)
    one_error(_segment(frames, mask, tmp_path / "link", weights), "outputs never overwrite inputs")
    assert snapshot(frames) == before


def test_overlay_as_the_input_video_or_a_hard_link_to_it_is_refused(clip, weights, tmp_path):
    frames, mask = clip
    video = tmp_path / "clip.mp4"
    subprocess.run([sys.executable, "-c", f"""
import numpy as np
from PIL import Image
from pathlib import Path
from reusevos.io.writers import VideoWriter
with VideoWriter({str(video)!r}, fps=10) as w:
    for p in sorted(Path({str(frames)!r}).glob('*.png')):
        w.write(np.array(Image.open(p).convert('RGB')))
"""], check=True, timeout=120)
    os.link(video, tmp_path / "hard.mp4")
    before = snapshot(tmp_path)
    one_error(_segment(video, mask, tmp_path / "o", weights, "--overlay", video), "--overlay", "is the input")
    one_error(_segment(video, mask, tmp_path / "o", weights, "--overlay", tmp_path / "hard.mp4"), "is the input")
    assert snapshot(tmp_path) == before


# -- 2. one run per folder, and runs that stop early -------------------------------------------------------------
def test_a_folder_with_another_run_is_refused_then_replaced_whole_with_overwrite(weights, tmp_path):
    long_frames, long_mask = _clip(tmp_path / "long", frames=6)
    short_frames, short_mask = _clip(tmp_path / "short", frames=3, seed=2)
    out = tmp_path / "o"
    assert _segment(long_frames, long_mask, out, weights).returncode == 0
    first = snapshot(out)
    assert sorted(first) == [f"{t:05d}.png" for t in range(6)] + ["stats.json"]
    one_error(_segment(short_frames, short_mask, out, weights), "already holds 7 files", "--overwrite")
    assert snapshot(out) == first
    proc = _segment(short_frames, short_mask, out, weights, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert sorted(snapshot(out)) == ["00000.png", "00001.png", "00002.png", "stats.json"]  # nothing of the first run
    stats = json.loads((out / "stats.json").read_text())
    assert stats["complete"] is True and stats["frames"] == stats["written"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long", "o", "short"]  # no partial or old folder left


def _stop_midway(args: list, partial: Path) -> subprocess.CompletedProcess:
    """Start ``reusevos segment``, send SIGTERM once it has written its third mask into ``partial``."""
    proc = subprocess.Popen([sys.executable, "-m", "reusevos", "segment", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while len(list(partial.glob("0*.png"))) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def test_a_stopped_run_leaves_the_earlier_result_and_its_own_marked_partial(weights, tmp_path):
    frames, mask = _clip(tmp_path, frames=120)
    out = tmp_path / "o"
    out.mkdir()
    write_mask(out / "00000.png", np.eye(8, dtype=np.uint8))
    (out / "stats.json").write_text('{"earlier": true}\n')
    before = snapshot(out)
    proc = _stop_midway([frames, "--mask", mask, "--out", out, "--weights", weights["base"], "--no-warmup",
                         "--overwrite", *FAST], tmp_path / "o.partial")
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr
    assert "marked partial" in proc.stderr and "unchanged" in proc.stderr
    assert snapshot(out) == before
    partial = json.loads((tmp_path / "o.partial" / "stats.json").read_text())
    masks = sorted((tmp_path / "o.partial").glob("0*.png"))
    assert partial["complete"] is False and partial["written"] >= 3 and len(masks) == partial["written"]
    assert partial["frames"] - partial["written"] in (0, 1)  # SIGTERM may come between a frame's step and its mask


def test_a_stopped_run_in_a_new_folder_is_marked_partial(weights, tmp_path):
    frames, mask = _clip(tmp_path, frames=120)
    out = tmp_path / "o"
    proc = _stop_midway([frames, "--mask", mask, "--out", out, "--weights", weights["base"], "--no-warmup", *FAST],
                        out)
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr
    stats = json.loads((out / "stats.json").read_text())
    assert stats["complete"] is False and 3 <= stats["written"] == len(list(out.glob("0*.png"))) < 120
    assert stats["frames"] - stats["written"] in (0, 1)  # SIGTERM may come between a frame's step and its mask


def test_a_stop_while_a_mask_is_written_counts_only_the_masks_on_disk(weights, tmp_path, monkeypatch):
    """The race CI once hit: the model has stepped through frame 3 when the stop comes, before its mask is written.
    ``stats.json`` then says 4 frames stepped, 3 written, and the 3 masks are there."""
    from reusevos.api import load_model
    from reusevos.io.exports import Exports
    from reusevos.segment import segment_video

    frames, mask = _clip(tmp_path, frames=8)
    write = Exports.write

    def stopped_at_frame_3(self, name, *args):
        if name == "00003":
            raise KeyboardInterrupt
        write(self, name, *args)

    monkeypatch.setattr(Exports, "write", stopped_at_frame_3)
    with pytest.raises(KeyboardInterrupt):
        segment_video(load_model(weights["base"]), frames, mask, tmp_path / "o", warmup=False)
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert (stats["complete"], stats["frames"], stats["written"]) == (False, 4, 3)
    assert sorted(p.name for p in (tmp_path / "o").glob("0*.png")) == ["00000.png", "00001.png", "00002.png"]


def test_a_stop_in_the_middle_of_a_file_leaves_no_temporary_file(tmp_path):
    """CI once found ``00003.tmp.png`` beside the masks of a run stopped by SIGTERM: the stop came while the mask
    was being written to its temporary name."""
    from reusevos.io.files import write_atomically

    def stopped_halfway(tmp):
        tmp.write_bytes(b"half a png")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(tmp_path / "00003.png", stopped_halfway)

    def disk_full(tmp):
        tmp.write_bytes(b"a third of a png")
        raise OSError(28, "No space left on device")

    with pytest.raises(ReusevosError, match="cannot write .*00004.png: No space left"):
        write_atomically(tmp_path / "00004.png", disk_full)
    assert list(tmp_path.iterdir()) == []


def test_a_frame_that_fails_to_decode_midway_keeps_the_earlier_result(weights, tmp_path):
    frames, mask = _clip(tmp_path, frames=6, suffix=".jpg")
    data = (frames / "00003.jpg").read_bytes()
    (frames / "00003.jpg").write_bytes(data[:len(data) // 3])  # the header is fine; the pixels are cut short
    out = tmp_path / "o"
    out.mkdir()
    (out / "stats.json").write_text('{"earlier": true}\n')
    line = one_error(_segment(frames, mask, out, weights, "--overwrite", new_process=True), "cannot read frame",
                     "00003.jpg", "the 3 frames done are in", "unchanged")
    assert str(tmp_path / "o.partial") in line
    assert snapshot(out) == {"stats.json": b'{"earlier": true}\n'}
    partial = json.loads((tmp_path / "o.partial" / "stats.json").read_text())
    assert partial["complete"] is False and partial["frames"] == partial["written"] == 3


def test_a_full_disk_is_one_line_and_the_run_is_marked_partial(clip, weights, tmp_path):
    frames, mask = clip
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        line = one_error(_segment(frames, mask, disk / "o", weights, new_process=True), "No space left")
        assert "Traceback" not in line
    finally:
        subprocess.run(["umount", str(disk)], check=True)


# -- 3. soft and JPEG masks ---------------------------------------------------------------------------------------
def test_a_feathered_mask_is_refused_and_threshold_binarises_it(clip, weights, tmp_path):
    frames, mask = clip
    hard = (read_mask(mask) > 0).astype(np.float32) * 255
    feathered = tmp_path / "feathered.png"
    Image.fromarray(cv2.GaussianBlur(hard, (0, 0), 3).round().astype(np.uint8)).save(feathered)
    before = snapshot(tmp_path)
    one_error(_segment(frames, feathered, tmp_path / "o", weights), "soft mask", "--threshold 128")
    assert snapshot(tmp_path) == before
    proc = _segment(frames, feathered, tmp_path / "o", weights, "--threshold", "128")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "o" / "stats.json").read_text())["objects"].keys() == {"1"}


def test_a_jpeg_mask_is_refused_as_lossy(clip, weights, tmp_path):
    frames, mask = clip
    Image.fromarray((read_mask(mask) > 0).astype(np.uint8) * 255).save(tmp_path / "mask.jpg", quality=80)
    before = snapshot(tmp_path)
    one_error(_segment(frames, tmp_path / "mask.jpg", tmp_path / "o", weights), "JPEG is lossy", "--threshold")
    assert snapshot(tmp_path) == before


# -- 4. unwritable outputs and bad frames, found before the model loads -----------------------------------------
def test_an_unwritable_overlay_is_found_before_any_work(clip, weights, tmp_path):
    frames, mask = clip
    one_error(_segment(frames, mask, tmp_path / "o", weights, "--overlay", "/proc/reusevos-test/clip.mp4"),
               "cannot write --overlay")
    assert not (tmp_path / "o").exists()


def test_eval_json_and_segment_davis_out_into_unwritable_places(tmp_path):
    write_clip(tmp_path / "davis", "one", SyntheticConfig(size=(64, 96), num_frames=4, num_objects=1), split="val")
    one_error(_reusevos("eval", tmp_path, "--davis", tmp_path / "davis", "--json", "/proc/reusevos-test/s.json"),
               "cannot write --json")
    one_error(_reusevos("segment-davis", tmp_path / "davis", "--out", "/proc/reusevos-test/out"), "cannot write --out")
    one_error(_reusevos("segment-davis", tmp_path / "davis", "--out", tmp_path / "davis"), "is the input")


def test_a_frame_of_another_size_is_found_before_anything_is_written(clip, weights, tmp_path):
    frames, mask = clip
    Image.new("RGB", (80, 48)).save(frames / "00004.png")
    one_error(_segment(frames, mask, tmp_path / "o", weights), "00004.png is 80x48", "same size")
    assert not (tmp_path / "o").exists()


# -- 5. the Python API --------------------------------------------------------------------------------------------
def test_python_masks_follow_the_rules_of_mask_files():
    square = np.zeros((32, 32), np.uint8)
    square[8:24, 8:24] = 255
    assert set(np.unique(to_label_map(square)).tolist()) == {0, 1}  # 0/255: one object, as in a file
    with pytest.raises(ReusevosError, match="floating-point"):
        to_label_map(square / 255.0)
    with pytest.raises(ReusevosError, match="labels must be 0..255"):
        to_label_map(square.astype(np.int64) + 300)
    soft = cv2.GaussianBlur(square.astype(np.float32), (0, 0), 2).round().astype(np.uint8)
    with pytest.raises(ReusevosError, match="soft mask"):
        to_label_map(soft)
    assert to_label_map(soft, threshold=128).max() == 1


def test_api_misuse_raises_reusevos_error(tmp_path):
    import reusevos
    from reusevos.config import ModelConfig
    from reusevos.model.backbone import Backbone
    from reusevos.model.network import VOSNetwork

    with pytest.raises(ReusevosError, match="loaded model"):
        reusevos.Session(None)
    network = VOSNetwork(ModelConfig(), Backbone("mobilenet_v2"))
    with pytest.raises(ReusevosError, match="SessionConfig"):
        reusevos.Session(network, {})
    with pytest.raises(ReusevosError, match="0..255"):
        write_mask(tmp_path / "m.png", np.full((4, 4), 300))
    frame = np.zeros((64, 64, 3), np.uint8)
    for bad, message in ((np.full((64, 64), 0.9), "floating-point"), (np.full((64, 64), 300, np.int64), "0..255")):
        with pytest.raises(ReusevosError, match=message):
            reusevos.Session(network, reusevos.SessionConfig("full", 1.0)).step(frame, bad)
    square = np.zeros((64, 64), np.uint8)
    square[16:48, 16:48] = 255
    result = reusevos.Session(network, reusevos.SessionConfig("full", 1.0)).step(frame, square)
    assert result.started == [1]  # a 0/255 array is one object, as a 0/255 file is


# -- 6. smaller things --------------------------------------------------------------------------------------------
def test_smaller_messages_name_the_real_flags(clip, weights, tmp_path):
    frames, mask = clip
    one_error(_segment(frames, mask, tmp_path / "o", weights, "--threads", "999"), "--threads 999", "CPUs")
    assert _reusevos("synth", tmp_path / "s", "--frames", "3").returncode == 0
    one_error(_reusevos("synth", tmp_path / "s", "--frames", "3"), "--overwrite")
    env = {k: "" for k in ("REUSEVOS_DAVIS",)}
    one_error(_reusevos("segment-davis", "--out", tmp_path / "r", env=env), "DAVIS_ROOT")
    import torch

    if not torch.cuda.is_available():
        one_error(_segment(frames, mask, tmp_path / "o", weights, "--device", "cuda:1"), "--device cuda:1")


def test_frames_too_small_for_the_model_are_refused(weights, tmp_path):
    """A 32x32 video used to 'reuse' every frame and write empty masks without a word."""
    frames = tmp_path / "frames"
    frames.mkdir()
    for t in range(3):
        Image.new("RGB", (32, 32), (40 * t, 90, 120)).save(frames / f"{t:05d}.png")
    square = np.zeros((32, 32), np.uint8)
    square[8:24, 8:24] = 1
    write_mask(tmp_path / "m.png", square)
    one_error(_segment(frames, tmp_path / "m.png", tmp_path / "o", weights), "32x32 are too small", "48 pixels")
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_benchmark_and_ablation_outputs_are_checked_before_the_model_loads(tmp_path):
    write_clip(tmp_path / "davis", "one", SyntheticConfig(size=(64, 96), num_frames=4, num_objects=1), split="val")
    davis = tmp_path / "davis"
    one_error(_reusevos("benchmark", davis, "--json", "/proc/reusevos-test/b.json", "--no-flops"),
               "cannot write --json")
    one_error(_reusevos("benchmark", davis, "--partial", davis, "--no-flops"), "is the input")
    one_error(_reusevos("ablation", davis, "--out", "/proc/reusevos-test/ab", "--no-plots"), "cannot write --out")


def test_the_in_process_runner_shows_what_a_new_process_would(tmp_path, monkeypatch):
    """conftest.cli stands in for ``python -m reusevos`` in the refusal tests: a crash must still show as a
    traceback with exit 1, and a warning as a second line on stderr, or those tests could not fail on them."""
    import warnings

    from reusevos.cli import data

    def crash(args):
        warnings.warn("a stray warning", UserWarning)
        raise RuntimeError("a bug")

    monkeypatch.setattr(data, "_cmd_synth", crash)
    proc = cli("synth", tmp_path / "s")
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "RuntimeError: a bug" in proc.stderr
    assert "UserWarning: a stray warning" in proc.stderr
    with pytest.raises(AssertionError):
        one_error(proc)
    assert cli("--version").stdout.startswith("reusevos ") and cli("synth").returncode == 2
