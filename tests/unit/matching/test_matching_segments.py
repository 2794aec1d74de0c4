"""Persisted index segments (matching/segments.py): lookups through memory-mapped segments and
an in-memory tail give the answers of today's all-in-memory index, and a damaged or missing
segment is detected when opened."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shotstamp_service.matching import index as index_module
from shotstamp_service.matching import segments as segments_module
from shotstamp_service.matching.engine import Columns, Matcher
from shotstamp_service.matching.fingerprint import Fingerprint, fingerprint
from shotstamp_service.matching.segments import FANOUT, SegmentDir
from tests.kit.edits import EDITS, apply_edit


@pytest.fixture(scope="module")
def registrations(bundled: dict[str, tuple[bytes, Image.Image]]) -> list[Fingerprint]:
    """Each bundled photo and edits of it: originals, crops and re-encodes that share words
    and PDQ codes with each other, as look-alike product shots do."""
    fps = []
    for name, (data, image) in sorted(bundled.items()):
        fps.append(fingerprint(data))
        for edit in EDITS[::2]:
            fps.append(fingerprint(apply_edit(edit, image, photo=f"skimage/{name}")))
    return fps


@pytest.fixture(scope="module")
def queries(bundled: dict[str, tuple[bytes, Image.Image]]) -> list[Fingerprint]:
    return [fingerprint(apply_edit(edit, image, photo=f"skimage/{name}"))
            for name, (_, image) in sorted(bundled.items()) for edit in EDITS[1::2]]


def _answers(matcher: Matcher, fp: Fingerprint) -> tuple[object, ...]:
    look = matcher.look(fp, stop_at_copy=False)
    scores = matcher.word_scores(fp, limit=len(matcher))
    return (look.found, look.candidates, matcher.search(fp),
            [(s.ref, round(s.score, 9), s.votes) for s in scores])


def _persisted(tmp_path: Path, fps: list[Fingerprint], segment: int, tail: int) -> Matcher:
    """Registrations 1.. in segments of `segment` (merged by tiers), the last `tail` added to
    the in-memory tail; opened again from disk by a fresh directory object, as at start."""
    directory = SegmentDir(tmp_path / "index")
    persisted = len(fps) - tail
    for start in range(0, persisted, segment):
        columns = Columns()
        stop = min(persisted, start + segment)
        for ref in range(start + 1, stop + 1):
            columns.add(ref, fps[ref - 1])
        assert directory.add(columns, [f"seller-{ref % 3}" for ref in columns.refs],
                             start, stop)
    matcher = Matcher(background=False)
    for seg in SegmentDir(tmp_path / "index", verify=True).open():
        matcher.attach(seg)
    for ref in range(persisted + 1, len(fps) + 1):
        matcher.add(ref, fps[ref - 1])
    return matcher


def test_segments_and_tail_answer_as_the_in_memory_index(
        tmp_path: Path, registrations: list[Fingerprint], queries: list[Fingerprint]) -> None:
    reference = Matcher(background=False)
    for ref, fp in enumerate(registrations, 1):
        reference.add(ref, fp)
    # FANOUT + 1 segments: the first FANOUT merge into one of the next tier.
    segment = max(1, (len(registrations) - 5) // (FANOUT + 1))
    matcher = _persisted(tmp_path, registrations, segment, tail=5)
    entries = SegmentDir(tmp_path / "index").manifest()
    assert [e["tier"] for e in entries][:1] == [1] and len(entries) < FANOUT
    assert len(matcher) == len(reference) == len(registrations)
    found = 0
    for fp in queries + registrations[:10]:
        want = _answers(reference, fp)
        assert _answers(matcher, fp) == want
        found += bool(want[0] or want[1])
    assert found > len(queries) // 2  # the set exercises candidates, not only misses


def test_new_and_merged_segments_swapped_in_answer_as_before(
        tmp_path: Path, registrations: list[Fingerprint], queries: list[Fingerprint]) -> None:
    n = len(registrations)
    reservation = 1 << 62  # an upload in flight: never in a segment, kept in memory
    reference = Matcher(background=False)
    for ref, fp in enumerate(registrations, 1):
        reference.add(ref, fp)
    reference.add(reservation, queries[0])
    directory = SegmentDir(tmp_path / "index")
    first = n // 3

    def write(after: int, through: int, step: int) -> None:
        for start in range(after, through, step):
            columns = Columns()
            for ref in range(start + 1, min(through, start + step) + 1):
                columns.add(ref, registrations[ref - 1])
            assert directory.add(columns, ["s"] * len(columns), start, min(through, start + step))

    write(0, first, first)
    matcher = Matcher(background=False)
    matcher._words._segment_postings = 512  # in-memory word segments, not only the tail
    for seg in directory.open():
        matcher.attach(seg)
    for ref in range(first + 1, n + 1):
        matcher.add(ref, registrations[ref - 1])
    matcher.add(reservation, queries[0])
    assert any(not s.persisted for s in matcher._words._segments)
    assert matcher.resident == n - first + 1
    # Another process writes FANOUT more segments: the mapped one merges with the next ones.
    mapped = directory.manifest()[0]["name"]
    through = 2 * n // 3
    write(first, through, max(1, (through - first) // FANOUT))
    entries = directory.manifest()
    assert entries[0]["tier"] == 1 and mapped not in {e["name"] for e in entries}
    matcher.replace_segments(directory.open())
    assert matcher.resident == n - through + 1
    assert len(matcher) == len(reference) == n + 1
    for fp in queries + registrations[:10]:
        assert _answers(matcher, fp) == _answers(reference, fp)
    matcher.discard(reservation)  # its commit failed: gone from memory as before
    assert matcher.resident == n - through


def _frozen_arrays_before_4(prefix: str, part: index_module.Frozen) -> dict[str, np.ndarray]:
    """What releases /1–/3 wrote for a PDQ part: int32 run starts in {prefix}.offsets."""
    t = part.tables
    assert isinstance(t.offsets, list)
    offsets = np.concatenate(t.offsets) if t.offsets else np.zeros(0, np.int32)
    refs = part.refs.astype(np.int32) if len(part.refs) else part.refs
    return {f"{prefix}.codes": part.codes, f"{prefix}.refs": refs, f"{prefix}.tags": part.tags,
            f"{prefix}.order": t.order, f"{prefix}.offsets": offsets}


def test_segments_of_earlier_formats_still_answer_beside_new_ones(
        tmp_path: Path, registrations: list[Fingerprint], queries: list[Fingerprint],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Segments of /1 (uint32 postings, 32-bit signatures), /2 (packed postings, 32-bit
    signatures), /3 (packed postings, 16-bit signatures, int32 PDQ run starts; all three with
    int64 refs and int32 sellers, as /4 had) and /5 (packed run starts, int32 refs, uint16
    sellers) in one directory answer as the in-memory index, which keeps 16 bits of each
    signature."""
    reference = Matcher(background=False)
    for ref, fp in enumerate(registrations, 1):
        reference.add(ref, fp)
    directory = SegmentDir(tmp_path)
    n = len(registrations)
    cuts = [0, n // 4, n // 2, 3 * n // 4, n]

    def write(k: int) -> None:
        columns = Columns()
        for ref in range(cuts[k] + 1, cuts[k + 1] + 1):
            columns.add(ref, registrations[ref - 1])
        assert directory.add(columns, ["s"] * len(columns), cuts[k], cuts[k + 1])

    for k, fmt in enumerate(("shotstamp-index/1", "shotstamp-index/2", "shotstamp-index/3")):
        with monkeypatch.context() as m:  # the releases before packed PDQ run starts
            m.setattr(segments_module, "FORMAT", fmt)
            m.setattr(segments_module, "build_frozen", functools.partial(
                index_module.build_frozen, packed=False))
            m.setattr(segments_module, "_frozen_arrays", _frozen_arrays_before_4)
            m.setattr(segments_module, "_narrow_refs", lambda r: np.asarray(r, np.int64))
            m.setattr(segments_module, "_narrow_sellers", lambda s, n: np.asarray(s, np.int32))
            if not fmt.endswith("/3"):  # and before 16-bit signatures
                m.setattr(index_module, "stored_signatures",
                          lambda g: np.asarray(g, np.uint32))
            if fmt.endswith("/1"):  # and before packed postings
                m.setattr(segments_module, "pack_postings", lambda postings: postings)
            write(k)
    write(3)
    first, second, third, fourth = SegmentDir(tmp_path, verify=True).open()
    for seg in (first, second, third):
        assert isinstance(seg.pdq.tables.offsets, list)
        assert (tmp_path / seg.name / "pdq.offsets.npy").exists()
    assert isinstance(fourth.pdq.tables.offsets, index_module.PackedOffsets)
    assert not (tmp_path / fourth.name / "pdq.offsets.npy").exists()
    buckets = len(fourth.pdq.tables.offsets.step)
    assert (tmp_path / fourth.name / "pdq.step.npy").stat().st_size < buckets + 200
    assert fourth.pdq.tables.order.dtype == np.uint8 and third.pdq.tables.order.dtype == np.int32
    assert not first.words[0].packed and second.words[0].packed and third.words[0].packed
    assert first.words[0].signatures.dtype == second.words[0].signatures.dtype == np.uint32
    assert third.words[0].signatures.dtype == np.uint16
    postings = len(third.words[0].signatures)
    assert (tmp_path / third.name / "words0.postings.npy").stat().st_size < 3 * postings + 200
    assert (tmp_path / third.name / "words0.signatures.npy").stat().st_size < 2 * postings + 200
    assert len(third.words[0].postings) == postings
    assert third.refs.dtype == third.words[0].refs.dtype == np.int64
    assert third.sellers.dtype == np.int32
    assert fourth.refs.dtype == fourth.words[0].refs.dtype == np.int32
    assert fourth.sellers.dtype == np.uint16
    matcher = Matcher(background=False)
    matcher.replace_segments([first, second, third, fourth])
    for fp in queries + registrations[:10]:
        assert _answers(matcher, fp) == _answers(reference, fp)
    # A merge rewrites old and new parts alike in the current form.
    merged = SegmentDir(tmp_path)._merged([first, second, third, fourth], 1)
    assert merged["files"]["refs.npy"][0] < 4 * n + 200
    assert merged["files"]["sellers.npy"][0] < 2 * n + 200


def test_a_segment_holds_sellers_and_sequence_range(
        tmp_path: Path, registrations: list[Fingerprint]) -> None:
    directory = SegmentDir(tmp_path)
    columns = Columns()
    for ref in (3, 4, 7):
        columns.add(ref, registrations[ref])
    assert directory.add(columns, ["b", "a", "b"], 0, 9)
    [seg] = directory.open()
    assert (seg.after, seg.through) == (0, 9)
    assert seg.refs.tolist() == [3, 4, 7] and seg.refs.dtype == np.int32
    assert [seg.names[i] for i in seg.sellers.tolist()] == ["b", "a", "b"]
    assert seg.sellers.dtype == np.uint16
    assert isinstance(seg.pdq.codes.base, np.memmap)  # a view of the mapping, not a copy
    # Another process wrote (0, 9] already: a second writer of that range stands down.
    assert not directory.add(columns, ["b", "a", "b"], 0, 9)
    assert directory.through == 9


def _two_segments(tmp_path: Path, registrations: list[Fingerprint]) -> SegmentDir:
    directory = SegmentDir(tmp_path)
    for after, through in ((0, 5), (5, 10)):
        columns = Columns()
        for ref in range(after + 1, through + 1):
            columns.add(ref, registrations[ref])
        assert directory.add(columns, ["s"] * len(columns), after, through)
    return directory


def test_a_truncated_segment_is_dropped_with_the_later_ones(
        tmp_path: Path, registrations: list[Fingerprint]) -> None:
    directory = _two_segments(tmp_path, registrations)
    first = directory.manifest()[0]["name"]
    path = tmp_path / first / "pdq.codes.npy"
    path.write_bytes(path.read_bytes()[:-32])
    assert directory.open() == []
    assert directory.manifest() == [] and directory.through == 0  # rebuilt from the store


def test_a_corrupt_segment_fails_its_checksum(
        tmp_path: Path, registrations: list[Fingerprint]) -> None:
    directory = _two_segments(tmp_path, registrations)
    second = directory.manifest()[1]["name"]
    path = tmp_path / second / "words0.signatures.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert len(directory.open()) == 2  # sizes only: the flip goes unseen
    assert directory.verify_all() == [second]
    assert [s.through for s in SegmentDir(tmp_path, verify=True).open()] == [5]
    assert directory.through == 5


def test_a_missing_segment_or_manifest_starts_over(
        tmp_path: Path, registrations: list[Fingerprint]) -> None:
    directory = _two_segments(tmp_path, registrations)
    (tmp_path / "manifest.json").write_text("{not json")
    assert directory.open() == []
    directory = _two_segments(tmp_path / "again", registrations)
    manifest = json.loads((tmp_path / "again" / "manifest.json").read_text())
    for f in (tmp_path / "again" / manifest["segments"][1]["name"]).iterdir():
        f.unlink()
    assert [s.through for s in directory.open()] == [5]


def test_a_merge_packs_short_word_parts_together(
        tmp_path: Path, registrations: list[Fingerprint], queries: list[Fingerprint],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each of FANOUT segments splits its words into a full part and a short one; the merge
    links the full ones and packs the short ones together (not one part each), and the
    merged segment answers as the in-memory index."""
    n = len(registrations)
    columns = Columns()
    for ref in range(1, n // FANOUT + 1):
        columns.add(ref, registrations[ref - 1])
    keypoints = int(columns.words()[1].sum())  # a part is cut by keypoints, before dedup
    cap = int(keypoints * 0.8)
    monkeypatch.setattr(index_module, "MAX_SEGMENT_POSTINGS", cap)
    monkeypatch.setattr(segments_module, "MAX_SEGMENT_POSTINGS", cap)
    matcher = _persisted(tmp_path, registrations, n // FANOUT, tail=n - FANOUT * (n // FANOUT))
    [entry] = SegmentDir(tmp_path / "index").manifest()
    assert entry["tier"] == 1
    # FANOUT long parts and FANOUT short ones: two or more short ones share a part
    # (merging only neighbours kept all 2 * FANOUT).
    assert FANOUT < entry["word_parts"] <= FANOUT + FANOUT // 2
    assert len(matcher._words._segments) == entry["word_parts"]  # no tail: n % FANOUT == 0
    reference = Matcher(background=False)
    for ref, fp in enumerate(registrations, 1):
        reference.add(ref, fp)
    for fp in queries + registrations[:10]:
        assert _answers(matcher, fp) == _answers(reference, fp)
