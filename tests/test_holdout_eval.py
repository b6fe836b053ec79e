"""scripts/holdout_eval.py's ground-truth memory: a diagnostic whose numbers are in docs/accuracy.md, so it must do
what it says (the target models learn from the ground truth, the windows follow the outputs)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

import reusevos
from reusevos.config import SessionConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from holdout_eval import oracle_stepper  # noqa: E402


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
