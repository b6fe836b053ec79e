"""Sharded dataset runs: the shard from --shard, torchrun or a Slurm array; two real processes and `reusevos merge`
against one unsharded run; every way merging can go wrong refused with nothing lost."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import FAST, cli, one_error, snapshot
from reusevos.errors import ReusevosError
from reusevos.shards import Shard, merge_shards, shard_from_environment
from reusevos.synthetic import SyntheticConfig, write_clip

pytestmark = pytest.mark.slow

VIDEOS = ["clip-a", "clip-b"]
TIMINGS = {"wall_s", "process_s", "init_s", "io_s", "warmup_s", "fps", "fps_wall", "stages_s"}


def test_the_shard_comes_from_the_launcher():
    assert shard_from_environment({}) == Shard(0, 1, "")
    assert shard_from_environment({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == Shard(1, 2, "torchrun")
    assert shard_from_environment({"RANK": "0", "WORLD_SIZE": "1"}) == Shard()  # torchrun with one process
    slurm = {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "5", "SLURM_ARRAY_TASK_COUNT": "3"}
    assert shard_from_environment(slurm) == Shard(2, 3, "slurm")  # --array=5-7
    assert shard_from_environment({**slurm, "RANK": "0", "WORLD_SIZE": "1"}) == Shard(2, 3, "slurm")
    stepped = {"SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_STEP": "4",
               "SLURM_ARRAY_TASK_COUNT": "3"}
    assert shard_from_environment(stepped) == Shard(2, 3, "slurm")  # --array=1-9:4
    assert shard_from_environment({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "1"}) == Shard()
    for bad, phrase in (({**stepped, "SLURM_ARRAY_TASK_ID": "6"}, "evenly spaced"),
                        ({**slurm, "SLURM_ARRAY_TASK_ID": "4"}, "evenly spaced"),
                        ({**slurm, "SLURM_ARRAY_TASK_ID": "8"}, "evenly spaced"),
                        ({"SLURM_ARRAY_TASK_ID": "1"}, "SLURM_ARRAY_TASK_COUNT=None"),
                        ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x' (torchrun)"),
                        ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 WORLD_SIZE=2"),
                        ({**slurm, "RANK": "1", "WORLD_SIZE": "2"}, "both torchrun")):
        with pytest.raises(ReusevosError, match="give --shard I/N") as caught:
            shard_from_environment(bad)
        assert phrase in str(caught.value)
    assert Shard(1, 3).take("abcdefg") == ["b", "e"] and Shard(0, 3).take("abcdefg") == ["a", "d", "g"]
    assert Shard(1, 3).stats_name == "stats-1of3.json" and Shard().stats_name == "stats.json"


def reusevos(*args, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "reusevos", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env or {})})


def finished(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return out


@pytest.fixture(scope="module")
def runs(weights, tmp_path_factory) -> dict[str, Path]:
    """Two 8-frame videos (one object starting late) segmented by two torchrun-style shards at once and merged with
    a zip, and by one unsharded run (whose launcher environment its --shard 0/1 overrides)."""
    folder = tmp_path_factory.mktemp("sharding")
    root = folder / "valid"
    for seed, video in enumerate(VIDEOS):
        write_clip(root, video, SyntheticConfig(size=(120, 216), num_frames=8, num_objects=2, late_objects=seed,
                                                seed=seed), layout="youtube")
    common = ["--weights", weights["base"], "--no-warmup", *FAST]
    shards = [reusevos("segment-davis", root, "--out", folder / "sharded", *common,
                       env={"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank)}) for rank in (0, 1)]
    printed = [finished(proc) for proc in shards]
    last = printed[1].splitlines()[-1]
    assert last.startswith("shard 1 of 2 (from torchrun): 1 sequences, 8 frames")
    assert last.endswith(f"when every shard is done: reusevos merge {folder / 'sharded'}")
    finished(reusevos("segment-davis", root, "--out", folder / "whole", "--zip", folder / "whole.zip", "--shard", "0/1",
                      *common, env={"RANK": "1", "WORLD_SIZE": "2"}))
    merged = finished(reusevos("merge", folder / "sharded", "--zip", folder / "sharded.zip"))
    assert merged.startswith("2 shards: 2 sequences, 16 frames") and "; complete;" in merged
    return {"root": root, "sharded": folder / "sharded", "whole": folder / "whole", "folder": folder}


def untimed(value):
    """A stats.json record without its timings (the frame kinds keep their counts)."""
    if isinstance(value, dict):
        return {k: ({kind: n for kind, (n, _) in v.items()} if k == "frame_kinds" else untimed(v))
                for k, v in value.items() if k not in TIMINGS}
    return value


def test_two_shards_merged_equal_one_unsharded_run(runs):
    sharded, whole = runs["sharded"], runs["whole"]
    assert sorted(p.name for p in sharded.glob("stats*.json")) == ["stats-0of2.json", "stats-1of2.json", "stats.json"]
    assert sorted(p.name for p in whole.glob("stats*.json")) == ["stats.json"]  # --shard 0/1 won over RANK/WORLD_SIZE
    for rank, video in enumerate(VIDEOS):
        shard = json.loads((sharded / f"stats-{rank}of2.json").read_text())
        assert shard["shard"] == {"index": rank, "count": 2, "source": "torchrun"} and shard["complete"] is True
        assert list(shard["sequences"]) == [video] and shard["dataset"]["sequences"] == VIDEOS
    # The masks: the same files, byte for byte.
    masks = snapshot(sharded / "Annotations")
    assert len(masks) == 16 and masks == snapshot(whole / "Annotations")
    merged = json.loads((sharded / "stats.json").read_text())
    reference = json.loads((whole / "stats.json").read_text())
    assert untimed({k: v for k, v in merged.items() if k != "merged"}) == untimed(reference)
    assert merged["complete"] is True and merged["shard"] is None and list(merged["sequences"]) == VIDEOS
    assert [(m["file"], m["index"], m["source"], m["complete"], m["sequences"]) for m in merged["merged"]] == [
        ("stats-0of2.json", 0, "torchrun", True, 1), ("stats-1of2.json", 1, "torchrun", True, 1)]
    entries = list(merged["sequences"].values())
    seconds = math.fsum(e["process_s"] for e in entries)
    assert merged["total"] == {"sequences": 2, "frames": 16, "process_s": round(seconds, 3),
                               "fps": round(16 / seconds, 4), "init_s": round(math.fsum(e["init_s"] for e in entries), 3)}
    with zipfile.ZipFile(runs["folder"] / "sharded.zip") as one, zipfile.ZipFile(runs["folder"] / "whole.zip") as other:
        assert one.namelist() == other.namelist() and len(one.namelist()) == 1 + 2 + 16
        assert all(one.read(name) == other.read(name) for name in one.namelist())


def _shards(runs, folder: Path, *names: str) -> Path:
    """A folder holding copies of the real shards' statistics (as ``names``: source -> target)."""
    folder.mkdir()
    for pair in names:
        source, _, target = pair.partition(">")
        shutil.copy(runs["sharded"] / source, folder / (target or source))
    return folder


