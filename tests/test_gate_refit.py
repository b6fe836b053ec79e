"""The gate refit on full frames: the pairs are what the gate sees at inference, the fit learns, the report
is right on hand-computed cases, and the command writes a model whose only change is the gate."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from reusevos.config import GateRefitConfig, ModelConfig, SessionConfig
from reusevos.model.gate import Gate
from reusevos.model.network import VOSNetwork, save_checkpoint
from reusevos.session import Session
from reusevos.synthetic import SyntheticConfig, generate_clip, write_clip
from reusevos.train.gate_refit import fit_gate, gate_quality, sequence_pairs


@pytest.fixture(scope="module")
def gated(backbone):
    torch.manual_seed(3)
    return VOSNetwork(ModelConfig(reuse_gate=True), backbone).eval()


def test_pairs_are_the_gates_input_and_the_ground_truth_iou(gated):
    clip = list(generate_clip(SyntheticConfig(size=(64, 96), num_frames=6, num_objects=1, speed=3.0, seed=2)))
    frames = [f for f, _ in clip]
    truth = [m for _, m in clip]
    pairs = sequence_pairs(gated, frames, truth, gaps=(1, 2, 4))
    expected = [(t, k) for t in range(1, 6) for k in (1, 2, 4) if t - k >= 0]
    assert pairs["pooled"].shape == (len(expected), 64, 7, 7) and pairs["pooled"].dtype == torch.float16
    assert list(zip(pairs["frame"].tolist(), pairs["gap"].tolist())) == expected
    for (t, k), iou in zip(expected, pairs["iou"].tolist()):
        a, b = truth[t] > 0, truth[t - k] > 0
        assert iou == pytest.approx(np.logical_and(a, b).sum() / np.logical_or(a, b).sum())
    # At tau = 1 the session's gate sees D_t from the previous frame's score: the gap-1 pairs give its P_gate.
    session = Session(gated, SessionConfig("reuse", 1.0))
    seen = [session.step(f, truth[0] if i == 0 else None).gate_probability for i, f in enumerate(frames)]
    gap1 = pairs["gap"] == 1
    with torch.no_grad():
        from_pairs = torch.sigmoid(gated.gate.logits(pairs["pooled"][gap1].float()))
    np.testing.assert_allclose(from_pairs.numpy(), [p[1] for p in seen[1:]], atol=2e-3)


def test_fit_learns_a_learnable_target_and_leaves_the_given_gate_alone():
    torch.manual_seed(0)
    pooled = torch.randn(768, 64, 7, 7)
    iou = torch.sigmoid(2 * pooled[:, 0].mean(dim=(1, 2)) * 7)  # a function of one channel's mean
    pairs = {"pooled": pooled.half(), "iou": iou, "gap": torch.ones(768, dtype=torch.long)}
    gate = Gate().eval()
    before = {k: v.clone() for k, v in gate.state_dict().items()}
    fitted = fit_gate(gate, pairs, GateRefitConfig(epochs=40))
    assert all(torch.equal(before[k], v) for k, v in gate.state_dict().items())
    start, end = gate_quality(gate, pairs, (0.7,)), gate_quality(fitted, pairs, (0.7,))
    assert end["mse"] < 0.3 * start["mse"] and end["pearson"] > 0.9, (start, end)


def test_quality_on_hand_computed_cases():
    gate = Gate().eval()
    for module in (gate.conv1, gate.conv2):
        torch.nn.init.zeros_(module.weight)
        torch.nn.init.zeros_(module.bias)
    torch.nn.init.zeros_(gate.norm.bias)
    gate.conv2.bias.data.fill_(float(torch.logit(torch.tensor(0.8))))  # P_gate = 0.8 everywhere
    pairs = {"pooled": torch.randn(4, 64, 7, 7), "iou": torch.tensor([0.95, 0.75, 0.6, 0.3]),
             "gap": torch.tensor([1, 1, 2, 3])}
    q = gate_quality(gate, pairs, (0.9, 0.7, 0.5))
    assert q["pairs"] == 4 and q["pearson"] is None
    assert q["mse"] == pytest.approx((0.15 ** 2 + 0.05 ** 2 + 0.2 ** 2 + 0.5 ** 2) / 4, abs=1e-4)
    assert q["p_gate_mean"] == pytest.approx(0.8) and q["iou_mean"] == pytest.approx(0.65)
    assert q["tau=0.9"] == {"reused": 0.0, "reused_gap1": 0.0, "oracle_reused": 0.25, "reused_below_tau": 0.0}
    assert q["tau=0.7"] == {"reused": 1.0, "reused_gap1": 1.0, "oracle_reused": 0.5, "reused_below_tau": 0.5}
    assert q["tau=0.5"] == {"reused": 1.0, "reused_gap1": 1.0, "oracle_reused": 0.75, "reused_below_tau": 0.25}


def _refit(*args):
    return subprocess.run([sys.executable, "-m", "reusevos", "refit-gate", *args, "--threads", "1"],
                          capture_output=True, text=True, timeout=600)


def test_refit_command_changes_only_the_gate_and_resumes(gated, tmp_path):
    root = tmp_path / "davis"
    for i in range(3):
        write_clip(root, f"clip{i}", SyntheticConfig(size=(64, 96), num_frames=5, num_objects=1, speed=2.0, seed=i),
                   split="train")
    weights = tmp_path / "gated.pt"
    save_checkpoint(weights, gated, half=True)
    out = tmp_path / "refit"
    write_clip(root, "other", SyntheticConfig(size=(64, 96), num_frames=4, num_objects=1, seed=9), split="val")
    args = ["--weights", str(weights), "--davis", str(root), "--out", str(out), "--epochs", "3", "--gaps", "1,2",
            "--holdout-every", "3"]
    first = _refit(*args, "--measure-on", "val")
    assert first.returncode == 0, first.stderr
    assert [p.name for p in (out / "pairs-val").iterdir()] == ["other.pt"]
    assert sorted(p.name for p in (out / "pairs").iterdir()) == ["clip0.pt", "clip1.pt", "clip2.pt"]
    report = json.loads((out / "refit.json").read_text())
    assert report["holdout"]["sequences"] == ["clip0"]
    assert report["holdout"]["before"]["pairs"] == report["holdout"]["after"]["pairs"] == 4 + 3
    assert report["measured_on"]["split"] == "val" and report["measured_on"]["after"]["pairs"] == 1 + 2 + 2
    assert "other" not in report["sequences"]
    old = torch.load(weights, weights_only=True)["state_dict"]
    new = torch.load(out / "dynamic.pt", weights_only=True)
    assert new["meta"]["gate_refit"]["config"]["epochs"] == 3
    changed = {k for k in old if not torch.equal(old[k], new["state_dict"][k])}
    assert changed and all(k.startswith("gate.") for k in changed)

    again = _refit(*args)  # the pairs are kept: nothing is collected again
    assert again.returncode == 0 and "pairs clip" not in again.stdout, again.stdout

    refused = _refit("--weights", str(weights), "--davis", str(root), "--out", str(tmp_path / "v"), "--split", "val")
    assert refused.returncode != 0 and "refusing to fit the gate on the val split" in refused.stderr
    assert "Traceback" not in refused.stderr
    bad_gaps = _refit(*args[:-4], "--gaps", "1,0")
    assert bad_gaps.returncode != 0 and "--gaps: 0 must be at least 1" in bad_gaps.stderr
