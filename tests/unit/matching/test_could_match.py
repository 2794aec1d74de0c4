"""`engine.could_match`, the commit lock's screen's bound: when it says no, a look finds
nothing (no match, no candidate), so the screen may skip its scratch matcher exactly."""

from __future__ import annotations

import numpy as np
import pytest

from shotstamp_service.matching.engine import (
    Matcher,
    could_match,
    index_entry,
    word_query,
)
from shotstamp_service.matching.fingerprint import Fingerprint, fingerprint
from tests.kit import imagegen
from tests.kit.bundled_photos import BUNDLED_PHOTOS, load_bundled
from tests.kit.edits import EDITS, apply_edit

_STORED = ("coffee.png", "chelsea.png", "coins.png", "rocket.jpg", "camera.png")


def _stored(data: bytes) -> Fingerprint:
    """As another process's row reaches the screen: through the store's form."""
    fp = fingerprint(data)
    perceptual, features = fp.to_store()
    return Fingerprint.from_store(fp.sha256, perceptual, features, fp.width, fp.height)


@pytest.fixture(scope="module")
def photos() -> tuple[list[Fingerprint], list[tuple[str, Fingerprint]]]:
    """Stored registrations (bundled photos, generated photos) and queries: every edit of
    the first two stored photos, and other photos."""
    stored, queries = [], []
    for photo in BUNDLED_PHOTOS:
        if photo.file not in _STORED:
            continue
        data, image = load_bundled(photo)
        stored.append(_stored(data))
        if len(stored) <= 2:
            queries += [(f"{photo.file} {e.name}", fingerprint(apply_edit(e, image,
                                                                         photo=photo.name)))
                        for e in EDITS]
    stored += [_stored(imagegen.jpeg(seed)) for seed in (3, 4)]
    queries += [(f"generated {seed}", fingerprint(imagegen.jpeg(seed))) for seed in (5, 6, 7)]
    queries += [(f"{p.file}", fingerprint(load_bundled(p)[0])) for p in BUNDLED_PHOTOS
                if p.file not in _STORED][:3]
    return stored, queries


def test_a_look_finds_nothing_where_could_match_says_no(photos) -> None:
    stored, queries = photos
    said = {True: 0, False: 0}
    for name, query in queries:
        for ref, row in enumerate(stored, 1):
            entry = index_entry(row)
            may = could_match(query, word_query(query), row, entry)
            said[may] += 1
            if may:
                continue
            scratch = Matcher(background=False)
            scratch.add(ref, row, entry)
            seen = scratch.look(query, stop_at_copy=False)
            assert seen.found == [] and seen.candidates == [], (name, ref)
            assert scratch.match(query, {ref: row.features}.get, limit=None,
                                 past_similar=True) == []
    # Both answers occur, so the bound is tested, not vacuous.
    assert said[True] > 0 and said[False] > 0, said


def test_could_match_says_yes_for_every_copy_a_look_reports(photos) -> None:
    stored, queries = photos
    for name, query in queries:
        for ref, row in enumerate(stored, 1):
            scratch = Matcher(background=False)
            scratch.add(ref, row)
            seen = scratch.look(query, stop_at_copy=False)
            if seen.found or seen.candidates:
                assert could_match(query, word_query(query), row, index_entry(row)), (name, ref)


def test_could_match_counts_distinct_shared_words() -> None:
    """Fewer than MIN_VOTES distinct indexed words among the query's: no vote can reach it,
    even when one shared word is held by many keypoints."""
    row = _stored(imagegen.jpeg(11))
    query = fingerprint(imagegen.jpeg(12))
    entry = index_entry(row)
    wq = word_query(query)
    assert wq is not None and entry.words is not None
    words = np.asarray(entry.words[0]).copy()
    outside = np.setdiff1d(np.arange(1 << 20, dtype=np.uint32), wq.words)[: len(words)]
    only_one = outside.copy()
    only_one[: len(words) // 2] = wq.words[0]  # one shared word, many times
    far = Fingerprint(row.sha256, {"pdq": bytes(32)}, row.width, row.height, "", 100,
                      row.features)
    far_query = Fingerprint(query.sha256, {"pdq": b"\xff" * 32}, query.width, query.height,
                            "", 100, query.features)
    far_entry = index_entry(far)
    one = type(far_entry)(False, far_entry.good, far_entry.low,
                          (only_one, *entry.words[1:]))
    assert not could_match(far_query, wq, far, one)
    two = only_one.copy()
    two[-1] = wq.words[1]
    assert could_match(far_query, wq, far, type(far_entry)(False, far_entry.good,
                                                           far_entry.low,
                                                           (two, *entry.words[1:])))