def _edit(path: Path, change) -> None:
    report = json.loads(path.read_text())
    change(report)
    path.write_text(json.dumps(report))


def test_merge_refuses_missing_overlapping_and_mixed_shards(runs, tmp_path):
    cases = []
    missing = _shards(runs, tmp_path / "missing", "stats-0of2.json")
    cases.append((missing, "shard(s) 1 of 2 missing in"))
    mixed = _shards(runs, tmp_path / "mixed", "stats-0of2.json", "stats-1of2.json", "stats-0of2.json>stats-0of3.json")
    cases.append((mixed, "split 2 and 3 ways"))
    overlap = _shards(runs, tmp_path / "overlap", "stats-0of2.json", "stats-1of2.json")
    _edit(overlap / "stats-1of2.json", lambda r: r["sequences"].update(
        json.loads((overlap / "stats-0of2.json").read_text())["sequences"]))
    cases.append((overlap, "sequence clip-a is in both stats-0of2.json and stats-1of2.json"))
    other = _shards(runs, tmp_path / "other", "stats-0of2.json", "stats-1of2.json")
    _edit(other / "stats-1of2.json", lambda r: r["settings"].update(tau=0.5))
    cases.append((other, "stats-1of2.json and stats-0of2.json differ in 'settings'"))
    unsharded = _shards(runs, tmp_path / "unsharded", "stats-0of2.json", "stats-1of2.json")
    shutil.copy(runs["whole"] / "stats.json", unsharded / "stats.json")
    cases.append((unsharded, "statistics of an unsharded run"))
    cases.append((_shards(runs, tmp_path / "none", "stats-0of2.json>stats.json"), "holds no shard statistics"))
    for folder, phrase in cases:
        before = snapshot(folder)
        with pytest.raises(ReusevosError) as caught:
            merge_shards(folder)
        assert phrase in str(caught.value), (folder.name, str(caught.value))
        assert one_error(cli("merge", folder)) == f"reusevos merge: error: {caught.value}"
        assert snapshot(folder) == before  # nothing written, nothing lost


def test_an_incomplete_merge_says_so_and_makes_no_zip(runs, tmp_path, capsys):
    from reusevos.cli import main

    stopped = _shards(runs, tmp_path / "stopped", "stats-0of2.json", "stats-1of2.json")
    _edit(stopped / "stats-1of2.json", lambda r: r.update(complete=False))
    assert merge_shards(stopped)["complete"] is False
    short = _shards(runs, tmp_path / "short", "stats-0of2.json", "stats-1of2.json")
    _edit(short / "stats-1of2.json", lambda r: r["sequences"].clear())  # clip-b never finished
    merged = merge_shards(short)
    assert merged["complete"] is False and list(merged["sequences"]) == ["clip-a"] and merged["total"]["frames"] == 8
    before = snapshot(stopped)
    capsys.readouterr()
    assert main(["merge", str(stopped), "--zip", str(tmp_path / "s.zip")]) == 2
    assert "the merged run is not complete (2 of 2 sequences, shards complete: 1 of 2)" in capsys.readouterr().err
    assert snapshot(stopped) == before and not (tmp_path / "s.zip").exists()
    # Merging again after more shards finished replaces its own stats.json.
    assert main(["merge", str(short)]) == 0
    _edit(short / "stats-1of2.json", lambda r: r["sequences"].update(
        json.loads((runs["sharded"] / "stats-1of2.json").read_text())["sequences"]))
    assert main(["merge", str(short)]) == 0
    assert json.loads((short / "stats.json").read_text())["complete"] is True
    # One line and exit code 2 from a separate process too.
    one_error(subprocess.run([sys.executable, "-m", "reusevos", "merge", str(tmp_path / "missing-folder")],
                             capture_output=True, text=True, timeout=120), "is not a folder")
