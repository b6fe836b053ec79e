"""The DAVIS evaluator: against the official toolkit's scores, hand-computed cases and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import cli
from reusevos.errors import ReusevosError
from reusevos.evaluation.davis_eval import evaluate_davis, score_sequence
from reusevos.evaluation.metrics import (
    boundary_f_measure,
    boundary_map,
    boundary_tolerance,
    disk,
    frame_scores,
    region_similarity,
)
from reusevos.evaluation.statistics import davis_statistics, decay_bins
from reusevos.io.davis import write_davis_sequence
from reusevos.io.masks import write_mask

SHARED = Path(os.environ.get("REUSEVOS_SHARED") or Path(__file__).resolve().parents[2] / "shared")
BLACKSWAN = SHARED / "data" / "davis2016-blackswan"
GOLDEN = SHARED / "data" / "golden-eval-blackswan"
needs_golden = pytest.mark.skipif(
    not (GOLDEN / "official_scores.json").is_file() or not BLACKSWAN.is_dir(),
    reason=f"shared data not found under {SHARED} (set REUSEVOS_SHARED to the folder holding data/)",
)


# --- the official toolkit's numbers ------------------------------------------------------------


@needs_golden
@pytest.mark.parametrize("variant", ["shift", "morph", "blobs"])
def test_matches_official_toolkit_on_blackswan(variant):
    golden = json.loads((GOLDEN / "official_scores.json").read_text())[variant]
    scores = evaluate_davis(GOLDEN / "results" / variant, BLACKSWAN, split="val").to_dict()
    assert set(scores["global"]) == set(golden["global"])
    for key, value in golden["global"].items():
        assert scores["global"][key] == pytest.approx(value, abs=1e-6), key
    assert set(scores["per_object"]) == set(golden["per_object"]) == {"blackswan_1"}
    for key, value in golden["per_object"]["blackswan_1"].items():
        assert scores["per_object"]["blackswan_1"][key] == pytest.approx(value, abs=1e-6), key


# --- J and F on hand-computed cases -----------------------------------------------------------


def test_j_and_f_of_empty_masks():
    empty = np.zeros((30, 40), dtype=bool)
    blob = empty.copy()
    blob[10:20, 10:20] = True
    assert region_similarity(empty, empty) == 1.0
    assert boundary_f_measure(empty, empty) == 1.0
    # Empty prediction: J = 0; precision 1, recall 0 -> F = 0.
    assert region_similarity(blob, empty) == 0.0
    assert boundary_f_measure(blob, empty) == 0.0
    # Prediction where the ground truth is empty: precision 0, recall 1 -> F = 0.
    assert region_similarity(empty, blob) == 0.0
    assert boundary_f_measure(empty, blob) == 0.0


def test_full_frame_mask_has_no_boundary():
    # seg2bmap only compares a pixel with its right / lower neighbours inside the image.
    full = np.ones((6, 7), dtype=bool)
    assert not boundary_map(full).any()
    assert boundary_f_measure(full, full) == 1.0  # both boundaries empty
    half = full.copy()
    half[:, :3] = False
    assert boundary_f_measure(full, half) == 0.0  # empty predicted-side boundary vs a real one


def test_boundary_map_rule():
    seg = np.zeros((4, 4), dtype=bool)
    seg[1:3, 1:3] = True
    expected = np.array(
        [[1, 1, 1, 0],
         [1, 0, 1, 0],
         [1, 1, 1, 0],
         [0, 0, 0, 0]], dtype=bool)  # the ring is shifted half a pixel up-left of the square
    np.testing.assert_array_equal(boundary_map(seg), expected)
    # An object in the last column: the last column compares only vertically.
    seg = np.zeros((3, 3), dtype=bool)
    seg[:, 2] = True
    expected = np.array([[0, 1, 0], [0, 1, 0], [0, 1, 0]], dtype=bool)
    np.testing.assert_array_equal(boundary_map(seg), expected)
    # Stacked frames give the per-frame maps.
    stack = np.stack([seg, seg.T])
    np.testing.assert_array_equal(boundary_map(stack)[1], boundary_map(seg.T))


def test_tolerance_and_disk():
    assert boundary_tolerance(480, 854) == 8  # ceil(0.008 * 979.7)
    assert boundary_tolerance(100, 100) == 2  # ceil(1.13)
    assert boundary_tolerance(100, 100, bound_th=3) == 3  # >= 1 means pixels
    d = disk(2)
    assert d.shape == (5, 5) and d.sum() == 13  # x^2 + y^2 <= 4: 1 + 4 + 4 + 4
    assert d[0, 2] == 1 and d[0, 1] == 0


def test_square_shifted_three_pixels():
    # A 10x10 square shifted 3 px right in a 100x100 frame: radius ceil(0.008 * 141.4) = 2.
    gt = np.zeros((100, 100), dtype=bool)
    gt[20:30, 20:30] = True
    pred = np.roll(gt, 3, axis=1)
    assert region_similarity(gt, pred) == pytest.approx(70 / 130)  # 10 x 7 over 10 x 13
    # Each boundary is an 11x11 ring of 40 pixels. Of the predicted ring, 10 + 10 top/bottom pixels
    # (all but the far corner column) and 4 of the 9 left-column pixels (two near each end) lie
    # within 2 px of the ground truth's ring; the right column is 3 px away. P = R = 24/40.
    assert boundary_f_measure(gt, pred) == pytest.approx(0.6)
    # With a 3-pixel tolerance every pixel is matched.
    assert boundary_f_measure(gt, pred, bound_th=3) == pytest.approx(1.0)


def _reference_f(gt: np.ndarray, pred: np.ndarray, radius: int) -> float:
    """The toolkit's F written plainly: per-pixel seg2bmap loops, brute-force distances, no crop."""

    def bmap(seg):
        h, w = seg.shape
        out = np.zeros_like(seg, dtype=bool)
        for y in range(h):
            for x in range(w):
                if y == h - 1 and x == w - 1:
                    continue
                if y == h - 1:
                    out[y, x] = seg[y, x] != seg[y, x + 1]
                elif x == w - 1:
                    out[y, x] = seg[y, x] != seg[y + 1, x]
                else:
                    out[y, x] = (seg[y, x] != seg[y, x + 1]) or (seg[y, x] != seg[y + 1, x]) or (
                        seg[y, x] != seg[y + 1, x + 1])
        return out

    def matched(src, dst):
        a, b = np.argwhere(src), np.argwhere(dst)
        if len(a) == 0 or len(b) == 0:
            return 0
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return int((d2.min(axis=1) <= radius * radius).sum())

    bg, bp = bmap(gt), bmap(pred)
    n_gt, n_pred = int(bg.sum()), int(bp.sum())
    if n_pred == 0 and n_gt == 0:
        p = r = 1.0
    elif n_pred == 0:
        p, r = 1.0, 0.0
    elif n_gt == 0:
        p, r = 0.0, 1.0
    else:
        p, r = matched(bp, bg) / n_pred, matched(bg, bp) / n_gt
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def test_f_matches_plain_reference_on_random_masks():
    # The fast path crops to the objects; it must equal the full-image rule, edges included.
    rng = np.random.default_rng(0)
    for trial in range(30):
        h, w = rng.integers(8, 40, size=2)
        gt = rng.random((h, w)) < 0.4
        pred = gt.copy()
        if trial % 3 == 0:
            gt = np.zeros((h, w), dtype=bool)
            gt[rng.integers(0, h):, rng.integers(0, w):] = True  # touches the bottom-right edges
        pred ^= rng.random((h, w)) < 0.15
        if trial == 5:
            pred[:] = False
        radius = int(rng.integers(1, 4))
        expected = _reference_f(gt, pred, radius)
        assert boundary_f_measure(gt, pred, bound_th=radius) == pytest.approx(expected, abs=1e-12), trial


