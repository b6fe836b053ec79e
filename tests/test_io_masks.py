"""Mask files: the DAVIS palette, palette PNG round trips, and every mask format read_mask accepts."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reusevos.errors import ReusevosError
from reusevos.io.masks import DAVIS_PALETTE, object_ids, read_mask, write_mask

SHARED = Path(os.environ.get("REUSEVOS_SHARED", Path(__file__).resolve().parents[2] / "shared"))
BLACKSWAN_MASKS = SHARED / "data" / "davis2016-blackswan" / "Annotations" / "480p" / "blackswan"

# The PASCAL VOC / DAVIS colour map as published (index: RGB).
KNOWN_COLOURS = {
    0: (0, 0, 0),
    1: (128, 0, 0),
    2: (0, 128, 0),
    3: (128, 128, 0),
    4: (0, 0, 128),
    5: (128, 0, 128),
    6: (0, 128, 128),
    7: (128, 128, 128),
    8: (64, 0, 0),
    9: (192, 0, 0),
    10: (64, 128, 0),
    11: (192, 128, 0),
    12: (64, 0, 128),
    15: (192, 128, 128),
    16: (0, 64, 0),
    20: (0, 64, 128),
    255: (224, 224, 192),
}


def png_chunks(path: Path) -> dict[bytes, bytes]:
    """The chunks of a PNG file by type, read from the bytes (independent of PIL)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = {}, 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body)
        chunks.setdefault(kind, body)
        pos += 12 + length
    return chunks


def test_davis_palette_matches_published_colours():
    assert DAVIS_PALETTE.shape == (256, 3) and DAVIS_PALETTE.dtype == np.uint8
    for index, colour in KNOWN_COLOURS.items():
        assert tuple(DAVIS_PALETTE[index].tolist()) == colour, index
    # The off-by-one palette found in some code uses 191 for the top level; DAVIS uses 192.
    assert 191 not in DAVIS_PALETTE
    assert set(np.unique(DAVIS_PALETTE).tolist()) == {0, 32, 64, 96, 128, 160, 192, 224}
    assert len({tuple(c) for c in DAVIS_PALETTE.tolist()}) == 256  # colours map back to indices


def test_palette_png_round_trip_keeps_labels_and_palette_bytes(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.choice(np.array([0, 1, 2, 3, 4, 9, 20, 255], dtype=np.uint8), size=(37, 53))
    path = tmp_path / "00000.png"
    write_mask(path, labels)

    chunks = png_chunks(path)
    width, height, depth, colour_type = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (width, height, depth, colour_type) == (53, 37, 8, 3)  # 8-bit indexed colour
    palette = np.frombuffer(chunks[b"PLTE"], dtype=np.uint8).reshape(-1, 3)
    assert palette.shape == (256, 3)
    np.testing.assert_array_equal(palette, DAVIS_PALETTE)
    assert chunks[b"PLTE"][:15] == bytes([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128])
    assert tuple(palette[9]) == (192, 0, 0)

    with Image.open(path) as image:
        assert image.mode == "P"
    read = read_mask(path)
    assert read.dtype == np.uint8 and read.shape == (37, 53)
    np.testing.assert_array_equal(read, labels)
    assert object_ids(read) == [1, 2, 3, 4, 9, 20, 255]
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_write_mask_replaces_an_existing_file(tmp_path):
    path = tmp_path / "m.png"
    write_mask(path, np.ones((4, 4), np.uint8))
    write_mask(path, np.full((4, 4), 3, np.uint8))
    np.testing.assert_array_equal(read_mask(path), np.full((4, 4), 3))


def test_binary_0_255_png_is_one_object(tmp_path):
    raw = np.zeros((20, 30), np.uint8)
    raw[5:15, 10:25] = 255
    path = tmp_path / "mask.png"
    Image.fromarray(raw, mode="L").save(path)
    labels = read_mask(path)
    np.testing.assert_array_equal(labels, (raw == 255).astype(np.uint8))
    assert object_ids(labels) == [1]


def test_binary_mask_saved_with_grey_palette_is_one_object(tmp_path):
    # PIL's convert("P") keeps indices 0 and 255 with a grey palette; 255 is white, not DAVIS void.
    raw = np.zeros((20, 30), np.uint8)
    raw[2:9, 3:7] = 255
    path = tmp_path / "mask.png"
    Image.fromarray(raw, mode="L").convert("P").save(path)
    with Image.open(path) as image:
        assert image.mode == "P"
    np.testing.assert_array_equal(read_mask(path), (raw == 255).astype(np.uint8))


def test_davis_void_label_255_in_palette_png_is_kept(tmp_path):
    labels = np.zeros((10, 10), np.uint8)
    labels[2:5, 2:5] = 1
    labels[5, :] = 255
    write_mask(tmp_path / "m.png", labels)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), labels)


