import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reusevos.config import TargetModelConfig
from reusevos.model.augment import augment_first_frame
from reusevos.model.gauss_newton import gauss_newton_cg
from reusevos.model.memory import SampleMemory
from reusevos.model.target_model import TargetModel, balance_weights, ignore_band


def test_gauss_newton_solves_linear_least_squares_exactly():
    # For a linear residual, one GN step with n CG iterations (n = unknowns) reaches the optimum.
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(20, 4, generator=gen, dtype=torch.float64)
    b = torch.randn(20, generator=gen, dtype=torch.float64)
    (x,), losses = gauss_newton_cg(lambda p: a @ p[0] - b, (torch.zeros(4, dtype=torch.float64),), [4])
    expected = torch.linalg.lstsq(a, b[:, None]).solution[:, 0]
    assert torch.allclose(x, expected, atol=1e-9)
    assert losses[1] == pytest.approx(0.5 * float((a @ expected - b).square().sum()), rel=1e-9)


def test_gauss_newton_with_closed_form_products_takes_the_autograd_steps():
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(30, 5, generator=gen, dtype=torch.float64)
    b = torch.randn(30, generator=gen, dtype=torch.float64)
    start = (torch.randn(5, generator=gen, dtype=torch.float64),)
    by_autograd = gauss_newton_cg(lambda p: a @ p[0] - b, start, [2, 2])
    closed = gauss_newton_cg(lambda p: a @ p[0] - b, start, [2, 2],
                             jacobian=lambda p: (lambda v: a @ v[0], lambda u: (a.T @ u,)))
    assert torch.allclose(closed[0][0], by_autograd[0][0], atol=1e-12)
    assert closed[1] == pytest.approx(by_autograd[1], rel=1e-12)


def test_gauss_newton_never_increases_the_loss_on_a_bilinear_problem():
    gen = torch.Generator().manual_seed(1)
    u0, v0 = torch.randn(5, generator=gen), torch.randn(5, generator=gen)
    target = torch.outer(u0, v0)

    def residual(p):
        return (torch.outer(p[0], p[1]) - target).flatten()

    start = (torch.randn(5, generator=gen), torch.randn(5, generator=gen))
    _, losses = gauss_newton_cg(residual, start, [3, 3, 3, 3, 3])
    assert all(b <= a for a, b in zip(losses, losses[1:]))
    assert losses[-1] < 0.05 * losses[0]


def test_balance_weights_hand_computed():
    labels = torch.zeros(1, 1, 10, 10)
    labels[..., :1, :5] = 1  # 5% foreground
    w = balance_weights(labels, 0.1)
    assert float(w[0, 0, 0, 0]) == pytest.approx(0.1 / 0.05)
    assert float(w[0, 0, 5, 5]) == pytest.approx(0.9 / 0.95)
    assert float(w.mean()) == pytest.approx(1.0)
    big = torch.zeros(1, 1, 10, 10)
    big[..., :5, :] = 1  # 50%: no balancing
    assert torch.equal(balance_weights(big, 0.1), torch.ones_like(big))


def test_memory_is_bounded_keeps_the_start_frame_and_decays_weights():
    mem = SampleMemory(capacity=4, lr=0.1)
    f, y = torch.zeros(1, 2, 3, 3), torch.zeros(1, 1, 6, 6)
    mem.add(torch.zeros(2, 2, 3, 3), torch.zeros(2, 1, 6, 6), torch.ones(2, 1, 6, 6), weight=0.2, permanent=True)
    for k in range(5):
        mem.add(f + k + 1, y, torch.ones_like(y))
    assert mem.count == 4 and mem.features.shape[0] == 4
    feats, _, _, w = mem.batch()
    assert float(w.sum()) == pytest.approx(1.0)
    # The two start-frame samples survive; of the five later ones only the two newest remain.
    kept = sorted(float(v) for v in feats[:, 0, 0, 0])
    assert kept == [0.0, 0.0, 4.0, 5.0]
    raw = mem.weights
    newest = int(torch.argmax(torch.tensor([float(v) for v in feats[:, 0, 0, 0]])))
    assert float(raw[newest]) == pytest.approx(0.1)
    assert float(raw[0]) == pytest.approx(0.1 * 0.9 ** 5)  # 0.2 / 2 per start sample, decayed 5 times


