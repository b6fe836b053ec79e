"""TTVOS, the second base model: each module's shapes on real backbone features, the temporal consistency loss on
a hand-computed case, the switch between the models (checkpoints, load_model, Session, the command line) and a
tiny training run that resumes.

The weights here are random (seeded), so masks after the first frame mean nothing; what is tested is the
arithmetic of the modules and the plumbing.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from reusevos.config import ModelConfig, SessionConfig, TtvosConfig
from reusevos.errors import ReusevosError
from reusevos.io.masks import read_mask, write_mask
from reusevos.model.backbone import images_to_tensor
from reusevos.model.merge import soft_aggregate
from reusevos.model.network import SHIPPED, VOSNetwork, load_model, read_checkpoint, save_checkpoint
from reusevos.model.short_term import ShortTermMatcher
from reusevos.model.template_attention import TemplateAttention, coordinates
from reusevos.model.ttvos import TTVOS, TTVOSMemory
from reusevos.model.ttvos_decoder import TTVOSDecoder
from reusevos.session import Route, Session
from reusevos.synthetic import SyntheticConfig, generate_clip
from reusevos.train.losses import temporal_consistency_loss

from conftest import FAST, one_error, run_segment

SIZE = (100, 170)  # odd sizes on purpose: MobileNetV2 rounds up at each stride (f4 25x43, f8 13x22, f16 7x11, f32 4x6)


@pytest.fixture(scope="module")
def features(backbone):
    """Real features of a synthetic frame: f4, f8, f16, f32 of one (100, 170) frame, and two objects' masks."""
    frame, labels = next(iter(generate_clip(SyntheticConfig(size=SIZE, num_frames=1, num_objects=2, seed=4))))
    with torch.no_grad():
        feats = backbone(images_to_tensor(frame))
    masks = torch.from_numpy(np.stack([labels == 1, labels == 2]).astype(np.float32))[:, None]
    return feats, masks


@pytest.fixture(scope="module")
def ttvos_weights(tmp_path_factory):
    """Random TTVOS and FRTM checkpoints: {"ttvos": path, "frtm": path}."""
    from reusevos.model.backbone import Backbone

    folder = tmp_path_factory.mktemp("ttvos-weights")
    torch.manual_seed(0)
    paths = {"ttvos": folder / "ttvos.pt", "frtm": folder / "frtm.pt"}
    save_checkpoint(paths["ttvos"], VOSNetwork(ModelConfig(base="ttvos"), Backbone("mobilenet_v2")),
                    meta={"name": "random-ttvos"})
    save_checkpoint(paths["frtm"], VOSNetwork(ModelConfig(), Backbone("mobilenet_v2")), meta={"name": "random-frtm"})
    return paths


# -- the modules ----------------------------------------------------------------------------------------------------
def test_module_shapes_on_real_features(features):
    (f4, f8, f16, f32), masks = features
    assert [tuple(f.shape[-2:]) for f in (f4, f8, f16, f32)] == [(25, 43), (13, 22), (7, 11), (4, 6)]
    torch.manual_seed(0)
    config = TtvosConfig()
    model = TTVOS((24, 32, 96, 320), config).eval()
    with torch.no_grad():
        x16 = model.frame_feature(f16, f32)
        assert x16.shape == (1, 128, 7, 11) and x16.min() >= 0  # after a ReLU

        short = ShortTermMatcher(128, 3, 64)(x16, x16.expand(2, -1, -1, -1), torch.rand(2, 3, 7, 11))
        assert short.shape == (2, 64, 7, 11)

        attention = TemplateAttention(32, 3, 64)
        masks8 = F.adaptive_avg_pool2d(masks, (13, 22)).expand(-1, 3, -1, -1)
        template = attention.template(f8, masks8)
        assert template.shape == (2, 64, 64)
        assert torch.allclose(template.sum(-1), torch.ones(2, 64), atol=1e-5)  # a softmax per row
        long = attention(template, f8, masks8)
        assert long.shape == (2, 64, 13, 22)
        weight = attention.update_weight(torch.rand(2, 64, 13, 22))
        assert weight.shape == (2,) and ((weight > 0) & (weight < 1)).all()

        decoded = TTVOSDecoder(64, 64, 24)(short, long, f4, SIZE)
        assert decoded.logits.shape == (2, 1, *SIZE) and decoded.feature8.shape == (2, 64, 13, 22)

        memory = model.start(f8, x16, masks)
        assert memory.template.shape == (2, 64, 64) and memory.masks8.shape == (2, 3, 13, 22)
        assert memory.masks16.shape == (2, 3, 7, 11) and memory.feature16.shape == (2, 128, 7, 11)
        # every history slot starts as the given mask, averaged down
        assert torch.allclose(memory.masks8[:, 2], F.adaptive_avg_pool2d(masks, (13, 22))[:, 0])
        out = model(memory, f4, f8, x16, SIZE)
        assert out.logits.shape == (2, 1, *SIZE) and out.update_weight.shape == (2,)
        assert out.transition.shape == (2, 1, 13, 22) and out.transition.abs().max() < 1  # tanh

        estimates = torch.sigmoid(out.logits)
        after = model.remember(memory, out.update_weight, f8, x16, estimates)
        # the estimate is the newest history slot; the older ones move down by one
        assert torch.allclose(after.masks8[:, 0], F.adaptive_avg_pool2d(estimates, (13, 22))[:, 0])
        assert torch.equal(after.masks8[:, 1:], memory.masks8[:, :2])
        assert torch.equal(after.masks16[:, 1:], memory.masks16[:, :2])
        rows = after.rows()
        assert len(rows) == 2 and rows[1].template.shape == (1, 64, 64)
        assert torch.equal(TTVOSMemory.stack(rows).template, after.template)


