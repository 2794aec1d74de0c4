"""The matching engine: the decision rule, the Matcher contract, the quality gate, and every edit
family on a few corpus photos (registered beside their hardest look-alikes)."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from shotstamp_service.matching import engine as rule
from shotstamp_service.matching.engine import Candidate, Match, Matcher, decide, rank
from shotstamp_service.matching.features import SIGNATURE_BITS, SIGNATURE_POSITIONS, words
from shotstamp_service.matching.fingerprint import Fingerprint, fingerprint
from shotstamp_service.matching.index import HammingIndex, Hit
from shotstamp_service.matching.verification import MIN_CELLS, REMATCH_MIN_INLIERS, Evidence
from tests.kit.corpus import original_bytes
from tests.kit.matching_helpers import fixture_image, jpeg, png

# -- the rule, on evidence built by hand -------------------------------------------------------


def _orb(inliers: int, agreement: float, scale: float = 1.0, rotation: float = 0.0,
         matches: int | None = None, cells: int = 64, rematched: int = 0,
         overlay: float | None = None) -> Evidence:
    """Evidence as verify_pair reports it; by default half the matches are outliers."""
    return Evidence(matches=2 * inliers if matches is None else matches, inliers=inliers,
                    scale=scale, rotation=rotation, agreement=agreement, cells=cells,
                    rematched=rematched, overlay=agreement if overlay is None else overlay)


@pytest.mark.parametrize(
    ("evidence", "verdict"),
    [
        (_orb(rule.INLIERS_COPY, rule.AGREEMENT_COPY), "copy"),
        (_orb(rule.INLIERS_COPY - 1, rule.AGREEMENT_COPY_FEW - 0.01), "similar"),
        (_orb(rule.INLIERS_COPY, rule.AGREEMENT_COPY - 0.01), "similar"),
        (_orb(rule.INLIERS_COPY_FEW, rule.AGREEMENT_COPY_FEW), "copy"),
        (_orb(rule.INLIERS_COPY_FEW - 1, 1.0), None),
        (_orb(200, rule.AGREEMENT_SIMILAR), "similar"),
        (_orb(200, rule.AGREEMENT_SIMILAR - 0.01), None),
        (_orb(200, 1.0, scale=rule.SCALE_RANGE[1] + 0.1), None),
        (_orb(200, 1.0, scale=rule.SCALE_RANGE[0] - 0.1), None),
        (_orb(200, 1.0, rotation=rule.MAX_ROTATION + 1), None),
        # nearly every match an inlier: a watermark may hide more of the pixels
        (_orb(rule.INLIERS_CLEAN, rule.AGREEMENT_CLEAN, matches=rule.INLIERS_CLEAN), "copy"),
        (_orb(rule.INLIERS_CLEAN, rule.AGREEMENT_CLEAN, matches=rule.INLIERS_CLEAN * 2), "similar"),
        (_orb(rule.INLIERS_CLEAN - 1, rule.AGREEMENT_CLEAN, matches=rule.INLIERS_CLEAN - 1),
         "similar"),
        (_orb(rule.INLIERS_CLEAN, rule.AGREEMENT_CLEAN - 0.01, matches=rule.INLIERS_CLEAN), None),
        # clean inliers where no cells can be compared (a pale product on white)
        (_orb(rule.INLIERS_CLEAN, 0.0, matches=rule.INLIERS_CLEAN, cells=3), "copy"),
        (_orb(rule.INLIERS_CLEAN, 0.0, matches=rule.INLIERS_CLEAN * 2, cells=3), None),
        # too few comparable cells (near-white): keypoints alone, but many of them
        (_orb(rule.INLIERS_ALONE, 0.0, cells=3), "copy"),
        (_orb(rule.INLIERS_ALONE - 1, 0.0, cells=3), None),
        (_orb(rule.INLIERS_ALONE, 0.0, cells=64), None),
        # keypoints re-matched under the transform count towards INLIERS_COPY_FEW
        (_orb(REMATCH_MIN_INLIERS, rule.AGREEMENT_COPY_FEW,
              rematched=rule.INLIERS_COPY_FEW), "copy"),
        (_orb(REMATCH_MIN_INLIERS, rule.AGREEMENT_COPY_FEW,
              rematched=rule.INLIERS_COPY_FEW - 1), None),
        (_orb(REMATCH_MIN_INLIERS, rule.AGREEMENT_COPY_FEW - 0.01,
              rematched=rule.INLIERS_COPY_FEW), None),
        # cells a semi-transparent overlay explains count with the agreeing ones
        (_orb(rule.INLIERS_COPY_FEW, rule.AGREEMENT_SIMILAR, overlay=rule.OVERLAY_COPY), "copy"),
        (_orb(rule.INLIERS_COPY_FEW, rule.AGREEMENT_SIMILAR, overlay=rule.OVERLAY_COPY - 0.01),
         "similar"),
        (_orb(REMATCH_MIN_INLIERS, 0.5, rematched=rule.INLIERS_COPY_FEW,
              overlay=rule.OVERLAY_COPY), "copy"),
        (_orb(rule.INLIERS_COPY_FEW - 1, 0.5, overlay=1.0), None),
        # and towards INLIERS_ALONE where no cells can be compared
        (_orb(REMATCH_MIN_INLIERS, 0.0, cells=3, rematched=rule.INLIERS_ALONE), "copy"),
        (_orb(REMATCH_MIN_INLIERS, 0.0, cells=3, rematched=rule.INLIERS_ALONE - 1), None),
        (Evidence(), None),
    ],
)
def test_decide_keypoint_evidence(evidence: Evidence, verdict: str | None) -> None:
    match = decide(Candidate(7, votes=9), evidence)
    assert (match.verdict if match else None) == verdict
    if match:
        assert match.ref == 7 and match.distances["orb_inliers"] == evidence.inliers


def test_decide_global_check_only_for_ungated_pdq_candidates() -> None:
    near = Candidate(3, pdq=rule.PDQ_COPY + 5, pdq_pair=("pdq_mirror", "pdq_trim"))
    good = Evidence(global_agreement=rule.GLOBAL_AGREEMENT_COPY,
                    global_inliers=rule.GLOBAL_INLIERS_COPY)
    match = decide(near, good)
    assert match is not None and match.verdict == "copy"
    assert match.distances["pdq"] == rule.PDQ_COPY + 5
    assert match.distances["global_inliers"] == rule.GLOBAL_INLIERS_COPY
    # Both the pixels and the keypoints must agree under the implied alignment.
    for weak in (Evidence(global_agreement=rule.GLOBAL_AGREEMENT_COPY - 0.01,
                          global_inliers=100),
                 Evidence(global_agreement=1.0, global_inliers=rule.GLOBAL_INLIERS_COPY - 1)):
        assert decide(near, weak) is None
    # Where the alignment leaves too few cells to compare, many guided keypoints decide alone.
    few = MIN_CELLS - 1
    alone = Evidence(global_agreement=0.0, global_inliers=rule.GLOBAL_INLIERS_ALONE,
                     global_cells=few)
    match = decide(near, alone)
    assert match is not None and match.verdict == "copy"
    assert match.distances["global_cells"] == few
    assert decide(near, dataclasses.replace(alone, global_inliers=rule.GLOBAL_INLIERS_ALONE - 1)) \
        is None
    assert decide(near, dataclasses.replace(alone, global_cells=MIN_CELLS)) is None
    # A small upload's own pixels decide where it has no keypoints to speak of.
    contrast = 100.0
    small = Evidence(global_agreement=0.0, global_inliers=0, global_cells=0,
                     global_residual=rule.GLOBAL_RESIDUAL_COPY,
                     global_pixels=rule.GLOBAL_RESIDUAL_PIXELS, global_contrast=contrast)
    match = decide(near, small)
    assert match is not None and match.verdict == "copy"
    assert match.distances["global_residual"] == rule.GLOBAL_RESIDUAL_COPY
    assert match.distances["global_pixels"] == rule.GLOBAL_RESIDUAL_PIXELS
    assert match.distances["global_contrast"] == contrast
    # Within the grey levels, within the share of a low-contrast query's contrast, enough
    # pixels: each is needed.
    for weak in (dataclasses.replace(small, global_residual=rule.GLOBAL_RESIDUAL_COPY + 0.1,
                                     global_contrast=100.0),
                 dataclasses.replace(small, global_contrast=20.0,
                                     global_residual=rule.GLOBAL_RESIDUAL_SHARE * 20.0 + 0.01),
                 dataclasses.replace(small, global_pixels=rule.GLOBAL_RESIDUAL_PIXELS - 1)):
        assert decide(near, weak) is None
    assert decide(near, dataclasses.replace(small, global_contrast=20.0,
                                            global_residual=rule.GLOBAL_RESIDUAL_SHARE * 20.0))
    assert decide(Candidate(3, votes=5), small) is None
    # Below the quality gate a near PDQ code may not be confirmed by the alignment it implies.
    gated = Candidate(3, pdq=10, pdq_pair=("pdq", "pdq"), gated=True)
    assert gated.global_pair is None
    assert decide(gated, Evidence(global_agreement=1.0, global_inliers=200)) is None
    # A word-index candidate has no code pair to check.
    assert decide(Candidate(3, votes=5), Evidence(global_agreement=1.0, global_inliers=200)) is None


def test_rank_puts_copies_first_and_bounds_the_list() -> None:
    matches = [Match(r, {"pdq": 40 - r}, "similar") for r in range(30)]
    matches += [Match(100, {"pdq": 9}, "copy"), Match(5, {"pdq": 3}, "copy")]
    ranked = rank(matches)
    assert [m.ref for m in ranked[:2]] == [5, 100]
    assert all(m.verdict == "similar" for m in ranked[2:])
    assert len(ranked) == rule.MAX_MATCHES
    assert len({m.ref for m in ranked}) == len(ranked)


# -- the Matcher contract ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixture_fps() -> list[Fingerprint]:
    """A few distinct generated photos, and a re-encoded resized copy of the first."""
    base = fixture_image((640, 480))
    others = [base.rotate(180), base.transpose(Image.Transpose.TRANSPOSE).resize((640, 480)),
              Image.fromarray(255 - np.asarray(base))]
    fps = [fingerprint(png(im)) for im in [base, *others]]
    fps.append(fingerprint(jpeg(base.resize((320, 240)), quality=60)))
    return fps


def test_matcher_add_search_discard(fixture_fps: list[Fingerprint]) -> None:
    matcher = Matcher(background=False)
    *originals, copy = fixture_fps
    for ref, fp in enumerate(originals):
        matcher.add(ref, fp)
    matcher.add(0, originals[0])  # adding a known ref is a no-op
    assert len(matcher) == len(originals)
    found = matcher.search(copy)
    assert [m.ref for m in found] == [0]
    assert found[0].verdict == "copy" and found[0].distances["pdq"] <= rule.PDQ_COPY
    matcher.discard(0)
    matcher.discard(12345)  # unknown refs are ignored
    assert len(matcher) == len(originals) - 1
    assert matcher.search(copy) == []


def test_reservation_is_seen_by_a_concurrent_upload(fixture_fps: list[Fingerprint]) -> None:
    """The registry's protocol: search, then add a reservation, with no await between."""
    matcher = Matcher(background=False)
    reservation = (1 << 62) + 1
    first = fixture_fps[0]
    assert matcher.search(first) == []
    matcher.add(reservation, first)
    assert [m.ref for m in matcher.search(fixture_fps[-1])] == [reservation]
    matcher.discard(reservation)
    matcher.add(17, first)
    assert [m.ref for m in matcher.search(fixture_fps[-1])] == [17]


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every HammingIndex searched from here on, once per search."""
    searched: list[object] = []
    real = HammingIndex.search

    def counting(self: HammingIndex, codes: list[bytes], radius: int) -> dict[int, Hit]:
        searched.append(self)
        return real(self, codes, radius)

    monkeypatch.setattr(HammingIndex, "search", counting)
    return searched


def test_search_then_candidates_read_the_pdq_index_once(
    fixture_fps: list[Fingerprint], lookups: list[object],
) -> None:
    """The in-loop cost at scale is one PDQ lookup per upload, not one per stage-1 call."""
    matcher = Matcher(background=False)
    matcher.add(1, fixture_fps[0])
    query = fixture_fps[-1]
    assert [m.ref for m in matcher.search(query)] == [1]
    matcher.candidates(query)
    assert lookups.count(matcher._pdq) == 1
    matcher.add(2, fixture_fps[1])  # the index changed: the hits are read again
    matcher.candidates(query)
    assert lookups.count(matcher._pdq) == 2


def _refs(candidates: list[Candidate] | None) -> set[int]:
    assert candidates is not None
    return {c.ref for c in candidates}


def test_look_again_reads_only_what_changed(
    fixture_fps: list[Fingerprint], lookups: list[object],
) -> None:
    """After an await the registry looks again: a copy reserved meanwhile is found, one
    discarded meanwhile is gone, and the whole PDQ index is not read a second time."""
    matcher = Matcher(background=False)
    *originals, copy = fixture_fps
    for ref, fp in enumerate(originals[1:], start=1):
        matcher.add(ref, fp)
    first = matcher.look(copy)
    assert first.found == [] and first.candidates is not None
    assert matcher.look_again(first) is first  # nothing changed
    reservation = (1 << 62) + 5
    matcher.add(reservation, originals[0])
    again = matcher.look_again(first)
    assert [m.ref for m in again.found] == [reservation] and again.candidates is None
    assert lookups.count(matcher._pdq) == 1  # only the first look read the whole index
    matcher.discard(reservation)
    matcher.add(0, originals[0])
    assert [m.ref for m in matcher.look_again(first).found] == [0]
    matcher.discard(0)
    gone = matcher.look_again(first)
    assert gone.found == [] and _refs(gone.candidates) == _refs(first.candidates)
    assert lookups.count(matcher._pdq) == 1


@pytest.mark.parametrize("order", [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]])
def test_look_again_agrees_with_a_full_look(fixture_fps: list[Fingerprint],
                                            order: list[int]) -> None:
    """Stage-1 copies exactly as a full look finds them; candidates a superset of its."""
    *originals, _ = fixture_fps
    for query in fixture_fps:
        matcher = Matcher(background=False)
        matcher.add(100 + order[0], originals[order[0]])
        earlier = matcher.look(query, stop_at_copy=False)
        for step, i in enumerate(order[1:]):
            matcher.add(100 + i, originals[i])
            if step == 1:
                matcher.discard(100 + order[0])
            later = matcher.look_again(earlier, stop_at_copy=False)
            full = matcher.look(query, stop_at_copy=False)
            assert later.found == full.found
            assert _refs(full.candidates) <= _refs(later.candidates)
            if step >= 1:  # discarded: neither a copy nor a candidate any more
                assert 100 + order[0] not in _refs(later.candidates) | {m.ref for m in later.found}
            earlier = later


def test_look_again_redoes_what_the_journal_no_longer_covers(
    fixture_fps: list[Fingerprint],
) -> None:
    """Past JOURNAL_CHANGES changes, or across a bulk load, the look is redone in full."""
    *originals, copy = fixture_fps
    matcher = Matcher(background=False)
    first = matcher.look(copy)
    for ref in range(rule.JOURNAL_CHANGES + 1):
        matcher.add(1000 + ref, originals[1 + ref % 3])
    matcher.add(7, originals[0])
    assert [m.ref for m in matcher.look_again(first).found] == [7]
    bulk = Matcher(background=False)
    before = bulk.look(copy)
    bulk.add(1, originals[1])
    bulk.add_many([(2, originals[0])])
    assert [m.ref for m in bulk.look_again(before).found] == [2]


def test_look_again_below_a_ref_leaves_out_those_above(fixture_fps: list[Fingerprint]) -> None:
    """The registry's guard looks again at stored registrations only, not at reservations."""
    matcher = Matcher(background=False)
    *originals, copy = fixture_fps
    first = matcher.look(copy, stop_at_copy=False)
    reservation = (1 << 62) + 3
    matcher.add(reservation, originals[0])
    assert matcher.look_again(first, stop_at_copy=False, below=1 << 62).found == []
    assert [m.ref for m in matcher.look_again(first, stop_at_copy=False).found] == [reservation]
    matcher.add(4, originals[0])
    assert [m.ref for m in matcher.look_again(first, stop_at_copy=False, below=1 << 62).found] \
        == [4]