def test_start_share_keeps_the_start_frames_weight_from_decaying_away():
    def filled(share):
        mem = SampleMemory(capacity=8, lr=0.1, start_share=share)
        mem.add(torch.zeros(2, 2, 3, 3), torch.zeros(2, 1, 6, 6), torch.ones(2, 1, 6, 6), weight=0.2, permanent=True)
        for k in range(30):
            mem.add(torch.full((1, 2, 3, 3), k + 1.0), torch.zeros(1, 1, 6, 6), torch.ones(1, 1, 6, 6))
        return mem
    plain, floored = filled(0.0), filled(0.25)
    _, _, _, w0 = plain.batch()
    _, _, _, w = floored.batch()
    assert float(w0[:2].sum()) < 0.02  # FRTM's memory: 0.2 * 0.9**30 against about 0.5 for the six newest
    assert float(w[:2].sum()) == pytest.approx(0.25, abs=1e-6) and float(w.sum()) == pytest.approx(1.0)
    assert torch.allclose(w[2:] / w[2:].sum(), w0[2:] / w0[2:].sum())  # the later samples keep their proportions
    assert torch.equal(floored.weights, plain.weights)  # stored weights decay as before
    fresh = SampleMemory(capacity=8, lr=0.1, start_share=0.25)
    fresh.add(torch.zeros(2, 2, 3, 3), torch.zeros(2, 1, 6, 6), torch.ones(2, 1, 6, 6), weight=0.2, permanent=True)
    fresh.add(torch.ones(1, 2, 3, 3), torch.zeros(1, 1, 6, 6), torch.ones(1, 1, 6, 6))
    _, _, _, w = fresh.batch()  # above the floor already (0.18 against 0.1): unchanged
    assert float(w[:2].sum()) == pytest.approx(0.18 / 0.28)


def test_sample_confidence_weighs_unsure_outputs_less():
    def weight(power, inside):
        model = TargetModel(TargetModelConfig(sample_confidence_power=power))
        soft = torch.zeros(1, 1, 32, 32)
        soft[..., 8:24, 8:24] = inside
        assert model.add_sample(torch.zeros(1, 4, 2, 2), soft)
        return float(model.memory.weights[0])
    assert weight(0.0, 0.6) == pytest.approx(0.1)  # off: FRTM's memory_lr whatever the output
    assert weight(1.0, 1.0) == pytest.approx(0.1)  # sure of its object: the full weight
    assert weight(1.0, 0.6) == pytest.approx(0.1 * 0.2)  # mean 0.6 inside: c = 0.2
    assert weight(2.0, 0.6) == pytest.approx(0.1 * 0.04)


def test_ignore_band_is_a_ring_around_the_object_as_wide_as_asked():
    labels = torch.zeros(2, 1, 40, 40)
    labels[0, :, 10:30, 10:30] = 1.0  # a 20 x 20 square: size 20
    labels[1, :, 18:20, 18:20] = 0.9  # 2 x 2: the band is at least one pixel wide
    band = ignore_band(labels, 0.25)  # 5 pixels around the square
    expected = torch.zeros(40, 40)
    expected[5:35, 5:35] = 1.0
    expected[10:30, 10:30] = 0.0
    assert torch.equal(band[0, 0], expected)
    small = torch.zeros(40, 40)
    small[17:21, 17:21] = 1.0
    small[18:20, 18:20] = 0.0
    assert torch.equal(band[1, 0], small)


def test_a_tracked_sample_leaves_out_the_band_and_nothing_else():
    soft = torch.zeros(1, 1, 64, 64)
    soft[..., 16:48, 16:48] = 1.0  # labels at stride 4: an 8 x 8 object, band 0.25 * 8 = 2 label pixels

    def pixel_weights(fraction):
        model = TargetModel(TargetModelConfig(sample_ignore_band=fraction))
        assert model.add_sample(torch.zeros(1, 4, 4, 4), soft)
        return model.memory.pixel_weights[0, 0]
    plain, banded = pixel_weights(0.0), pixel_weights(0.25)
    ring = torch.zeros(16, 16, dtype=torch.bool)
    ring[2:14, 2:14] = True
    ring[4:12, 4:12] = False
    assert (plain > 0).all() and (banded[ring] == 0).all()  # off: FRTM's weights everywhere
    assert torch.equal(banded[~ring], plain[~ring])