def test_template_update_and_coordinates_by_hand():
    old, new = torch.zeros(2, 64, 64), torch.ones(2, 64, 64)
    blended = TemplateAttention.update(old, new, torch.tensor([1.0, 0.25]))
    # (T + w T_new) / (1 + w): w = 1 -> 1/2; w = 0.25 -> 0.25 / 1.25 = 0.2
    assert torch.allclose(blended[0], torch.full((64, 64), 0.5)) and torch.allclose(blended[1], torch.full((64, 64), 0.2))
    where = coordinates(3, 5, torch.zeros(1))
    assert where.shape == (1, 3, 3, 5)
    assert where[0, :, 0, 0].tolist() == pytest.approx([-1.0, -1.0, 2 ** 0.5])  # top-left: x, y, distance
    assert where[0, :, 1, 2].tolist() == pytest.approx([0.0, 0.0, 0.0])  # the centre
    # the floor on w (ours): w = floor + (1 - floor) * sigmoid; a last layer's bias of -40 makes the sigmoid ~0
    torch.manual_seed(0)
    plain, floored = TemplateAttention(8, 3, 16), TemplateAttention(8, 3, 16, floor=0.25)
    floored.load_state_dict(plain.state_dict())
    feature = torch.rand(2, 16, 6, 6)
    assert torch.allclose(floored.update_weight(feature), 0.25 + 0.75 * plain.update_weight(feature))
    with torch.no_grad():
        floored.weight[3].bias.fill_(-40.0)
    assert torch.allclose(floored.update_weight(feature), torch.full((2,), 0.25))


def test_temporal_consistency_loss_on_a_hand_computed_case():
    # y_t = [[1, 0], [1, 1]], y_hat_{t-1} = [[0.5, 0.5], [1, 0]]: the true change y_t - y_hat_{t-1} is
    # [[0.5, -0.5], [0, 1]]. The predicted transition [[0.5, 0], [0, 0]] misses it by [0, 0.5, 0, 1]:
    # squared 0, 0.25, 0, 1, mean 1.25 / 4 = 0.3125.
    transition = torch.tensor([[[[0.5, 0.0], [0.0, 0.0]]]])
    mask = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])
    previous = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]]]], requires_grad=True)
    loss = temporal_consistency_loss(transition, mask, previous)
    assert loss.item() == pytest.approx(0.3125)
    loss.backward()
    # d/dprev mean((T - y + p)^2) = 2 (T - y + p) / 4 = [[0, 0.25], [0, -0.5]]: the estimate is pulled too
    assert previous.grad[0, 0].flatten().tolist() == pytest.approx([0.0, 0.25, 0.0, -0.5])
    # At a coarser transition the masks are averaged down first: a 4x4 object that appears where there was
    # nothing is +1 in each 2x2 cell; a prediction of 0.5 everywhere misses by 0.5: loss 0.25.
    coarse = temporal_consistency_loss(torch.full((1, 1, 2, 2), 0.5), torch.ones(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))
    assert coarse.item() == pytest.approx(0.25)


