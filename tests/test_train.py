"""Training end to end on a tiny synthetic DAVIS root: resume after an interruption, torchrun with 2 processes."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from reusevos.synthetic import SyntheticConfig, write_clip

TRAIN_ARGS = ["--split", "train", "--synthetic", "1", "--synthetic-frames", "4", "--batch", "2", "--crop", "64",
              "--checkpoint-every", "1", "--threads", "1"]


def _train(root, out, iterations, cache, extra=(), **kw):
    cmd = [sys.executable, "-m", "reusevos", "train", "--davis", str(root), "--out", str(out), "--cache", str(cache),
           "--iterations", str(iterations), *TRAIN_ARGS, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def test_a_longer_run_continues_from_the_last_checkpoint(tiny_davis, tmp_path):
    cache = tmp_path / "cache"
    first = _train(tiny_davis, tmp_path / "b", 2, cache, ["--snapshot-every", "2"])
    assert first.returncode == 0, first.stderr
    second = _train(tiny_davis, tmp_path / "b", 4, cache, ["--snapshot-every", "2"])
    assert second.returncode == 0, second.stderr
    assert "resumed from" in second.stdout and "at iteration 2" in second.stdout
    meta = torch.load(tmp_path / "b" / "refiner.pt", weights_only=True)["meta"]
    assert meta["training"]["iterations"] == 4 and meta["data"]["davis_split"] == "train"
    # the kept snapshots: loadable weights at iterations 2 and 4, the last equal to the final weights
    assert sorted(p.name for p in (tmp_path / "b" / "snapshots").iterdir()) == ["refiner-000002.pt",
                                                                              "refiner-000004.pt"]
    last = torch.load(tmp_path / "b" / "snapshots" / "refiner-000004.pt", weights_only=True)
    assert last["meta"]["snapshot_iteration"] == 4
    assert all(torch.equal(v, _weights(tmp_path / "b" / "refiner.pt")[k]) for k, v in last["state_dict"].items())
    runs = [json.loads(line) for line in (tmp_path / "b" / "runs.jsonl").read_text().splitlines()]
    assert len(runs) == 2 and all(r["split"] == "train" and r["commit"] for r in runs)


def test_interrupted_training_resumes_to_the_same_weights(tiny_davis, tmp_path):
    cache, iterations = tmp_path / "cache", 30
    straight = _train(tiny_davis, tmp_path / "straight", iterations, cache)
    assert straight.returncode == 0, straight.stderr

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "reusevos", "train", "--davis", str(tiny_davis), "--out", str(out), "--cache",
           str(cache), "--iterations", str(iterations), *TRAIN_ARGS]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / "last.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert (out / "last.pt").exists(), proc.communicate()[1]
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "run the same command to resume" in stdout
    stopped_at = torch.load(out / "last.pt", weights_only=False)["iteration"]
    assert 1 <= stopped_at < iterations
    done = _train(tiny_davis, out, iterations, cache)
    assert done.returncode == 0, done.stderr
    assert f"at iteration {stopped_at}" in done.stdout
    a, b = _weights(tmp_path / "straight" / "refiner.pt"), _weights(out / "refiner.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)  # same data order, same optimiser state


def test_validation_split_is_refused(tiny_davis, tmp_path):
    result = subprocess.run([sys.executable, "-m", "reusevos", "train", "--davis", str(tiny_davis), "--out",
                             str(tmp_path / "x"), "--split", "val"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "refusing to train on the split 'val'" in result.stderr and "Traceback" not in result.stderr


def test_torchrun_with_two_processes(tiny_davis, tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*torchrun, "-m", "reusevos", "train", "--davis", str(tiny_davis), "--out",
                             str(tmp_path / "ddp"), "--cache", str(tmp_path / "cache"), "--iterations", "3",
                             *TRAIN_ARGS], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    meta = torch.load(tmp_path / "ddp" / "refiner.pt", weights_only=True)["meta"]
    assert meta["training"]["processes"] == 2 and meta["training"]["iterations"] == 3


@pytest.fixture(scope="module")
def base_run(tiny_davis, tmp_path_factory):
    """A tiny trained base model and its cache, shared by the gate-training tests: (refiner.pt, cache)."""
    root = tmp_path_factory.mktemp("base_run")
    assert _train(tiny_davis, root / "base", 2, root / "cache").returncode == 0
    return root / "base" / "refiner.pt", root / "cache"


def test_gate_training_from_a_base_model(tiny_davis, base_run, tmp_path):
    import numpy as np

    from reusevos.config import SessionConfig
    from reusevos.model.network import load_model
    from reusevos.session import Session
    from reusevos.synthetic import generate_clip

    refiner, cache = base_run
    cmd = [sys.executable, "-m", "reusevos", "train-gate", "--base", str(refiner),
           "--davis", str(tiny_davis), "--out", str(tmp_path / "gate"), "--cache", str(cache), "--iterations", "3",
           "--snippet", "3", *TRAIN_ARGS]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "gate initialised" in result.stdout
    again = subprocess.run([*cmd[:cmd.index("--iterations") + 1], "5", *cmd[cmd.index("--iterations") + 2:]],
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "at iteration 3" in again.stdout, again.stderr
    base, dynamic = load_model(refiner), load_model(tmp_path / "gate" / "dynamic.pt")
    assert dynamic.has_gate and not base.has_gate
    meta = torch.load(tmp_path / "gate" / "dynamic.pt", weights_only=True)["meta"]
    assert meta["gate_training"]["iterations"] == 5 and meta["gate_config"]["m1"] == 1.0
    clip = list(generate_clip(SyntheticConfig(size=(64, 96), num_frames=4, num_objects=1, seed=5)))
    runs = []
    for network, options in ((base, None), (dynamic, SessionConfig("reuse", 1.0))):
        session = Session(network, options)
        runs.append([session.step(f, m if i == 0 else None).labels for i, (f, m) in enumerate(clip)])
    assert all(np.array_equal(a, b) for a, b in zip(*runs))  # the frozen refiner: tau = 1 is the base model


def test_gate_warm_up_runs_first_and_resumes(tiny_davis, base_run, tmp_path):
    import json

    refiner, cache = base_run
    cmd = [sys.executable, "-m", "reusevos", "train-gate", "--base", str(refiner),
           "--davis", str(tiny_davis), "--out", str(tmp_path / "gate"), "--cache", str(cache), "--iterations", "2",
           "--snippet", "3", "--pretrain-iterations", "5", "--pretrain-batch", "2", *TRAIN_ARGS]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "warm-up: 5 teacher-forced iterations of 2 snippets" in result.stdout
    assert "gate initialised" not in result.stdout  # the warm-up replaces the 15% initialisation
    warm = [json.loads(line) for line in (tmp_path / "gate" / "pretrain" / "log.jsonl").read_text().splitlines()]
    assert warm and {"gate", "delta", "state"} <= set(warm[-1])
    assert torch.load(tmp_path / "gate" / "pretrain" / "last.pt", weights_only=False)["iteration"] == 5
    meta = torch.load(tmp_path / "gate" / "dynamic.pt", weights_only=True)["meta"]
    assert meta["gate_training"]["pretrain"]["iterations"] == 5 and meta["gate_config"]["pretrain_iterations"] == 5
    # Once the main stage has begun, running again continues it and leaves the warm-up alone.
    again = subprocess.run([*cmd[:cmd.index("--iterations") + 1], "4", *cmd[cmd.index("--iterations") + 2:]],
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "at iteration 2" in again.stdout and "warm-up" not in again.stdout, again.stderr


def test_tracked_scores_follow_the_models_own_tracking(tmp_path):
    """The ``tracked`` anchor's target model learns from the network's outputs: until its first re-optimisation
    (after ``update_every`` computed frames) it is the start frame's model, exactly as the ground-truth-updated
    anchor's is; after it, the two differ, since one learned from the truth and the other from its own masks."""
    root = tmp_path / "davis"
    write_clip(root, "clip", SyntheticConfig(size=(96, 160), num_frames=12, num_objects=2, speed=2.0, seed=1),
               split="train")
    cache = tmp_path / "cache"
    run = _train(root, tmp_path / "run", 1, cache, extra=["--tracked-scores", "frtm-mobilenet_v2", "--synthetic", "0"])
    assert run.returncode == 0, run.stderr
    meta = json.loads((cache / "clip" / "meta.json").read_text())
    assert meta["anchor_kinds"] == ["updated", "stale", "stale", "tracked"]
    assert meta["anchors"][-1] == meta["anchors"][0] == 0
    scores = np.load(cache / "clip" / "scores.npy").astype(np.float32)  # (A, T, K, h, w)
    assert scores.shape[:3] == (4, 12, 2) and np.isfinite(scores[-1]).all()
    same = np.abs(scores[0, :9] - scores[-1, :9]).max()  # frames 0-8: no refit has happened yet
    after = np.abs(scores[0, 9:] - scores[-1, 9:]).reshape(3, 2, -1).max(axis=2)
    # the same model up to float rounding (under 0.01 on AVX-512 CPUs, 0.02 on an AVX2-only one) ...
    assert same < 0.05, (same, after)
    assert after.min() > 0.1, (same, after)  # ... and every object's scores change once the memories differ (0.15+)
    runs = [json.loads(line) for line in (tmp_path / "run" / "runs.jsonl").read_text().splitlines()]
    assert runs[0]["tracker_weights"] == "frtm-mobilenet_v2"