def test_frame_scores_per_object():
    gt = np.zeros((20, 30), dtype=np.uint8)
    gt[2:8, 2:8] = 1  # 36 px
    gt[10:16, 10:20] = 2  # 60 px
    pred = np.zeros_like(gt)
    pred[2:8, 2:5] = 1  # half of object 1
    pred[10:16, 10:20] = 2  # object 2 exact
    j, f = frame_scores(gt, pred, [1, 2, 3])
    np.testing.assert_allclose(j, [0.5, 1.0, 1.0])  # object 3 absent from both: J = 1
    assert f[1] == 1.0 and f[2] == 1.0 and 0 < f[0] < 1
    assert f[0] == pytest.approx(boundary_f_measure(gt == 1, pred == 1))


# --- statistics -------------------------------------------------------------------------------


def test_decay_uses_the_toolkit_bins_not_equal_quarters():
    values = np.arange(48, dtype=np.float64)
    stats = davis_statistics(values)
    # Toolkit bins for 48 frames: 0..12 and 35..47 (13 frames each, neighbours share a frame);
    # four equal quarters (np.array_split) would give 5.5 - 41.5 = -36.
    assert stats.decay == pytest.approx(6.0 - 41.0)
    assert stats.mean == pytest.approx(23.5)


def test_decay_bins_equal_toolkit_formula():
    for n in range(1, 257):
        cuts = (np.round(np.linspace(1, n, 5) + 1e-10) - 1).astype(int)
        assert decay_bins(n) == [(int(cuts[i]), int(cuts[i + 1]) + 1) for i in range(4)], n
    assert davis_statistics(np.array([0.7])).decay == 0.0


