"""G-TTVOS: the paper's reuse gate, delta generator and translator on TTVOS. At tau = 1 it is TTVOS bit for bit; a
reused frame is the modules run by hand (template matching on the last computed estimate, the translated short-term
feature, long-term matching and the decoder) and leaves the memory alone; every variant runs; `train-gate` trains it
on a TTVOS checkpoint and keeps TTVOS frozen.

The weights are random (seeded): what is tested is the arithmetic and the plumbing, not the masks.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from reusevos.config import VARIANTS, ModelConfig, SessionConfig
from reusevos.model.backbone import Backbone, images_to_tensor
from reusevos.model.merge import soft_aggregate
from reusevos.model.network import VOSNetwork, load_model, save_checkpoint
from reusevos.session import Route, Session
from reusevos.synthetic import SyntheticConfig, generate_clip

from conftest import one_error


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A random TTVOS checkpoint and a G-TTVOS one on the same TTVOS tensors: {"ttvos": path, "g-ttvos": path}."""
    folder = tmp_path_factory.mktemp("g-ttvos")
    torch.manual_seed(3)
    ttvos = VOSNetwork(ModelConfig(base="ttvos"), Backbone("mobilenet_v2"))
    gated = VOSNetwork(ModelConfig(base="ttvos", reuse_gate=True), ttvos.backbone)
    gated.ttvos.load_state_dict(ttvos.ttvos.state_dict())
    paths = {"ttvos": folder / "ttvos.pt", "g-ttvos": folder / "g-ttvos.pt"}
    save_checkpoint(paths["ttvos"], ttvos)
    save_checkpoint(paths["g-ttvos"], gated)
    return paths


def _load(path):
    network = load_model(path, fetch_backbone=False)
    network.backbone.runtime = "torch"
    return network


def _clip(num_frames=5, objects=2, late=1, seed=7):
    return list(generate_clip(SyntheticConfig(size=(96, 160), num_frames=num_frames, num_objects=objects,
                                              late_objects=late, seed=seed)))


def _run(network, options, clip, starts):
    session = Session(network, options)
    return session, [session.step(frame, starts.get(i), return_probabilities=True) for i, (frame, _) in enumerate(clip)]


def test_g_ttvos_at_tau_1_is_ttvos_bit_for_bit(weights):
    clip = _clip()
    starts = {0: clip[0][1], 2: clip[2][1]}
    _, plain = _run(_load(weights["ttvos"]), None, clip, starts)
    _, gated = _run(_load(weights["g-ttvos"]), SessionConfig("reuse", 1.0), clip, starts)
    for a, b in zip(plain, gated):
        assert np.array_equal(a.labels, b.labels)
        assert a.probabilities.keys() == b.probabilities.keys()
        assert all(np.array_equal(a.probabilities[k], b.probabilities[k]) for k in a.probabilities)
    assert all(set(r.routes.values()) == {Route.COMPUTED} for r in gated[1:])
    assert gated[1].gate_probability  # the gate ran and decided to compute


def test_a_reused_frame_is_the_modules_run_by_hand(weights):
    """One object, tau 0: frames 1 and 2 are reused. By hand: template of frame 0; D_t from f8 and the last computed
    estimate (the memory's newest mask at stride 8); Delta_t; R_hat = translator(R_0, Delta_t) with R_0 the start
    frame's short-term feature; long-term matching and the decoder from the unchanged memory."""
    network = _load(weights["g-ttvos"])
    clip = _clip(num_frames=3, objects=1, late=0, seed=2)
    session, results = _run(network, SessionConfig("reuse", 0.0), clip, {0: clip[0][1]})
    assert [r.routes for r in results[1:]] == [{1: Route.REUSED}] * 2
    for result in results[1:]:  # neither the backbone past stride 8 nor short-term matching ran
        assert {"backbone_f8_to_f32", "short_term", "memory_update"}.isdisjoint(result.stage_seconds)
        assert {"template_match", "gate", "delta", "translator", "long_term", "decoder"} <= set(result.stage_seconds)
    model = network.ttvos
    with torch.no_grad():
        f4, f8, f16, f32 = network.backbone(images_to_tensor(clip[0][0]))
        given = torch.from_numpy((clip[0][1] == 1).astype(np.float32))[None, None]
        memory = model.start(f8, model.frame_feature(f16, f32), given)
        state = model.short_term_feature(memory, model.frame_feature(f16, f32))
        template = network.matcher.template(f8, given)
        for i in (1, 2):
            f4, f8, _, _ = network.backbone(images_to_tensor(clip[i][0]))
            change = network.matcher(template, f8, memory.masks8[:, :1])
            assert network.gate(change).item() == pytest.approx(results[i].gate_probability[1], abs=1e-6)
            delta = network.delta(change, memory.feature16.shape[-2:])
            out = model.decode(memory, network.translator(state, delta), f4, f8, clip[i][0].shape[:2])
            expected = soft_aggregate(torch.sigmoid(out.logits[:, 0]))[1].numpy()  # merged with the background
            assert np.allclose(results[i].probabilities[1], expected, atol=1e-5), f"frame {i}"
    kept = session.objects[1].memory  # reused frames leave the memory as the start frame left it
    assert torch.equal(kept.template, memory.template) and torch.equal(kept.masks8, memory.masks8)