# -- the switch between models --------------------------------------------------------------------------------------
def test_a_ttvos_checkpoint_loads_strictly_and_frtm_stays_the_default(ttvos_weights, tmp_path, monkeypatch):
    network = load_model(ttvos_weights["ttvos"], fetch_backbone=False)
    assert network.base == "ttvos" and not network.has_gate and not hasattr(network, "refiner")
    assert read_checkpoint(ttvos_weights["ttvos"])["config"]["base"] == "ttvos"
    saved = read_checkpoint(ttvos_weights["ttvos"])["state_dict"]
    assert saved.keys() == network.trained_state().keys()
    assert all(torch.equal(saved[k], v) for k, v in network.trained_state().items())
    assert load_model(ttvos_weights["ttvos"], model="ttvos", fetch_backbone=False).base == "ttvos"
    # FRTM is the default, and checkpoints written before TTVOS existed (no "base" in their config) are FRTM's
    default = load_model(fetch_backbone=False)
    assert default.base == "frtm" and load_model("frtm", fetch_backbone=False).base == "frtm"
    assert "base" not in read_checkpoint(SHIPPED["frtm-mobilenet_v2"])["config"]  # written before TTVOS existed
    assert load_model("frtm-mobilenet_v2", fetch_backbone=False).base == "frtm"
    with pytest.raises(ReusevosError, match="holds a frtm model, not ttvos"):
        load_model(ttvos_weights["frtm"], model="ttvos", fetch_backbone=False)
    # strict: a TTVOS checkpoint missing a tensor is refused, naming it
    payload = torch.load(ttvos_weights["ttvos"], weights_only=True)
    del payload["state_dict"]["ttvos.decoder.head.0.weight"]
    torch.save(payload, tmp_path / "broken.pt")
    with pytest.raises(ReusevosError, match="missing: ttvos.decoder.head.0.weight"):
        load_model(tmp_path / "broken.pt", fetch_backbone=False)
    assert load_model("ttvos", fetch_backbone=False).base == "ttvos"  # the shipped file, by the model's name
    with monkeypatch.context() as patch:  # a broken install: the message says what to do
        patch.setitem(SHIPPED, "ttvos", tmp_path / "absent.pt")
        with pytest.raises(ReusevosError, match="TTVOS weights are missing from the package"):
            load_model("ttvos", fetch_backbone=False)
    # G-TTVOS: the same reuse-path modules, the translator as wide as TTVOS's short-term feature
    gated = VOSNetwork(ModelConfig(base="ttvos", reuse_gate=True, ttvos=TtvosConfig(channels=32)), default.backbone)
    assert gated.translator.merge.out_channels == 32 and hasattr(gated, "matcher") and not hasattr(gated, "refiner")


def test_a_session_runs_ttvos_as_its_modules_do(ttvos_weights):
    """Two objects, the second starting at frame 2: the session's labels equal the model's modules run by hand
    (start, forward, soft aggregation, the memory taking in the merged output)."""
    network = load_model(ttvos_weights["ttvos"], fetch_backbone=False)
    network.backbone.runtime = "torch"
    config = SyntheticConfig(size=(96, 160), num_frames=5, num_objects=2, late_objects=1, seed=7)
    clip = list(generate_clip(config))
    starts = {0: clip[0][1], 2: clip[2][1]}
    assert Session(network).options == SessionConfig("full", 1.0)  # TTVOS's default: the base model, compute window 2
    session = Session(network, SessionConfig("full", 1.0, compute_window=0))  # the whole frame, as by hand below
    results = [session.step(frame, starts.get(i)) for i, (frame, _) in enumerate(clip)]
    assert [sorted(r.started) for r in results] == [[1], [], [2], [], []]
    assert [r.routes for r in results[3:]] == [{1: Route.COMPUTED, 2: Route.COMPUTED}] * 2
    assert {"short_term", "long_term", "decoder", "memory_update"} <= set(results[3].stage_seconds)
    assert session.objects[1].target is None and session.objects[1].memory.masks8.shape == (1, 3, 12, 20)

    model, memories = network.ttvos, {}
    with torch.no_grad():
        for i, (frame, _) in enumerate(clip):
            f4, f8, f16, f32 = network.backbone(images_to_tensor(frame))
            x16 = model.frame_feature(f16, f32)
            ids = sorted(memories)
            probs, out = {}, None
            if ids:
                out = model(TTVOSMemory.stack([memories[k] for k in ids]), f4, f8, x16, frame.shape[:2])
                probs = {k: torch.sigmoid(out.logits[row, 0]) for row, k in enumerate(ids)}
            new = [k for k in (1, 2) if i in starts and (starts[i] == k).any() and k not in memories]
            for k in new:
                given = torch.from_numpy((starts[i] == k).astype(np.float32))
                memories[k] = model.start(f8, x16, given[None, None])
                probs = {j: p * (1 - given) for j, p in probs.items()}  # a new object clears the others
                probs[k] = given
            merged = soft_aggregate(torch.stack([probs[k] for k in sorted(probs)]))
            labels = np.array([0] + sorted(probs), np.uint8)[merged.max(dim=0).indices.numpy()]
            assert np.array_equal(labels, results[i].labels), f"frame {i}"
            if ids:
                soft = {k: merged[n + 1] for n, k in enumerate(sorted(probs))}
                after = model.remember(TTVOSMemory.stack([memories[k] for k in ids]), out.update_weight, f8, x16,
                                       torch.stack([soft[k] for k in ids])[:, None])
                memories.update(zip(ids, after.rows()))
    assert torch.allclose(session.objects[2].memory.template, memories[2].template, atol=1e-6)


