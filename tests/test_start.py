"""Starting without a mask: boxes made into start masks by the model's method or GrabCut, clicks by GrabCut
(``reusevos.start``), and ``reusevos segment --box / --points`` end to end.

The command mostly runs with random weights (conftest), so its masks after the start frames mean nothing, and its
boxes are made by GrabCut there (``--box-method grabcut``); what is tested there is the start masks, the objects'
numbering, ``stats.json`` and the refusals. The model's method is tested with the weights it was designed with on
synthetic clips (the previous default, ``frtm-mobilenet_v2``) and with the default weights on the real blackswan.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import reusevos
from conftest import FAST, cli, one_error, run_segment, snapshot
from reusevos.errors import ReusevosError
from reusevos.evaluation.metrics import region_similarity
from reusevos.io.masks import read_mask, write_mask
from reusevos.start import BOX_METHODS, box_of, check_box_method, click_radius, mask_from_box, mask_from_points
from reusevos.synthetic import SyntheticConfig, generate_clip, write_clip

CLIP = SyntheticConfig(size=(120, 216), num_frames=6, num_objects=2, speed=1.0, seed=2, cutout_fraction=0.0)


@pytest.fixture(scope="module")
def clip():
    return generate_clip(CLIP)


@pytest.fixture(scope="module")
def shipped():
    return reusevos.load_model(device="cpu")


@pytest.fixture(scope="module")
def previous():
    """The default weights before issue 17 (MobileNetV2), with which the box method was designed and the synthetic
    clips' thresholds below were measured. The method's code is the same for any weights; the default weights
    (EfficientNet-Lite0) give better start masks on DAVIS 2016 train's first frames (IoU 86.0 against 79.3 with a tight
    box) and worse ones on these synthetic textures (0.53-0.63 where these weights give 0.77-0.86)."""
    return reusevos.load_model("frtm-mobilenet_v2", device="cpu")


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory, clip):
    """The clip in the DAVIS layout: its frame folder and its annotation folder."""
    root = tmp_path_factory.mktemp("start")
    write_clip(root, "two", CLIP)
    return root / "JPEGImages" / "480p" / "two", root / "Annotations" / "480p" / "two"


def _box_around(labels: np.ndarray, obj: int, margin: int = 4) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(labels == obj)
    height, width = labels.shape
    return (max(0, xs.min() - margin), max(0, ys.min() - margin), min(width, xs.max() + 1 + margin),
            min(height, ys.max() + 1 + margin))


def _middle(labels: np.ndarray, obj: int) -> tuple[int, int]:
    """The object's pixel nearest its centroid."""
    ys, xs = np.nonzero(labels == obj)
    k = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
    return int(xs[k]), int(ys[k])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(region_similarity(a > 0, b > 0))


