"""The reuse path: module shapes, losses on hand-computed cases, the gate's initialisation, the
session's variants, and tau = 1 giving exactly the base model's masks."""

import dataclasses

import numpy as np
import pytest
import torch

from reusevos.config import GateTrainConfig, ModelConfig, SessionConfig
from reusevos.errors import ReusevosError
from reusevos.model.delta import DeltaGenerator
from reusevos.model.gate import Gate
from reusevos.model.merge import soft_aggregate
from reusevos.model.network import VOSNetwork
from reusevos.model.template import TemplateMatcher
from reusevos.model.translator import RefineTranslator
from reusevos.bench.settings import parse_setting
from reusevos.session import Route, Session
from reusevos.windows import score_box, window_box
from reusevos.train.losses import (delta_loss, fixed_rate_gate_loss, gate_probability_loss, gate_target, margin,
                                   mask_iou, straight_through)


def test_module_shapes():
    torch.manual_seed(0)
    matcher, gate, delta, translator = TemplateMatcher(32), Gate(), DeltaGenerator(), RefineTranslator()
    f8 = torch.randn(1, 32, 60, 107)
    template = matcher.template(f8.expand(3, -1, -1, -1), torch.rand(3, 1, 480, 854))
    assert template.shape == (3, 64, 64)
    assert torch.allclose(template.sum(-1), torch.ones(3, 64))  # softmax rows
    change = matcher(template, f8, torch.randn(3, 1, 30, 54))
    assert change.shape == (3, 64, 60, 107)
    p = gate.eval()(change)
    assert p.shape == (3,) and bool(((p > 0) & (p < 1)).all())
    d = delta(change, (30, 54))
    assert d.shape == (3, 1, 30, 54)
    assert float(d.detach().abs().max()) == 0.0  # starts by predicting "no change"
    assert translator(torch.randn(3, 64, 30, 54), d).shape == (3, 64, 30, 54)


def test_gate_calibration_hits_the_requested_rate():
    torch.manual_seed(1)
    gate = Gate()
    logits = torch.randn(1000) * 3 + 1
    before = gate.conv2.bias.clone()
    gate.calibrate(logits, 0.15, threshold=0.5)
    shifted = logits + (gate.conv2.bias - before)
    assert float((torch.sigmoid(shifted) >= 0.5).float().mean()) == pytest.approx(0.15, abs=0.002)


def test_losses_on_hand_computed_cases():
    assert margin(60, 1.0, 120) == 0.5 and margin(240, 1.0, 120) == 1.0 and margin(60, 0.0, 120) == 0.0
    assert torch.allclose(gate_target(torch.tensor([0.3, 0.8]), 0.5), torch.tensor([0.5, 0.8]))
    p, target = torch.tensor([0.9, 0.2]), torch.tensor([0.5, 0.25])
    # |p - t| = (0.4, 0.05) -> dead zone 0.1 -> (0.4, 0.1) -> squares (0.16, 0.01) -> mean 0.085
    assert float(gate_probability_loss(p, target, 0.1)) == pytest.approx(0.085)
    assert float(gate_probability_loss(p, target, 0.0)) == pytest.approx((0.16 + 0.0025) / 2)
    assert float(fixed_rate_gate_loss(torch.tensor([0.2, 0.6]), 0.5)) == pytest.approx(0.01)
    delta = torch.full((1, 1, 2, 2), 0.5)
    label = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])
    prev = torch.tensor([[[[0.0, 0.0], [1.0, 0.5]]]])
    # y' - S_prev = (1, 0, 0, 0.5); errors (0.5, 0.5, 0.5, 0) -> mean of squares 0.1875
    assert float(delta_loss(delta, label, prev)) == pytest.approx(0.1875)
    a = torch.zeros(2, 4, 4)
    b = torch.zeros(2, 4, 4)
    a[0, :2], b[0, 1:3] = 1, 1  # 4 shared pixels of 12
    assert torch.allclose(mask_iou(a, b), torch.tensor([4 / 12, 1.0]))  # both empty -> 1