def test_a_cache_of_another_recipe_is_refused(tiny_davis, tmp_path):
    cache = tmp_path / "cache"
    assert _train(tiny_davis, tmp_path / "a", 1, cache).returncode == 0
    mixed = _train(tiny_davis, tmp_path / "b", 1, cache, extra=["--tracked-scores", "frtm-mobilenet_v2"])
    assert mixed.returncode == 2
    assert "built without tracked scores" in mixed.stderr and "Traceback" not in mixed.stderr
    # the shipped default runs on EfficientNet-Lite0: refused for a MobileNetV2 training, naming the one that fits
    other = _train(tiny_davis, tmp_path / "c", 1, tmp_path / "cache-c", extra=["--tracked-scores", "default"])
    assert other.returncode == 2 and "Traceback" not in other.stderr
    assert "runs on efficientnet_lite0, this training on mobilenet_v2" in other.stderr
    assert "--tracked-scores frtm-mobilenet_v2" in other.stderr


def test_a_syn_clip_made_from_other_sequences_is_refused(tiny_davis, tmp_path):
    """A syn clip's cached name says only its seed and number: a run on fewer sequences (a held-out split) must not
    take in clips cut from the sequences it leaves out."""
    cache = tmp_path / "cache"
    assert _train(tiny_davis, tmp_path / "a", 1, cache).returncode == 0
    fewer = _train(tiny_davis, tmp_path / "b", 1, cache, extra=["--sequences", "clip0"])
    assert fewer.returncode == 2 and "Traceback" not in fewer.stderr, fewer.stderr
    assert "syn clip made with other sequences" in fewer.stderr and "another --cache" in fewer.stderr
    faster = _train(tiny_davis, tmp_path / "c", 1, cache, extra=["--synthetic-speeds", "30"])
    assert faster.returncode == 2 and "other speeds" in faster.stderr, faster.stderr
    assert _train(tiny_davis, tmp_path / "d", 1, cache).returncode == 0  # the same recipe takes the cache as it is


def test_a_syn_clip_without_its_source_is_used_with_a_warning(tiny_davis, tmp_path):
    """Clips cached by an older version record no source: they cannot be checked, are kept, and the log says so."""
    cache = tmp_path / "cache"
    assert _train(tiny_davis, tmp_path / "a", 1, cache).returncode == 0
    clips = sorted(cache.glob("syn-*"))
    assert clips
    for clip in clips:
        meta = json.loads((clip / "meta.json").read_text())
        del meta["source"]
        (clip / "meta.json").write_text(json.dumps(meta))
    old = _train(tiny_davis, tmp_path / "b", 1, cache, extra=["--sequences", "clip0"])
    assert old.returncode == 0, old.stderr
    said = old.stdout + old.stderr
    assert f"warning: {len(clips)} syn clips in" in said and "cannot check" in said
    assert "warning" not in _train(tiny_davis, tmp_path / "c", 1, tmp_path / "fresh").stdout  # a fresh cache: none
