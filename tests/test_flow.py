"""The flow variant: the warp follows crafted motion, the gate file round-trips and refuses what it cannot read,
the fit learns, the session runs no network on moved frames and is the base model exactly at tau = 1, and the
fit command keeps to training splits and resumes."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from reusevos.config import FLOW_MAX_GAP, SessionConfig
from reusevos.errors import ReusevosError
from reusevos.flow import FEATURES, FLOW, MAX_GAP, FlowGate, FlowWarper, load_flow_gate, make_anchor, small_grey
from reusevos.synthetic import SyntheticConfig, generate_clip, write_clip
from reusevos.train.flow_gate import FlowGateConfig, fit, quality, sequence_pairs, target_values


def _iou(a, b) -> float:
    a, b = a > 0.5, b > 0.5
    return float((a & b).sum() / (a | b).sum())


def _sprite_frames(shift=(8, 4), size=(240, 320)):
    """A textured square on a flat background, then the same square moved by ``shift`` (down, right)."""
    rng = np.random.default_rng(3)
    sprite = cv2.GaussianBlur((rng.random((48, 56)) * 255).astype(np.float32), (0, 0), 1.5).astype(np.uint8)
    background = np.full((*size, 3), 90, np.uint8)

    def frame_at(y, x):
        frame = background.copy()
        frame[y:y + 48, x:x + 56] = sprite[..., None]
        return frame

    mask = np.zeros(size, np.float32)
    mask[100:148, 120:176] = 1
    truth = np.zeros_like(mask)
    truth[100 + shift[0]:148 + shift[0], 120 + shift[1]:176 + shift[1]] = 1
    return frame_at(100, 120), frame_at(100 + shift[0], 120 + shift[1]), mask, truth


def test_the_warp_follows_a_moving_object_and_the_features_see_a_still_one():
    first, second, mask, truth = _sprite_frames()
    warper = FlowWarper()
    anchor = make_anchor(0, small_grey(first), mask)
    moved = warper.propose(anchor, small_grey(second), 1)
    assert _iou(mask, truth) < 0.75  # copying the mask would miss by this much
    assert _iou(moved.prob, truth) > 0.9
    assert moved.features.shape == (len(FEATURES),) and np.isfinite(moved.features).all()
    still = warper.propose(anchor, small_grey(first), 1)
    assert _iou(still.prob, mask) > 0.97
    residual = dict(zip(FEATURES, still.features))["band_residual"]
    assert residual < 0.01 < dict(zip(FEATURES, moved.features))["band_residual"] + 0.01
    assert dict(zip(FEATURES, still.features))["gap"] == pytest.approx(1 / MAX_GAP)


def test_an_anchor_without_an_object_proposes_nothing():
    first, second, mask, _ = _sprite_frames()
    anchor = make_anchor(0, small_grey(first), np.zeros_like(mask))
    assert anchor.box is None and FlowWarper().propose(anchor, small_grey(second), 1) is None


def test_the_shipped_gate_trusts_a_still_object_more_than_a_replaced_one():
    first, _, mask, _ = _sprite_frames()
    gate = load_flow_gate()
    warper = FlowWarper()
    anchor = make_anchor(0, small_grey(first), mask)
    replaced = first.copy()
    replaced[100:148, 120:176] = 200  # the object is gone, a flat patch in its place
    replaced[80:170, 100:200:6] = 20  # and stripes across where it was
    p_still = gate(warper.propose(anchor, small_grey(first), 1).features)
    p_replaced = gate(warper.propose(anchor, small_grey(replaced), 1).features)
    assert 0.0 <= p_replaced < p_still <= 1.0 and p_still > 0.9, (p_still, p_replaced)


def test_gate_files_round_trip_and_bad_ones_are_clear_errors(tmp_path):
    gate = load_flow_gate()
    path = tmp_path / "gate.json"
    gate.save(path)
    features = np.linspace(0.0, 1.0, len(FEATURES), dtype=np.float32)
    assert load_flow_gate(path)(features) == pytest.approx(gate(features), abs=1e-6)
    data = json.loads(path.read_text())
    data["features"] = data["features"][:-1]
    (tmp_path / "other.json").write_text(json.dumps(data))
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "short.json").write_text(json.dumps({"features": list(FEATURES), "flow": FLOW}))
    older = json.loads(path.read_text())
    del older["flow"]  # a gate of the versions before the flow was named (DIS's medium preset)
    (tmp_path / "older.json").write_text(json.dumps(older))
    for name, message in (("other.json", "fitted on other features"), ("broken.json", "cannot read the flow gate"),
                          ("older.json", r"another optical flow \(dis-medium\)"),
                          ("short.json", "is damaged"), ("missing.json", "no flow gate at")):
        with pytest.raises(ReusevosError, match=message):
            load_flow_gate(tmp_path / name)


def test_fit_learns_a_learnable_target():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(600, len(FEATURES))).astype(np.float32)
    iou = 1 / (1 + np.exp(-2 * features[:, 0] + features[:, 3]))  # a function of two features
    pairs = {"features": features, "iou": iou.astype(np.float32), "copy_iou": iou.astype(np.float32),
             "gap": np.ones(600, np.int16)}
    report = quality(fit(pairs, FlowGateConfig(steps=400)), pairs, (0.7,))
    assert report["pearson"] > 0.97 and report["mse"] < 0.005, report
    assert report["tau=0.7"]["oracle_reused"] == pytest.approx(float((iou >= 0.7).mean()), abs=1e-4)
    f = 1 / (1 + np.exp(features[:, 1]))  # boundary F: another function; the jf target is the mean of both
    pairs["f"] = f.astype(np.float32)
    np.testing.assert_allclose(target_values(pairs, "jf"), (iou + f) / 2, rtol=1e-6)
    report = quality(fit(pairs, FlowGateConfig(steps=400, target="jf")), pairs, (0.7,), "jf")
    assert report["pearson"] > 0.97 and report["iou_mean"] == pytest.approx(float((iou + f).mean() / 2), abs=1e-4)
    del pairs["f"]
    with pytest.raises(ReusevosError, match="without boundary F"):
        fit(pairs, FlowGateConfig(target="jf"))


def test_pairs_are_warps_of_the_ground_truth_scored_against_the_truth():
    clip = list(generate_clip(SyntheticConfig(size=(96, 128), num_frames=6, num_objects=2, speed=3.0, seed=2)))
    frames, truth = [f for f, _ in clip], [m for _, m in clip]
    pairs = sequence_pairs(frames, truth, gaps=(1, 2), stride=2)
    n = len(pairs["iou"])
    assert pairs["features"].shape == (n, len(FEATURES)) and n <= 2 * 3 * 2
    assert set(pairs["gap"].tolist()) <= {1, 2} and ((pairs["iou"] >= 0) & (pairs["iou"] <= 1)).all()
    first = np.flatnonzero((pairs["frame"] == 1) & (pairs["gap"] == 1))[0]  # object 1, anchor 0, gap 1
    a, b = truth[0] == 1, truth[1] == 1
    assert pairs["copy_iou"][first] == pytest.approx((a & b).sum() / (a | b).sum(), abs=1e-6)
    assert ((pairs["f"] >= 0) & (pairs["f"] <= 1)).all() and pairs["f"].shape == (n,)


@pytest.fixture(scope="module")
def shipped():
    import reusevos

    return reusevos.load_model(device="cpu")


@pytest.mark.slow
def test_session_moves_objects_without_the_network_and_is_the_base_model_at_tau_one(shipped):
    import reusevos

    clip = list(generate_clip(SyntheticConfig(size=(240, 432), num_frames=16, num_objects=1, speed=1.0, seed=11,
                                              cutout_fraction=0.0)))
    frames, masks = [f for f, _ in clip], [m for _, m in clip]

    def run(options):
        session = reusevos.Session(shipped, options)
        return session, [session.step(f, masks[0] if t == 0 else None) for t, f in enumerate(frames)]

    _, full = run(SessionConfig("full", 1.0, compute_window=2))
    _, exact = run(SessionConfig("flow", 1.0, compute_window=2))
    assert all(np.array_equal(a.labels, b.labels) for a, b in zip(full, exact))
    session, flowed = run(SessionConfig("flow", 0.5, compute_window=2))
    moved = [r for r in flowed if r.routes.get(1) == "moved"]
    assert len(moved) >= len(frames) // 2
    assert all("backbone_to_f8" not in r.stage_seconds and 0 <= r.gate_probability[1] <= 1 for r in moved)
    assert session.objects[1].routes["moved"] == len(moved)
    ious = [np.mean([_iou(r.labels == 1, m == 1) for r, m in zip(run_[1:], masks[1:])]) for run_ in (full, flowed)]
    assert ious[1] > ious[0] - 0.05, ious  # stated bound: within 5 IoU points of the base model


def test_the_longest_gap_computes_an_object_again_whatever_the_gate_says(weights):
    import reusevos

    model = reusevos.load_model(weights["base"], device="cpu")
    clip = list(generate_clip(SyntheticConfig(size=(96, 128), num_frames=10, num_objects=1, speed=0.0, seed=4)))
    for gap in (1, 3):
        session = reusevos.Session(model, SessionConfig("flow", 0.0, flow_max_gap=gap))  # tau 0: the gate never says no
        routes = [session.step(f, m if t == 0 else None).routes.get(1) for t, (f, m) in enumerate(clip)]
        computed = [t for t, route in enumerate(routes) if route == "computed"]
        assert computed == list(range(gap + 1, 10, gap + 1)) and routes.count("moved") == 9 - len(computed), routes
    assert SessionConfig("flow").flow_max_gap == FLOW_MAX_GAP and SessionConfig("full").flow_max_gap is None
    for options, message in [(SessionConfig("reuse", 0.7, flow_max_gap=3), "flow variant only"),
                             (SessionConfig("flow", flow_max_gap=MAX_GAP + 1), "from 1 to 12"),
                             (SessionConfig("flow", flow_max_gap=2.5), "from 1 to 12")]:
        with pytest.raises(ReusevosError, match=message):
            options.validate()


def test_flow_runs_on_weights_without_a_reuse_gate(weights):
    import reusevos

    model = reusevos.load_model(weights["base"], device="cpu")
    session = reusevos.Session(model, SessionConfig("flow", 0.0))
    clip = list(generate_clip(SyntheticConfig(size=(96, 128), num_frames=3, num_objects=1, seed=4)))
    results = [session.step(f, m if t == 0 else None) for t, (f, m) in enumerate(clip)]
    assert session.options.variant == "flow" and results[1].routes[1] in ("moved", "computed")
    with pytest.raises(ReusevosError, match="applies to the flow variant only"):
        SessionConfig("reuse", 0.7, flow_gate="x.json").validate()


def _fit_command(*args):
    return subprocess.run([sys.executable, "-m", "reusevos", "fit-flow-gate", *map(str, args), "--threads", "1"],
                          capture_output=True, text=True, timeout=300)


def test_fit_command_writes_a_gate_resumes_and_refuses_val(tmp_path):
    root = tmp_path / "davis"
    for i in range(3):
        write_clip(root, f"clip{i}", SyntheticConfig(size=(96, 128), num_frames=6, num_objects=1, speed=2.0, seed=i),
                   split="train")
    out = tmp_path / "fit"
    args = ["--davis", root, "--out", out, "--steps", "50", "--gaps", "1,2", "--holdout-every", "3"]
    first = _fit_command(*args)
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in (out / "pairs").iterdir()) == ["clip0.npz", "clip1.npz", "clip2.npz"]
    report = json.loads((out / "fit.json").read_text())
    assert report["holdout"]["sequences"] == ["clip0"] and report["config"]["gaps"] == [1, 2]
    gate = load_flow_gate(out / "flow_gate.json")
    assert gate.info["sequences"] == ["clip0", "clip1", "clip2"]
    assert load_flow_gate(out / "flow_gate_holdout.json").info["fitted_without"] == ["clip0"]
    again = _fit_command(*args)
    assert again.returncode == 0 and "pairs clip" not in again.stderr + again.stdout
    fold = _fit_command(*args, "--holdout-offset", "1")  # the next fold, from the same pairs
    assert fold.returncode == 0, fold.stderr
    assert load_flow_gate(out / "flow_gate_holdout.json").info["fitted_without"] == ["clip1"]
    outside = _fit_command(*args, "--holdout-offset", "3")
    assert outside.returncode != 0 and "offset must be from 0 to 2" in outside.stderr
    pairs = dict(np.load(out / "pairs" / "clip2.npz"))
    pairs["flow"] = np.array("dis-medium")  # pairs kept from a version with another flow are not mixed in
    np.savez(out / "pairs" / "clip2.npz", **pairs)
    stale = _fit_command(*args)
    assert stale.returncode != 0 and "clip2.npz were computed with another optical flow" in stale.stderr
    assert "Traceback" not in stale.stderr
    refused = _fit_command("--davis", root, "--out", tmp_path / "v", "--split", "val")
    assert refused.returncode != 0 and "refusing to fit the flow gate on the val split" in refused.stderr
    bad = _fit_command(*args[:-4], "--gaps", f"1,{MAX_GAP + 1}")
    assert bad.returncode != 0 and "--gaps must be frame gaps" in bad.stderr and "Traceback" not in bad.stderr


def test_the_memory_clock_in_frames_ages_and_refits_by_frames_elapsed(weights):
    import reusevos

    model = reusevos.load_model(weights["base"], device="cpu")
    clip = list(generate_clip(SyntheticConfig(size=(96, 128), num_frames=19, num_objects=1, speed=0.0, seed=4)))

    def run(options):
        session = reusevos.Session(model, options)
        results = [r for t, (f, m) in enumerate(clip) for r in session.push(f, m if t == 0 else None)]
        return session, results + session.finish()

    for variant in ("full", "flow"):  # tau 1: every frame computed, so both clocks are the base model's
        _, computed = run(SessionConfig(variant, 1.0))
        _, frames = run(SessionConfig(variant, 1.0, memory_clock="frames"))
        assert [r.reoptimised for r in computed] == [r.reoptimised for r in frames]
        assert [t for t, r in enumerate(frames) if r.reoptimised] == [8, 16]  # update_every = 8
        assert all(np.array_equal(a.labels, b.labels) for a, b in zip(computed, frames))
    # tau 0 with a longest gap of 2: frames 3, 6, 9, ... are computed; by computed frames the first refit is the
    # 8th computed frame (24), by frames the first computed frame at least 8 frames after the start (9), then 18
    session, moved = run(SessionConfig("flow", 0.0, flow_max_gap=2, memory_clock="frames"))
    assert [t for t, r in enumerate(moved) if r.routes.get(1) == "computed"] == [3, 6, 9, 12, 15, 18]
    assert [t for t, r in enumerate(moved) if r.reoptimised] == [9, 18]
    _, counted = run(SessionConfig("flow", 0.0, flow_max_gap=2))
    assert not any(r.reoptimised for r in counted)  # 6 computed frames: no 8th yet
    # each sample aged the memory by the 3 frames since the one before: the tracked samples' weights, newest first,
    # are lr, lr (1 - lr)^3, lr (1 - lr)^6, ...
    memory = session.objects[1].target.memory
    lr = model.config.target.memory_lr
    tracked = sorted(memory.weights[: memory.count][~memory.permanent[: memory.count]].tolist(), reverse=True)
    assert tracked == pytest.approx([lr * (1 - lr) ** (3 * k) for k in range(6)], rel=1e-9)
    with pytest.raises(ReusevosError, match="memory_clock must be"):
        SessionConfig("flow", memory_clock="seconds").validate()


def test_scaled_refits_run_fewer_cg_iterations_after_moved_frames(weights, monkeypatch):
    import reusevos
    from reusevos.base_models import refit_cg_iters
    from reusevos.config import TargetModelConfig
    from reusevos.model.target_model import TargetModel

    config = TargetModelConfig(update_cg_iters=5, update_every=8, min_refit_cg_iters=2)
    # ceil(5 k / 8), between 2 and 5: 8 computed frames (every frame at tau 1) keep FRTM's 5
    assert [refit_cg_iters(config, k) for k in (1, 3, 4, 6, 8, 16)] == [2, 2, 3, 4, 5, 5]

    model = reusevos.load_model(weights["base"], device="cpu")
    clip = list(generate_clip(SyntheticConfig(size=(96, 128), num_frames=19, num_objects=1, speed=0.0, seed=4)))
    asked: list[int | None] = []
    plain_update = TargetModel.update
    monkeypatch.setattr(TargetModel, "update", lambda self, cg_iters=None: (asked.append(cg_iters),
                                                                           plain_update(self, cg_iters))[1])

    def run(options, scaled):
        monkeypatch.setattr(model.config.target, "scale_refits", scaled)
        asked.clear()
        session = reusevos.Session(model, options)
        results = [r for t, (f, m) in enumerate(clip) for r in session.push(f, m if t == 0 else None)]
        return results + session.finish(), list(asked)

    at_one = SessionConfig("flow", 1.0, memory_clock="frames")
    (plain, plain_iters), (scaled, scaled_iters) = run(at_one, False), run(at_one, True)
    assert plain_iters == [None, None] and scaled_iters == [5, 5]  # tau 1: the base model's refits exactly
    assert all(np.array_equal(a.labels, b.labels) for a, b in zip(plain, scaled))
    # tau 0, longest gap 2: refits at frames 9 and 18, each after 3 computed frames (3, 6, 9 and 12, 15, 18)
    moved, iters = run(SessionConfig("flow", 0.0, flow_max_gap=2, memory_clock="frames"), True)
    assert [t for t, r in enumerate(moved) if r.reoptimised] == [9, 18] and iters == [2, 2]
    # FRTM's own clock never scales
    _, iters = run(SessionConfig("flow", 0.0, flow_max_gap=1), True)
    assert iters and set(iters) == {None}