def _same_colours_other_texture() -> tuple[np.ndarray, np.ndarray]:
    """A 432x240 frame whose object, an ellipse of checks, has the very two colours of the background's stripes:
    ``(frame, truth)``. Colour models cannot tell them apart; texture can."""
    height, width = 240, 432
    yy, xx = np.mgrid[0:height, 0:width]
    truth = ((xx - 200) / 80) ** 2 + ((yy - 120) / 60) ** 2 <= 1
    pattern = np.where(truth, (xx // 10 + yy // 10) % 2, (xx // 6) % 2)[..., None]
    dark, light = np.array([70, 110, 60]), np.array([180, 160, 120])
    grain = np.random.default_rng(0).normal(0, 4, (height, width, 1))
    return (dark + pattern * (light - dark) + grain).clip(0, 255).astype(np.uint8), truth


# -- the Python API -----------------------------------------------------------------------------------------------
def test_a_box_around_each_object_gives_its_mask(clip):
    frame, labels = clip.render(0)
    for obj in (1, 2):
        mask = reusevos.mask_from_box(frame, _box_around(labels, obj))
        assert mask.shape == labels.shape and mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
        assert _iou(mask, labels == obj) > 0.85  # measured 0.96 and 0.97


@pytest.mark.slow
def test_the_models_box_start_tells_an_object_by_its_texture(previous):
    frame, truth = _same_colours_other_texture()
    box = _box_around(truth.astype(np.uint8), 1, margin=6)
    with pytest.raises(ReusevosError, match="GrabCut found no object"):
        mask_from_box(frame, box, method="grabcut")
    mask = mask_from_box(frame, box, network=previous)  # with a model, its method is the default
    assert _iou(mask, truth) > 0.8  # measured 0.854
    assert np.array_equal(mask, mask_from_box(frame, box, method="model", network=previous))


@pytest.mark.slow
def test_the_default_weights_box_start_finds_the_real_swan(shipped, blackswan):
    frames, masks = blackswan
    truth = masks[0] > 0
    mask = mask_from_box(frames[0], box_of(masks[0]), method="model", network=shipped)
    assert _iou(mask, truth) > 0.9  # measured 0.943 (the previous default: 0.937; GrabCut's 0.443)


@pytest.mark.slow
def test_the_models_box_start_finds_synthetic_objects_small_ones_too(clip, previous):
    frame, labels = clip.render(0)
    # Measured 0.840 and 0.859. Object 1 fills 26% of its box: the most damped score finds 1% of it, and the next,
    # stronger one takes over (without it, IoU 0.05).
    for obj in (1, 2):
        mask = mask_from_box(frame, _box_around(labels, obj), method="model", network=previous)
        assert _iou(mask, labels == obj) > 0.8


def test_the_box_methods_default_and_bad_names(clip):
    frame, labels = clip.render(0)
    box = _box_around(labels, 1)
    # The default: the model's method where a model is given (the command line always has one), GrabCut without.
    assert BOX_METHODS == ("model", "grabcut") and check_box_method(None) == "grabcut"
    assert check_box_method(None, network=object()) == "model" and check_box_method("grabcut", object()) == "grabcut"
    assert np.array_equal(mask_from_box(frame, box), mask_from_box(frame, box, method="grabcut"))
    with pytest.raises(ReusevosError, match=r"^box method 'sam' is not one of model, grabcut: model \(the default"):
        mask_from_box(frame, box, method="sam")
    with pytest.raises(ReusevosError, match=r"^box method 'model' needs the loaded model: pass network=reusevos\.load_"):
        mask_from_box(frame, box, method="model")


def test_one_click_gives_the_object_and_clicks_are_definite(clip):
    frame, labels = clip.render(0)
    for obj in (1, 2):  # measured 0.95 and 0.97
        assert _iou(reusevos.mask_from_points(frame, [_middle(labels, obj)]), labels == obj) > 0.8
    # A background click inside the object stays background, with its disk; the foreground click stays the object.
    inside = np.argwhere(labels == 1)
    x, y = _middle(labels, 1)
    far = inside[np.argmax((inside[:, 0] - y) ** 2 + (inside[:, 1] - x) ** 2)]  # the object's pixel farthest away
    background = (int(far[1]), int(far[0]))
    mask = mask_from_points(frame, [(x, y)], [background])
    assert mask[y, x] == 1 and mask[background[1], background[0]] == 0
    r = click_radius(labels.shape)
    disk = np.zeros_like(mask)
    yy, xx = np.ogrid[:mask.shape[0], :mask.shape[1]]
    disk[(yy - background[1]) ** 2 + (xx - background[0]) ** 2 <= (r - 1) ** 2] = 1
    assert mask[disk == 1].max() == 0


def test_bad_boxes_and_clicks_are_one_clear_error(clip):
    frame, _ = clip.render(0)
    cases = [((50, 20, 50, 60), "is empty: give X0,Y0,X1,Y1 with X1 > X0"),
             ((50, 60, 90, 20), "is empty"),
             ((-1, 0, 40, 40), "not inside the 216x120 frame"),
             ((10, 10, 217, 40), "not inside the 216x120 frame"),
             ((0, 0, 216, 120), "covers the whole frame"),
             ((1.5, 0, 40, 40), "whole pixel coordinates")]
    for box, message in cases:
        with pytest.raises(ReusevosError, match=message):
            mask_from_box(frame, box)
    with pytest.raises(ReusevosError, match="GrabCut found no object in box 40,30,120,90: the mask is empty; draw a "
                                            "larger box"):
        mask_from_box(np.full((120, 216, 3), 90, np.uint8), (40, 30, 120, 90))  # nothing there to find
    with pytest.raises(ReusevosError, match="click 216,5 is not inside"):
        mask_from_points(frame, [(216, 5)])
    with pytest.raises(ReusevosError, match="at least one foreground click"):
        mask_from_points(frame, [], [(3, 3)])


# -- the command line: refusals, before anything is written -------------------------------------------------------
@pytest.mark.slow
def test_bad_boxes_and_points_on_the_command_line(clip_folder, weights, tmp_path):
    frames, annotations = clip_folder
    out = tmp_path / "o"
    before = snapshot(frames.parent.parent.parent)

    def segment(*flags):
        return cli("segment", frames, *flags, "--out", out, "--weights", weights["base"], "--no-warmup", *FAST)

    one_error(segment("--box", "10,20,30"), "--box '10,20,30'", "X0,Y0,X1,Y1[@FRAME]")
    one_error(segment("--box", "10,20,x,40"), "--box '10,20,x,40'")
    one_error(segment("--box", "10,20,60,40@two"), "FRAME after @ is a frame index")
    one_error(segment("--box", "10,20,60,40@6"), "--box 10,20,60,40@6", "frame 6 is not in the input", "6 frames")
    one_error(segment("--box", "0,0,300,50"), "--box 0,0,300,50", "not inside the 216x120 frame")
    one_error(segment("--box", "40,30,40,90"), "is empty")
    one_error(segment("--points", "5"), "--points '5'", "X,Y pairs")
    one_error(segment("--points=-5,6"), "has no foreground click")
    one_error(segment("--points", "5,-6"), "X,Y pairs")
    one_error(segment(), "give the first frame's mask", "--box", "--points")
    one_error(segment("--box", "10,20,60,40", "--box-method", "sam"), "--box-method 'sam'", "choose model", "grabcut")
    # A box around an object the mask file already gives names it twice, whichever method makes its mask (the
    # model's needs trained weights: the shipped ones, loaded before the refusal, which still writes nothing).
    mask = annotations / "00000.png"
    box = ",".join(map(str, _box_around(read_mask(mask), 1)))
    one_error(segment("--mask", mask, "--box", box, "--box-method", "grabcut"), "lies mostly",
              "on object 1, already given for frame 00000")
    one_error(cli("segment", frames, "--mask", mask, "--box", box, "--out", out, "--no-warmup", *FAST), "lies mostly",
              "on object 1, already given for frame 00000")
    assert not out.exists() and snapshot(frames.parent.parent.parent) == before


# -- the command line: runs ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_segment_from_a_box_and_clicks_writes_the_start_masks_and_records_them(clip, clip_folder, weights, tmp_path):
    frames, _ = clip_folder
    first, later = clip.render(0)[1], clip.render(2)[1]
    box = _box_around(first, 1)
    x, y = _middle(later, 2)
    out = tmp_path / "o"
    proc = run_segment(frames, "--box", ",".join(map(str, box)), "--points", f"{x},{y}@2", "--out", out,
                       "--box-method", "grabcut", "--weights", weights["base"], "--no-warmup", *FAST)
    assert proc.returncode == 0, proc.stderr
    made = sorted(p.name for p in (out / "start-masks").iterdir())
    assert made == ["00000.png", "00002.png"]
    start0, start2 = read_mask(out / "start-masks" / "00000.png"), read_mask(out / "start-masks" / "00002.png")
    assert set(np.unique(start0)) == {0, 1} and set(np.unique(start2)) == {0, 2}  # each flag one object, in order
    # The frames are JPEGs: GrabCut sees them, not the clean renders, so the bar is a little lower than above.
    assert _iou(start0 == 1, first == 1) > 0.8 and _iou(start2 == 2, later == 2) > 0.75
    assert np.array_equal(read_mask(out / "00000.png"), start0)  # the start frame's output is its start mask
    assert np.array_equal(read_mask(out / "00002.png") == 2, start2 == 2)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["complete"] is True
    assert stats["starts"] == {"1": {"frame": "00000", "box": list(box), "method": "grabcut"},
                               "2": {"frame": "00002", "points": {"foreground": [[x, y]], "background": []}}}
    assert stats["objects"]["1"]["start_frame"] == 0 and stats["objects"]["2"]["start_frame"] == 2


@pytest.mark.slow
def test_segment_makes_boxes_by_the_model_by_default(clip, clip_folder, previous, tmp_path):
    frames, _ = clip_folder
    first = clip.render(0)[1]
    box = _box_around(first, 1)
    out = tmp_path / "o"
    help_text = run_segment("--help").stdout
    assert "--box-method METHOD" in help_text and "Default: model, or grabcut with weights" in " ".join(help_text.split())
    proc = run_segment(frames, "--box", ",".join(map(str, box)), "--out", out, "--weights", "frtm-mobilenet_v2",
                       "--no-warmup", *FAST)
    assert proc.returncode == 0, proc.stderr
    start = read_mask(out / "start-masks" / "00000.png")
    assert json.loads((out / "stats.json").read_text())["starts"] == {
        "1": {"frame": "00000", "box": list(box), "method": "model"}}
    frame = next(iter(reusevos.open_frames(frames)))[1]  # the JPEG the command read
    assert _iou(start, mask_from_box(frame, box, network=previous)) > 0.99  # the same method (threads may differ)
    assert _iou(start, first == 1) > 0.75  # measured 0.774: the JPEG's, a little below the clean render's 0.840


@pytest.mark.slow
def test_a_mask_and_a_box_together_number_the_box_after_the_mask(clip, clip_folder, weights, tmp_path):
    frames, _ = clip_folder
    labels = clip.render(0)[1]
    only_one = tmp_path / "one.png"
    write_mask(only_one, (labels == 1).astype(np.uint8) * 3)  # the file's object is id 3
    box = _box_around(labels, 2)
    out = tmp_path / "o"
    proc = run_segment(frames, "--mask", only_one, "--box", ",".join(map(str, box)), "--box-method", "grabcut",
                       "--out", out, "--weights", weights["base"], "--no-warmup", *FAST)
    assert proc.returncode == 0, proc.stderr
    start = read_mask(out / "start-masks" / "00000.png")
    assert np.array_equal(start == 3, labels == 1)  # the file's object exactly as given
    assert _iou(start == 4, labels == 2) > 0.75  # the box's object is 4, after the file's 3, on free pixels only
    stats = json.loads((out / "stats.json").read_text())
    assert stats["starts"] == {"3": {"frame": "00000", "mask": str(only_one)},
                               "4": {"frame": "00000", "box": list(box), "method": "grabcut"}}


@pytest.mark.slow
def test_segment_video_takes_prompts_in_python(clip_folder, weights):
    frames, _ = clip_folder
    source = reusevos.open_frames(frames)
    first, later = [frame for _, frame in source][0], [frame for _, frame in source][3]
    box = _box_around(generate_clip(CLIP).render(0)[1], 2)
    prompts = [reusevos.Prompt(box=box), reusevos.Prompt(3, foreground=(_middle(generate_clip(CLIP).render(3)[1], 1),))]
    outputs = {}
    model = reusevos.load_model(weights["base"], device="cpu")
    stats = reusevos.segment_video(model, frames, None, None,
                                   prompts=prompts, warmup=False, options=reusevos.SessionConfig("full", 1.0),
                                   on_frame=lambda r, s: outputs.update({r.index: r.labels}))
    assert {obj: log.start_frame for obj, log in stats.objects.items()} == {1: 0, 2: 3}
    # Object 1, the box's object, exactly: by the model's method (segment_video's default), with the model it was given.
    assert np.array_equal(outputs[0], mask_from_box(first, box, method="model", network=model))
    assert np.array_equal(outputs[3] == 2, mask_from_points(later, prompts[1].foreground) == 1)


def test_the_model_box_method_is_frtms_only():
    from types import SimpleNamespace

    from reusevos.start import check_box_method

    frtm, ttvos = SimpleNamespace(base="frtm"), SimpleNamespace(base="ttvos")
    assert check_box_method(None, frtm) == "model" and check_box_method(None, ttvos) == "grabcut"
    assert check_box_method(None) == "grabcut" and check_box_method("grabcut", ttvos) == "grabcut"
    with pytest.raises(ReusevosError, match="ttvos weights do not have"):
        check_box_method("model", ttvos)