def test_a_sessions_memory_band_replaces_the_weights_own(weights, tmp_path):
    from reusevos import Session, SessionConfig, load_model
    from reusevos.bench.settings import parse_setting
    from reusevos.config import ModelConfig
    from reusevos.errors import ReusevosError
    from reusevos.model.backbone import Backbone
    from reusevos.model.network import VOSNetwork, save_checkpoint

    network = load_model(weights["base"], fetch_backbone=False)
    frame = np.zeros((64, 96, 3), np.uint8)
    mask = np.zeros((64, 96), np.uint8)
    mask[16:48, 24:64] = 1

    def band(options):
        session = Session(network, options)
        session.step(frame, mask)
        bands = {tracker.objects[1].target.config.sample_ignore_band for tracker in (session, session._twin) if tracker}
        assert len(bands) == 1  # with flip, the mirrored video's tracker the same
        return bands.pop()
    assert band(SessionConfig("full", 1.0)) == network.config.target.sample_ignore_band  # None: the weights' own
    assert band(SessionConfig("full", 1.0, memory_band=0.3)) == 0.3
    assert band(SessionConfig("flow", 1.0, memory_band=0.0, flip=True)) == 0.0  # both trackers
    assert parse_setting("full+c2+band0.3").options() == SessionConfig("full", 1.0, compute_window=2, memory_band=0.3,
                                                                          search_margin=0)
    assert parse_setting("full+c2+band0.3+ort").key == "full+c2+band0.3+ort"
    with pytest.raises(ReusevosError, match="memory_band must be a fraction"):
        SessionConfig("full", 1.0, memory_band=1.5).validate()
    with pytest.raises(ReusevosError, match=r"\+band takes a fraction"):
        parse_setting("full+band0.1.2")
    path = tmp_path / "ttvos.pt"
    save_checkpoint(path, VOSNetwork(ModelConfig(base="ttvos"), Backbone("mobilenet_v2")), meta={"name": "t"})
    with pytest.raises(ReusevosError, match="TTVOS weights have none"):
        Session(load_model(path, fetch_backbone=False), SessionConfig("full", 1.0, memory_band=0.1))


def test_augmented_copies_move_the_object_and_keep_its_size(blackswan):
    frames, masks = blackswan
    image, mask = frames[0], masks[0] > 0
    copies = augment_first_frame(image, mask, 4)
    assert len(copies) == 4
    area = mask.sum()
    for aug_image, aug_mask in copies:
        assert aug_image.shape == image.shape and aug_image.dtype == np.uint8
        assert 0.6 * area < aug_mask.sum() < 1.5 * area
        iou = (aug_mask & mask).sum() / (aug_mask | mask).sum()
        assert iou < 0.97  # every copy differs from the original


def test_augment_scales_add_zoomed_copies_after_the_usual_ones(blackswan):
    frames, masks = blackswan
    image, mask = frames[0], masks[0] > 0
    usual = augment_first_frame(image, mask, 4)
    more = augment_first_frame(image, mask, 4, scales=(1.6,))
    assert len(more) == 5 and all(np.array_equal(a[1], b[1]) for a, b in zip(usual, more))
    grown = more[-1][1].sum() / mask.sum()
    assert 1.6 ** 2 * 0.85 < grown < 1.6 ** 2 * 1.15  # the object 1.6 times as large (blackswan stays in the frame)
    assert len(augment_first_frame(image, mask, 0, scales=(0.5, 2.0))) == 2


def _fit(backbone, frame, mask, config=None):
    config = config or TargetModelConfig()
    copies = augment_first_frame(frame, mask > 0, config.num_augmented)
    images = np.stack([frame] + [c[0] for c in copies])
    with torch.no_grad():
        f16 = backbone(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)[2]
    labels = torch.from_numpy(np.stack([mask > 0] + [c[1] for c in copies]).astype(np.float32))[:, None]
    model = TargetModel(config)
    losses = model.initialise(f16, labels)
    return model, losses


