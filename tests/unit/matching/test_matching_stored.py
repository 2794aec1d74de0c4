"""The stored form of a registration's local features (`Fingerprint.to_store`).

A registration stores its strongest keypoints and every keypoint the index keeps, so that
the index rebuilt at start from the store is the index the live upload built, and stage 2
still confirms copies against it; blobs stored whole by earlier releases still read.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from shotstamp_service.matching.engine import Matcher, index_keypoints
from shotstamp_service.matching.features import STORED_KEYPOINTS, LocalFeatures, words
from shotstamp_service.matching.fingerprint import Fingerprint, fingerprint
from tests.kit.matching_helpers import fixture_image, jpeg, png


@pytest.fixture(scope="module")
def original() -> Fingerprint:
    return fingerprint(png(fixture_image((640, 480))))


def _stored(fp: Fingerprint) -> LocalFeatures:
    _, blob = fp.to_store()
    assert blob is not None
    return LocalFeatures.from_bytes(blob)


def test_stored_form_keeps_the_strongest_keypoints_and_the_indexed_ones(
        original: Fingerprint) -> None:
    full = original.local
    assert full is not None and len(full) > STORED_KEYPOINTS  # else nothing is left out
    stored = _stored(original)
    assert STORED_KEYPOINTS <= len(stored) < len(full)
    # The strongest, in strength order, with their positions, angles and scales.
    for name in ("descriptors", "xy", "angle", "octave"):
        assert np.array_equal(getattr(stored, name)[:STORED_KEYPOINTS],
                              getattr(full, name)[:STORED_KEYPOINTS]), name
    assert stored.thumbnail_jpeg == full.thumbnail_jpeg
    assert (stored.shape, stored.quality, stored.source) == (full.shape, full.quality,
                                                             full.source)


def test_index_built_from_the_stored_form_is_the_live_one(original: Fingerprint) -> None:
    full, stored = original.local, _stored(original)
    assert full is not None
    live = words(full, index_keypoints(full))
    rebuilt = words(stored, index_keypoints(stored))
    for a, b in zip(live, rebuilt, strict=True):
        assert np.array_equal(a, b)


def test_a_copy_is_confirmed_against_the_stored_form(original: Fingerprint) -> None:
    image = fixture_image((640, 480))
    w, h = image.size
    crop = image.crop((0, 0, int(w * 0.85), int(h * 0.85)))  # off-centre: PDQ cannot tell
    copy = fingerprint(jpeg(crop.resize((544, 408)), quality=85))
    assert copy - original > 31
    perceptual, blob = original.to_store()
    stored = Fingerprint.from_store(original.sha256, perceptual, blob, original.width,
                                    original.height)
    matcher = Matcher(background=False)
    matcher.add(7, stored)
    found = matcher.match(copy, {7: blob}.get)
    assert [(m.ref, m.verdict) for m in found] == [(7, "copy")]


def test_a_whole_blob_stored_by_the_release_before_still_reads(original: Fingerprint) -> None:
    """Rows written before the stored form hold every keypoint: they parse and match."""
    whole = original.features
    assert whole is not None and whole[:4] == b"SSF3"
    back = Fingerprint.from_store(original.sha256, original.perceptual(), whole,
                                  original.width, original.height)
    assert back.local is not None and original.local is not None
    assert len(back.local) == len(original.local)
    assert back.quality == original.quality
    matcher = Matcher(background=False)
    matcher.add(3, back)
    copy = fingerprint(jpeg(fixture_image((640, 480)).resize((400, 300)), quality=60))
    assert [m.ref for m in matcher.match(copy, {3: whole}.get)] == [3]


def test_the_worker_makes_the_stored_form_the_store_would(original: Fingerprint) -> None:
    """The worker ships the stored form (the serving process does not make it): the same."""
    assert original.stored_features is not None
    assert len(original.stored_features) < len(original.features or b"")
    lazy = dataclasses.replace(original, stored_features=None)
    assert lazy.to_store() == original.to_store()
