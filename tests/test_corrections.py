"""Corrections: ``Session.step(frame, mask, reset=True)`` restarts the objects ``mask`` marks, and
``reusevos segment --corrections DIR`` does it on the frames DIR's masks are named after.

The last test runs the shipped weights on a clip where the wrong object is tracked from the first frame, and
checks that a correction puts it right.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

import reusevos
from conftest import FAST, cli, one_error, run_segment, snapshot
from reusevos.config import ModelConfig, SessionConfig
from reusevos.errors import ReusevosError
from reusevos.evaluation.metrics import region_similarity
from reusevos.io.frames import FrameSource
from reusevos.io.masks import read_mask, write_mask
from reusevos.model.backbone import Backbone
from reusevos.session import Route
from reusevos.synthetic import SyntheticConfig, generate_clip, write_clip

SMALL = SyntheticConfig(size=(96, 160), num_frames=6, num_objects=2, speed=1.0, seed=4, cutout_fraction=0.0)
WRONG = SyntheticConfig(size=(240, 432), num_frames=20, num_objects=2, speed=1.0, seed=5, cutout_fraction=0.0)


class Memory(FrameSource):
    """Frames held in memory, named 00000, 00001, ..."""

    def __init__(self, frames):
        super().__init__()
        self.frames = list(frames)
        self.path, self.source_size, self.fps = "memory", self.frames[0].shape[:2], None

    @property
    def names(self):
        return [f"{t:05d}" for t in range(len(self.frames))]

    def __len__(self):
        return len(self.frames)

    def _frames(self):
        yield from zip(self.names, self.frames)


@pytest.fixture(scope="module")
def random_network():
    torch.manual_seed(0)
    return reusevos.VOSNetwork(ModelConfig(), Backbone("mobilenet_v2")).eval()


@pytest.fixture(scope="module")
def small():
    frames, labels = zip(*generate_clip(SMALL))
    return list(frames), list(labels)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(region_similarity(a, b))


# -- the session ---------------------------------------------------------------------------------------------------
def test_reset_starts_a_tracked_object_again_and_the_default_ignores_it(random_network, small):
    frames, labels = small
    first, other = (labels[0] == 1).astype(np.uint8), (labels[0] == 2).astype(np.uint8)  # id 1 on either object
    session = reusevos.Session(random_network, SessionConfig("full", 1.0))
    assert session.step(frames[0], first).started == [1]
    old = session.objects[1]
    assert session.step(frames[1]).routes == {1: Route.COMPUTED}
    ignored = session.step(frames[2], other)  # no reset: an id already tracked is ignored, as before
    assert ignored.started == [] and ignored.routes == {1: Route.COMPUTED} and session.objects[1] is old
    restarted = session.step(frames[3], other, reset=True)
    assert restarted.started == [1] and restarted.routes == {}  # started on this frame, not tracked on it
    assert np.array_equal(restarted.labels, other)  # a start frame's output is its mask
    new = session.objects[1]
    assert new is not old and new.start_frame == 3 and new.last_computed == 3 and new.routes == Counter()
    assert new.target is not old.target
    assert session.step(frames[4]).routes == {1: Route.COMPUTED} and new.routes == Counter({Route.COMPUTED: 1})
    tiny = np.zeros_like(first)
    tiny[0, 0] = 1
    with pytest.raises(ReusevosError, match="object 1 covers only 1 pixels"):
        session.step(frames[5], tiny, reset=True)
    assert session.objects[1] is new  # a refused correction changes nothing


def test_a_correction_and_a_late_start_on_the_same_frame_start_both(random_network, small):
    frames, labels = small
    one = (labels[0] == 1).astype(np.uint8)
    late = labels[3]  # object 1 again (ignored: already tracked) and object 2, new
    fix = (labels[3] == 1).astype(np.uint8)  # the correction restarts object 1 there
    started = {}
    stats = reusevos.segment_video(random_network, Memory(frames), {"00000": one, "00003": late}, None,
                                   corrections={"00003": fix}, options=SessionConfig("full", 1.0), warmup=False,
                                   on_frame=lambda r, s: started.update({r.index: r.started}))
    assert started == {0: [1], 1: [], 2: [], 3: [1, 2], 4: [], 5: []}
    assert stats.objects[1].start_frame == 3 and stats.objects[2].start_frame == 3


# -- the command line ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_bad_corrections_are_refused_before_anything_runs(weights, tmp_path):
    write_clip(tmp_path, "c", SMALL)
    frames, masks = tmp_path / "JPEGImages" / "480p" / "c", tmp_path / "Annotations" / "480p" / "c"
    fixes = tmp_path / "fixes"
    fixes.mkdir()
    write_mask(fixes / "00006.png", read_mask(masks / "00000.png"))  # the clip has frames 0 to 5
    out = tmp_path / "o"
    before = snapshot(tmp_path / "JPEGImages"), snapshot(tmp_path / "Annotations")

    def segment(*flags):
        return cli("segment", frames, "--mask", masks / "00000.png", "--out", out, "--weights", weights["base"],
                   "--no-warmup", *flags, *FAST)

    one_error(segment("--corrections", fixes), "correction", "00006.png", "is for frame '00006', which the input "
               "does not have", "6 frames")
    one_error(segment("--corrections", masks / "00000.png"), "is a file; give a folder")
    one_error(segment("--corrections", tmp_path / "absent"), "correction not found")
    (fixes / "00006.png").unlink()
    write_mask(fixes / "00002.png", np.zeros((96, 160), np.uint8))
    one_error(segment("--corrections", fixes), "correction", "00002.png marks no object")
    write_mask(fixes / "00002.png", read_mask(masks / "00002.png"))
    one_error(cli("segment", frames, "--mask", masks / "00000.png", "--corrections", fixes, "--out", fixes,
                  "--weights", weights["base"], "--no-warmup", *FAST), "--out", "is the input", str(fixes))
    assert not out.exists() and (snapshot(tmp_path / "JPEGImages"), snapshot(tmp_path / "Annotations")) == before
    assert [p.name for p in fixes.iterdir()] == ["00002.png"]  # nothing written into the corrections either


@pytest.mark.slow
def test_a_correction_puts_a_wrongly_tracked_object_right(tmp_path):
    """Object B is tracked as id 1 from the first frame; a correction at frame 10 marks object A as id 1."""
    frames, truth = zip(*generate_clip(WRONG))
    a, b = [t == 1 for t in truth], [t == 2 for t in truth]
    fixes = tmp_path / "fixes"
    fixes.mkdir()
    write_mask(fixes / "10.png", a[10].astype(np.uint8))
    out = tmp_path / "o"
    stats = reusevos.segment_video(reusevos.load_model(device="cpu"), Memory(frames),
                                   {"00000": b[0].astype(np.uint8)}, out, corrections=fixes,
                                   options=SessionConfig("full", 1.0), warmup=False)
    tracked = [read_mask(out / f"{t:05d}.png") == 1 for t in range(len(frames))]
    before, after = range(1, 10), range(11, len(frames))
    # Measured: 0.97 with B before; 0.89 with A after (as when A is tracked from the first frame) and 0.00 with B.
    assert np.mean([_iou(tracked[t], b[t]) for t in before]) > 0.9  # the wrong object, followed well
    assert np.mean([_iou(tracked[t], a[t]) for t in after]) > 0.8  # after the correction: the right one
    assert np.mean([_iou(tracked[t], b[t]) for t in after]) < 0.05
    assert stats.objects[1].start_frame == 10 and len(stats.objects[1].routes) == len(frames) - 11
    record = json.loads((out / "stats.json").read_text())
    assert record["corrections"] == {"00010": [1]} and record["settings"]["corrections"] == str(fixes)