def _score_iou(backbone, model, frame, mask):
    with torch.no_grad():
        f16 = backbone(torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255)[2]
        score = F.interpolate(model.apply(f16), size=mask.shape, mode="bilinear", align_corners=False)[0, 0]
    pred, gt = score.numpy() > 0.5, mask > 0
    return (pred & gt).sum() / (pred | gt).sum()


def test_target_model_separates_the_swan_on_real_frames(backbone, blackswan):
    frames, masks = blackswan
    model, losses = _fit(backbone, frames[0], masks[0])
    assert all(b <= a for a, b in zip(losses, losses[1:])), losses  # GN-CG loss decreases monotonically
    assert losses[-1] < 0.3 * losses[0]
    assert model.projection.shape == (96, 96, 1, 1) and model.filter.shape == (1, 96, 3, 3)
    assert _score_iou(backbone, model, frames[0], masks[0]) > 0.85  # measured 0.93
    assert _score_iou(backbone, model, frames[30], masks[30]) > 0.8  # 30 frames later, measured ~0.9


def test_filter_update_lowers_the_memory_loss(backbone, blackswan):
    frames, masks = blackswan
    model, _ = _fit(backbone, frames[0], masks[0])
    for t in (10, 20, 30):
        with torch.no_grad():
            f16 = backbone(torch.from_numpy(frames[t]).permute(2, 0, 1)[None].float() / 255)[2]
        assert model.add_sample(f16, torch.from_numpy((masks[t] > 0).astype(np.float32))[None, None])
    projection = model.projection.clone()
    losses = model.update()
    assert losses[1] < losses[0]
    assert torch.equal(model.projection, projection)  # the compression stays frozen
    empty = torch.zeros(1, 1, *masks[0].shape)
    assert not model.add_sample(f16, empty)  # an empty mask teaches nothing


def test_closed_form_jacobian_products_equal_autograd():
    # The target model gives Gauss-Newton J v and J^T u in closed form; they must be what autograd computes.
    gen = torch.Generator().manual_seed(3)
    model = TargetModel(TargetModelConfig(channels=6))
    features = torch.randn(3, 10, 7, 9, generator=gen, dtype=torch.float64)
    masks = (torch.rand(3, 1, 28, 36, generator=gen) > 0.7).double()
    labels, pixel_weights = model.prepare_labels(masks)
    sample_weights = torch.rand(3, generator=gen, dtype=torch.float64) + 0.5
    scale = model._pixel_scale(labels, pixel_weights, sample_weights)
    projection = torch.randn(6, 10, 1, 1, generator=gen, dtype=torch.float64)
    filt = torch.randn(1, 6, 3, 3, generator=gen, dtype=torch.float64)
    tangents = (torch.randn_like(projection), torch.randn_like(filt))

    def both(params):
        return model._residual(features, labels, pixel_weights, sample_weights, params)

    _, expected = torch.func.jvp(both, ((projection, filt),), (tangents,))
    product, transposed = model._jacobian(features, scale, labels.shape[-2:])((projection, filt))
    assert torch.allclose(product(tangents), expected, atol=1e-12)
    residual, vjp = torch.func.vjp(both, (projection, filt))
    u = torch.randn_like(residual)
    for got, want in zip(transposed(u), vjp(u)[0], strict=True):
        assert torch.allclose(got, want, atol=1e-12)
    projected = F.conv2d(features, projection)

    def filter_only(params):
        scores = F.conv2d(projected, params[0], padding=1)
        return model._data_residual(scores, labels, pixel_weights, sample_weights, params)

    _, expected = torch.func.jvp(filter_only, ((filt,),), ((tangents[1],),))
    product, transposed = model._jacobian(projected, scale, labels.shape[-2:])((filt,))
    assert torch.allclose(product((tangents[1],)), expected, atol=1e-12)
    residual, vjp = torch.func.vjp(filter_only, (filt,))
    u = torch.randn_like(residual)
    assert torch.allclose(transposed(u)[0], vjp(u)[0][0], atol=1e-12)
