"""The shortlist between stage 1 and stage 2: word candidates ordered by where their matched
keypoints sit (`ranking.consistency`), the most consistent few verified (`engine.shortlist`)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from PIL import Image

from shotstamp_service.matching import engine
from shotstamp_service.matching.engine import MAX_CANDIDATES, Candidate, verify_many
from shotstamp_service.matching.features import LocalFeatures, words
from shotstamp_service.matching.fingerprint import Fingerprint, fingerprint
from shotstamp_service.matching.ranking import QueryWords, consistency, word_ids
from tests.kit import imagegen


def _shuffled(image: Image.Image, seed: int, tiles: int = 3) -> Image.Image:
    """The same textures in other places: `image` cut into tiles and put back in another order
    (a look-alike whose words and orientations agree with the original's, its layout not)."""
    w, h = image.size
    tw, th = w // tiles, h // tiles
    boxes = [(i * tw, j * th, (i + 1) * tw, (j + 1) * th)
             for j in range(tiles) for i in range(tiles)]
    order = np.random.default_rng(seed).permutation(len(boxes))
    out = Image.new("RGB", (tw * tiles, th * tiles))
    for dst, src in zip(boxes, order, strict=True):
        out.paste(image.crop(boxes[src]), dst[:2])
    return out


@functools.cache
def _scene() -> tuple[Fingerprint, Fingerprint, Fingerprint, list[Fingerprint]]:
    """(original, its 80 % crop, the crop turned 4°, five look-alikes of the crop)."""
    image = imagegen.detailed_photo(3)
    w, h = image.size
    box = (int(w * 0.1), int(h * 0.1), int(w * 0.9), int(h * 0.9))
    crop = image.crop(box)
    turned, _ = imagegen.crop_and_turn(image, box, 4.0)
    alike = [fingerprint(imagegen.encode(_shuffled(crop, seed))) for seed in range(1, 6)]
    return (fingerprint(imagegen.encode(image)), fingerprint(imagegen.encode(crop)),
            fingerprint(imagegen.encode(turned)), alike)


def _local(fp: Fingerprint) -> LocalFeatures:
    assert fp.local is not None
    return fp.local


def test_word_ids_are_the_index_words() -> None:
    original = _local(_scene()[0])
    assert np.array_equal(word_ids(original.descriptors), words(original).ids)


@pytest.mark.parametrize("edit", [1, 2], ids=["crop_80", "crop_turned"])
def test_the_original_is_more_consistent_than_every_look_alike(edit: int) -> None:
    original, *_, alike = _scene()
    query = _local(_scene()[edit])
    scores = consistency(query, [_local(original), *(_local(a) for a in alike)])
    assert scores[0] >= 40
    assert scores[0] > 1.5 * scores[1:].max(), scores


def test_consistency_is_zero_without_shared_words_and_takes_the_query_once() -> None:
    original, crop, _, alike = _scene()
    other = _local(fingerprint(imagegen.jpeg(11)))
    prepared = QueryWords(_local(crop))
    direct = consistency(_local(crop), [_local(original), other, _local(alike[0])])
    assert np.array_equal(consistency(prepared, [_local(original), other, _local(alike[0])]),
                          direct)
    assert direct[1] < engine.MIN_CONSISTENT <= direct[0]
    assert consistency(_local(crop), []).tolist() == []


def test_the_shortlist_verifies_the_original_behind_look_alikes_that_outvote_it() -> None:
    """At scale the word index hands over look-alikes ranked above the original (see
    bench/RESULTS.md): the shortlist still verifies the original, beside the MAX_CANDIDATES
    best word scores (verified as before it), and at most MAX_CANDIDATES more."""
    original, crop, _, alike = _scene()
    stored = [(10 + k, a) for k, a in enumerate(alike)] + [(1, original)]
    assert len(stored) > MAX_CANDIDATES
    candidates = [Candidate(ref, words=10.0 - k, votes=9)
                  for k, (ref, _) in enumerate(stored)]
    assert crop.features is not None
    items = [(c.ref, fp.features, c.global_pair, c.by_words)
             for c, (_, fp) in zip(candidates, stored, strict=True) if fp.features is not None]
    verified = dict(verify_many(crop.features, items))
    assert 1 in verified
    assert {c.ref for c in candidates[:MAX_CANDIDATES]} <= set(verified)
    assert len(verified) <= 2 * MAX_CANDIDATES
    match = engine.decide(candidates[-1], verified[1])
    assert match is not None and match.verdict == "copy"


def test_pdq_candidates_are_always_verified_and_old_items_still_read() -> None:
    original, crop, _, alike = _scene()
    assert crop.features is not None and original.features is not None
    items: list[engine.Stage2Item] = [(10 + k, a.features, None, True)
                                      for k, a in enumerate(alike) if a.features is not None]
    items.append((1, original.features, None, False))  # a (gated) PDQ candidate
    verified = dict(verify_many(crop.features, items))
    assert 1 in verified
    assert len(verified) <= 2 * MAX_CANDIDATES + 1
    # Three-element items (no `by_words`) are verified as before.
    old = verify_many(crop.features, [(10 + k, f, None) for k, f, *_ in items])
    assert len(old) == len(items)
