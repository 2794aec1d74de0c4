"""The registry on persisted index segments: a store written without them upgrades on its first
start, later starts read only what the segments do not cover, new registrations become a
segment, and a damaged segment is rebuilt from the store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import imagegen
from shotstamp_service import registry as registry_module
from shotstamp_service.http.auth import Principal
from shotstamp_service.matching.engine import Matcher
from shotstamp_service.matching.fingerprint import DecodeLimits, Fingerprint, fingerprint
from shotstamp_service.matching.segments import SegmentDir
from shotstamp_service.registry import Registry

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

    def iter_fingerprints(self, after_seq: int = 0):
        self.read_after.append(after_seq)
        return self._store.iter_fingerprints(after_seq)


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
