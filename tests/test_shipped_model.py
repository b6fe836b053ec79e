"""The weights shipped in the package, on clips they never saw: they segment, and their gate behaves."""

from __future__ import annotations

import numpy as np
import pytest

import reusevos
from reusevos.config import SessionConfig
from reusevos.synthetic import SyntheticConfig, generate_clip

SLOW_CLIP = SyntheticConfig(size=(240, 432), num_frames=24, num_objects=1, speed=1.0, seed=11, cutout_fraction=0.0)


@pytest.fixture(scope="module")
def shipped():
    return reusevos.load_model(device="cpu")


@pytest.fixture(scope="module")
def slow_clip():
    clip = generate_clip(SLOW_CLIP)
    frames, masks = zip(*clip)
    return list(frames), list(masks)


def _run(model, options, frames, masks):
    session = reusevos.Session(model, options)
    labels = [session.step(f, masks[0] if t == 0 else None).labels for t, f in enumerate(frames)]
    return session, labels


def _mean_iou(labels, masks) -> float:
    ious = [np.logical_and(a == 1, b == 1).sum() / np.logical_or(a == 1, b == 1).sum()
            for a, b in zip(labels[1:], masks[1:])]
    return float(np.mean(ious))


@pytest.mark.slow
def test_shipped_base_model_segments_a_slow_synthetic_clip(shipped, slow_clip):
    frames, masks = slow_clip
    _, labels = _run(shipped, SessionConfig("full", 1.0), frames, masks)
    assert _mean_iou(labels, masks) > 0.8  # measured 0.978 with the base model shipped at ca5e5ea


@pytest.mark.slow
def test_reuse_rate_rises_as_tau_falls_on_a_slow_clip(shipped, slow_clip):
    if not shipped.has_gate:
        pytest.skip("the shipped weights have no trained reuse gate")
    frames, masks = slow_clip
    rates, ious = [], []
    for tau in (1.0, 0.9, 0.7, 0.5, 0.3):
        session, labels = _run(shipped, SessionConfig("reuse", tau), frames, masks)
        rates.append(session.reuse_rates[1])
        ious.append(_mean_iou(labels, masks))
    assert rates[0] == 0.0
    assert all(a <= b for a, b in zip(rates, rates[1:])), rates
    assert rates[-1] > rates[1] and rates[-1] >= 0.5, rates  # a slow clip is mostly reused at a low tau
    # Down to the default tau the masks stay the base model's (measured 0.920, 0.920, 0.913 at 4% reused); below it,
    # see the next test.
    assert min(ious[:3]) > 0.85, ious


# Measured with the default weights (EfficientNet-Lite0, session 18): mean IoU 0.567 at tau 0.5 (96% reused) and 0.41
# at tau 0.3, where the first reused frame, one frame after the computed one, already covers only 57% of the object
# (IoU 0.55): their reuse path shrinks the object; the previous default's keeps 0.976 at 96% reused. Not understood yet
# (MODEL_CARD, known limits); strict, so that a fix shows up here.
@pytest.mark.slow
@pytest.mark.parametrize("weights", [
    "frtm-mobilenet_v2",
    pytest.param("frtm", marks=pytest.mark.xfail(strict=True, reason="the default's reuse path shrinks a reused "
                                                                        "object (IoU 0.567 at tau 0.5)")),
])
def test_reused_frames_keep_a_slow_clips_object(weights, slow_clip):
    model = reusevos.load_model(weights, device="cpu")
    frames, masks = slow_clip
    for tau in (0.5, 0.3):
        session, labels = _run(model, SessionConfig("reuse", tau), frames, masks)
        assert session.reuse_rates[1] >= 0.5
        assert _mean_iou(labels, masks) > 0.9, (tau, _mean_iou(labels, masks))  # previous default: 0.976, 0.976


