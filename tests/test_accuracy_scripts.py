"""The accuracy work's scripts whose numbers docs/accuracy.md reports: holdout_eval.py's ground-truth memory (the
target models learn from the ground truth, the windows follow the outputs), thin_structure_ceiling.py's opening and
sequence_decay.py's reading of a benchmark log."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

import reusevos
from reusevos.config import SessionConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from holdout_eval import oracle_stepper  # noqa: E402
from sequence_decay import load  # noqa: E402
from thin_structure_ceiling import without_thin_parts  # noqa: E402


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