def test_real_davis2016_annotation_is_one_object():
    path = BLACKSWAN_MASKS / "00000.png"
    if not path.is_file():
        pytest.skip(f"shared blackswan clip not found at {BLACKSWAN_MASKS} (set REUSEVOS_SHARED)")
    raw = np.array(Image.open(path))
    labels = read_mask(path)
    assert labels.shape == (480, 854)
    assert object_ids(labels) == [1]
    assert int(labels.sum()) == int((raw == 255).sum()) > 10_000


def test_single_channel_label_png(tmp_path):
    labels = np.zeros((16, 16), np.uint8)
    labels[:8, :8], labels[8:, :8], labels[:8, 8:] = 1, 2, 3
    path = tmp_path / "labels.png"
    Image.fromarray(labels, mode="L").save(path)
    np.testing.assert_array_equal(read_mask(path), labels)
    assert object_ids(read_mask(path)) == [1, 2, 3]


def test_one_bit_png(tmp_path):
    raw = np.zeros((8, 12), bool)
    raw[2:6, 3:9] = True
    path = tmp_path / "bits.png"
    Image.fromarray(raw).save(path)
    with Image.open(path) as image:
        assert image.mode == "1"
    np.testing.assert_array_equal(read_mask(path), raw.astype(np.uint8))


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_rgb_mask_in_palette_colours(tmp_path, mode):
    labels = np.zeros((12, 20), np.uint8)
    labels[1:5, 1:5], labels[6:10, 2:8], labels[2:11, 12:18] = 1, 2, 9
    rgb = DAVIS_PALETTE[labels]
    path = tmp_path / "rgb.png"
    Image.fromarray(rgb).convert(mode).save(path)
    np.testing.assert_array_equal(read_mask(path), labels)


def test_rgb_export_showing_only_object_7_is_read_as_object_7(tmp_path):
    # DAVIS colour 7 is grey (128, 128, 128): the RGB file is grey but still a palette mask.
    labels = np.zeros((6, 6), np.uint8)
    labels[1:4, 1:4] = 7
    path = tmp_path / "rgb7.png"
    Image.fromarray(DAVIS_PALETTE[labels]).save(path)
    np.testing.assert_array_equal(read_mask(path), labels)


def test_grey_rgb_0_255_mask_is_one_object(tmp_path):
    raw = np.zeros((6, 6), np.uint8)
    raw[2:5, 1:3] = 255
    path = tmp_path / "grey.png"
    Image.fromarray(np.stack([raw] * 3, axis=-1)).save(path)
    np.testing.assert_array_equal(read_mask(path), (raw > 0).astype(np.uint8))


def test_rgb_mask_with_non_palette_colour_is_an_error(tmp_path):
    labels = np.zeros((8, 8), np.uint8)
    labels[2:6, 2:6] = 1
    rgb = DAVIS_PALETTE[labels].copy()
    rgb[3, 3] = (191, 0, 0)  # the off-by-one palette's colour 9
    path = tmp_path / "photo.png"
    Image.fromarray(rgb).save(path)
    with pytest.raises(ReusevosError) as info:
        read_mask(path)
    message = str(info.value)
    assert str(path) in message and "(191, 0, 0)" in message and "palette" in message


def test_missing_and_corrupt_mask_files_are_errors(tmp_path):
    with pytest.raises(ReusevosError, match="not found") as info:
        read_mask(tmp_path / "nope.png")
    assert "nope.png" in str(info.value)
    bad = tmp_path / "bad.png"
    bad.write_text("not a png")
    with pytest.raises(ReusevosError) as info:
        read_mask(bad)
    assert str(bad) in str(info.value)


def test_write_mask_into_missing_folder_is_an_error(tmp_path):
    target = tmp_path / "missing" / "00000.png"
    with pytest.raises(ReusevosError) as info:
        write_mask(target, np.zeros((4, 4), np.uint8))
    assert str(target) in str(info.value)
    assert not (tmp_path / "missing").exists()


def test_write_mask_rejects_bad_label_arrays(tmp_path):
    with pytest.raises(ReusevosError, match=r"must be \(H, W\)"):
        write_mask(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ReusevosError, match="0..255"):
        write_mask(tmp_path / "b.png", np.full((4, 4), 300))