@pytest.mark.slow
def test_motion_variant_moves_most_frames_of_a_slow_clip_and_stays_near_the_full_path(shipped, slow_clip):
    if not shipped.has_gate:
        pytest.skip("the shipped weights have no trained reuse gate")
    frames, masks = slow_clip
    _, full = _run(shipped, SessionConfig("full", 1.0), frames, masks)
    session, exact = _run(shipped, SessionConfig("motion", 1.0), frames, masks)
    assert all(np.array_equal(a, b) for a, b in zip(full, exact))  # tau = 1 is the base model exactly
    session, moved = _run(shipped, SessionConfig("motion", 0.5), frames, masks)
    assert session.reuse_rates[1] >= 0.5
    assert session.objects[1].routes["moved"] == round(session.reuse_rates[1] * (len(frames) - 1))
    assert _mean_iou(moved, masks) > _mean_iou(full, masks) - 0.05  # stated bound: within 5 IoU points


# -- the FRTM default before issue 17, shipped under a name of its own ---------------------------------------------
@pytest.mark.slow
def test_the_previous_default_loads_by_name_and_segments(slow_clip):
    previous = reusevos.load_model("frtm-mobilenet_v2", device="cpu")
    assert previous.base == "frtm" and previous.has_gate and previous.backbone.name == "mobilenet_v2"
    assert previous.meta["name"] == "dynamic-mobilenet_v2-davis16train-syn60-warmup3000-800it-refit60ep"
    frames, masks = slow_clip
    _, labels = _run(previous, SessionConfig("full", 1.0), frames, masks)
    assert _mean_iou(labels, masks) > 0.8  # measured 0.978 when it was the default


# -- the TTVOS weights shipped beside the default (G-TTVOS: TTVOS with the reuse gate) ---------------------------------
@pytest.fixture(scope="module")
def shipped_ttvos():
    return reusevos.load_model("ttvos", device="cpu")


@pytest.mark.slow
def test_shipped_ttvos_segments_a_slow_clip_and_tau_1_is_ttvos(shipped_ttvos, slow_clip):
    assert shipped_ttvos.base == "ttvos" and shipped_ttvos.has_gate
    frames, masks = slow_clip
    session, full = _run(shipped_ttvos, None, frames, masks)
    assert (session.options.variant, session.options.compute_window) == ("full", 2)  # TTVOS's default
    assert _mean_iou(full, masks) > 0.9  # measured 0.985 with the weights shipped in session 11
    _, exact = _run(shipped_ttvos, SessionConfig("reuse", 1.0), frames, masks)
    assert all(np.array_equal(a, b) for a, b in zip(full, exact))  # the gate never opens at tau 1: TTVOS exactly
    session, moved = _run(shipped_ttvos, SessionConfig("flow", 0.92), frames, masks)
    assert session.reuse_rates[1] >= 0.5  # measured 0.70
    assert _mean_iou(moved, masks) > _mean_iou(full, masks) - 0.05  # measured 0.982


@pytest.mark.slow
def test_shipped_g_ttvos_reuses_more_of_blackswan_as_tau_falls(shipped_ttvos, blackswan):
    """The first 15 frames of the real clip at 480p, with the windows (compute window 2 by default, reuse window 2):
    the refitted gate opens below tau 1, more at lower tau, and the masks stay near TTVOS's (measured: mean IoU 0.929
    at tau 1; tau 0.7: 57% reused, 0.917; tau 0.5: 86%, 0.908; without the reuse window 0.827 and 0.844; on slow
    synthetic clips the gate stays shut)."""
    frames, masks = blackswan
    frames, masks = frames[:15], [(m > 0).astype(np.uint8) for m in masks[:15]]
    rates, ious = [], []
    for tau in (1.0, 0.7, 0.5):
        session, labels = _run(shipped_ttvos, SessionConfig("reuse", tau, reuse_window=2), frames, masks)
        rates.append(session.reuse_rates[1])
        ious.append(_mean_iou(labels, masks))
    assert rates[0] == 0.0 and rates[1] >= 0.3 and rates[2] >= rates[1], rates
    assert ious[0] > 0.8 and min(ious[1:]) > ious[0] - 0.05, ious