def test_recall_is_strictly_above_half():
    stats = davis_statistics(np.array([0.5, 0.6, 0.4, 0.9]))
    assert stats.recall == pytest.approx(0.5)
    assert stats.mean == pytest.approx(0.6)


# --- multi-object scoring on a handmade DAVIS 2017 root -----------------------------------------


def _two_object_clip(num_frames=5, h=40, w=60):
    """Object 1 (8x10) moves right by 2 px a frame, object 2 (6x6) stays; a void band at row 30."""
    labels = np.zeros((num_frames, h, w), dtype=np.uint8)
    for t in range(num_frames):
        labels[t, 5:13, 5 + 2 * t : 15 + 2 * t] = 1
        labels[t, 20:26, 40:46] = 2
        labels[t, 30:32, :] = 255
    frames = np.full((num_frames, h, w, 3), 90, dtype=np.uint8)
    return frames, labels


@pytest.fixture()
def davis17(tmp_path):
    frames, labels = _two_object_clip()
    root = tmp_path / "davis"
    write_davis_sequence(root, "clip", frames, labels, split="val")
    return root, labels


def _write_results(root: Path, name: str, labels: np.ndarray, frames=None) -> None:
    out = root / name
    out.mkdir(parents=True, exist_ok=True)
    for t in frames if frames is not None else range(len(labels)):
        write_mask(out / f"{t:05d}.png", labels[t])


def test_multi_object_missing_object_counts_as_empty(davis17, tmp_path):
    root, gt = davis17
    pred = np.where(gt == 255, 0, gt)
    pred[pred == 2] = 0  # object 2 never predicted
    _write_results(tmp_path / "res", "clip", pred, frames=[1, 2, 3])  # first and last may be absent
    scores = evaluate_davis(tmp_path / "res", root, split="val")
    per_object = scores.per_object()
    assert list(per_object) == ["clip_1", "clip_2"]
    assert per_object["clip_1"] == {"J-Mean": 1.0, "F-Mean": 1.0}
    assert per_object["clip_2"] == {"J-Mean": 0.0, "F-Mean": 0.0}
    g = scores.global_scores()
    assert g["J-Mean"] == 0.5 and g["F-Mean"] == 0.5 and g["J&F-Mean"] == 0.5
    assert g["J-Recall"] == 0.5 and g["J-Decay"] == 0.0
    assert [len(o.j) for o in scores.objects] == [3, 3]  # frames 1..3 of 5


def test_void_is_background_as_in_the_toolkit(davis17, tmp_path):
    root, gt = davis17
    pred = np.where(gt == 255, 0, gt)
    pred[2][gt[2] == 255] = 1  # frame 2 claims the void band (2 x 60 px) for object 1
    _write_results(tmp_path / "res", "clip", pred)
    scores = evaluate_davis(tmp_path / "res", root, split="val")
    obj1 = scores.objects[0]
    np.testing.assert_allclose(obj1.j, [1.0, 80 / (80 + 120), 1.0])
    assert obj1.f[1] < 1.0 and obj1.f[0] == 1.0
    assert scores.objects[1].j.tolist() == [1.0, 1.0, 1.0]


def test_score_sequence_in_memory_equals_folder(davis17, tmp_path):
    root, gt = davis17
    pred = np.where(gt == 255, 0, gt)
    pred[3] = np.roll(pred[3], 2, axis=0)
    _write_results(tmp_path / "res", "clip", pred)
    from_folder = evaluate_davis(tmp_path / "res", root, split="val").per_object()
    in_memory = score_sequence(gt, pred, "clip")
    assert {o.key: {"J-Mean": o.j_stats.mean, "F-Mean": o.f_stats.mean} for o in in_memory} == from_folder
    assert in_memory[0].j[2] < 1.0


