"""YouTube-VOS folders: `reusevos synth --layout youtube` writes one, `reusevos segment-davis` reads it (objects start
on their first annotation, later annotations are not given to the model) and writes the submission layout and zip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import FAST, cli, one_error, snapshot
from reusevos.io.masks import read_mask
from reusevos.synthetic import SyntheticConfig, generate_clip

pytestmark = pytest.mark.slow

# Seeds 3 and 4 at this size: clip 3's late object enters on frame 1 and is first annotated on frame 5, clip 4's
# enters on frame 6 and is first annotated on frame 10 (the first test checks this from the generator).
CONFIG = dict(size="120x216", frames=12, objects=2, late=1, seed=3, num=2)


def reusevos(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reusevos", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def clips() -> dict[str, list[np.ndarray]]:
    """The label maps of CONFIG's clips, made again from the generator: ``{video: [(H, W) uint8 per frame]}``."""
    h, w = (int(v) for v in CONFIG["size"].split("x"))
    return {f"synth{seed:05d}": list(generate_clip(SyntheticConfig(
        size=(h, w), num_frames=CONFIG["frames"], num_objects=CONFIG["objects"], late_objects=CONFIG["late"],
        seed=seed)).labels()) for seed in range(CONFIG["seed"], CONFIG["seed"] + CONFIG["num"])}


def first_annotations(labels: list[np.ndarray], every: int = 5) -> dict[int, int]:
    """Object id -> the first frame index, among every 5th, whose labels show it."""
    starts = {}
    for t in range(0, len(labels), every):
        for obj in np.unique(labels[t]).tolist():
            if obj and obj not in starts:
                starts[obj] = t
    return starts


@pytest.fixture(scope="module")
def youtube_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("youtube") / "valid"
    proc = reusevos("synth", root, "--layout", "youtube", *[f"--{k}={v}" for k, v in CONFIG.items()])
    assert proc.returncode == 0, proc.stderr
    return root


