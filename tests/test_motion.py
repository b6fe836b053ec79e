"""The motion variant's geometry on crafted images with hand-checked answers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from reusevos.motion import MARGIN, moved_output, object_box, shifted, small_grey, translation


def _texture(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur((rng.random(shape) * 255).astype(np.float32), (0, 0), 2)


def test_translation_finds_a_known_shift_of_the_whole_image():
    image = _texture((120, 200))
    moved = np.roll(image, (3, -5), axis=(0, 1))  # 3 down, 5 left
    dy, dx = translation(image, moved, None)
    assert dy == pytest.approx(3, abs=0.6) and dx == pytest.approx(-5, abs=0.6)
    assert translation(image, image, None) == pytest.approx((0.0, 0.0), abs=1e-3)


def test_object_box_is_the_object_grown_by_the_margin_in_the_small_image():
    prob = np.zeros((480, 800), np.float32)
    prob[100:200, 300:400] = 0.9
    # rows 100..199 -> 25..49 at a quarter, cols 300..399 -> 75..99; grown by MARGIN and clipped
    assert object_box(prob, (120, 200)) == (25 - MARGIN, 50 + MARGIN, 75 - MARGIN, 100 + MARGIN)
    assert object_box(np.zeros((480, 800), np.float32), (120, 200)) is None  # nothing to follow
    tiny = np.zeros((480, 800), np.float32)
    tiny[0:4, 0:4] = 1
    assert object_box(tiny, (120, 200)) is None  # too small to correlate: the whole image is used


def test_shifted_moves_a_square_by_whole_pixels_exactly():
    prob = np.zeros((60, 80), np.float32)
    prob[10:20, 30:40] = 1
    moved = shifted(prob, 12, -20)
    expected = np.zeros_like(prob)
    expected[22:32, 10:20] = 1
    assert np.array_equal(moved, expected)


def test_moved_output_follows_a_textured_object_on_a_still_background():
    height, width = 240, 320
    background = np.full((height, width, 3), 90, np.uint8)
    sprite = np.clip(_texture((40, 48), seed=3), 0, 255).astype(np.uint8)

    def frame_at(y, x):
        frame = background.copy()
        frame[y:y + 40, x:x + 48] = sprite[..., None]
        return frame

    mask = np.zeros((height, width), np.float32)
    mask[100:140, 120:168] = 1
    truth = np.zeros_like(mask)
    truth[108:148, 124:172] = 1  # the object moved 8 down and 4 right
    moved = moved_output(mask, small_grey(frame_at(100, 120)), small_grey(frame_at(108, 124)))

    def iou(a, b):
        return ((a > 0.5) & (b > 0.5)).sum() / ((a > 0.5) | (b > 0.5)).sum()

    assert iou(mask, truth) < 0.72  # copying the mask would miss by this much
    assert iou(moved, truth) > 0.9
