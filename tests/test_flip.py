"""Test-time horizontal flip (SessionConfig.flip): each frame's output is the mean of the probabilities of two
trackers, one on the video and one on its mirror image, and each keeps that mean for later frames; the same with the
lookahead (frames in order, each once); a mirrored video gives the mirrored masks exactly; the settings and flags
that name it."""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import pytest
import torch

from reusevos.bench.settings import parse_setting
from reusevos.config import SessionConfig
from reusevos.errors import ReusevosError
from reusevos.model.merge import label_slots
from reusevos.synthetic import SyntheticConfig, generate_clip


def _clip(num_objects: int = 2, frames: int = 8):
    return list(generate_clip(SyntheticConfig(size=(96, 128), num_frames=frames, num_objects=num_objects, speed=3.0,
                                              seed=4)))


def _run(session, clip, mirror: bool = False) -> list:
    """Every result of ``session`` on ``clip`` (its mirror image with ``mirror``), via push and finish."""
    results = []
    for t, (frame, mask) in enumerate(clip):
        if mirror:
            frame, mask = frame[:, ::-1], mask[:, ::-1]
        results += session.push(np.ascontiguousarray(frame), mask if t == 0 else None, return_probabilities=True)
    return results + session.finish()


@pytest.mark.parametrize("options", [SessionConfig("full", 1.0, compute_window=2),
                                     SessionConfig("flow", 0.3, flow_max_gap=3, lookahead=True)],
                         ids=["full+c2", "flow+la"])
def test_the_output_is_the_mean_of_two_trackers_that_keep_the_mean(options, monkeypatch):
    """Each frame is the mean of the two trackers' outputs, and what each tracker keeps of a frame (the target
    model's samples, the windows' last output) is the mean of what the two merged on it, the mirrored tracker's
    mirrored; so the trackers differ from independent ones. The flow anchors stay each tracker's own output."""
    import reusevos
    from reusevos.session import Session

    model = reusevos.load_model(device="cpu")  # the shipped model: random weights' outputs hardly depend on memory
    clip = _clip(frames=12)  # past the first refit of the target models (every 8 computed frames)
    fused_inputs, kept = [], []
    fuse, commit = Session._fuse, Session._commit

    def spy_fuse(self, ours, mirrored, asked):  # each tracker hands frames back in order; the fusion edits ours
        fused_inputs.extend((a.index, b.index, dict(a.probabilities), b.probabilities) for a, b in zip(ours, mirrored))
        return fuse(self, ours, mirrored, asked)

    def spy_commit(self, stepped, memory=None):
        kept.append((self, stepped, memory))
        return commit(self, stepped, memory)

    monkeypatch.setattr(Session, "_fuse", spy_fuse)
    monkeypatch.setattr(Session, "_commit", spy_commit)
    session = reusevos.Session(model, replace(options, flip=True))
    flipped = _run(session, clip)
    monkeypatch.undo()
    assert [r.index for r in flipped] == list(range(len(clip)))  # in order, each once
    for (index, twin_index, a, b), fused in zip(fused_inputs, flipped):
        assert index == twin_index == fused.index
        ids = sorted(a)
        assert sorted(fused.probabilities) == ids == [1, 2]
        mean = {i: (a[i] + b[i][:, ::-1]) / 2 for i in ids}
        for i in ids:
            assert np.allclose(fused.probabilities[i], mean[i], atol=1e-6)
        stacked = torch.from_numpy(np.stack([mean[i] for i in ids]))
        labels = np.array([0, *ids], np.uint8)[label_slots(torch.cat([1 - stacked.sum(0, keepdim=True), stacked]))]
        assert np.array_equal(fused.labels, labels)
    assert np.array_equal(flipped[0].labels, clip[0][1])  # the start frame is its mask
    assert len(kept) == 2 * len(clip)
    for (ours, mine, memory), (twin, theirs, mirrored) in zip(kept[::2], kept[1::2]):
        assert ours is session and twin is session._twin
        assert sorted(memory) == sorted(mirrored) == [1, 2]
        for i in memory:
            view = [s.soft[i] if i in s.soft else s.probs[i] for s in (mine, theirs)]
            assert torch.allclose(memory[i], (view[0] + view[1].flip(-1)) / 2, atol=1e-6)
            assert torch.equal(mirrored[i], memory[i].flip(-1))
    for i in (1, 2):  # the last output kept by both trackers is the mean, each the right way round
        assert torch.equal(session._twin.objects[i].prob_prev, session.objects[i].prob_prev.flip(-1))
    if options.variant == "flow":  # each tracker's anchor is its own output on the object's last computed frame
        for tracker, commits in ((session, kept[::2]), (session._twin, kept[1::2])):
            for i in (1, 2):
                anchor = tracker.objects[i].anchor
                stepped = commits[anchor.frame][1]  # one commit per frame
                assert i in stepped.new_ids or i in [t.obj.object_id for t in stepped.computed]
                assert np.array_equal(anchor.prob, stepped.soft[i].float().numpy())
    plain = _run(reusevos.Session(model, options), clip)
    mirrored_run = _run(reusevos.Session(model, options), clip, mirror=True)
    independent = [{i: (a.probabilities[i] + b.probabilities[i][:, ::-1]) / 2 for i in (1, 2)}
                   for a, b in zip(plain, mirrored_run)]
    differ = [not all(np.allclose(f.probabilities[i], m[i], atol=1e-5) for i in (1, 2))
              for f, m in zip(flipped, independent)]
    assert not differ[0] and any(differ), differ  # the start frame as independent trackers; later frames not