@pytest.fixture(scope="module")
def run(youtube_root, weights, tmp_path_factory) -> tuple[Path, Path]:
    """segment-davis over the folder, with the submission zip: (results folder, zip)."""
    folder = tmp_path_factory.mktemp("results")
    out, archive = folder / "out", folder / "submission.zip"
    proc = reusevos("segment-davis", youtube_root, "--out", out, "--zip", archive, "--weights", weights["base"],
                    "--no-warmup", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert "2 sequences, 24 frames" in proc.stdout and f"submission zip {archive}" in proc.stdout
    return out, archive


def test_synth_writes_every_fifth_annotation_and_late_objects(youtube_root):
    truth = clips()
    meta = json.loads((youtube_root / "meta.json").read_text())
    assert sorted(meta["videos"]) == sorted(truth)
    starts = {video: first_annotations(labels) for video, labels in truth.items()}
    assert starts == {"synth00003": {1: 0, 2: 5}, "synth00004": {1: 0, 2: 10}}
    for video, labels in truth.items():
        frames = sorted(p.name for p in (youtube_root / "JPEGImages" / video).iterdir())
        assert frames == [f"{t:05d}.jpg" for t in range(12)]
        annotated = sorted(p.name for p in (youtube_root / "Annotations" / video).iterdir())
        assert annotated == ["00000.png", "00005.png", "00010.png"]
        for t in (0, 5, 10):
            assert np.array_equal(read_mask(youtube_root / "Annotations" / video / f"{t:05d}.png"), labels[t])
        objects = meta["videos"][video]["objects"]
        for obj, first in starts[video].items():
            assert objects[str(obj)] == {"category": "synthetic", "frames": [f"{t:05d}" for t in (0, 5, 10) if t >= first
                                                                             and (labels[t] == obj).any()]}


def test_objects_start_on_their_first_annotation_only(youtube_root):
    from reusevos.io.datasets import open_dataset

    dataset = open_dataset(youtube_root)
    assert dataset.layout == "youtube" and dataset.sequences == ["synth00003", "synth00004"]
    for video, labels in clips().items():
        starts = dataset.start_masks(video)
        expected = first_annotations(labels)
        assert list(starts) == sorted({f"{t:05d}" for t in expected.values()})
        for name, start in starts.items():
            t = int(name)
            new = [obj for obj, first in expected.items() if first == t]
            assert np.array_equal(start, np.where(np.isin(labels[t], new), labels[t], 0))  # only the objects starting
    # The same folder reached from its parent with --split, and refused with another split's name.
    assert open_dataset(youtube_root.parent, "valid").sequences == ["synth00003", "synth00004"]


def test_segment_davis_on_youtube_equals_the_python_api_with_the_same_starts(run, youtube_root, weights):
    import reusevos

    out, _ = run
    stats = json.loads((out / "stats.json").read_text())
    assert stats["complete"] is True and stats["shard"] is None
    assert stats["dataset"]["layout"] == "youtube" and stats["dataset"]["sequences"] == ["synth00003", "synth00004"]
    model = reusevos.load_model(weights["base"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the command ran
    try:
        for video, labels in clips().items():
            expected = first_annotations(labels)
            objects = stats["sequences"][video]["objects"]
            assert {int(k): v["start_frame"] for k, v in objects.items()} == expected  # late objects start late
            starts = {t: np.where(np.isin(labels[t], [o for o, s in expected.items() if s == t]), labels[t], 0)
                      for t in set(expected.values())}
            session = reusevos.Session(model, reusevos.offline_config())  # the command's default
            written = sorted((out / "Annotations" / video).iterdir())
            assert [p.name for p in written] == [f"{t:05d}.png" for t in range(12)]
            frames = reusevos.open_frames(youtube_root / "JPEGImages" / video)
            results = [r for t, (_, frame) in enumerate(frames) for r in session.push(frame, starts.get(t))]
            for t, result in enumerate(results + session.finish()):
                with Image.open(written[t]) as image:
                    assert image.mode == "P"  # a palette PNG, index = the annotations' object id
                assert np.array_equal(read_mask(written[t]), result.labels), (video, t)
            # Frame 10 is annotated for every object: the output there is the model's, not the ground truth.
            assert not np.array_equal(read_mask(written[10]), labels[10])
    finally:
        torch.set_num_threads(threads)


def test_the_zip_has_the_official_layout(run, youtube_root):
    out, archive = run
    videos = ["synth00003", "synth00004"]
    expected = ["Annotations/"] + [name for video in videos for name in
                                   [f"Annotations/{video}/"] + [f"Annotations/{video}/{t:05d}.png" for t in range(12)]]
    with zipfile.ZipFile(archive) as zipped:
        assert zipped.namelist() == expected
        assert zipped.testzip() is None
        for name in expected:
            if name.endswith(".png"):
                assert zipped.read(name) == (out / name).read_bytes()


def test_bad_input_for_the_new_flags_is_one_line_and_loses_nothing(run, youtube_root, weights, tmp_path, monkeypatch):
    from reusevos.synthetic import write_clip

    out, archive = run
    before = snapshot(out.parent)
    common = ["--weights", weights["base"], "--no-warmup"]
    segment = ["segment-davis", youtube_root, "--out", out, *common]
    assert "--zip" in (line := one_error(cli(*segment, "--zip", out.parent / "s.tar"))) and "ending in .zip" in line
    (tmp_path / "folder.zip").mkdir()
    assert "is a folder" in one_error(cli(*segment, "--zip", tmp_path / "folder.zip"))
    line = one_error(cli(*segment, "--zip", archive, "--shard", "0/2"))
    assert "shard 0 of 2 (from --shard)" in line and "reusevos merge RESULTS_DIR --zip FILE" in line
    assert "0 <= I < N" in one_error(cli(*segment, "--shard", "2/2"))
    assert "davis or youtube" in one_error(cli(*segment, "--layout", "kinetics"))
    assert "one YouTube-VOS split (valid)" in one_error(cli(*segment, "--split", "train"))
    with monkeypatch.context() as env:
        env.setenv("RANK", "1")
        env.setenv("WORLD_SIZE", "2")
        assert "shard 1 of 2 (from torchrun)" in one_error(cli(*segment, "--zip", archive))
        env.setenv("RANK", "2")
        assert "RANK=2 WORLD_SIZE=2" in one_error(cli(*segment))
    with monkeypatch.context() as env:
        env.setenv("SLURM_ARRAY_TASK_ID", "6")
        env.setenv("SLURM_ARRAY_TASK_MIN", "5")
        env.setenv("SLURM_ARRAY_TASK_COUNT", "2")
        assert "shard 1 of 2 (from slurm)" in one_error(cli(*segment, "--zip", archive))
    assert snapshot(out.parent) == before
    davis = tmp_path / "davis"
    write_clip(davis, "one", SyntheticConfig(size=(64, 96), num_frames=3, num_objects=1), split="val")
    one_error(cli("segment-davis", davis, "--out", tmp_path / "r", "--zip", tmp_path / "r.zip", *common), "drop --zip")
    one_error(cli("segment-davis", davis, "--out", tmp_path / "r", "--layout", "youtube", *common), "is a DAVIS root")
    assert "davis or youtube" in one_error(cli("synth", tmp_path / "s", "--layout", "kinetics"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["davis", "folder.zip"]  # nothing written by the refusals
    # And as a separate process: one line on stderr, exit code 2.
    one_error(reusevos(*segment, "--zip", archive, "--shard", "1/2"), "shard 1 of 2 (from --shard)")
