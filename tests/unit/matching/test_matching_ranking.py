"""The shortlist between stage 1 and stage 2: word candidates ordered by where their matched
keypoints sit (`ranking.consistency`), the most consistent few verified (`engine.shortlist`)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shotstamp_service.matching import engine
from shotstamp_service.matching.engine import MAX_CANDIDATES, Candidate, verify_many
from shotstamp_service.matching.features import (
    LocalFeatures,
    keypoint_layout,
    keypoint_layouts,
    words,
)
from shotstamp_service.matching.fingerprint import Fingerprint, fingerprint
from shotstamp_service.matching.ranking import QueryWords, StoredKeypoints, consistency
from tests.kit import imagegen
from tests.kit.bundled_photos import BUNDLED_PHOTOS
from tests.kit.corpus import load_photos, original_bytes
from tests.kit.edits import EDITS_BY_NAME, apply_edit
from tests.unit.matching import ranking_335ab6a as before


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
    """One sampler for both (`features.word_ids`); the byte tables it replaced agree."""
    original = _local(_scene()[0])
    assert np.array_equal(before.word_ids(original.descriptors), words(original).ids)


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


# -- the vectorised shortlist against the one it replaced (tests/unit/matching/ranking_335ab6a.py)

SIZE = 32  # shortlist size here: the comparison is of scores, whatever engine.SHORTLIST is
HARD_EDITS = ("crop_80", "crop_offcentre", "rotate", "combination", "watermark_text")


def _stored_blob(fp: Fingerprint) -> bytes:
    blob = fp.to_store()[1]
    assert blob is not None
    return blob


def _same_ranking(query: LocalFeatures, blobs: list[bytes]) -> int:
    """Asserts the shortlist scores and picks `blobs` exactly as at 335ab6a; returns how many
    candidates had a consistent keypoint (so a test can tell it compared something)."""
    parsed = [LocalFeatures.from_bytes(b) for b in blobs]
    old = before.consistent_keypoints(before.QueryWords(query), parsed)
    assert np.array_equal(engine.consistent_keypoints(query, blobs), old)
    assert np.array_equal(engine.consistent_keypoints(query, parsed), old)
    scores = old.tolist()
    order = sorted(range(len(blobs)), key=lambda i: -scores[i])
    first = list(range(MAX_CANDIDATES))
    expected = first + [i for i in order[:MAX_CANDIDATES]
                        if scores[i] >= engine.MIN_CONSISTENT and i not in first]
    assert engine.shortlist(query, list(enumerate(blobs))) == expected
    return int((old > 0).sum())


def test_the_shortlist_ranks_real_photos_as_before(bundled: dict[str, tuple[bytes, Image.Image]],
                                                    ) -> None:
    """Every bundled photo's hard edits against all the bundled originals (its own among
    them) and edits of the others (look-alikes that share words): the same consistency,
    the same picks as the code it replaced."""
    stored = [_stored_blob(fingerprint(data)) for data, _ in bundled.values()]
    stored += [_stored_blob(fingerprint(apply_edit(EDITS_BY_NAME["crop_90"], image,
                                                   photo=f"skimage/{name}")))
               for name, (_, image) in bundled.items()]
    compared = 0
    for photo in BUNDLED_PHOTOS:
        _, image = bundled[photo.file]
        for edit in HARD_EDITS:
            query = fingerprint(apply_edit(EDITS_BY_NAME[edit], image, photo=photo.name)).local
            assert query is not None
            compared += _same_ranking(query, stored)
    assert compared > 10 * len(BUNDLED_PHOTOS)


def test_the_shortlist_ranks_corpus_photos_as_before(photos: Path) -> None:
    """As above on 24 corpus photos' hard edits, each against a full shortlist of 32."""
    chosen = [p for p in load_photos(photos) if min(p.width, p.height) >= 256]
    chosen = chosen[:: max(1, len(chosen) // 40)][:40]
    originals = {p.file: original_bytes(photos / p.file) for p in chosen}
    stored = {f: _stored_blob(fingerprint(data)) for f, (data, _) in originals.items()}
    files = list(stored)
    for k, file in enumerate(files[:24]):
        others = [stored[f] for f in files if f != file][: SIZE - 1]
        for edit in ("crop_80", "combination"):
            query = fingerprint(apply_edit(EDITS_BY_NAME[edit], originals[file][1],
                                           photo=file)).local
            assert query is not None
            # its original at a different place in each shortlist
            blobs = [*others[: k % SIZE], stored[file], *others[k % SIZE:]]
            assert _same_ranking(query, blobs) > 0


def test_stored_keypoints_read_from_blobs_are_the_parsed_ones() -> None:
    original, _, _, alike = _scene()
    fps = [original, *alike]
    blobs = [_stored_blob(fp) for fp in fps]
    parsed = [LocalFeatures.from_bytes(b) for b in blobs]
    for limit in (0, 5, engine.INDEX_KEYPOINTS, 10_000):
        got = StoredKeypoints.from_blobs(blobs, limit, engine.INDEX_CENTRE)
        want = StoredKeypoints.of(parsed, [engine.index_keypoints(p, limit) for p in parsed])
        assert got.count == want.count == len(blobs)
        for field in ("owner", "xy", "angle", "octave", "descriptors"):
            assert np.array_equal(getattr(got, field), getattr(want, field)), (limit, field)
    assert StoredKeypoints.from_blobs([], 128, 0.35).count == 0


def test_a_damaged_blob_is_refused_by_its_header() -> None:
    blob = _stored_blob(_scene()[0])
    assert keypoint_layout(blob).keypoints == len(LocalFeatures.from_bytes(blob))
    with pytest.raises(ValueError, match="not a shotstamp feature blob"):
        keypoint_layout(b"JUNK" + blob[4:])
    with pytest.raises(ValueError, match="truncated"):
        keypoint_layout(blob[:100])


def test_headers_read_together_are_each_blobs_own() -> None:
    original, crop, _, alike = _scene()
    blobs = [_stored_blob(fp) for fp in (original, crop, *alike)]
    # and a blob with no keypoints, a header alone
    blobs.append(LocalFeatures.from_bytes(blobs[0]).subset(np.zeros(0, np.intp)).to_bytes())
    got = keypoint_layouts(blobs)
    assert bytes(got.buffer) == b"".join(blobs) and got.buffer.flags.writeable
    at = 0
    for k, blob in enumerate(blobs):
        want = keypoint_layout(blob)
        assert (got.offset[k] - at, got.keypoints[k], got.height[k], got.width[k]) == (
            want.offset, want.keypoints, *want.shape)
        at += len(blob)
    assert got.keypoints[-1] == 0 and got.keypoints[:-1].min() > 0
    assert keypoint_layouts([]).keypoints.shape == (0,)


@pytest.mark.parametrize(("damage", "message"), [
    (lambda b: b"JUNK" + b[4:], "not a shotstamp feature blob"),
    (lambda b: b"SSF9" + b[4:], "not a shotstamp feature blob"),
    (lambda b: b[:100], "truncated"),
    (lambda b: b[:12], "too short"),
    (lambda b: b[:3], "not a shotstamp feature blob"),
    (lambda b: b"", "not a shotstamp feature blob"),
])
def test_headers_read_together_refuse_a_damaged_blob_as_alone(damage, message) -> None:
    blob = _stored_blob(_scene()[0])
    for position in range(3):
        blobs = [blob, blob]
        blobs.insert(position, damage(blob))
        with pytest.raises(ValueError, match=message):
            keypoint_layout(blobs[position])
        with pytest.raises(ValueError, match=message):
            keypoint_layouts(blobs)
