"""`hashes.pdq` reads PDQ from half the square: the same bits and quality as the whole square."""

from __future__ import annotations

import dataclasses

import numpy as np
import pdqhash
import pytest
from PIL import Image

from shotstamp_service.matching import fingerprint as fingerprint_module
from shotstamp_service.matching import hashes
from shotstamp_service.matching.decode import CANONICAL_SIDE, draft_side, open_image
from shotstamp_service.matching.fingerprint import fingerprint_decoded
from tests.kit import imagegen
from tests.kit.matching_helpers import fixture_image, png


def reference_pdq(grey: np.ndarray, *, mirror: bool = False) -> tuple[bytes, int]:
    """PDQ as computed before: pdqhash over the whole `HASH_SIDE` square (or its mirror)."""
    square = hashes._square(grey)
    if mirror:
        square = np.ascontiguousarray(square[:, ::-1])
    bits, quality = pdqhash.compute(np.broadcast_to(square[:, :, None], (*square.shape, 3)))
    return np.packbits(bits.astype(np.uint8)).tobytes(), int(quality)


def test_the_bindings_luma_of_a_grey_byte_is_that_byte_exactly() -> None:
    # pdqhash's luma, as its binding computes it, of R = G = B = v: the premise of `pdq`.
    v = np.arange(256, dtype=np.uint8)
    luma = (v * 0.299 + v * 0.587 + v * 0.114).astype(np.float32)
    assert np.array_equal(luma, v.astype(np.float32))


def _greys() -> list[np.ndarray]:
    rng = np.random.default_rng(20)
    out = [rng.integers(0, 256, (h, w), dtype=np.uint8)  # noise: every bit is a coin flip
           for h, w in [(128, 128), (256, 256), (256, 171), (90, 256), (40, 60), (128, 300)]]
    out += [np.full((256, 256), 255, np.uint8), np.zeros((128, 128), np.uint8)]  # quality 0
    ramp = np.add.outer(np.arange(256), np.arange(256)) % 256
    out.append(ramp.astype(np.uint8))
    for seed in range(12):
        image = imagegen.photo(seed, (640 + 40 * seed, 480)).convert("L")
        out.append(np.asarray(image.resize((256, 192), Image.Resampling.BOX)))
    return out


@pytest.mark.parametrize("mirror", [False, True])
def test_pdq_is_the_whole_squares_pdq_bit_for_bit(mirror: bool) -> None:
    for grey in _greys():
        assert hashes.pdq(grey, mirror=mirror) == reference_pdq(grey, mirror=mirror)


def test_fingerprints_are_the_same_as_with_the_whole_square(monkeypatch) -> None:
    side = draft_side(CANONICAL_SIDE)
    uploads = [png(fixture_image())] + [imagegen.jpeg(seed) for seed in range(8)]
    uploads += [imagegen.jpeg(seed, (1000, 1000)) for seed in range(8, 12)]
    for seed in range(12, 16):  # product shots on white: a content box
        shot = Image.new("RGB", (1000, 1000), "white")
        shot.paste(imagegen.photo(seed, (520, 400)), (240, 300))
        uploads.append(imagegen.encode(shot, "JPEG", quality=90))
    decoded = [open_image(data, draft=(side, side), mode="RGB") for data in uploads]
    now = [fingerprint_decoded(str(i), d) for i, d in enumerate(decoded)]
    monkeypatch.setattr(fingerprint_module._hashes, "pdq", reference_pdq)
    before = [fingerprint_decoded(str(i), d) for i, d in enumerate(decoded)]
    for a, b in zip(now, before, strict=True):
        assert dataclasses.asdict(a) == dataclasses.asdict(b)
    assert any("pdq_trim" in fp.hashes for fp in now)  # the content box's PDQ is covered too