def test_ttvos_refuses_the_variants_it_cannot_run(ttvos_weights):
    """Without a reuse gate TTVOS runs full and flow (whose gate is its own file); the paper's variants need G-TTVOS."""
    network = load_model(ttvos_weights["ttvos"], fetch_backbone=False)
    for options in (SessionConfig("reuse"), SessionConfig("copy", 0.5), SessionConfig("motion", 0.5)):
        with pytest.raises(ReusevosError, match="these TTVOS weights have no trained reuse gate"):
            Session(network, options)
    assert Session(network, SessionConfig("copy", 1.0)).options.variant == "full"  # tau 1 never reuses
    flow = Session(network, SessionConfig(reuse_window=0))  # the session's default: flow, compute window 2
    assert (flow.options.variant, flow.options.compute_window) == ("flow", 2)


def test_ttvos_compute_window_clears_outputs_away_from_the_last_one(ttvos_weights):
    """With a compute window, a computed object's output outside the box around its last output (grown by the
    margin, in stride-16 cells) is background; inside it equals the whole-frame output."""
    network = load_model(ttvos_weights["ttvos"], fetch_backbone=False)
    network.backbone.runtime = "torch"
    clip = list(generate_clip(SyntheticConfig(size=(128, 192), num_frames=2, num_objects=1, seed=3)))
    first = np.zeros((128, 192), np.uint8)
    first[16:48, 32:64] = 1  # cells 1-2 x 2-3 of the 8 x 12 stride-16 grid: the box grown by 1 is rows 0-3, cols 1-4
    outputs = {}
    for margin in (0, 1):
        session = Session(network, SessionConfig("full", 1.0, compute_window=margin))
        session.step(clip[0][0], first)
        outputs[margin] = session.step(clip[1][0], return_probabilities=True).probabilities[1]
    whole, clipped = outputs[0], outputs[1]
    inside = np.zeros_like(first, bool)
    inside[0:64, 16:80] = True
    assert np.allclose(clipped[inside], whole[inside], atol=1e-6)
    assert clipped[~inside].max() < 1e-3 < whole[~inside].max()  # random weights: something outside to clear


# -- training ---------------------------------------------------------------------------------------------------------
TRAIN_ARGS = ["--model", "ttvos", "--split", "train", "--synthetic", "1", "--synthetic-frames", "4", "--batch", "2",
              "--crop", "64", "--snippet", "3", "--checkpoint-every", "1", "--threads", "1"]


