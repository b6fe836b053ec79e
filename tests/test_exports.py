"""Exports (``reusevos.io.exports``, ``reusevos segment --format``): each format written from known masks and read
back with the tool that format is made for (PIL, PyAV, pycocotools), and the exports of a real run inside the
results folder's rules (written to OUT.partial and committed; a stopped run leaves the earlier results)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

import reusevos
from conftest import FAST, run_segment, snapshot
from reusevos.config import SessionConfig
from reusevos.errors import ReusevosError
from reusevos.io.exports import FORMATS, Exports, check_formats, matte_alpha
from reusevos.io.masks import read_mask
from reusevos.io.writers import MatteVideoWriter, check_matte_video, read_matte_video
from reusevos.synthetic import SyntheticConfig, generate_clip, write_clip

CLIP = SyntheticConfig(size=(64, 96), num_frames=4, num_objects=2, late_objects=1, speed=2.0, seed=6,
                       cutout_fraction=0.0)


@pytest.fixture(scope="module")
def clip():
    """Frames, label maps and the ids tracked on each frame (object 2 starts late)."""
    rendered = list(generate_clip(CLIP))
    starts = {obj.object_id: obj.start_frame for obj in generate_clip(CLIP).objects}
    ids = [[obj for obj, start in sorted(starts.items()) if start <= t] for t in range(len(rendered))]
    assert ids[0] == [1] and ids[-1] == [1, 2]  # the late object is there by the last frame
    frames, labels = zip(*rendered)
    return list(frames), list(labels), ids


@pytest.fixture(scope="module")
def exported(clip, tmp_path_factory):
    frames, labels, ids = clip
    folder = tmp_path_factory.mktemp("exports")
    exports = Exports(FORMATS, folder, "clip", fps=10)
    for t, (frame, label, tracked) in enumerate(zip(frames, labels, ids)):
        exports.write(f"{t:05d}", frame, label, tracked)
    exports.close()
    return folder


def test_the_formats_are_all_there_and_nothing_else(exported):
    assert sorted(p.name for p in exported.iterdir()) == sorted(
        ["00000.png", "00001.png", "00002.png", "00003.png", "binary", "rgba", "matte.webm", "matte.mov",
         "coco.json", "Annotations", "meta.json"])  # the hidden line file of coco.json is gone


def test_davis_and_binary_masks_read_back(clip, exported):
    frames, labels, ids = clip
    for t, (label, tracked) in enumerate(zip(labels, ids)):
        assert np.array_equal(read_mask(exported / f"{t:05d}.png"), label)
        for obj in (1, 2):
            path = exported / "binary" / str(obj) / f"{t:05d}.png"
            assert path.exists() == (obj in tracked)  # from the object's start on
            if path.exists():
                image = Image.open(path)
                assert image.mode == "L" and np.array_equal(np.array(image), np.where(label == obj, 255, 0))


def test_rgba_frames_are_the_frame_with_the_union_of_the_objects_as_alpha(clip, exported):
    frames, labels, _ = clip
    for t, (frame, label) in enumerate(zip(frames, labels)):
        image = Image.open(exported / "rgba" / f"{t:05d}.png")
        assert image.mode == "RGBA"
        rgba = np.array(image)
        assert np.array_equal(rgba[..., :3], frame) and np.array_equal(rgba[..., 3], np.where(label > 0, 255, 0))


def test_feather_blurs_only_the_edge_of_the_alpha(clip, tmp_path):
    frames, _, _ = clip
    label = np.zeros(frames[0].shape[:2], np.uint8)
    label[12:52, 20:70] = 1
    exports = Exports(["rgba"], tmp_path, "clip", feather=2.0)
    exports.write("00000", frames[0], label, [1])
    alpha = np.array(Image.open(tmp_path / "rgba" / "00000.png"))[..., 3]
    hard = np.where(label > 0, 255, 0).astype(np.uint8)
    assert np.array_equal(alpha, cv2.GaussianBlur(hard, (0, 0), 2.0)) and np.array_equal(alpha, matte_alpha(label, 2.0))
    inside = cv2.erode(hard, np.ones((15, 15), np.uint8)) > 0  # 7 pixels (3.5 sigma) from the edge
    outside = cv2.dilate(hard, np.ones((15, 15), np.uint8)) == 0
    assert alpha[inside].min() >= 254 and alpha[outside].max() <= 1
    edge = ~inside & ~outside
    assert ((alpha[edge] > 0) & (alpha[edge] < 255)).mean() > 0.5  # soft where the mask's edge is


@pytest.mark.parametrize("name, tolerance", [("webm", 0.01), ("mov", 0.0)])
def test_the_matte_videos_keep_the_alpha(clip, exported, name, tolerance):
    frames, labels, _ = clip
    decoded = list(read_matte_video(exported / f"matte.{name}"))
    assert len(decoded) == len(frames)
    for (rgb, alpha), frame, label in zip(decoded, frames, labels):
        assert alpha.shape == label.shape and rgb.shape == frame.shape
        wrong = (alpha > 127) != (label > 0)
        assert wrong.mean() <= tolerance, wrong.mean()  # VP9 is lossy (measured: none wrong), ProRes 4444 exact
        assert np.abs(rgb.astype(int) - frame).mean() < 12  # the colours, up to compression (measured 5.7 and 0.1)


def test_coco_rle_decodes_to_the_masks(clip, exported):
    frames, labels, ids = clip
    coco = json.loads((exported / "coco.json").read_text())
    assert [image["file_name"] for image in coco["images"]] == ["00000", "00001", "00002", "00003"]
    assert coco["categories"] == [{"id": 1, "name": "object"}] and coco["objects"] == [1, 2]
    assert len(coco["annotations"]) == sum(len(tracked) for tracked in ids)
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
    for annotation in coco["annotations"]:
        t, obj = annotation["image_id"], annotation["object_id"]
        truth = labels[t] == obj
        rle = {"size": annotation["segmentation"]["size"], "counts": annotation["segmentation"]["counts"].encode()}
        decoded = coco_mask.decode(rle)
        assert decoded.shape == truth.shape and np.array_equal(decoded, truth)
        assert annotation["area"] == truth.sum()
        ys, xs = np.nonzero(truth)
        box = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1] if truth.any() else [0, 0, 0, 0]
        assert annotation["bbox"] == box


def test_the_youtube_vos_layout(clip, exported):
    frames, labels, _ = clip
    for t, label in enumerate(labels):
        path = exported / "Annotations" / "clip" / f"{t:05d}.png"
        assert Image.open(path).mode == "P" and np.array_equal(read_mask(path), label)
    meta = json.loads((exported / "meta.json").read_text())
    expected = {str(obj): {"frames": [f"{t:05d}" for t, label in enumerate(labels) if (label == obj).any()]}
                for obj in (1, 2)}
    assert meta == {"videos": {"clip": {"objects": expected}}}
    assert expected["1"]["frames"][0] == "00000" and expected["2"]["frames"][0] != "00000"


def test_formats_are_checked(monkeypatch):
    assert check_formats(["davis", " COCO", "davis", ""]) == ["davis", "coco"]
    with pytest.raises(ReusevosError, match="unknown format 'png'; choose from davis, binary"):
        check_formats(["davis", "png"])
    with pytest.raises(ReusevosError, match="no format given"):
        check_formats([""])
    with pytest.raises(ReusevosError, match="feather 3 changes only the mattes"):
        check_formats(["davis", "coco"], feather=3)
    with pytest.raises(ReusevosError, match="feather -1"):
        check_formats(["rgba"], feather=-1)
    # An encoder that is missing, and one that drops the alpha, are both found and named.
    check_matte_video.cache_clear()
    monkeypatch.setitem(MatteVideoWriter.CODECS, ".webm", ("libvpx-vp9-missing", "yuva420p"))
    with pytest.raises(ReusevosError, match="cannot export webm: this FFmpeg build .* has no libvpx-vp9-missing "
                                            "encoder.*ProRes 4444 with alpha \\(format mov\\)"):
        check_formats(["webm"])
    check_matte_video.cache_clear()
    monkeypatch.setitem(MatteVideoWriter.CODECS, ".webm", ("libvpx-vp9", "yuv420p"))  # no alpha plane
    with pytest.raises(ReusevosError, match="writes .webm videos \\(libvpx-vp9\\) without their alpha"):
        check_formats(["webm"])
    check_matte_video.cache_clear()


# -- in a run -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def random_model(weights):
    return reusevos.load_model(weights["base"], device="cpu")


@pytest.mark.slow
def test_a_run_writes_its_exports_through_the_partial_folder(random_model, tmp_path):
    write_clip(tmp_path, "c", CLIP)
    frames, masks = tmp_path / "JPEGImages" / "480p" / "c", tmp_path / "Annotations" / "480p" / "c"
    out = tmp_path / "o"
    out.mkdir()
    (out / "stats.json").write_text('{"earlier": true}\n')
    earlier = snapshot(out)
    formats = ["binary", "coco", "youtube", "webm"]

    def stop(result, stats):
        if result.index == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reusevos.segment_video(random_model, frames, masks, out, formats=formats, overwrite=True, warmup=False,
                               options=SessionConfig("full", 1.0), on_frame=stop)
    assert snapshot(out) == earlier  # the earlier results, untouched
    partial = tmp_path / "o.partial"
    assert json.loads((partial / "stats.json").read_text())["complete"] is False
    coco = json.loads((partial / "coco.json").read_text())  # the frames done are not lost
    assert [image["file_name"] for image in coco["images"]] == ["00000", "00001", "00002"]
    assert len(list(read_matte_video(partial / "matte.webm"))) == 3
    stats = reusevos.segment_video(random_model, frames, masks, out, formats=formats, overwrite=True, warmup=False,
                                   options=SessionConfig("full", 1.0))
    assert not partial.exists() and sorted(p.name for p in out.iterdir()) == [
        "Annotations", "binary", "coco.json", "matte.webm", "meta.json", "stats.json"]
    record = json.loads((out / "stats.json").read_text())
    assert record["complete"] is True and record["settings"]["formats"] == formats and stats.frames == 4
    first = read_mask(masks / "00000.png")
    assert np.array_equal(read_mask(out / "Annotations" / "c" / "00000.png"), first)  # the start frame's mask
    assert np.array_equal(np.array(Image.open(out / "binary" / "1" / "00000.png")) > 0, first == 1)


@pytest.mark.slow
def test_format_flags_on_the_command_line(weights, tmp_path):
    write_clip(tmp_path, "c", CLIP)
    frames, mask = tmp_path / "JPEGImages" / "480p" / "c", tmp_path / "Annotations" / "480p" / "c" / "00000.png"

    def segment(out, *flags):
        return run_segment(frames, "--mask", mask, "--out", out, "--weights", weights["base"], "--no-warmup",
                           *flags, *FAST)

    for flags, message in ((["--format", "davis,gif"], "unknown format 'gif'"),
                           (["--feather", "2"], "feather 2 changes only the mattes")):
        proc = segment(tmp_path / "bad", *flags)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert message in proc.stderr and not (tmp_path / "bad").exists()
    proc = segment(tmp_path / "o", "--format", "davis,rgba,youtube", "--feather", "1.5")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "o"
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "00001.png", "00002.png", "00003.png",
                                                     "Annotations", "meta.json", "rgba", "stats.json"]
    alpha = np.array(Image.open(out / "rgba" / "00000.png"))[..., 3]
    assert np.array_equal(alpha, matte_alpha(read_mask(out / "00000.png"), 1.5))
    assert json.loads((out / "stats.json").read_text())["settings"]["feather"] == 1.5