def test_straight_through_is_hard_forward_and_identity_backward():
    p = torch.tensor([0.3, 0.5, 0.7], requires_grad=True)
    hard = straight_through(p, 0.5)
    assert hard.tolist() == [0.0, 1.0, 1.0]
    (hard * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert p.grad.tolist() == [1.0, 2.0, 3.0]


def test_the_margin_changes_the_gate_target_over_epochs():
    config = GateTrainConfig(iterations=260, m1=1.0, ep_t=120)
    iou = torch.tensor([0.2, 0.6, 0.95])
    targets = [gate_target(iou, margin(config.epoch(it), config.m1, config.ep_t)) for it in (0, 60, 120, 200)]
    assert torch.allclose(targets[0], iou)  # epoch 0: the plain IoU
    assert torch.allclose(targets[1], torch.tensor([60 / 120, 0.6, 0.95]))
    assert torch.allclose(targets[2], torch.ones(3))  # from ep_T on, every frame's target is 1
    assert torch.allclose(targets[3], torch.ones(3))
    no_ramp = GateTrainConfig(iterations=260, m1=0.0)
    assert torch.allclose(gate_target(iou, margin(no_ramp.epoch(200), 0.0, no_ramp.ep_t)), iou)
    assert config.lr_drops == pytest.approx((127 / 260,))


@pytest.fixture(scope="module")
def networks(backbone):
    """A base network and a gated one sharing its (randomly initialised) refinement network."""
    torch.manual_seed(0)
    base = VOSNetwork(ModelConfig(), backbone).eval()
    torch.manual_seed(1)
    gated = VOSNetwork(ModelConfig(reuse_gate=True), backbone)
    gated.refiner.load_state_dict(base.refiner.state_dict())
    return base, gated.eval()


@pytest.fixture(scope="module")
def small_swan(blackswan):
    frames, masks = blackswan
    return [f[::2, ::2].copy() for f in frames[:6]], [m[::2, ::2].copy() for m in masks[:6]]


def _run(network, options, frames, masks):
    oracle = options is not None and options.variant == "oracle"
    session = Session(network, options, ground_truth=masks if oracle else None)
    results = [session.step(f, masks[0] if i == 0 else None) for i, f in enumerate(frames)]
    return session, results


def test_tau_one_gives_exactly_the_base_model(networks, small_swan):
    base, gated = networks
    frames, masks = small_swan
    _, expected = _run(base, None, frames, masks)
    session, got = _run(gated, SessionConfig("reuse", 1.0), frames, masks)
    assert all(np.array_equal(a.labels, b.labels) for a, b in zip(expected, got))
    assert all(r.gate_probability and set(r.routes.values()) == {"computed"} for r in got[1:])  # P reported, never reused
    assert session.reuse_rates == {1: 0.0}


def test_variants_take_the_paths_they_promise(networks, small_swan):
    _, gated = networks
    frames, masks = small_swan
    session, copy = _run(gated, SessionConfig("copy", 0.0), frames, masks)
    assert all(np.array_equal(r.labels, copy[0].labels) for r in copy)  # always the previous mask
    assert all(r.routes == {1: "copied"} for r in copy[1:]) and copy[0].routes == {}
    assert session.reuse_rates == {1: 1.0}
    session, reuse = _run(gated, SessionConfig("reuse", 0.0), frames, masks)
    assert session.reuse_rates == {1: 1.0} and session.objects[1].routes[Route.COMPUTED] == 0
    assert all(r.routes == {1: "reused"} and not r.reoptimised for r in reuse[1:])
    assert not any(np.array_equal(r.labels, reuse[0].labels) for r in reuse[1:])  # not a copy
    session, oracle = _run(gated, SessionConfig("oracle", 0.88), frames, masks)
    last, reused = 0, []  # g_IoU is measured against the last *computed* frame's ground truth
    for t in range(1, len(frames)):
        a, b = masks[t] > 0, masks[last] > 0
        iou = (a & b).sum() / (a | b).sum()
        assert oracle[t].gate_probability[1] == pytest.approx(iou)
        reused.append(iou >= 0.88)
        assert (oracle[t].routes[1] == "reused") == reused[-1]
        assert oracle[t].routes[1] == ("reused" if reused[-1] else "computed")
        if not reused[-1]:
            last = t
    assert 0 < sum(reused) < len(reused)  # this clip exercises both paths at 0.88
    assert session.reuse_rates[1] == pytest.approx(sum(reused) / len(reused))
    session, fusion = _run(gated, SessionConfig("fusion", 0.0, 0.999), frames, masks)
    assert session.reuse_rates == {1: 1.0}  # every P >= tau: reuse or copy, never full


def test_the_longest_gap_computes_a_reused_object_again_whatever_the_gate_says(networks, small_swan):
    _, gated = networks
    frames, masks = small_swan  # 6 frames; tau 0: the gate always says reuse
    for variant in ("reuse", "copy"):
        _, free = _run(gated, SessionConfig(variant, 0.0), frames, masks)
        skipped = {"reuse": "reused", "copy": "copied"}[variant]
        assert [r.routes[1] for r in free[1:]] == [skipped] * 5
        for cap in (1, 2):
            session, capped = _run(gated, SessionConfig(variant, 0.0, reuse_max_gap=cap), frames, masks)
            routes = [r.routes[1] for r in capped[1:]]
            computed = [t for t, r in enumerate(capped) if r.routes.get(1) == "computed"]
            assert computed == list(range(cap + 1, 6, cap + 1)), routes  # never more than cap skipped in a row
            assert routes.count(skipped) == 5 - len(computed)
            # the gate does not run for an object past its gap: no P, no template matching
            assert all(1 not in capped[t].gate_probability and "template_match" not in capped[t].stage_seconds
                       for t in computed)
            assert session.reuse_rates[1] == pytest.approx(routes.count(skipped) / 5)
    # a gap longer than the clip changes nothing: the same masks as without it
    _, long_gap = _run(gated, SessionConfig("reuse", 0.0, reuse_max_gap=10), frames, masks)
    _, free = _run(gated, SessionConfig("reuse", 0.0), frames, masks)
    assert all(np.array_equal(a.labels, b.labels) for a, b in zip(free, long_gap))


def test_bad_options_are_clear_errors(networks, small_swan):
    base, gated = networks
    for options, message in ((SessionConfig("reuse", 1.5), "tau must lie in"),
                             (SessionConfig("warp", 0.5), "unknown variant"),
                             (SessionConfig("fusion", 0.7, 0.6), "tau < tau2"),
                             (SessionConfig("reuse", 0.7, 0.9), "only applies to the fusion"),
                             (SessionConfig("reuse", 0.7, reuse_window=-1), "reuse_window must be"),
                             (SessionConfig("full", 1.0, compute_window=1.5), "compute_window must be"),
                             (SessionConfig("copy", 0.7, reuse_window=2), "never takes"),
                             (SessionConfig("reuse", 0.7, reuse_max_gap=-1), "reuse_max_gap must be"),
                             (SessionConfig("reuse", 0.7, reuse_max_gap=1.5), "reuse_max_gap must be"),
                             (SessionConfig("full", 1.0, reuse_max_gap=2), "applies to the gated variants"),
                             (SessionConfig("flow", 0.9, reuse_max_gap=2), "its own is flow_max_gap")):
        with pytest.raises(ReusevosError, match=message):
            Session(gated, options)
    with pytest.raises(ReusevosError, match="no trained reuse gate"):
        Session(base, SessionConfig("reuse", 0.7))
    frames, masks = small_swan
    with pytest.raises(ReusevosError, match="needs the ground truth"):
        Session(gated, SessionConfig("oracle", 0.7))
    with pytest.raises(ReusevosError, match="only it takes one"):
        Session(gated, SessionConfig("reuse", 0.7), ground_truth=masks)
    session = Session(gated, SessionConfig("oracle", 0.7), ground_truth=masks[:1])
    session.step(frames[0], masks[0])
    with pytest.raises(ReusevosError, match="ground truth for 1 frames, not frame 1"):
        session.step(frames[1])



def test_window_box_on_hand_computed_cases():
    prob = torch.zeros(64, 96)  # a 4 x 6 grid of 16-pixel cells
    assert window_box(prob, (4, 6), 1) is None  # nothing to follow: refine the whole frame
    prob[20:30, 40:50] = 0.9  # cell rows 1, columns 2..3
    assert window_box(prob, (4, 6), 0) == (1, 2, 2, 4)
    assert window_box(prob, (4, 6), 1) == (0, 3, 1, 5)
    assert window_box(prob, (4, 6), 3) is None  # grown to the whole grid: no window


def _assert_whole_frame_box_is_no_window(network, options, window, frames, masks):
    _, plain = _run(network, options, frames, masks)
    _, huge = _run(network, dataclasses.replace(options, **{window: 1000}), frames, masks)
    assert all(np.array_equal(a.labels, b.labels) for a, b in zip(plain, huge))


def _outside(box, grid, size) -> np.ndarray:
    """The image pixels outside a ``box`` of cells of ``grid`` over an image of ``size``; checks both are there."""
    (height, width), outside = size, np.ones(size, bool)
    outside[box[0] * height // grid[0]:box[1] * height // grid[0], box[2] * width // grid[1]:box[3] * width // grid[1]] \
        = False
    assert outside.any() and (~outside).any()
    return outside


def test_score_box_on_hand_computed_cases():
    score = torch.zeros(4, 6)  # the coarse score on a 4 x 6 grid of cells
    assert score_box(score, None, 1) is None  # nothing found: refine the whole frame
    score[2, 3] = 0.7
    assert score_box(score, None, 1) == (1, 4, 2, 5)
    prob = torch.zeros(64, 96)  # the last output, 16 pixels per cell
    prob[5:10, 80:90] = 0.9  # cell row 0, column 5
    assert score_box(score, prob, 0) == (0, 3, 3, 6)  # the union of both
    assert score_box(torch.zeros(4, 6), prob, 1) == (0, 2, 4, 6)  # the score lost it: the last output alone
    assert score_box(score, prob, 3) is None  # the whole grid


def test_a_search_margin_leaves_out_the_score_far_from_the_last_output():
    score = torch.zeros(8, 12)
    score[1, 1] = score[6, 10] = 0.8  # the object near its last output, a look-alike far from it
    prob = torch.zeros(128, 192)
    prob[16:40, 16:40] = 0.9  # cells (1-2, 1-2)
    assert score_box(score, prob, 1) is None  # FRTM: both, and grown by one cell that is the whole grid
    assert score_box(score, prob, 1, search=2) == (0, 4, 0, 4)  # the far one is background
    assert score_box(score, prob, 0, search=8) == (1, 7, 1, 11)  # far enough to reach it
    assert score_box(score, None, 0, search=2) == (1, 7, 1, 11)  # nothing last time: the whole frame is searched
    with pytest.raises(ReusevosError, match="search_margin must be"):
        SessionConfig("full", 1.0, search_margin=-1).validate()
    setting = parse_setting("full+c2+search2")
    assert setting.key == "full+c2+search2" and setting.options().search_margin == 2


def test_compute_window_refines_around_the_score_and_clears_the_rest(networks, small_swan):
    base, gated = networks
    frames, masks = small_swan
    _assert_whole_frame_box_is_no_window(base, SessionConfig("full", 1.0, compute_window=0), "compute_window", frames, masks)
    session = Session(base, SessionConfig("full", 1.0, compute_window=1))
    session.step(frames[0], masks[0])
    last = session.objects[1].prob_prev.clone()
    second = session.step(frames[1], return_probabilities=True)
    obj = session.objects[1]
    box = score_box(obj.score_prev[0, 0], last, 1)
    assert second.routes == {1: "computed"} and box is not None
    outside = _outside(box, obj.score_prev.shape[-2:], frames[0].shape[:2])
    prob = second.probabilities[1]
    background = float(soft_aggregate(torch.zeros(1, 1))[1])  # a zero probability, merged as every output is
    assert np.allclose(prob[outside], background, atol=1e-6) and not np.allclose(prob[~outside], background)
    assert not second.labels[outside].any()
    # Reused objects keep their own window rule; the two options combine.
    _, both = _run(gated, SessionConfig("reuse", 0.0, reuse_window=1, compute_window=1), frames, masks)
    assert [r.routes for r in both[1:]] == [{1: "reused"}] * (len(frames) - 1)


def test_reuse_window_refines_around_the_object_and_keeps_the_rest(networks, small_swan):
    _, gated = networks
    frames, masks = small_swan
    _assert_whole_frame_box_is_no_window(gated, SessionConfig("reuse", 0.0, compute_window=0), "reuse_window", frames, masks)
    session = Session(gated, SessionConfig("reuse", 0.0, reuse_window=1))
    first = session.step(frames[0], masks[0], return_probabilities=True)
    box = window_box(session.objects[1].prob_prev, session.objects[1].score_prev.shape[-2:], 1)
    second = session.step(frames[1], return_probabilities=True)
    assert second.routes == {1: "reused"} and box is not None
    outside = _outside(box, session.objects[1].score_prev.shape[-2:], frames[0].shape[:2])
    before, after = first.probabilities[1], second.probabilities[1]
    # Outside the box the last output is kept (then merged again, as every output is); inside it is refined anew.
    kept = soft_aggregate(torch.from_numpy(before[outside])[None])[1].numpy()
    assert np.allclose(after[outside], kept, atol=1e-6)
    assert not np.allclose(after[~outside], soft_aggregate(torch.from_numpy(before[~outside])[None])[1].numpy(),
                           atol=1e-3)


def test_a_search_margin_windows_reused_frames_as_computed_ones(networks, small_swan, monkeypatch):
    """Without a reuse window, the paper's reused frame takes the search margin as a computed one does: refined in
    the box of S_hat = S_prev + Delta within the margin of the last output, background outside it."""
    _, gated = networks
    frames, masks = small_swan
    session = Session(gated, SessionConfig("reuse", 0.0, compute_window=1, search_margin=1))
    session.step(frames[0], masks[0])
    last = session.objects[1].prob_prev.clone()
    seen = []
    refine_window = session._refine_window
    monkeypatch.setattr(session, "_refine_window", lambda track, *rest: seen.append(
        (track.box, track.score.clone())) or refine_window(track, *rest))
    second = session.step(frames[1], return_probabilities=True)
    assert second.routes == {1: "reused"} and len(seen) == 1
    box, score = seen[0]
    assert box is not None and box == score_box(score[0, 0], last, 1, search=1)
    outside = _outside(box, score.shape[-2:], frames[0].shape[:2])
    background = float(soft_aggregate(torch.zeros(1, 1))[1])
    assert np.allclose(second.probabilities[1][outside], background, atol=1e-6)
    # With no search margin the paper's reused frame is refined over the whole frame, as before.
    seen.clear()
    session = Session(gated, SessionConfig("reuse", 0.0, compute_window=1, search_margin=0))
    monkeypatch.setattr(session, "_refine_window", lambda track, *rest: seen.append(track.box))
    session.step(frames[0], masks[0])
    assert session.step(frames[1]).routes == {1: "reused"} and seen == []


def test_target_model_refits_every_eighth_computed_frame(networks, blackswan):
    base, _ = networks
    frames, masks = blackswan
    session = Session(base)
    results = [session.step(f[::4, ::4].copy(), masks[0][::4, ::4].copy() if i == 0 else None)
               for i, f in enumerate(frames[:18])]
    assert [i for i, r in enumerate(results) if r.reoptimised] == [8, 16]
    assert all(r.reoptimised == [1] for r in (results[8], results[16]))
    assert all(r.routes == {1: "computed"} for r in results[1:])