@pytest.fixture
def sampled(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every `keep` the engine's word sampler is called with, in order."""
    calls: list[object] = []
    real = words

    def counting(local: object, keep: object = None) -> object:
        calls.append(keep)
        return real(local, keep)  # type: ignore[arg-type]

    monkeypatch.setattr(rule, "words", counting)
    return calls


def test_a_registration_indexed_twice_is_prepared_once(
    fixture_fps: list[Fingerprint], sampled: list[object],
) -> None:
    """The registry adds an upload as a reservation, then under its seq, and other uploads'
    `look_again` add it to their scratch matcher: its words are sampled once for all."""
    matcher = Matcher(background=False)
    *originals, copy = fixture_fps
    first = matcher.look(copy)
    indexed = sum(k is not None for k in sampled)
    matcher.add((1 << 62) + 1, originals[0])
    matcher.discard((1 << 62) + 1)
    matcher.add(5, originals[0])
    assert [m.ref for m in matcher.look_again(first).found] == [5]
    assert sum(k is not None for k in sampled) - indexed == 1


def test_an_uploads_looks_make_its_word_query_once(
    fixture_fps: list[Fingerprint], sampled: list[object],
) -> None:
    """`look` and `look_again`'s scratch matcher read one `WordQuery` of the upload (its
    words sampled once), and score as a lookup that makes its query side afresh."""
    matcher = Matcher(background=False)
    *originals, copy = fixture_fps
    for ref, fp in enumerate(originals[1:], start=10):
        matcher.add(ref, fp)
    first = matcher.look(copy, stop_at_copy=False)
    matcher.add(5, originals[0])
    again = matcher.look_again(first, stop_at_copy=False)
    assert again.candidates is not None and 5 in {m.ref for m in again.found}  # a copy
    assert sum(k is None for k in sampled) == 1  # the query's words: once for both looks
    got = matcher.word_scores(copy, limit=10)
    local = copy.local
    assert local is not None
    fresh = matcher._words.search(
        *words(local), limit=10, min_votes=rule.MIN_VOTES, max_distance=rule.SIGNATURE_DISTANCE,
        sigma=rule.SIGNATURE_SIGMA, max_postings=rule.WORD_POSTINGS_BUDGET,
        probe=rule.index_keypoints(local, rule.WORD_PROBES),
        max_probe_postings=rule.WORD_PROBE_POSTINGS)
    assert got == fresh and got[0].ref == 5
    assert sum(k is None for k in sampled) == 1


def test_add_many_equals_add(fixture_fps: list[Fingerprint]) -> None:
    one, bulk = Matcher(background=False), Matcher(background=False)
    for ref, fp in enumerate(fixture_fps[:-1]):
        one.add(ref * 10, fp)
    assert bulk.add_many((ref * 10, fp) for ref, fp in enumerate(fixture_fps[:-1])) == 4
    for query in fixture_fps:
        assert bulk.search(query) == one.search(query)
        assert bulk.candidates(query) == one.candidates(query)


def test_word_votes_need_near_signatures(fixture_fps: list[Fingerprint]) -> None:
    """A registration whose keypoints share the copy's words but not the signature bits (a
    chance collision of every word) gets no word votes; the true original does."""
    *originals, copy = fixture_fps
    original = originals[0]
    assert original.local is not None and copy.local is not None
    bits = np.zeros(256, np.uint8)
    bits[list(SIGNATURE_POSITIONS)] = 1
    descriptors = original.local.descriptors ^ np.packbits(bits)
    forged_local = dataclasses.replace(original.local, descriptors=descriptors)
    forged = Fingerprint("0" * 64, {}, original.width, original.height, "png",
                         features=forged_local.to_bytes())
    assert forged.local is not None
    assert np.array_equal(words(forged.local).ids, words(original.local).ids)
    matcher = Matcher(background=False)
    matcher.add(1, original)
    matcher.add(2, forged)
    scores = {s.ref: s.votes for s in matcher.word_scores(copy, limit=10)}
    assert scores.get(1, 0) >= rule.MIN_VOTES
    assert 2 not in scores
    # Without the signature filter the forgery collects exactly the original's votes.
    unfiltered = {s.ref: s.votes for s in matcher._words.search(
        *words(copy.local), limit=10, min_votes=1, max_distance=SIGNATURE_BITS)}
    assert unfiltered[2] == unfiltered[1] >= rule.MIN_VOTES
    assert 2 not in {c.ref for c in matcher.candidates(copy)}


def test_store_round_trip_is_found(fixture_fps: list[Fingerprint]) -> None:
    """The index rebuilt at start from `to_store` finds what the live one found."""
    matcher = Matcher(background=False)
    fp = fixture_fps[0]
    perceptual, features = fp.to_store()
    matcher.add(1, Fingerprint.from_store(fp.sha256, perceptual, features, fp.width, fp.height))
    assert [m.ref for m in matcher.search(fixture_fps[-1])] == [1]


def test_describe_is_json_and_names_the_thresholds(fixture_fps: list[Fingerprint]) -> None:
    matcher = Matcher(background=False)
    matcher.add(1, fixture_fps[0])
    text = json.dumps(matcher.describe())
    for value in (rule.PDQ_COPY, rule.PDQ_CANDIDATE, rule.PDQ_MIN_QUALITY, rule.INLIERS_COPY,
                  rule.AGREEMENT_COPY, rule.GLOBAL_AGREEMENT_COPY):
        assert str(value) in text
    assert matcher.describe()["registrations"] == 1


# -- the quality gate -----------------------------------------------------------------------


def _near_blank(kind: int) -> Image.Image:
    image = Image.new("RGB", (800, 800), "white")
    draw = ImageDraw.Draw(image)
    if kind == 0:
        draw.ellipse((390, 390, 410, 410), fill=(200, 30, 30))
    elif kind == 1:
        draw.rectangle((380, 395, 420, 405), fill=(30, 30, 200))
    elif kind == 2:
        draw.line((100, 300, 700, 310), fill=(210, 210, 210), width=2)
    else:
        draw.text((350, 380), "item 3", fill=(190, 190, 190))
    return image.filter(ImageFilter.GaussianBlur(1))


def test_low_information_images_do_not_match_each_other() -> None:
    fps = [fingerprint(jpeg(_near_blank(k))) for k in range(4)]
    assert all((fp.quality or 0) < rule.PDQ_MIN_QUALITY for fp in fps)
    matcher = Matcher(background=False)
    features = {}
    for ref, fp in enumerate(fps):
        matcher.add(ref, fp)
        features[ref] = fp.features
    for ref, fp in enumerate(fps):
        others = [m for m in matcher.match(fp, features.get) if m.ref != ref]
        assert others == []


def test_quality_gate_stops_the_hash_deciding() -> None:
    """Two different near-blank images whose PDQ codes are close: the hash alone says copy."""
    a, b = (fingerprint(jpeg(_near_blank(k))) for k in (0, 1))
    assert a - b <= rule.PDQ_CANDIDATE  # without the gate this would be a match
    matcher = Matcher(background=False)
    matcher.add(1, a)
    assert matcher.search(b) == []
    assert all(c.gated for c in matcher.candidates(b) if c.pdq is not None)
    assert [m for m in matcher.match(b, {1: a.features}.get) if m.verdict == "copy"] == []


def test_known_copies_from_the_packages(photos: Path) -> None:
    """Real copies the packages ship: resized, re-encoded, mirrored, a screenshot."""
    pairs = [("gcompris/explore-monuments-wonders__colosseum.webp", "copies/colosseum.webp"),
             ("tuxpaint-stamps/military-vehicles__bradley.png", "copies/bradley_mirror.png"),
             ("opencv/data__chicky_512.png", "copies/Pyramids_Tutorial_Original_Image.jpg")]
    for original, copy in pairs:
        matcher = Matcher(background=False)
        fp = fingerprint(original_bytes(photos / original)[0])
        matcher.add(9, fp)
        found = matcher.match(fingerprint((photos / copy).read_bytes()), {9: fp.features}.get)
        assert found and (found[0].ref, found[0].verdict) == (9, "copy"), (original, found)


def test_io_bytes_are_what_is_hashed() -> None:
    """sha256 is of the uploaded bytes: two encodings of one picture differ there only."""
    image = fixture_image((300, 200))
    a, b = fingerprint(png(image)), fingerprint(jpeg(image, quality=95))
    assert a.sha256 != b.sha256 and a - b <= rule.PDQ_COPY
    out = io.BytesIO()
    image.save(out, "WEBP", quality=80)
    assert fingerprint(out.getvalue()) - a <= rule.PDQ_COPY