def test_a_reuse_window_keeps_the_last_output_outside_its_box(weights):
    """With a reuse window, a reused object's output outside the box around its last output (grown by the margin, in
    stride-16 cells) is that last output; inside it equals the whole-frame reuse path's."""
    network = _load(weights["g-ttvos"])
    clip = list(generate_clip(SyntheticConfig(size=(128, 192), num_frames=2, num_objects=1, seed=3)))
    first = np.zeros((128, 192), np.uint8)
    first[16:48, 32:64] = 1  # cells 1-2 x 2-3 of the 8 x 12 stride-16 grid: the box grown by 1 is rows 0-3, cols 1-4
    outputs = {}
    for margin in (0, 1):
        _, results = _run(network, SessionConfig("reuse", 0.0, reuse_window=margin), clip, {0: first})
        assert results[1].routes == {1: Route.REUSED}
        outputs[margin] = results[0].probabilities[1], results[1].probabilities[1]
    (start, whole), (_, clipped) = outputs[0], outputs[1]
    inside = np.zeros_like(first, bool)
    inside[0:64, 16:80] = True
    assert np.allclose(clipped[inside], whole[inside], atol=1e-6)
    assert np.allclose(clipped[~inside], start[~inside], atol=1e-6)
    assert np.abs(whole[~inside] - start[~inside]).max() > 1e-3  # random weights: the window changed something


def test_g_ttvos_runs_every_variant(weights):
    network = _load(weights["g-ttvos"])
    clip = _clip(num_frames=4)
    truth = [labels for _, labels in clip]
    starts = {0: clip[0][1], 2: clip[2][1]}
    expected = {"full": Route.COMPUTED, "reuse": Route.REUSED, "copy": Route.COPIED, "fusion": Route.COPIED,
                "oracle": Route.REUSED, "motion": Route.MOVED}
    for variant in VARIANTS:
        if variant == "flow":
            continue  # its gate decides from the image: covered by the flow tests
        options = SessionConfig(variant, 1.0 if variant == "full" else 0.0,
                                tau2=1e-6 if variant == "fusion" else None)  # fusion: copy above 1e-6
        session = Session(network, options, ground_truth=truth if variant == "oracle" else None)
        results = [session.step(frame, starts.get(i)) for i, (frame, _) in enumerate(clip)]
        assert results[3].routes == {1: expected[variant], 2: expected[variant]}, variant
        assert session.options.compute_window == 2 and session.options.reuse_window == 0


# -- training ---------------------------------------------------------------------------------------------------------
GATE_ARGS = ["--split", "train", "--synthetic", "1", "--synthetic-frames", "4", "--batch", "2", "--crop", "64",
             "--snippet", "3", "--checkpoint-every", "1", "--threads", "1"]


def _train_gate(base, root, out, cache, iterations, *extra):
    cmd = [sys.executable, "-m", "reusevos", "train-gate", "--base", str(base), "--davis", str(root), "--out", str(out),
           "--cache", str(cache), "--iterations", str(iterations), *GATE_ARGS, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_train_gate_on_ttvos_keeps_ttvos_frozen(weights, tiny_davis, tmp_path):
    out = tmp_path / "gate"
    result = _train_gate(weights["ttvos"], tiny_davis, out, tmp_path / "cache", 3, "--snapshot-every", "2")
    assert result.returncode == 0, result.stderr
    assert "gate initialised" in result.stdout
    again = _train_gate(weights["ttvos"], tiny_davis, out, tmp_path / "cache", 5, "--snapshot-every", "2")
    assert again.returncode == 0 and "at iteration 3" in again.stdout, again.stderr
    trained, base = _load(out / "dynamic.pt"), _load(weights["ttvos"])
    assert trained.base == "ttvos" and trained.has_gate
    frozen = zip(trained.ttvos.state_dict().values(), base.ttvos.state_dict().values())
    assert all(torch.equal(a, b.half().float()) for a, b in frozen)  # unchanged (dynamic.pt is stored in float16)
    snapshots = sorted(p.name for p in (out / "snapshots").iterdir())
    assert snapshots == ["dynamic-000002.pt", "dynamic-000004.pt"]
    assert _load(out / "snapshots" / "dynamic-000002.pt").has_gate
    logged = json.loads((out / "log.jsonl").read_text().splitlines()[-1])  # every 5 iterations
    assert logged["iteration"] == 5 and {"bce", "delta", "gate", "reuse", "p_gate", "iou"} <= set(logged)
    warm = _train_gate(weights["ttvos"], tiny_davis, tmp_path / "warm", tmp_path / "cache", 2,
                       "--pretrain-iterations", "2")
    one_error(warm, "--pretrain-iterations", "G-TTVOS trains without it")


def test_the_ttvos_trainer_selects_memories_per_row():
    from reusevos.model.ttvos import TTVOSMemory
    from reusevos.train.dynamic import _rows_where

    a = TTVOSMemory(torch.ones(2, 4, 4), torch.ones(2, 3, 2, 2), torch.ones(2, 3, 1, 1), torch.ones(2, 5, 1, 1))
    b = TTVOSMemory(*(torch.zeros_like(t) for t in a._tensors()))
    mixed = _rows_where(torch.tensor([True, False]), a, b)
    assert all(t[0].eq(1).all() and t[1].eq(0).all() for t in mixed._tensors())

