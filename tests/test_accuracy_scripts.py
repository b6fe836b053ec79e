"""The accuracy work's scripts whose numbers docs/accuracy.md reports: holdout_eval.py's ground-truth memory (the
target models learn from the ground truth, the windows follow the outputs), thin_structure_ceiling.py's opening,
sequence_decay.py's reading of a benchmark log, and the probes of the strings (thin_lines_probe.py's line test,
extension and carried thin parts, string_head_probe.py's drawn strings and the strings that follow an object)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

import reusevos
from reusevos.config import SessionConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from holdout_eval import oracle_stepper  # noqa: E402
from sequence_decay import load  # noqa: E402
from string_head_probe import FollowingStrings, draw_strings  # noqa: E402
from thin_lines_probe import extended, line_strength, run_variant, widened  # noqa: E402
from thin_structure_ceiling import without_thin_parts  # noqa: E402


def _scene() -> tuple[np.ndarray, np.ndarray]:
    """A grey 80x120 frame with a dark 20 px block (the object), a 2 px dark line out of it, a 2 px dark line that
    touches nothing and a step edge (bright right third); the object's mask (the block only)."""
    rgb = np.full((80, 120, 3), 150, np.uint8)
    rgb[:, 80:] = 230  # a step edge at x = 80
    rgb[30:50, 10:30] = 40  # the object
    rgb[39:41, 30:70] = 40  # its string, out to x = 70
    rgb[5:7, 20:70] = 40  # a loose line, far from the object
    mask = np.zeros((80, 120), bool)
    mask[30:50, 10:30] = True
    return rgb, mask


def test_oracle_memory_teaches_the_ground_truth_and_keeps_the_outputs_for_the_windows(blackswan):
    frames, masks = blackswan
    frames, truth = np.stack(frames[:3]), np.stack([(m > 0).astype(np.uint8) for m in masks[:3]])
    truth[2] = 0
    truth[2, 100:300, 200:500] = 1  # a "ground truth" the network would never output: a box
    model = reusevos.load_model(None, device="cpu")
    session = reusevos.Session(model, SessionConfig("full", compute_window=2))
    step = oracle_stepper(session, truth)
    labels = [step(f, truth[0] if t == 0 else None) for t, f in enumerate(frames)]
    obj = session.objects[1]
    memory = obj.target.memory
    taught, _ = obj.target.prepare_labels(torch.from_numpy(truth[2]).float()[None, None])
    assert torch.allclose(memory.labels[memory.count - 1], taught[0].to(memory.labels.dtype))  # the box, not the output
    own = torch.as_tensor(obj.prob_prev).float()
    assert np.array_equal((own > 0.5).numpy().astype(np.uint8), labels[2])  # the window follows the frame's own output
    assert not np.array_equal(labels[2], truth[2])


def test_thin_parts_go_and_the_rest_stays():
    labels = np.zeros((1, 40, 60), np.uint8)
    labels[0, 10:30, 5:25] = 1  # a 20 px block
    labels[0, 19:21, 25:55] = 1  # a 2 px line out of it
    labels[0, 30:38, 40:58] = 2  # another object, 8 px thick
    labels[0, 0, :] = 255  # void stays out of every object
    out = without_thin_parts(labels, 5)
    assert (out[0, 19:21, 30:55] == 0).all()  # the line is gone
    assert (out[0, 12:28, 7:23] == 1).all() and (out[0, 32:36, 42:56] == 2).all()  # the block and the object stay
    assert (out[0, 0] == 0).all()
    assert np.array_equal(without_thin_parts(labels, 1)[labels != 255], labels[labels != 255])  # a 1 px disc: nothing


def test_sequence_decay_reads_per_frame_scores_and_keeps_the_last_run(tmp_path):
    def line(sequence, j):
        return json.dumps({"result": {"sequence": sequence, "setting": "full+c2", "frames": len(j) + 2,
                                      "resolution": [48, 64], "time_s": 1.0, "init_s": 0.1, "stages_s": {},
                                      "kinds": {}, "object_frames": {},
                                      "objects": {"1": {"started": True, "tracked": 9, "reused": 0, "j": j, "f": j}}}})
    log = tmp_path / "run.partial.jsonl"
    log.write_text("\n".join([line("a", [0.5] * 8), line("a", [1.0] * 4 + [0.6] * 4), line("b", [0.9] * 8)]) + "\n")
    runs = load(str(log))
    assert list(runs) == ["full+c2"] and sorted(runs["full+c2"]) == ["a", "b"]
    (a,) = runs["full+c2"]["a"]  # the resumed run's line replaced the first
    assert np.allclose(a.j, [1.0] * 4 + [0.6] * 4) and len(a.frame_ids) == 8


def test_the_line_test_passes_lines_and_fails_step_edges():
    rgb, _ = _scene()
    strength = line_strength(rgb)
    assert strength[39:41, 40:60].min() > 40  # the string: darker than both sides by ~110 (blurred)
    assert strength[5:7, 30:60].min() > 40
    assert strength[20:60, 77:84].max() < 12  # a step edge is darker on one side only
    assert strength[60:75, 35:70].max() == 0  # flat grey