def test_extra_object_id_is_an_error(davis17, tmp_path):
    root, gt = davis17
    pred = np.where(gt == 255, 0, gt)
    pred[2, 0:3, 0:3] = 3
    _write_results(tmp_path / "res", "clip", pred)
    with pytest.raises(ReusevosError, match=r"00002\.png holds object id\(s\) 3 that the ground truth lacks"):
        evaluate_davis(tmp_path / "res", root, split="val")


def test_missing_prediction_frame_is_an_error(davis17, tmp_path):
    root, gt = davis17
    _write_results(tmp_path / "res", "clip", np.where(gt == 255, 0, gt), frames=[1, 3])
    with pytest.raises(ReusevosError, match=r"prediction .*clip.00002\.png is missing"):
        evaluate_davis(tmp_path / "res", root, split="val")


def test_prediction_size_mismatch_is_an_error(davis17, tmp_path):
    root, gt = davis17
    small = np.zeros((5, 20, 30), dtype=np.uint8)
    _write_results(tmp_path / "res", "clip", small)
    with pytest.raises(ReusevosError, match=r"00001\.png is 30x20 but the ground truth is 60x40"):
        evaluate_davis(tmp_path / "res", root, split="val")


def test_missing_sequence_folder_and_results_folder(davis17, tmp_path):
    root, _ = davis17
    (tmp_path / "res").mkdir()
    with pytest.raises(ReusevosError, match=r"no results for sequence clip"):
        evaluate_davis(tmp_path / "res", root, split="val")
    with pytest.raises(ReusevosError, match=r"results folder .* does not exist"):
        evaluate_davis(tmp_path / "nothing", root, split="val")


def test_too_short_sequence_is_an_error(tmp_path):
    frames, labels = _two_object_clip(num_frames=2)
    write_davis_sequence(tmp_path / "d", "short", frames, labels, split="val")
    _write_results(tmp_path / "res", "short", labels)
    with pytest.raises(ReusevosError, match="at least 3"):
        evaluate_davis(tmp_path / "res", tmp_path / "d", split="val")


# --- the command line -------------------------------------------------------------------------


def _run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "reusevos", "eval", *map(str, args)],
        capture_output=True, text=True, env=env, timeout=120,
    )


@needs_golden
def test_cli_writes_the_golden_json(tmp_path):
    out = tmp_path / "scores.json"
    env = dict(os.environ, REUSEVOS_DAVIS=str(BLACKSWAN))  # --davis defaults to the variable
    proc = _run_cli(GOLDEN / "results" / "morph", "--sequences", "blackswan", "--json", out, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "J&F-Mean" in proc.stdout and "blackswan_1" in proc.stdout
    written = json.loads(out.read_text())
    golden = json.loads((GOLDEN / "official_scores.json").read_text())["morph"]
    assert set(written) == {"global", "per_object"}
    assert set(written["global"]) == set(golden["global"])
    for key, value in golden["global"].items():
        assert written["global"][key] == pytest.approx(value, abs=1e-6), key
    assert written["per_object"]["blackswan_1"]["F-Mean"] == pytest.approx(
        golden["per_object"]["blackswan_1"]["F-Mean"], abs=1e-6)


@needs_golden
def test_cli_errors_are_one_line_exit_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "REUSEVOS_DAVIS"}
    cases = [
        (GOLDEN / "results" / "shift", "--davis", tmp_path / "no-such-root"),  # missing root
        (GOLDEN / "results" / "shift",),  # no --davis, no variable
        (GOLDEN / "results" / "shift", "--davis", BLACKSWAN, "--split", "test"),  # missing split
        (GOLDEN / "results" / "shift", "--davis", BLACKSWAN, "--sequences", "bear"),  # unknown sequence
        (tmp_path, "--davis", BLACKSWAN),  # no blackswan/ in the results
    ]
    expected = ["is not a folder", "REUSEVOS_DAVIS", "available splits: ImageSets/480p: val",
                "bear not in split 'val'", "no results for sequence blackswan"]
    for args, fragment in zip(cases, expected):
        proc = cli("eval", *args, env=env)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("reusevos eval: error: "), proc.stderr
        assert fragment in lines[0]
        assert proc.stdout == ""
