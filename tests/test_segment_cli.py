"""``reusevos segment`` end to end: the real command in a subprocess on the shared blackswan clip (as an mp4) and on
synthetic clips, its outputs, and every bad input a new user might give it.

The weights are randomly initialised checkpoints written here, so the masks after the first frame mean nothing;
what is tested is the plumbing: files, sizes, palette, statistics, gate decisions, errors.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from reusevos.config import SessionConfig
from reusevos.errors import ReusevosError
from reusevos.io.masks import DAVIS_PALETTE, read_mask, write_mask
from reusevos.io.writers import VideoWriter, render_overlay
from reusevos.model.onnx_backbone import bf16_mode_available
from reusevos.synthetic import SyntheticConfig, generate_clip, write_clip

from conftest import FAST, cli, run_segment, snapshot

@pytest.fixture(scope="module")
def blackswan_mp4(blackswan_root, tmp_path_factory) -> tuple[Path, list[np.ndarray], Path]:
    """The first 4 frames of blackswan as an H.264 mp4 (854x480), the frames, the first mask's path."""
    folder = tmp_path_factory.mktemp("blackswan")
    files = sorted((blackswan_root / "JPEGImages" / "480p" / "blackswan").glob("*.jpg"))[:4]
    frames = [np.array(Image.open(p).convert("RGB")) for p in files]
    path = folder / "blackswan.mp4"
    with VideoWriter(path, fps=24) as video:
        for frame in frames:
            video.write(frame)
    return path, frames, blackswan_root / "Annotations" / "480p" / "blackswan" / "00000.png"


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> tuple[Path, object]:
    """A 10-frame 120x216 clip with 2 objects, one starting late, in the DAVIS 2017 layout."""
    root = tmp_path_factory.mktemp("synth")
    config = SyntheticConfig(size=(120, 216), num_frames=10, num_objects=2, late_objects=1, seed=3)
    clip = write_clip(root, "late", config)
    return root, clip


@pytest.fixture(scope="module")
def small_mp4(tmp_path_factory) -> tuple[Path, Path]:
    """A 3-frame 96x160 mp4 and its first mask, for the error cases."""
    folder = tmp_path_factory.mktemp("small")
    clip = generate_clip(SyntheticConfig(size=(96, 160), num_frames=3, num_objects=1, seed=1))
    path = folder / "clip.mp4"
    with VideoWriter(path) as video:
        for frame, _ in clip:
            video.write(frame)
    mask = folder / "first.png"
    write_mask(mask, clip.render(0, with_frame=False)[1])
    return path, mask


