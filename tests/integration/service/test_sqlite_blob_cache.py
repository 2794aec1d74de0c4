"""Stage 2's feature blobs come from memory when this process committed or read them lately."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shotstamp_service.store import StoreError
from shotstamp_service.store.base import DuplicateIdempotencyKey
from shotstamp_service.store.sqlite import SQLiteStore
from tests.kit.rows import new_registration


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = SQLiteStore(tmp_path / "db.sqlite")
    await opened.open()
    yield opened
    await opened.close()


def _reads(store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The seqs of every blob read that reaches SQLite (on the loop or the reader)."""
    reads: list[list[int]] = []
    real = store._features_from_db

    async def counted(wanted: list[int]) -> dict[int, bytes]:
        reads.append(list(wanted))
        return await real(wanted)

    monkeypatch.setattr(store, "_features_from_db", counted)
    return reads


async def test_own_registrations_blobs_are_not_read_back(store, monkeypatch):
    regs = [await store.add_registration(new_registration(n, features=os.urandom(5000 + n)))
            for n in range(1, 6)]
    reads = _reads(store, monkeypatch)
    got = await store.get_features(r.seq for r in regs)
    assert reads == []
    assert got == {r.seq: r.features for r in regs}
    assert list(got) == sorted(got)


async def test_a_blob_read_once_is_not_read_again_and_answers_equal_sqlite_s(
    store, tmp_path, monkeypatch
):
    """Rows another process committed: read from SQLite the first time, then kept; a round
    mixing kept and unread blobs answers what SQLite holds, in seq order."""
    other = SQLiteStore(tmp_path / "db.sqlite", features_cached_bytes=0)  # another process
    await other.open()
    try:
        theirs = [await other.add_registration(
            new_registration(n, features=os.urandom(3000 + n))) for n in range(1, 9)]
        ours = await store.add_registration(new_registration(20, features=b"ours"))
        reads = _reads(store, monkeypatch)
        first = await store.get_features(r.seq for r in theirs[:4])
        assert reads == [[r.seq for r in theirs[:4]]]
        wanted = [r.seq for r in theirs] + [ours.seq, 10_000]  # one not stored
        got = await store.get_features(reversed(wanted))
        assert reads[1:] == [[r.seq for r in theirs[4:]] + [10_000]]  # only the unread
        assert got == await other.get_features(wanted)  # SQLite's answer, byte for byte
        assert list(got) == sorted(got) and first == {r.seq: got[r.seq] for r in theirs[:4]}
        assert await store.get_features(wanted) == got and len(reads) == 3  # 10_000 again
    finally:
        await other.close()


async def test_the_blobs_kept_stay_within_their_bytes_least_recently_used_first_out(tmp_path):
    store = SQLiteStore(tmp_path / "db.sqlite", features_cached_bytes=3000)
    await store.open()
    try:
        regs = [await store.add_registration(new_registration(n, features=bytes([n]) * 1000))
                for n in range(1, 5)]  # the fourth pushes the first out
        assert store._blobs.size == 3000
        assert store._blobs.get(regs[0].seq) is None
        assert store._blobs.get(regs[1].seq) is not None  # now the most recent
        await store.add_registration(new_registration(5, features=bytes([5]) * 1000))
        assert store._blobs.get(regs[2].seq) is None and store._blobs.get(regs[1].seq)
        await store.add_registration(new_registration(6, features=bytes(4000)))  # too large
        assert store._blobs.size == 3000
        # Whatever was let go is read again, the same bytes.
        assert await store.get_features(r.seq for r in regs) == {
            r.seq: bytes([n]) * 1000 for n, r in enumerate(regs, 1)}
    finally:
        await store.close()


async def test_what_is_not_committed_is_not_kept(store, monkeypatch):
    """A registration refused in its batch, or a batch whose transaction fails, leaves no
    blob behind: a seq is kept only once its row is committed."""
    first = await store.add_registration(
        new_registration(1, features=b"first", idempotency_key="k", idempotency_digest="d"))
    with pytest.raises(DuplicateIdempotencyKey):
        await store.add_registration(
            new_registration(2, features=b"second", idempotency_key="k", idempotency_digest="d"))
    assert store._blobs.size == len(b"first") and store._blobs.get(first.seq) == b"first"

    def broken(*_: Any) -> Any:
        raise StoreError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(store, "_insert_many", broken)
        with pytest.raises(StoreError):
            await store.add_registration(new_registration(3, features=b"third"))
    assert store._blobs.size == len(b"first")
    third = await store.add_registration(new_registration(3, features=b"third"))
    assert await store.get_features([first.seq, third.seq]) == {
        first.seq: b"first", third.seq: b"third"}


async def test_a_store_without_the_cache_reads_every_time(tmp_path, monkeypatch):
    store = SQLiteStore(tmp_path / "db.sqlite", features_cached_bytes=0)
    await store.open()
    try:
        reg = await store.add_registration(new_registration(1, features=b"blob"))
        reads = _reads(store, monkeypatch)
        for _ in range(2):
            assert await store.get_features([reg.seq]) == {reg.seq: b"blob"}
        assert reads == [[reg.seq], [reg.seq]] and store._blobs.size == 0
    finally:
        await store.close()


async def test_the_hit_rate_is_logged_at_close(tmp_path, caplog):
    """Each blob asked for counts once, found in memory or not; closing logs the share kept."""
    store = SQLiteStore(tmp_path / "db.sqlite")
    await store.open()
    regs = [await store.add_registration(new_registration(n, features=os.urandom(100 + n)))
            for n in range(1, 4)]  # committed here: kept
    await store.get_features([regs[0].seq, regs[1].seq, 10_000])  # 10_000: not stored
    await store.get_features([regs[2].seq])
    assert (store._blobs.asked, store._blobs.found) == (4, 3)
    with caplog.at_level("INFO", logger="shotstamp_service.store.sqlite"):
        await store.close()
    assert "stage 2's feature blobs: 4 asked for, 75.0 % kept in memory" in caplog.text
