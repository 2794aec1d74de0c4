"""Stage 2's geometry, kept for people: where a cropped, turned copy sits in its original."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from shotstamp_service.matching.decode import CANONICAL_SIDE
from shotstamp_service.matching.engine import Matcher
from shotstamp_service.matching.fingerprint import fingerprint
from shotstamp_service.matching.verification import verify_pair
from tests.kit import imagegen


def _match(original: bytes, suspect: bytes):  # type: ignore[no-untyped-def]
    matcher = Matcher(background=False)
    stored = fingerprint(original)
    matcher.add(1, stored)
    found = matcher.match(fingerprint(suspect), {1: stored.features}.get)
    assert [m.verdict for m in found] == ["copy"]
    return found[0]


@pytest.mark.parametrize("angle", [4.0, -7.0])
def test_the_outline_of_a_cropped_turned_copy_lies_on_the_crop(angle):
    image = imagegen.detailed_photo(5)
    box = (40, 60, 40 + 560, 60 + 470)  # the left 70 % of the width, most of the height
    suspect, corners = imagegen.crop_and_turn(image, box, angle)
    match = _match(imagegen.encode(image), imagegen.encode(suspect))
    geometry = match.geometry
    assert geometry is not None and geometry.model == "similarity"
    k = CANONICAL_SIDE / max(image.size)  # original pixels → the registered canonical frame
    expected = np.array(corners) * k
    assert geometry.stored_size == (CANONICAL_SIDE, round(image.height * k))
    assert np.abs(geometry.outline() - expected).max() < 2.5, (geometry.outline(), expected)
    assert geometry.rotation() == pytest.approx(angle, abs=0.5)
    assert geometry.covered() == pytest.approx(560 * 470 / (800 * 600), abs=0.03)
    assert not geometry.mirrored()
    # every pair is an inlier: the transform takes its suspect point onto its registered one
    q, s = geometry.pairs[:, :2], geometry.pairs[:, 2:]
    moved = q @ geometry.transform[:, :2].T + geometry.transform[:, 2]
    assert 12 <= len(geometry.pairs) <= 100
    assert np.abs(moved - s).max() < 4


def test_the_pdq_alignment_of_a_mirrored_copy_is_mirrored_onto_the_whole_frame():
    image = imagegen.detailed_photo(8)
    suspect = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((400, 300))
    query, stored = (fingerprint(imagegen.encode(i)).local for i in (suspect, image))
    assert query is not None and stored is not None
    geometry = verify_pair(query, stored, ("pdq_mirror", "pdq")).global_geometry
    assert geometry is not None and geometry.model == "aligned" and geometry.mirrored()
    w, h = geometry.stored_size
    # the suspect's top-left corner is the original's top-right, and so on round
    assert np.abs(geometry.outline() - [[w, 0], [0, 0], [0, h], [w, h]]).max() < 1e-6
    assert geometry.covered() == pytest.approx(1.0)
    assert geometry.rotation() == pytest.approx(0.0)  # mirrored, not turned upside down
    assert geometry.scale() == pytest.approx(1.0)  # both canonical frames are 256 px wide