def test_the_extension_adds_the_string_and_not_the_loose_line():
    rgb, mask = _scene()
    out = extended(mask, rgb, threshold=12)
    assert out[mask].all()
    assert out[39:41, 32:68].all()  # the string, connected to the mask
    assert not out[5:7].any()  # the loose line touches nothing
    assert not out[:, 75:].any()  # nor is the step edge a line
    corridor = np.zeros_like(mask)
    corridor[35:45, 30:50] = True  # only the string's first 20 px were thin parts on the last frame
    assert out[39:41, 55:68].any() and not extended(mask, rgb, 12, corridor_of=corridor)[39:41, 55:68].any()
    nothing_seen = np.zeros_like(mask)  # the base model's evidence nowhere
    assert np.array_equal(extended(mask, rgb, 12, evidence=nothing_seen), mask)


def test_drawn_strings_join_the_mask_and_loose_lines_do_not():
    rgb = np.full((160, 160, 3), 128, np.uint8)
    mask = np.zeros((160, 160), bool)
    mask[60:100, 60:100] = True
    seen_loose = seen_strings = 0
    for seed in range(20):
        out, strings, corridor = draw_strings(rgb, mask, np.random.default_rng(seed))
        assert strings[mask].all()  # the object stays
        drawn = (out != 128).any(axis=2)
        added = strings & ~mask
        assert not (added & ~drawn).any()  # every added pixel was drawn on
        assert corridor[added].mean() > 0.5 if added.any() else not corridor.any()  # drawn at most 3 px off
        loose = drawn & ~widened(strings, 2)  # drawn, and not a string's antialiased fringe
        assert not (loose & widened(mask, 9)).any()  # loose lines keep 10 px from the object
        seen_loose += loose.any()
        seen_strings += added.any()
    assert seen_loose > 5 and seen_strings > 5


def test_following_strings_stay_attached_and_loose_lines_keep_off():
    """Strings drawn before the base model runs: on every frame each string touches the object as it is there (the
    object moves 3 px a frame), the object's pixels stay, loose lines keep 8 px off it, and the same generator draws
    the same sequence; no strings where the object is gone."""
    frames, size = 6, (120, 200)
    truth = np.zeros((frames, *size), bool)
    for t in range(frames - 1):
        truth[t, 50:80, 60 + 3 * t:100 + 3 * t] = True  # the last frame: the object has left
    rgb = np.full((*size, 3), 128, np.uint8)
    seen_strings = seen_loose = 0
    for seed in range(12):
        strings = FollowingStrings(truth, np.random.default_rng(seed))
        again = FollowingStrings(truth, np.random.default_rng(seed))
        for t in range(frames):
            out, union = strings.draw(t, rgb, truth[t])
            assert np.array_equal(out, again.draw(t, rgb, truth[t])[0])
            assert union[truth[t]].all()
            added = union & ~truth[t]
            if not truth[t].any():
                assert not added.any()
            # every string component reaches the object (8-connected, the mask itself included)
            _, labels = cv2.connectedComponents(union.astype(np.uint8), connectivity=8)
            assert set(np.unique(labels[added])) <= set(np.unique(labels[truth[t]]))
            loose = (out != 128).any(axis=2) & ~widened(union, 2)
            assert not (loose & widened(truth[t], 7)).any()
            seen_strings += added.any()
            seen_loose += loose.any()
    assert seen_strings > 30 and seen_loose > 10


def test_carried_thin_parts_follow_a_moving_object():
    """A dark block moving 4 px a frame over a textured background, with a 2 px line out of it that the base model
    misses (its masks: the block only): ``carried`` moves the start mask's line along with the block."""
    rng = np.random.default_rng(0)
    background = cv2.GaussianBlur(rng.integers(60, 200, (120, 200, 3)).astype(np.uint8), (0, 0), 2)
    frames, truth = [], np.zeros((8, 120, 200), bool)
    for t in range(8):
        frame, x = background.copy(), 40 + 4 * t
        frame[50:80, x:x + 30] = 30
        frame[64:66, x + 30:x + 80] = 40
        truth[t, 50:80, x:x + 30] = truth[t, 64:66, x + 30:x + 80] = True
        frames.append(frame)
    probs = (without_thin_parts(truth.astype(np.uint8), 5) > 0).astype(np.float32)  # the base model: the block
    out = run_variant("carried", probs, frames, truth[0])
    line = truth & (probs < 0.5)
    assert (out & line)[1:].sum() / line[1:].sum() > 0.85  # the line, carried along
    assert (out & ~truth).sum() < 0.05 * line.sum()
    still = run_variant("carried", probs, [background] * 8, truth[0])  # no motion seen: the line stays where it was
    assert (still[1:] & truth[0] & ~(probs[0] > 0.5)).sum() > 0.85 * 7 * line[0].sum()
