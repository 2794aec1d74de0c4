"""The registry on persisted index segments: a store written without them upgrades on its first
start, later starts read only what the segments do not cover, new registrations become a
segment, and a damaged segment is rebuilt from the store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shotstamp_service import registry as registry_module
from shotstamp_service.http.auth import Principal
from shotstamp_service.matching import segments as segments_module
from shotstamp_service.matching.engine import Matcher
from shotstamp_service.matching.fingerprint import DecodeLimits, Fingerprint, fingerprint
from shotstamp_service.matching.segments import SegmentDir
from shotstamp_service.registry import Registry
from tests.kit import imagegen

SELLERS = [Principal(f"seller-{k}", "seller", f"k{k}") for k in range(3)]
THIEF = Principal("thief", "seller", "kt")


async def fingerprint_here(data: bytes) -> Fingerprint:
    return fingerprint(data, DecodeLimits())


class CountingStore:
    """A real store that remembers from which seq the index was read."""

    def __init__(self, store) -> None:
        self._store = store
        self.read_after: list[int] = []

    def __getattr__(self, name):
        return getattr(self._store, name)

    def iter_fingerprints(self, after_seq: int = 0, skip=()):
        self.read_after.append(after_seq)
        return self._store.iter_fingerprints(after_seq, skip)


async def _start(store, index: Path | None) -> Registry:
    registry = Registry(store, Matcher(background=False), fingerprint_here,
                        segments=None if index is None else SegmentDir(index))
    await registry.load_index()
    return registry


async def _check_copies(registry: Registry, photos: dict[int, bytes]) -> None:
    """Every registered photo's recompressed copy is refused with its own registration."""
    for seed, data in photos.items():
        outcome = await registry.register(THIEF, imagegen.recompressed_copy(data))
        assert outcome.kind == "conflict", seed
        [match] = outcome.matches
        assert match.registration.sha256 == fingerprint(data).sha256
        assert match.registration.seller == SELLERS[seed % 3].seller


@pytest.fixture
def small_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "SEGMENT_ROWS", 3)
    monkeypatch.setattr(registry_module, "UPGRADE_ROWS", 4)


async def test_a_store_upgrades_to_segments_and_later_starts_read_only_the_rest(
        store_target, tmp_path: Path, small_segments: None) -> None:
    store = CountingStore(store_target.make())
    await store.open()
    photos = {seed: imagegen.jpeg(seed) for seed in range(10)}
    old = await _start(store, None)  # today's release: no index directory
    for seed, data in photos.items():
        assert (await old.register(SELLERS[seed % 3], data)).kind == "created"

    index = tmp_path / "index"
    first = await _start(store, index)  # the upgrade: 4 + 4 in segments, 2 in memory
    assert [e["through"] for e in SegmentDir(index).manifest()] == [4, 8]
    assert len(first.matcher) == 10
    await _check_copies(first, photos)

    store.read_after.clear()
    again = await _start(store, index)
    assert store.read_after == [8, 10]  # what the segments cover is never read
    assert len(again.matcher) == 10
    for seed in range(10, 13):
        photos[seed] = imagegen.jpeg(seed)
        assert (await again.register(SELLERS[seed % 3], photos[seed])).kind == "created"
    assert await again.persist()  # 2 + 3 registrations past the last segment
    assert SegmentDir(index).through == 13
    third = await _start(store, index)
    assert len(third.matcher) == 13 and third.indexed_through == 13
    await _check_copies(third, photos)
    await store.close()


async def test_a_damaged_segment_is_rebuilt_from_the_store(
        store_target, tmp_path: Path, small_segments: None) -> None:
    store = store_target.make()
    await store.open()
    photos = {seed: imagegen.jpeg(seed) for seed in range(20, 29)}
    old = await _start(store, None)
    for seed, data in photos.items():
        await old.register(SELLERS[seed % 3], data)
    index = tmp_path / "index"
    await _start(store, index)
    entries = SegmentDir(index).manifest()
    assert [e["through"] for e in entries] == [4, 8]
    codes = index / entries[0]["name"] / "words0.postings.npy"
    codes.write_bytes(codes.read_bytes()[:-4])  # a torn write

    rebuilt = await _start(store, index)
    assert [e["through"] for e in SegmentDir(index).manifest()] == [4, 8]
    assert len(rebuilt.matcher) == 9
    await _check_copies(rebuilt, photos)
    await store.close()