def decoded_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.mark.slow
def test_blackswan_mp4_masks_overlay_stats_and_gate_decisions(blackswan_mp4, weights, tmp_path):
    video, frames, first_mask = blackswan_mp4
    out, overlay = tmp_path / "out", tmp_path / "overlay.mp4"
    proc = run_segment(video, "--mask", first_mask, "--out", out, "--overlay", overlay, "--weights", weights["gate"],
                       "--variant", "reuse", "--tau", "0.5", "--progress", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr

    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == ["00000.png", "00001.png", "00002.png", "00003.png"]
    gt = read_mask(first_mask)
    for p in pngs:
        with Image.open(p) as image:
            assert image.mode == "P" and image.size == (854, 480)
            assert np.array_equal(np.array(image.getpalette()[:12]).reshape(4, 3), DAVIS_PALETTE[:4])
    assert np.array_equal(read_mask(pngs[0]), gt)  # the first frame's output is the given mask

    stats = json.loads((out / "stats.json").read_text())
    assert stats["frames"] == 4
    assert stats["resolution"] == [480, 854] and stats["process_resolution"] == [480, 854]
    assert stats["init_s"] > 0 and stats["process_s"] >= stats["init_s"] and stats["wall_s"] >= stats["process_s"]
    assert stats["fps"] == pytest.approx(4 / stats["process_s"], rel=1e-3)
    assert stats["settings"]["variant"] == "reuse" and stats["settings"]["tau"] == 0.5
    assert stats["settings"]["threads"] == 1 and stats["settings"]["device"] == "cpu"
    assert stats["settings"]["backbone_runtime"] == "onnxruntime"  # the default on a CPU with ONNX Runtime installed
    # where the bfloat16 mode would run at its speed, a run that shows its progress says so once, after the result
    # (a run that does not, as in a log, stays silent: the frame-folder test)
    assert proc.stderr.count("--backbone-runtime openvino-bf16") == int(bf16_mode_available())
    assert stats["weights"]["file"] == str(weights["gate"])
    assert stats["weights"]["sha256"] == hashlib.sha256(weights["gate"].read_bytes()).hexdigest()
    assert stats["weights"]["meta"] == {"name": "random-gate"} and stats["weights"]["has_gate"]
    assert {"reusevos", "torch", "python", "av", "numpy", "onnxruntime", "openvino"} <= set(stats["versions"])
    obj = stats["objects"]["1"]
    assert obj["start_frame"] == 0 and obj["tracked_frames"] == 3 and len(obj["gate_probability"]) == 3
    # Decisions follow tau: reuse exactly where P_gate >= 0.5, and the rate is the fraction of reused frames.
    assert obj["routes"] == ["reused" if p >= 0.5 else "computed" for p in obj["gate_probability"]]
    assert obj["reuse_rate"] == pytest.approx(obj["reused_frames"] / 3, abs=1e-4) and obj["copied_frames"] == 0
    assert stats["reuse_rate"] == pytest.approx(obj["reuse_rate"], abs=1e-4)

    shown = decoded_frames(overlay)
    assert len(shown) == 4 and shown[0].shape == (480, 854, 3)
    expected = render_overlay(frames[0], gt).astype(float)
    # H.264 at crf 18 of an mp4-decoded frame: close to the exact overlay, far from the plain frame inside the swan.
    assert np.abs(shown[0] - expected).mean() < 4
    inside = gt > 0
    assert np.abs(shown[0][inside] - frames[0][inside].astype(float)).mean() > 20

    summary = proc.stdout.strip().splitlines()
    assert len(summary) == 1 and summary[0].startswith("4 frames 854x480") and "FPS" in summary[0]
    assert "frame/s" in proc.stderr and "reuse" in proc.stderr  # the progress bar (forced by --progress)


@pytest.mark.slow
def test_frame_folder_late_object_mask_folder_and_max_size(synthetic_root, weights, tmp_path):
    root, clip = synthetic_root
    frames = root / "JPEGImages" / "480p" / "late"
    masks = root / "Annotations" / "480p" / "late"  # ground truth of every frame: only start masks are used
    out = tmp_path / "out"
    proc = run_segment(frames, "--mask", masks, "--out", out, "--weights", weights["base"], "--max-size", 108,
                       "--no-warmup", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no progress bar when stderr is not a terminal

    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 10 and all(Image.open(p).size == (216, 120) for p in pngs)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["resolution"] == [120, 216] and stats["process_resolution"] == [60, 108]
    assert stats["settings"]["variant"] == "flow" and stats["settings"]["max_size"] == 108  # needs no reuse gate
    starts = {obj.object_id: obj.start_frame for obj in clip.objects}
    assert {int(k): v["start_frame"] for k, v in stats["objects"].items()} == starts
    for obj_id, start in starts.items():
        log = stats["objects"][str(obj_id)]
        assert log["tracked_frames"] == 9 - start and set(log["routes"]) <= {"computed", "moved"}
        assert log["gate_probability"] is None or len(log["gate_probability"]) == 9 - start
        # At its start frame an object's given mask is written exactly, at the input size.
        given = read_mask(masks / f"{start:05d}.png")
        written = read_mask(out / f"{start:05d}.png")
        assert np.all(written[given == obj_id] == obj_id)
    late = max(starts, key=starts.get)
    for t in range(starts[late]):  # before the late object starts it cannot be in any mask
        assert late not in read_mask(out / f"{t:05d}.png")
    assert np.array_equal(read_mask(pngs[0]), read_mask(masks / "00000.png"))


# -- bad input ------------------------------------------------------------------------------------------------------
def _bad_inputs(base: Path, video: Path, mask: Path, weights: dict[str, Path]) -> dict[str, tuple[list, str]]:
    """name -> (arguments after ``segment``, a phrase the error must contain)."""
    (base / "empty").mkdir()
    (base / "text.mp4").write_text("this is not a video\n")
    gt = read_mask(mask)
    write_mask(base / "small.png", gt[:48, :80])
    rgb = np.zeros((*gt.shape, 3), np.uint8)
    rgb[gt > 0] = (10, 200, 30)  # not a DAVIS colour
    Image.fromarray(rgb).save(base / "rgb.png")
    write_mask(base / "void.png", np.full(gt.shape, 255, np.uint8))  # only DAVIS "void": no object
    Image.fromarray(np.zeros(gt.shape, np.uint8)).save(base / "zeros.png")  # label 0 only
    (base / "masks").mkdir()
    write_mask(base / "masks" / "00000.png", gt)
    write_mask(base / "masks" / "00007.png", gt)  # the video has frames 00000..00002
    (base / "a_file").write_text("keep me\n")
    (base / "corrupt.pt").write_bytes(weights["gate"].read_bytes()[:4000])
    # --overwrite: the guard folder is an earlier run that a failed run must leave as it was
    ok = ["--mask", mask, "--out", base / "guard", "--weights", weights["gate"], "--overwrite", *FAST]
    return {
        "missing input": ([base / "absent.mp4", *ok], "input not found"),
        "empty folder": ([base / "empty", *ok], "is empty"),
        "text file named .mp4": ([base / "text.mp4", *ok], "cannot read video"),
        "mask of the wrong size": ([video, *ok[2:], "--mask", base / "small.png"], "80x48 but the frames are 160x96"),
        "RGB mask not in the palette": ([video, *ok[2:], "--mask", base / "rgb.png"], "not in the DAVIS palette"),
        "mask with no object": ([video, *ok[2:], "--mask", base / "void.png"], "marks no object"),
        "object id 0 only": ([video, *ok[2:], "--mask", base / "zeros.png"], "marks no object"),
        "mask for a frame that does not exist": ([video, *ok[2:], "--mask", base / "masks"],
                                                 "which the input does not have"),
        "output folder is a file": ([video, *ok[:2], *ok[4:], "--out", base / "a_file"], "is a file"),
        "output under a file": ([video, *ok[:2], *ok[4:], "--out", base / "a_file" / "out"], "is a file"),
        "unwritable output folder": ([video, *ok[:2], *ok[4:], "--out", "/proc/reusevos-test/out"],
                                     "cannot write --out"),
        "corrupt weights": ([video, *ok[:4], "--weights", base / "corrupt.pt", "--overwrite", *FAST], "damaged"),
        "tau 1.5": ([video, *ok, "--tau", "1.5"], "tau must lie in [0, 1]"),
        "device cuda without CUDA": ([video, *ok, "--device", "cuda"], "no usable CUDA"),
        "reuse variant on weights without a gate": ([video, *ok, "--weights", weights["base"], "--variant", "reuse"],
                                                    "no trained reuse gate"),
        "fusion without tau2": ([video, *ok, "--variant", "fusion"], "tau < tau2"),
        "object too small at --max-size": ([video, *ok, "--max-size", "12"], "raise --max-size"),
        "overlay without a video suffix": ([video, *ok, "--overlay", base / "overlay.gif"], ".mp4"),
    }


CASES = ["missing input", "empty folder", "text file named .mp4", "mask of the wrong size",
         "RGB mask not in the palette", "mask with no object", "object id 0 only",
         "mask for a frame that does not exist", "output folder is a file", "output under a file",
         "unwritable output folder", "corrupt weights", "tau 1.5", "device cuda without CUDA",
         "reuse variant on weights without a gate", "fusion without tau2", "object too small at --max-size",
         "overlay without a video suffix"]
# through `python -m reusevos` (the entry point itself, and native decoders that write to stderr); the rest in-process
IN_A_NEW_PROCESS = {"missing input", "text file named .mp4", "corrupt weights"}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_bad_input_gives_one_line_and_damages_nothing(case, small_mp4, weights, tmp_path):
    if case == "device cuda without CUDA" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    video, mask = small_mp4
    args, phrase = _bad_inputs(tmp_path, video, mask, weights)[case]
    guard = tmp_path / "guard"  # an earlier run's results, which a failed run must leave alone
    guard.mkdir()
    write_mask(guard / "00000.png", np.eye(4, dtype=np.uint8))
    (guard / "stats.json").write_text('{"earlier": true}\n')
    before = snapshot(tmp_path)
    proc = run_segment(*args) if case in IN_A_NEW_PROCESS else cli("segment", *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("reusevos segment: error: ") and phrase in lines[0], lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert snapshot(tmp_path) == before  # nothing written, nothing changed
    assert not Path("/proc/reusevos-test").exists()


@pytest.mark.slow
def test_unreadable_frame_is_found_before_anything_is_written(weights, tmp_path):
    """A frame that is no image halfway: one error line before the model loads; the old results are untouched.
    (A frame that fails only when decoded: tests/test_faults.py.)"""
    clip = generate_clip(SyntheticConfig(size=(96, 160), num_frames=4, num_objects=1, seed=2))
    frames = tmp_path / "frames"
    frames.mkdir()
    for t, (frame, _) in enumerate(clip):
        Image.fromarray(frame).save(frames / f"{t:05d}.jpg")
    (frames / "00002.jpg").write_bytes(b"not a jpeg")
    write_mask(tmp_path / "first.png", clip.render(0, with_frame=False)[1])
    out, overlay = tmp_path / "out", tmp_path / "old.mp4"
    out.mkdir()
    (out / "stats.json").write_text('{"earlier": true}\n')
    overlay.write_bytes(b"an earlier video")
    proc = run_segment(frames, "--mask", tmp_path / "first.png", "--out", out, "--overlay", overlay,
                       "--weights", weights["base"], "--no-warmup", "--overwrite", *FAST)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot read frame" in lines[0] and "00002.jpg" in lines[0]
    assert (out / "stats.json").read_text() == '{"earlier": true}\n'
    assert overlay.read_bytes() == b"an earlier video"
    assert sorted(p.name for p in out.iterdir()) == ["stats.json"]  # no mask, no temporary file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.png", "frames", "old.mp4", "out"]


def test_help_explains_every_flag_with_its_default_and_version():
    from reusevos.cli import _build_parser

    parser = _build_parser()
    commands = ["train", "train-gate", "eval", "synth", "segment", "segment-davis", "merge", "weights fetch",
                "weights path", "app"]
    for command in commands:
        sub = parser
        for word in command.split():
            sub = next(a for a in sub._actions if isinstance(a, argparse._SubParsersAction)).choices[word]
        text = " ".join(sub.format_help().split())  # undo the line wrapping
        for action in sub._actions:
            if action.dest == "help":
                continue
            assert action.help, f"{command} {action.option_strings or action.dest} has no help"
            shown = action.default is not None and action.nargs != 0
            if shown and action.option_strings:
                assert f"default: {action.default}" in text or "default" in action.help, (command, action.dest)
    seg = run_segment("--help", timeout=60)
    assert seg.returncode == 0 and "--max-size PIXELS" in seg.stdout and "(default: 854)" in seg.stdout
    version = subprocess.run([sys.executable, "-m", "reusevos", "--version"], capture_output=True, text=True)
    from reusevos import __version__

    assert version.returncode == 0 and version.stdout.strip() == f"reusevos {__version__}"


def test_segment_davis_resumes_and_refuses_other_settings(synthetic_root, weights, tmp_path):
    from reusevos.api import load_model
    from reusevos.io.davis import DavisDataset
    from reusevos.segment import segment_davis

    root, _ = synthetic_root
    network = load_model(weights["gate"])
    dataset = DavisDataset(root, split="train")
    options = SessionConfig(variant="reuse", tau=0.5)
    first = segment_davis(network, dataset, tmp_path, warmup=False, options=options)
    assert first["settings"] == {"variant": "reuse", "tau": 0.5, "tau2": None, "reuse_window": 0,
                                    "compute_window": 2, "flow_gate": None, "flow_max_gap": None, "lookahead": False,
                                    "memory_clock": "computed", "reuse_max_gap": 0, "flip": False,
                                    "memory_band": None, "search_margin": 2}
    assert first["total"]["frames"] == 10 and len(list((tmp_path / "late").glob("*.png"))) == 10
    logs = []
    again = segment_davis(network, dataset, tmp_path, warmup=False, options=SessionConfig("reuse", 0.5), log=logs.append)
    assert logs == ["late: already complete, skipped"] and again["sequences"] == first["sequences"]

    with pytest.raises(ReusevosError, match="choose another output folder"):
        segment_davis(network, dataset, tmp_path, warmup=False, options=SessionConfig("reuse", 0.7))
    # a folder written before flow_max_gap existed resumes for the variants it does not touch, not for flow
    stats = json.loads((tmp_path / "stats.json").read_text())
    del stats["settings"]["flow_max_gap"]
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    assert segment_davis(network, dataset, tmp_path, warmup=False, options=options)["sequences"] == first["sequences"]
    stats["settings"].update(variant="flow", tau=0.92)
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(ReusevosError, match="choose another output folder"):
        segment_davis(network, dataset, tmp_path, warmup=False, options=SessionConfig("flow", 0.92))


def test_a_results_folder_from_before_the_search_margin_ran_without_one():
    from dataclasses import asdict

    from reusevos.segment import _same_settings

    now = asdict(SessionConfig())
    held = {k: v for k, v in now.items() if k not in ("search_margin", "memory_band")}  # written before both existed
    assert not _same_settings(held, now)  # it searched the whole frame: not today's default
    assert _same_settings(held, {**now, "search_margin": 0})


def test_session_flags_map_onto_the_session_config():
    import reusevos
    from reusevos.cli import _build_parser
    from reusevos.cli.common import session_options as _session_options

    parser = _build_parser()

    def options(*flags):
        return _session_options(parser.parse_args(["segment", "clip.mp4", "--mask", "m.png", "--out", "o", *flags]))

    assert options() is None  # the session's own choice
    ahead = {"lookahead": True, "memory_clock": "frames"}  # the whole-video default's
    assert options("--compute-window", "0") == SessionConfig("flow", 0.9, compute_window=0, **ahead)
    assert options("--no-lookahead") == SessionConfig("flow", 0.92) == SessionConfig()  # online, the Session default
    assert options("--lookahead", "--tau", "0.8") == SessionConfig("flow", 0.8, **ahead)
    assert options("--memory-clock", "computed") == SessionConfig("flow", 0.9, lookahead=True)
    assert options("--variant", "reuse") == SessionConfig("reuse", 0.7, compute_window=2)  # the paper's tau
    assert options("--variant", "full", "--compute-window", "3") == SessionConfig("full", 1.0, compute_window=3)
    assert options("--variant", "reuse", "--tau", "0.5", "--reuse-window", "1") == SessionConfig(
        "reuse", 0.5, reuse_window=1)
    assert options("--flow-gate", "g.json") == SessionConfig("flow", 0.9, flow_gate="g.json", **ahead)
    assert options("--variant", "reuse", "--reuse-window", "2", "--reuse-max-gap", "2") == SessionConfig(
        "reuse", 0.7, reuse_window=2, reuse_max_gap=2)
    with pytest.raises(ReusevosError, match="its own is flow_max_gap"):
        options("--reuse-max-gap", "2")  # the default variant is flow
    assert reusevos.offline_config() == SessionConfig("flow", 0.9, **ahead)  # the commands' default
    with pytest.raises(ReusevosError, match="lookahead applies to the flow variant only"):
        options("--variant", "copy", "--lookahead")
    with pytest.raises(SystemExit):  # one or the other
        options("--lookahead", "--no-lookahead")
    assert SessionConfig() == SessionConfig("flow", 0.92, compute_window=2)  # the default, ours
    with pytest.raises(ReusevosError, match="compute_window must be"):
        options("--compute-window", "-1")
