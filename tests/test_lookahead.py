"""The flow variant's lookahead: the blend's weights by hand, frames handed back in order and only once their
moved objects are computed again, computed frames exactly those of the flow variant without it, the blend on a
still scene equal to the one worked out by hand, tau = 1 the base model, and the settings and flags that name it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from reusevos.bench.settings import Setting, parse_setting
from reusevos.config import SessionConfig
from reusevos.errors import ReusevosError
from reusevos.flow import FlowWarper, blend, make_anchor, small_grey
from reusevos.model.merge import soft_aggregate
from reusevos.runner import VideoStats, timed_steps
from reusevos.synthetic import SyntheticConfig, generate_clip


def test_the_blend_weighs_each_warp_by_its_distance_in_time():
    forward, backward = np.full((2, 2), 0.9, np.float32), np.full((2, 2), 0.3, np.float32)
    # frame 1 between computed frames 0 and 3: 2/3 forward, 1/3 backward
    assert np.allclose(blend(forward, backward, 1, 0, 3), 2 / 3 * 0.9 + 1 / 3 * 0.3)
    assert np.allclose(blend(forward, backward, 2, 0, 3), 1 / 3 * 0.9 + 2 / 3 * 0.3)
    assert np.allclose(blend(forward, backward, 5, 4, 6), 0.6)  # half way: the mean
    for frame, earlier, later in ((0, 0, 3), (3, 0, 3), (4, 0, 3)):
        with pytest.raises(ValueError, match="between its computed frames"):
            blend(forward, backward, frame, earlier, later)


def test_the_backward_warp_is_the_proposal_without_the_gate_s_features():
    rng = np.random.default_rng(2)
    first = cv2.GaussianBlur((rng.random((96, 128, 3)) * 255).astype(np.float32), (0, 0), 2).astype(np.uint8)
    second = np.roll(first, (3, 5), axis=(0, 1))
    mask = np.zeros((96, 128), np.float32)
    mask[30:70, 40:90] = 1
    anchor = make_anchor(0, small_grey(first), mask)
    warper = FlowWarper()
    assert np.array_equal(warper.warp(anchor, small_grey(second)), warper.propose(anchor, small_grey(second), 1).prob)
    assert warper.warp(make_anchor(0, small_grey(first), np.zeros_like(mask)), small_grey(second)) is None


def _still_clip(frames: int = 8):
    """A textured scene that does not move (the flow is zero, so each warp is its anchor's output unchanged) and
    the mask of a square in it."""
    rng = np.random.default_rng(5)
    image = cv2.GaussianBlur((rng.random((96, 128, 3)) * 255).astype(np.float32), (0, 0), 2).astype(np.uint8)
    mask = np.zeros((96, 128), np.uint8)
    mask[30:70, 40:90] = 1
    return [image.copy() for _ in range(frames)], mask


def _push_all(session, frames, mask):
    """Each push's results (frame indices), then finish's."""
    handed = []
    for t, frame in enumerate(frames):
        handed.append([r.index for r in session.push(frame, mask if t == 0 else None, return_probabilities=True)])
    return handed, session.finish()


def test_frames_come_back_in_order_once_their_objects_are_computed_again(weights):
    import reusevos

    model = reusevos.load_model(weights["base"], device="cpu")
    frames, mask = _still_clip(8)
    # tau 0: the gate never says no, so with a longest gap of 2 frames 1, 2, 4, 5, 7 are moved, 3 and 6 computed
    session = reusevos.Session(model, SessionConfig("flow", 0.0, flow_max_gap=2, lookahead=True))
    results, handed = [], []
    for t, frame in enumerate(frames):
        ready = session.push(frame, mask if t == 0 else None, return_probabilities=True)
        handed.append([r.index for r in ready])
        results += ready
    tail = session.finish()
    assert handed == [[0], [], [], [1, 2, 3], [], [], [4, 5, 6], []] and [r.index for r in tail] == [7]
    results += tail
    assert [r.routes.get(1) for r in results] == [None, "moved", "moved", "computed", "moved", "moved", "computed",
                                                  "moved"]
    assert all(r.seconds > 0 for r in results) and session.finish() == []

    # on a still scene each warp is its anchor's output: frame 1 is 2/3 of frame 0's output and 1/3 of frame 3's
    soft = {r.index: torch.from_numpy(r.probabilities[1]) for r in results}
    for t, earlier, later in ((1, 0, 3), (2, 0, 3), (4, 3, 6), (5, 3, 6)):
        expected = soft_aggregate(blend(soft[earlier], soft[later], t, earlier, later)[None])[1]
        assert torch.allclose(soft[t], expected, atol=1e-4), t
        assert np.array_equal(results[t].labels, (expected > 0.5).numpy().astype(np.uint8))
    assert torch.allclose(soft[7], soft_aggregate(soft[6][None])[1], atol=1e-4)  # after the last computed frame:
    # the forward warp alone, as without the lookahead
    assert not torch.allclose(soft[0], soft[3], atol=1e-2)  # the two outputs differ, so the blend is seen


@pytest.mark.parametrize("num_objects", [1, 2])
def test_computed_frames_are_those_of_the_flow_variant_without_it(weights, monkeypatch, num_objects):
    import reusevos

    model = reusevos.load_model(weights["base"], device="cpu")
    clip = list(generate_clip(SyntheticConfig(size=(96, 128), num_frames=12, num_objects=num_objects, speed=1.0,
                                              seed={1: 3, 2: 7}[num_objects])))
    merges = {}
    real_merge = reusevos.Session._merge

    def counted(session, *args):
        merges[session] = merges.get(session, 0) + 1
        return real_merge(session, *args)

    monkeypatch.setattr(reusevos.Session, "_merge", counted)
    runs = {}
    for lookahead in (False, True):
        session = reusevos.Session(model, SessionConfig("flow", 0.3, flow_max_gap=3, lookahead=lookahead))
        stats = VideoStats("clip", len(clip), clip[0][1].shape, clip[0][1].shape)
        items = ((f"{t:05d}", f, m if t == 0 else None) for t, (f, m) in enumerate(clip))
        runs[lookahead] = [(item[0], r) for item, r in timed_steps(session, items, stats)]
        assert stats.frames == len(clip)
        assert stats.process_s == pytest.approx(sum(r.seconds for _, r in runs[lookahead]))
    plain, ahead = runs[False], runs[True]
    assert [name for name, _ in ahead] == [f"{t:05d}" for t in range(len(clip))]  # each result with its own frame
    assert [r.index for _, r in ahead] == list(range(len(clip)))
    assert [r.routes for _, r in plain] == [r.routes for _, r in ahead]
    moved = [t for t, (_, r) in enumerate(plain) if "moved" in r.routes.values()]
    assert moved and len(moved) < len(clip) - 1  # both routes taken
    for t, ((_, a), (_, b)) in enumerate(zip(plain, ahead)):
        if t not in moved:
            assert np.array_equal(a.labels, b.labels), t
    plain_merges, ahead_merges = merges.values()
    assert plain_merges == len(clip)
    if num_objects == 1:  # a moved frame is merged once, when it is handed back (after its blend, if any)
        assert ahead_merges == len(clip)
    else:  # a frame with an object computed is merged at once (its anchor needs it), and again if blended
        assert ahead_merges >= len(clip)


def test_at_tau_one_it_is_the_base_model_and_step_is_refused(weights):
    import reusevos

    model = reusevos.load_model(weights["base"], device="cpu")
    clip = list(generate_clip(SyntheticConfig(size=(96, 128), num_frames=5, num_objects=1, speed=2.0, seed=3)))
    full = reusevos.Session(model, SessionConfig("full", 1.0))
    ahead = reusevos.Session(model, SessionConfig("flow", 1.0, lookahead=True))
    expected = [full.step(f, m if t == 0 else None).labels for t, (f, m) in enumerate(clip)]
    got = [r.labels for t, (f, m) in enumerate(clip) for r in ahead.push(f, m if t == 0 else None)]
    assert len(got) == len(clip) and all(np.array_equal(a, b) for a, b in zip(expected, got))
    with pytest.raises(ReusevosError, match="push"):
        ahead.step(clip[0][0], clip[0][1])
    plain = reusevos.Session(model, SessionConfig("flow", 0.5))  # without the lookahead push is step
    assert [r.index for r in plain.push(clip[0][0], clip[0][1])] == [0] and plain.finish() == []


def test_settings_and_flags_name_the_lookahead():
    assert parse_setting("flow@0.85+g2+la+mf+c2").options() == SessionConfig("flow", 0.85, lookahead=True,
                                                                              memory_clock="frames", search_margin=0)
    setting = parse_setting("flow@0.85+g3+la+c2")
    assert setting == Setting("flow", 0.85, compute_window=2, flow_max_gap=3, lookahead=True)
    assert setting.key == "flow@0.85+g3+la+c2" and setting.options().lookahead
    assert parse_setting("flow@0.85+g3+c2").key == "flow@0.85+g3+c2"
    with pytest.raises(ReusevosError, match="flow variant only"):
        parse_setting("reuse@0.7+la")
    for options in (SessionConfig("reuse", 0.7, lookahead=True), SessionConfig("full", lookahead=True)):
        with pytest.raises(ReusevosError, match="lookahead applies to the flow variant only"):
            options.validate()
    with pytest.raises(ReusevosError, match="True or False"):
        SessionConfig("flow", lookahead="yes").validate()

    import argparse

    from reusevos.cli.common import add_session_flags, session_options

    parser = argparse.ArgumentParser()
    add_session_flags(parser)
    assert session_options(parser.parse_args(["--lookahead"])) == SessionConfig(lookahead=True, memory_clock="frames")
    assert session_options(parser.parse_args([])) is None
