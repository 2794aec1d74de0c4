"""SQLite's lookups by key run on the event loop, and fall back to the reader thread when busy."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shotstamp_service.records import NewRegistration
from shotstamp_service.store import StoreError
from shotstamp_service.store.sqlite import SQLiteStore
from tests.kit.rows import new_registration


def _new(n: int) -> NewRegistration:
    return new_registration(n, height=20, features=bytes([n]) * 100)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    # These tests are about SQLite's reads: no blob cache in front of them (test_sqlite_blob_cache).
    opened = SQLiteStore(tmp_path / "db.sqlite", features_cached_bytes=0)
    await opened.open()
    yield opened
    await opened.close()


def _no_reader(*_: Any) -> Any:
    raise AssertionError("went to the reader thread")


async def test_lookups_by_key_see_committed_writes_without_the_reader_thread(store, monkeypatch):
    first = await store.add_registration(_new(1))
    monkeypatch.setattr(store, "_read", _no_reader)
    assert [r.id for r in await store.find_by_sha256(f"{1:064x}")] == [first.id]
    second = await store.add_registration(_new(2))  # committed by the writer's connection
    assert [r.id for r in await store.find_by_sha256(f"{2:064x}")] == [second.id]
    assert await store.get_features([first.seq, second.seq, 999]) == {
        first.seq: bytes([1]) * 100,
        second.seq: bytes([2]) * 100,
    }
    assert await store.get_api_key("nobody") is None
    assert (await store.get_registration(second.id)).seq == second.seq
    assert await store.find_by_idempotency_key("s", "none") is None
    assert await store.latest_checkpoint() is None


async def test_a_busy_database_sends_the_lookup_to_the_reader(store, monkeypatch):
    reg = await store.add_registration(_new(3))
    real = store._lconn
    calls: list[str] = []

    class Busy:
        """The loop's connection, answering as SQLite does when a lock is held."""

        def execute(self, *_: Any) -> Any:
            calls.append("loop")
            exc = sqlite3.OperationalError("database is locked")
            exc.sqlite_errorcode = sqlite3.SQLITE_BUSY
            raise exc

    monkeypatch.setattr(store, "_lconn", Busy())
    found = await store.find_by_sha256(f"{3:064x}")
    assert [r.id for r in found] == [reg.id] and calls == ["loop"]
    monkeypatch.setattr(store, "_lconn", real)


async def test_other_errors_on_the_loop_are_store_errors(store, monkeypatch):
    class Broken:
        def execute(self, *_: Any) -> Any:
            exc = sqlite3.OperationalError("disk I/O error")
            exc.sqlite_errorcode = sqlite3.SQLITE_IOERR
            raise exc

    monkeypatch.setattr(store, "_lconn", Broken())
    with pytest.raises(StoreError):
        await store.find_by_sha256("00")
    with pytest.raises(StoreError):
        await store.get_api_key("k")


async def test_the_few_registrations_another_process_added_are_read_on_the_loop(
    store, monkeypatch
):
    """What the registration guard reads under the commit lock: no hop to the reader."""
    regs = [await store.add_registration(_new(n)) for n in range(1, 4)]
    with monkeypatch.context() as patch:
        patch.setattr(store, "_read", _no_reader)
        assert [f.seq async for f in store.iter_fingerprints(after_seq=regs[0].seq)] == [
            r.seq for r in regs[1:]
        ]
    many = regs + [await store.add_registration(_new(n)) for n in range(4, 81)]
    store.fingerprint_page = 50  # two pages, each partly on the loop, the rest on the reader
    assert [f.seq async for f in store.iter_fingerprints()] == [r.seq for r in many]


async def test_a_stage_2_round_s_blobs_are_read_on_the_loop_and_a_longer_list_on_the_reader(
    store, monkeypatch
):
    """Stage 2 reads up to its shortlist's 64 word candidates plus the PDQ ones: on the
    loop, where it costs less than the hop; a list past `_FEATURES_INLINE` hops."""
    from shotstamp_service.store import sqlite

    regs = [await store.add_registration(_new(n)) for n in range(1, 151)]
    real_read = store._read
    monkeypatch.setattr(store, "_read", _no_reader)
    inline = [r.seq for r in regs[: sqlite._FEATURES_INLINE - 1]]  # and one not stored
    found = await store.get_features([*inline, 10_000])
    assert found == {r.seq: bytes([n]) * 100 for n, r in enumerate(regs[:len(inline)], 1)}
    hopped: list[int] = []

    async def reader(fn):
        hopped.append(1)
        return await real_read(fn)

    monkeypatch.setattr(store, "_read", reader)
    everything = await store.get_features(r.seq for r in regs)
    assert hopped == [1]
    assert everything == {r.seq: bytes([n]) * 100 for n, r in enumerate(regs, 1)}