async def test_two_processes_sharing_an_index_directory_each_index_everything_once(
        store_target, tmp_path: Path, small_segments: None) -> None:
    store = store_target.make()
    await store.open()
    photos = {seed: imagegen.jpeg(seed) for seed in range(30, 40)}
    old = await _start(store, None)
    for seed, data in photos.items():
        await old.register(SELLERS[seed % 3], data)
    index = tmp_path / "index"
    # Both upgrade at once: each segment range is written by one of them, and each maps what
    # the other wrote instead of indexing those rows twice.
    first, second = await asyncio.gather(_start(store, index), _start(store, index))
    throughs = [e["through"] for e in SegmentDir(index).manifest()]
    assert throughs == [4, 8]
    for registry in (first, second):
        assert len(registry.matcher) == 10 and registry.indexed_through == 10
        await _check_copies(registry, photos)
    await store.close()


def _answers(registry: Registry, queries: list[Fingerprint]) -> list[tuple[object, ...]]:
    m = registry.matcher
    out = []
    for fp in queries:
        look = m.look(fp, stop_at_copy=False)
        scores = m.word_scores(fp, limit=100)
        out.append((look.found, look.candidates, m.search(fp),
                    [(s.ref, round(s.score, 9), s.votes) for s in scores]))
    return out


async def test_running_processes_pick_up_segments_written_and_merged_by_either(
        store_target, tmp_path: Path, small_segments: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segments_module, "FANOUT", 2)
    store = store_target.make()
    await store.open()
    index = tmp_path / "index"
    a, b = await _start(store, index), await _start(store, index)
    photos = {seed: imagegen.jpeg(seed) for seed in range(50, 58)}
    queries = [fingerprint(imagegen.recompressed_copy(data)) for data in photos.values()]
    for seed in list(photos)[:4]:
        assert (await a.register(SELLERS[seed % 3], photos[seed])).kind == "created"
    await b.load_index()  # following A: B holds A's registrations in memory
    assert (a.matcher.resident, b.matcher.resident) == (4, 4)
    before = _answers(b, queries)

    assert await a.persist()  # A writes seqs 1..4 and maps them itself
    assert [e["through"] for e in SegmentDir(index).manifest()] == [4]
    assert a.matcher.resident == 0 and len(a.matcher) == 4
    assert await b.refresh()  # B maps the segment A wrote, dropping those rows from memory
    assert b.matcher.resident == 0 and len(b.matcher) == 4
    assert _answers(b, queries) == before == _answers(a, queries)
    assert not await b.refresh()  # the manifest is unchanged: nothing to do

    for seed in list(photos)[4:]:
        assert (await b.register(SELLERS[seed % 3], photos[seed])).kind == "created"
    await a.load_index()
    before = _answers(a, queries)
    assert await b.persist()  # seqs 5..8, merged with 1..4 into one tier-1 segment
    [entry] = SegmentDir(index).manifest()
    assert (entry["after"], entry["through"], entry["tier"]) == (0, 8, 1)
    assert await a.refresh()
    for registry in (a, b):
        assert registry.matcher.resident == 0 and len(registry.matcher) == 8
        assert _answers(registry, queries) == before
        await _check_copies(registry, photos)
    await store.close()


async def test_a_manifest_listing_less_than_is_mapped_is_not_swapped_in(
        store_target, tmp_path: Path, small_segments: None) -> None:
    store = store_target.make()
    await store.open()
    index = tmp_path / "index"
    a = await _start(store, index)
    photos = {seed: imagegen.jpeg(seed) for seed in range(60, 64)}
    for seed, data in photos.items():
        await a.register(SELLERS[seed % 3], data)
    assert await a.persist() and a.matcher.resident == 0
    [entry] = SegmentDir(index).manifest()
    codes = index / entry["name"] / "pdq.codes.npy"
    codes.write_bytes(codes.read_bytes()[:-32])  # damaged on disk after A mapped it
    assert SegmentDir(index).open() == []  # another process drops it from the manifest
    assert not await a.refresh()  # A keeps what it maps (its pages are still valid)
    assert len(a.matcher) == 4
    await _check_copies(a, photos)
    await store.close()


async def test_an_unusable_index_directory_leaves_the_index_in_memory(
        store_target, tmp_path: Path, small_segments: None) -> None:
    store = store_target.make()
    await store.open()
    photos = {seed: imagegen.jpeg(seed) for seed in range(40, 45)}
    old = await _start(store, None)
    for seed, data in photos.items():
        await old.register(SELLERS[seed % 3], data)
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    registry = await _start(store, blocked)
    assert registry.segments is None and len(registry.matcher) == 5
    await _check_copies(registry, photos)
    await store.close()