def _train(root, out, iterations, cache, *extra):
    cmd = [sys.executable, "-m", "reusevos", "train", "--davis", str(root), "--out", str(out), "--cache", str(cache),
           "--iterations", str(iterations), *TRAIN_ARGS, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_ttvos_training_resumes_to_the_same_weights(tiny_davis, tmp_path):
    cache = tmp_path / "cache"
    straight = _train(tiny_davis, tmp_path / "straight", 10, cache)  # the loss is logged every 10 iterations
    assert straight.returncode == 0, straight.stderr
    # 2 iterations pass no lr drop of either run (at 60% and 85% of its length), so both draw and step the same
    first = _train(tiny_davis, tmp_path / "resumed", 2, cache)
    assert first.returncode == 0, first.stderr
    second = _train(tiny_davis, tmp_path / "resumed", 10, cache)
    assert second.returncode == 0, second.stderr
    assert "resumed from" in second.stdout and "at iteration 2" in second.stdout
    a = torch.load(tmp_path / "straight" / "ttvos.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "ttvos.pt", weights_only=True)
    assert a["config"]["base"] == "ttvos" and a["meta"]["training"]["iterations"] == 10
    assert a["meta"]["train_config"]["snippet"] == 3 and a["meta"]["data"]["davis_split"] == "train"
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])  # same draws, same Adam
    logged = [json.loads(line) for line in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
    assert {"loss", "ce", "tc", "iou", "update_weight"} <= set(logged[-1])
    assert logged[-1]["loss"] == pytest.approx(logged[-1]["ce"] + logged[-1]["tc"], rel=1e-4)  # tc_weight 1
    runs = [json.loads(line) for line in (tmp_path / "resumed" / "runs.jsonl").read_text().splitlines()]
    assert len(runs) == 2 and all(r["model"] == "ttvos" for r in runs)
    assert load_model(tmp_path / "straight" / "ttvos.pt", fetch_backbone=False).base == "ttvos"


def test_ttvos_training_refuses_validation_data_and_frtm_flags(tiny_davis, tmp_path):
    val = _train(tiny_davis, tmp_path / "v", 1, tmp_path / "cache", "--split", "val")
    one_error(val, "refusing to train on the split 'val'")
    tracked = _train(tiny_davis, tmp_path / "t", 1, tmp_path / "cache", "--tracked-scores", "default")
    one_error(tracked, "--tracked-scores", "TTVOS uses no target-model scores")


# -- the command line -------------------------------------------------------------------------------------------------
def test_segment_with_model_ttvos(ttvos_weights, tmp_path):
    clip = list(generate_clip(SyntheticConfig(size=(96, 160), num_frames=3, num_objects=1, seed=2)))
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, (frame, _) in enumerate(clip):
        Image.fromarray(frame).save(folder / f"{i:05d}.png")
    write_mask(tmp_path / "first.png", clip[0][1])
    out = tmp_path / "out"
    proc = run_segment(folder, "--mask", tmp_path / "first.png", "--out", out, "--model", "ttvos", "--weights",
                       ttvos_weights["ttvos"], *FAST)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads((out / "stats.json").read_text())
    assert stats["weights"]["model"] == "ttvos" and stats["weights"]["meta"] == {"name": "random-ttvos"}
    assert stats["settings"]["variant"] == "full" and stats["settings"]["compute_window"] == 2
    assert stats["objects"]["1"]["routes"] == ["computed", "computed"]
    assert np.array_equal(read_mask(out / "00000.png"), clip[0][1])  # the first frame's output is the given mask
    # the wrong model's weights, and a variant TTVOS cannot run: one line each, exit 2, nothing written
    wrong = run_segment(folder, "--mask", tmp_path / "first.png", "--out", tmp_path / "o2", "--model", "ttvos",
                        "--weights", ttvos_weights["frtm"], *FAST)
    one_error(wrong, "holds a frtm model, not ttvos")
    variant = run_segment(folder, "--mask", tmp_path / "first.png", "--out", tmp_path / "o3", "--weights",
                          ttvos_weights["ttvos"], "--variant", "reuse", *FAST)
    one_error(variant, "these TTVOS weights have no trained reuse gate")
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()


def test_segment_davis_names_the_model_and_refuses_to_mix_models(ttvos_weights, tiny_davis, tmp_path):
    from reusevos.io.davis import DavisDataset
    from reusevos.segment import segment_davis

    dataset = DavisDataset(tiny_davis, split="train", sequences=["clip0"])
    ttvos = load_model(ttvos_weights["ttvos"], fetch_backbone=False)
    report = segment_davis(ttvos, dataset, tmp_path, warmup=False)
    assert report["model"] == "ttvos" and report["settings"]["variant"] == "full" and report["complete"]
    # FRTM at the same settings (full, compute window 2) into the same folder: refused, nothing changed
    frtm = load_model(ttvos_weights["frtm"], fetch_backbone=False)
    before = (tmp_path / "stats.json").read_bytes()
    with pytest.raises(ReusevosError, match="holds results of the ttvos model, not frtm"):
        segment_davis(frtm, dataset, tmp_path, warmup=False, options=SessionConfig("full"))
    assert (tmp_path / "stats.json").read_bytes() == before