def _counting_reader(store, monkeypatch) -> list[int]:
    hopped: list[int] = []
    real_read = store._read

    async def reader(fn):
        hopped.append(1)
        return await real_read(fn)

    monkeypatch.setattr(store, "_read", reader)
    return hopped


async def _evict(store: SQLiteStore) -> None:
    """Every page of the database out of SQLite's cache and the OS's, as if never read."""
    await store._write(lambda conn: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())
    store._lconn.execute("PRAGMA shrink_memory")  # SQLite's own cache of those pages
    fd = os.open(store.path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


async def test_blob_reads_that_wait_for_the_disk_go_to_the_reader_until_they_no_longer_do(
    store, monkeypatch, caplog
):
    """Rows the OS has not cached (a data directory far larger than its page cache) would
    hold the loop while the disk answers: those rounds go to the reader, and back to the loop
    once the reader's reads come from the cache again."""
    from shotstamp_service.store import sqlite

    regs = [await store.add_registration(_new(n)) for n in range(1, 65)]
    want = {r.seq: bytes([n]) * 100 for n, r in enumerate(regs, 1)}
    hopped = _counting_reader(store, monkeypatch)
    caplog.set_level("INFO", logger="shotstamp_service.store.sqlite")
    store._blob_disk.record(2.5 * 64, 64)  # a cold round: ~2.5 disk pages a blob
    store._blob_disk.record(2.5 * 64, 64)
    assert store._blob_disk.waiting
    assert [r.getMessage() for r in caplog.records] == [
        "stage 2's blob reads: 0.62 disk pages a blob, now on the reader thread"]
    rounds = 0
    while store._blob_disk.waiting:  # each round read here is served from the cache
        assert await store.get_features(want) == want
        rounds += 1
        assert len(hopped) == rounds, "a waiting round was read on the loop"
    assert 5 <= rounds <= 20  # a few rounds, not one lucky read, bring it back
    assert await store.get_features(want) == want
    assert len(hopped) == rounds  # on the loop again
    assert store._blob_disk.per_blob <= sqlite._FEATURES_DISK_PAGES
    assert caplog.records[-1].getMessage().endswith("now on the event loop")
    assert len(caplog.records) == 2


def test_disk_pages_per_blob_is_a_recent_mean():
    from shotstamp_service.store.sqlite import _DiskPages

    pages = _DiskPages()
    pages.record(0, 0)  # an empty round says nothing
    assert pages.per_blob == 0 and not pages.waiting
    pages.record(3, 64)  # three disk pages in a 64-blob round: under the limit
    assert not pages.waiting
    for _ in range(3):
        pages.record(160, 64)
    assert pages.waiting and pages.per_blob < 2.5
    for _ in range(20):
        pages.record(0, 64)
    assert not pages.waiting


async def test_blob_reads_are_counted_from_the_disk_when_the_os_has_dropped_the_rows(
    store, monkeypatch, tmp_path
):
    """The real signal: rows evicted from the OS's page cache (and SQLite's) are read from
    the disk by the loop's read, counted by the kernel, and send the next rounds to the
    reader thread."""
    regs = [await store.add_registration(
        new_registration(n, height=20, features=os.urandom(6000))) for n in range(1, 65)]
    want = await store.get_features(r.seq for r in regs)
    assert len(want) == 64 and not store._blob_disk.waiting
    await _evict(store)
    hopped = _counting_reader(store, monkeypatch)
    assert await store.get_features(want) == want
    if not store._blob_disk.per_blob:
        pytest.skip(f"{tmp_path} gives no page back to the disk (tmpfs?): nothing was read")
    assert hopped == []  # that round on the loop, which met the disk...
    assert store._blob_disk.per_blob >= 0.25  # ~1.5 pages a 6 KB blob, a quarter of it
    assert store._blob_disk.waiting
    assert await store.get_features(want) == want
    assert hopped == [1]  # ...so the next on the reader


@pytest.mark.parametrize("where", ["loop", "reader"])
async def test_a_round_s_blobs_come_back_byte_for_byte_wherever_they_are_read(
    store, monkeypatch, where
):
    """On the reader the blobs travel end to end in one row (`_FEATURES_BY_SEQ_ONE_ROW`):
    every byte value, NULs, invalid UTF-8, an empty blob and a row without features keep
    their place, as row by row on the loop."""
    every = bytes(range(256))
    blobs = [every * 3, b"\x00" * 7, b"\xff\xfe\x80", b"", every[::-1] + b"\x00", None]
    regs = [await store.add_registration(new_registration(n, features=blob))
            for n, blob in enumerate(blobs, 1)]
    want = {r.seq: blob for r, blob in zip(regs, blobs, strict=True) if blob is not None}
    hopped = _counting_reader(store, monkeypatch)
    if where == "reader":
        monkeypatch.setattr(store._blob_disk, "record", lambda *_: None)
        store._blob_disk.per_blob = 1.0  # as after rounds that met the disk
    got = await store.get_features([r.seq for r in regs] + [10_000])
    assert got == want and all(type(b) is bytes for b in got.values())
    assert list(got) == sorted(got)
    assert await store.get_features([regs[-1].seq, 10_000]) == {}
    assert len(hopped) == (2 if where == "reader" else 0)


async def test_sha256_lookups_that_wait_for_the_disk_go_to_the_reader(store, monkeypatch, caplog):
    """The upload's exact-duplicate lookup: on the loop while the sha256 index's pages are
    cached, on the reader while they come from the disk, and back; the same rows either way."""
    from shotstamp_service.store import sqlite

    regs = [await store.add_registration(new_registration(n)) for n in range(1, 9)]
    dup = await store.add_registration(new_registration(3, idempotency_key="again"))
    hopped = _counting_reader(store, monkeypatch)
    caplog.set_level("INFO", logger="shotstamp_service.store.sqlite")
    on_loop = [await store.find_by_sha256(f"{n:064x}") for n in (3, 5, 99)]
    assert [[r.seq for r in found] for found in on_loop] == [[regs[2].seq, dup.seq],
                                                             [regs[4].seq], []]
    assert hopped == [] and not store._sha256_disk.waiting
    store._sha256_disk.record(2, 1)  # a lookup whose index pages came from the disk
    assert store._sha256_disk.waiting
    assert caplog.records[-1].getMessage() == (
        "sha256 lookups: 0.50 disk pages a lookup, now on the reader thread")
    lookups = 0
    while store._sha256_disk.waiting:  # each read there is served from the cache
        assert [await store.find_by_sha256(f"{n:064x}") for n in (3, 5, 99)] == on_loop
        lookups += 3
        assert len(hopped) == lookups, "a waiting lookup was read on the loop"
    assert await store.find_by_sha256(f"{3:064x}") == on_loop[0]
    assert len(hopped) == lookups  # on the loop again
    assert store._sha256_disk.per_blob <= sqlite._SHA256_DISK_PAGES
    assert caplog.records[-1].getMessage().endswith("now on the event loop")


async def test_sha256_lookups_are_counted_from_the_disk_when_the_os_has_dropped_the_index(
    store, monkeypatch, tmp_path
):
    """The real signal: the sha256 index's pages evicted from the OS's page cache (and
    SQLite's) are read from the disk by the loop's lookup and send the next to the reader."""
    for n in range(1, 2001):
        await store.add_registration(new_registration(n))
    assert await store.find_by_sha256(f"{7:064x}") and not store._sha256_disk.waiting
    await _evict(store)
    hopped = _counting_reader(store, monkeypatch)
    assert [r.sha256 for r in await store.find_by_sha256(f"{1500:064x}")] == [f"{1500:064x}"]
    if not store._sha256_disk.per_blob:
        pytest.skip(f"{tmp_path} gives no page back to the disk (tmpfs?): nothing was read")
    assert hopped == []  # that lookup on the loop, which met the disk...
    assert store._sha256_disk.waiting
    assert await store.find_by_sha256(f"{1501:064x}")
    assert hopped == [1]  # ...so the next on the reader
