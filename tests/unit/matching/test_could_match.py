"""`engine.could_match`, the commit lock's screen's bound: when it says no, a look finds
nothing (no match, no candidate), so the screen may skip its scratch matcher exactly."""

from __future__ import annotations

import numpy as np
import pytest

from shotstamp_service.matching.engine import (
    _VOTE_BITS,
    IndexEntry,
    Matcher,
    could_match,
    index_entry,
    word_query,
)
from shotstamp_service.matching.features import ANGLE_BINS
from shotstamp_service.matching.fingerprint import Fingerprint, fingerprint
from shotstamp_service.matching.index import WordQuery
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


def _far_pair() -> tuple[Fingerprint, Fingerprint, WordQuery, IndexEntry]:
    """A stored row and a query whose PDQ codes are far apart (only words can propose the
    row), the query's word side, and the row's index entry."""
    row = _stored(imagegen.jpeg(11))
    query = fingerprint(imagegen.jpeg(12))
    far = Fingerprint(row.sha256, {"pdq": bytes(32)}, row.width, row.height, "", 100,
                      row.features)
    far_query = Fingerprint(query.sha256, {"pdq": b"\xff" * 32}, query.width, query.height,
                            "", 100, query.features)
    wq = word_query(far_query)
    assert wq is not None
    return far, far_query, wq, index_entry(far)


def _with_words(entry: IndexEntry, wq: WordQuery,
                shared: list[tuple[int, int, int]]) -> IndexEntry:
    """`entry` with its words replaced by words the query lacks, but for `shared`: (query
    word position, stored signature bits flipped, angle difference) each, one keypoint
    apiece, set so that query word and posting differ by exactly those."""
    assert entry.words is not None
    ids = np.setdiff1d(np.arange(1 << 20, dtype=np.uint32), wq.words)[: len(entry.words[0])]
    angles = np.asarray(entry.words[1]).copy()
    signatures = np.asarray(entry.words[2]).copy()
    for k, (j, flipped, dangle) in enumerate(shared):
        ids[k] = wq.words[j]
        signatures[k] = (int(wq.signatures[j]) ^ ((1 << flipped) - 1)) | (7 << 20)
        angles[k] = (int(wq.angles[j]) - dangle) % ANGLE_BINS
    return type(entry)(False, entry.good, entry.low, (ids, angles, signatures))


def _look_reports(query: Fingerprint, row: Fingerprint, entry: IndexEntry) -> bool:
    scratch = Matcher(background=False)
    scratch.add(1, row, entry)
    seen = scratch.look(query, stop_at_copy=False)
    return bool(seen.found or seen.candidates)


def test_could_match_counts_distinct_shared_words() -> None:
    """Fewer than MIN_VOTES distinct indexed words among the query's: no vote can reach it,
    even when one shared word is held by many keypoints."""
    far, far_query, wq, entry = _far_pair()
    one = _with_words(entry, wq, [(0, 0, 0)] * (len(entry.words[0]) // 2))
    assert not could_match(far_query, wq, far, one)
    assert not _look_reports(far_query, far, one)
    two = _with_words(entry, wq, [(0, 0, 0), (1, 0, 0)])
    assert could_match(far_query, wq, far, two)
    assert _look_reports(far_query, far, two)


def test_could_match_counts_only_words_whose_signatures_could_vote() -> None:
    """A shared word votes only where the signatures differ in at most SIGNATURE_DISTANCE
    bits (of the stored half: one more and the look finds nothing, as the bound says)."""
    far, far_query, wq, entry = _far_pair()
    for flipped in (0, _VOTE_BITS, _VOTE_BITS + 1):
        both = _with_words(entry, wq, [(0, 0, 0), (1, flipped, 0)])
        assert could_match(far_query, wq, far, both) == (flipped <= _VOTE_BITS), flipped
        assert _look_reports(far_query, far, both) == (flipped <= _VOTE_BITS), flipped
    # A probe word (one bit from one of the query's words) votes under the same test.
    probe = wq.exact
    assert len(wq.words) > probe
    for flipped in (_VOTE_BITS, _VOTE_BITS + 1):
        both = _with_words(entry, wq, [(0, 0, 0), (probe, flipped, 0)])
        assert could_match(far_query, wq, far, both) == (flipped <= _VOTE_BITS), flipped
        assert _look_reports(far_query, far, both) == (flipped <= _VOTE_BITS), flipped


def test_could_match_needs_the_votes_in_one_angle_bin_pair() -> None:
    """The word vote counts a registration's votes in its best pair of neighbouring angle
    bins: two words whose angle differences are two bins apart (or more) never reach
    MIN_VOTES together; one bin apart, or across the wrap from the last bin to the first,
    they do."""
    far, far_query, wq, entry = _far_pair()
    for first, second, together in ((0, 1, True), (3, 3, True), (ANGLE_BINS - 1, 0, True),
                                    (0, 2, False), (5, 9, False), (ANGLE_BINS - 2, 0, False)):
        both = _with_words(entry, wq, [(0, 0, first), (1, 0, second)])
        assert could_match(far_query, wq, far, both) == together, (first, second)
        assert _look_reports(far_query, far, both) == together, (first, second)