def test_a_mirrored_video_gives_the_mirrored_masks(weights):
    import reusevos

    model = reusevos.load_model(weights["base"], device="cpu")
    clip = _clip(frames=6)
    options = SessionConfig("full", 1.0, compute_window=2, flip=True)
    ours = _run(reusevos.Session(model, options), clip)
    theirs = _run(reusevos.Session(model, options), clip, mirror=True)
    for a, b in zip(ours, theirs):
        assert np.array_equal(a.labels, b.labels[:, ::-1]), a.index


def test_step_and_asked_probabilities(weights):
    import reusevos

    model = reusevos.load_model(weights["base"], device="cpu")
    clip = _clip(frames=3)
    session = reusevos.Session(model, SessionConfig("full", 1.0, flip=True))
    first = session.step(*clip[0])
    second = session.step(clip[1][0], return_probabilities=True)
    assert first.index == 0 and first.probabilities is None
    assert second.index == 1 and sorted(second.probabilities) == [1, 2]
    assert session.reuse_rates == {1: 0.0, 2: 0.0}


def test_flip_is_named_by_settings_and_flags_and_refused_with_the_oracle(monkeypatch):
    from reusevos.cli.common import add_session_flags, session_options
    from reusevos.model import onnx_backbone

    # named whether or not this machine has OpenVINO or a CPU with bfloat16
    monkeypatch.setattr(onnx_backbone, "openvino_available", lambda: True)
    monkeypatch.setattr(onnx_backbone, "openvino_cpu", lambda: ("a CPU with bfloat16", ("BF16", "FP32")))
    setting = parse_setting("full+c2+flip+ovbf16")
    assert setting.key == "full+c2+flip+ovbf16" and setting.runtime == "openvino-bf16"
    assert setting.options() == SessionConfig("full", 1.0, compute_window=2, flip=True, search_margin=0)
    assert parse_setting("flow@0.75+g2+la+mf+c2+flip").options().flip
    assert not parse_setting("full+c2").options().flip
    parser = argparse.ArgumentParser()
    add_session_flags(parser)
    assert session_options(parser.parse_args(["--variant", "full", "--flip"])).flip
    assert session_options(parser.parse_args(["--flip"])).lookahead  # the offline default loop, flipped
    with pytest.raises(ReusevosError, match="flip cannot run with the oracle variant"):
        SessionConfig("oracle", 0.5, flip=True).validate()
    with pytest.raises(ReusevosError, match="flip must be True or False"):
        SessionConfig("full", 1.0, flip="yes").validate()


def test_an_object_that_starts_late_and_a_correction_reach_both_trackers(weights):
    import reusevos

    model = reusevos.load_model(weights["base"], device="cpu")
    clip = _clip(frames=6)
    first, late = (np.where(clip[0][1] == 1, 1, 0).astype(np.uint8), np.where(clip[3][1] == 2, 2, 0).astype(np.uint8))
    session = reusevos.Session(model, SessionConfig("full", 1.0, compute_window=2, flip=True))
    results = [session.step(frame, {0: first, 3: late}.get(t), return_probabilities=True)
               for t, (frame, _) in enumerate(clip[:5])]
    assert [sorted(r.probabilities) for r in results] == [[1], [1], [1], [1, 2], [1, 2]]
    assert np.array_equal(results[3].labels == 2, late == 2) and results[3].started == [2]
    fixed = session.step(clip[5][0], clip[5][1], reset=True)  # both objects start again from this mask
    assert np.array_equal(fixed.labels, clip[5][1]) and sorted(fixed.started) == [1, 2]
