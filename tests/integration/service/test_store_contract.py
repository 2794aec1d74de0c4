"""The store's contract, one test per rule, run against every backend (SQLite, PostgreSQL).

Each section is one concern's interface (`store/keys.py`, `registrations.py`,
`log.py`, `outbox.py`, `signing_keys.py`, `anchors.py`); the log's
invariants are checked through `commit_seal` directly, with hand-made seal
batches, so that a rule only the sealer kept would not pass here.
What only a shared store does (locks, several replicas) is in
test_postgres_store.py; migrations and proofs over real seals in test_log_store.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from shotstamp_service.records import (
    ApiKey,
    CheckpointRecord,
    NewRegistration,
    SigningKeyRecord,
    WebhookDelivery,
    WebhookRecord,
    format_time,
    new_registration_id,
    utc_now,
)
from shotstamp_service.store import (
    ActiveKeyChanged,
    AnchorAttempt,
    DuplicateIdempotencyKey,
    SealBatch,
    Store,
    StoreError,
)

HASH = 32


def registration(n: int, seller: str = "s", **fields: Any) -> NewRegistration:
    return NewRegistration(
        id=new_registration_id(),
        seller=seller,
        sha256=f"{n:064x}",
        perceptual={"phash": f"{n:016x}", "pdq": f"{n:064x}"},
        received_at=format_time(utc_now()),
        width=10 + n,
        height=20 + n,
        **fields,
    )


def hashes(first: int, count: int) -> bytes:
    """`count` distinct stand-in hashes (the store checks shape, not hashing)."""
    return b"".join(bytes([n % 256]) * HASH for n in range(first, first + count))


def checkpoint(size: int, key_id: str = "k1") -> CheckpointRecord:
    return CheckpointRecord(size, bytes([size % 256]) * HASH, 1_000 + size, f"note {size}", key_id)


@pytest.fixture
async def store(store_target) -> AsyncIterator[Store]:
    opened: Store = store_target.make()
    await opened.open()
    yield opened
    await opened.close()


async def seal(store: Store, count: int) -> list:
    """Register `count` entries and seal them at the current size, as the sealer would."""
    size = await store.tree_size()
    regs = [await store.add_registration(registration(size + k)) for k in range(count)]
    await store.commit_seal(
        SealBatch(
            assignments=[(reg.seq, size + k) for k, reg in enumerate(regs)],
            tiles=[(0, 0, hashes(0, size + count))],
            checkpoint=checkpoint(size + count),
        )
    )
    return regs


async def nothing_changed(store: Store, size: int, tile: bytes, pending: int) -> None:
    assert (await store.latest_checkpoint()).tree_size == size
    assert await store.tree_size() == size
    assert (await store.get_tiles([(0, 0)])).get((0, 0), b"") == tile
    assert await store.count_pending() == pending
    assert len(await store.pending(10)) == pending  # SQLite: read where the writes went


async def then_the_right_seal_lands(store: Store, reg, size: int) -> None:
    """After a refused seal the store takes the seal that was due (nothing left half-done)."""
    await store.commit_seal(
        SealBatch([(reg.seq, size)], [(0, 0, hashes(0, size + 1))], checkpoint(size + 1))
    )
    assert await store.tree_size() == size + 1
    assert (await store.get_registration(reg.id)).leaf_index == size


# -- API keys (KeyStore) ------------------------------------------------------


async def test_api_keys_are_added_listed_and_revoked_once(store):
    first = ApiKey("k1", b"\1" * 32, "acme", "seller", "2026-01-01T00:00:00Z", label="shop")
    second = ApiKey("k0", b"\2" * 32, "staff", "staff", "2026-01-02T00:00:00Z")
    await store.add_api_key(first)
    await store.add_api_key(second)
    assert await store.get_api_key("k1") == first
    assert await store.get_api_key("nope") is None
    assert await store.list_api_keys() == [first, second]  # by creation time
    with pytest.raises(StoreError):
        await store.add_api_key(replace(first, seller="other"))
    assert await store.revoke_api_key("k1", "2026-02-01T00:00:00Z")
    assert not await store.revoke_api_key("k1", "2026-03-01T00:00:00Z")  # only once
    assert not await store.revoke_api_key("nope", "2026-03-01T00:00:00Z")
    revoked = await store.get_api_key("k1")
    assert revoked.revoked_at == "2026-02-01T00:00:00Z" and not revoked.active


# -- registrations (RegistrationStore) ------------------------------------------


async def test_a_registration_reads_back_as_written(store):
    new = registration(
        1, title="Mug", reference="sku-1", idempotency_key="i1", features=b"F", thumbnail=b"T"
    )
    stored = await store.add_registration(new)
    assert stored.seq > 0 and stored.leaf_index is None
    # Reads leave the blobs out: they have their own methods.
    read = replace(stored, features=None, thumbnail=None)
    assert await store.get_registration(new.id) == read
    assert await store.get_registrations([stored.seq, 999]) == {stored.seq: read}
    assert await store.get_registrations([]) == {}
    assert await store.find_by_idempotency_key("s", "i1") == read
    assert await store.find_by_idempotency_key("other", "i1") is None
    assert await store.get_features([stored.seq, 999]) == {stored.seq: b"F"}
    assert await store.get_thumbnail(stored.seq) == b"T"
    assert await store.get_thumbnail(999) is None
    assert await store.get_registration("nope") is None


async def test_registrations_of_the_same_bytes_are_found_oldest_first(store):
    a = await store.add_registration(registration(7, seller="a"))
    b = await store.add_registration(registration(7, seller="b"))
    await store.add_registration(registration(8))
    assert [r.id for r in await store.find_by_sha256(f"{7:064x}")] == [a.id, b.id]
    assert await store.find_by_sha256(f"{9:064x}") == []


async def test_an_idempotency_key_is_unique_per_seller(store):
    first = await store.add_registration(registration(1, seller="a", idempotency_key="k1"))
    with pytest.raises(DuplicateIdempotencyKey) as info:
        await store.add_registration(registration(2, seller="a", idempotency_key="k1"))
    assert info.value.existing.id == first.id
    # Another seller may use the same key.
    await store.add_registration(registration(3, seller="b", idempotency_key="k1"))


async def test_an_idempotency_key_repeated_within_one_batch(store):
    first, second = await asyncio.gather(
        store.add_registration(registration(1, seller="a", idempotency_key="k")),
        store.add_registration(registration(2, seller="a", idempotency_key="k")),
        return_exceptions=True,
    )
    assert not isinstance(first, Exception)
    assert isinstance(second, DuplicateIdempotencyKey)
    assert second.existing.id == first.id


async def test_fingerprints_are_listed_in_seq_order_page_by_page(store):
    stored = await asyncio.gather(
        *(store.add_registration(registration(n, features=b"f%d" % n)) for n in range(7))
    )
    store.fingerprint_page = 3  # pages of 3, 3, 1
    listed = [fp async for fp in store.iter_fingerprints()]
    assert [fp.seq for fp in listed] == sorted(reg.seq for reg in stored)
    by_seq = {reg.seq: reg for reg in stored}
    for fp in listed:
        reg = by_seq[fp.seq]
        assert (fp.seller, fp.sha256, fp.perceptual, fp.features, fp.width, fp.height) == (
            reg.seller, reg.sha256, reg.perceptual, reg.features, reg.width, reg.height
        )
    after = listed[2].seq
    assert [fp.seq async for fp in store.iter_fingerprints(after_seq=after)] == [
        fp.seq for fp in listed[3:]
    ]


# -- the log (LogStore) -------------------------------------------------------


async def test_a_new_log_is_empty(store):
    assert await store.tree_size() == 0
    assert await store.latest_checkpoint() is None
    assert await store.get_tiles([(0, 0)]) == {}
    assert await store.hold_sealer_lock()  # the only process (or the first) may seal


async def test_seals_append_and_their_checkpoints_are_found(store):
    await store.commit_seal(SealBatch([], [], checkpoint(0)))
    regs = [await store.add_registration(registration(n)) for n in range(5)]
    assert [r.id for r in await store.pending(10)] == [r.id for r in regs]
    assert [r.id for r in await store.pending(2)] == [r.id for r in regs[:2]]
    assert await store.count_pending() == 5
    await store.commit_seal(
        SealBatch([(r.seq, k) for k, r in enumerate(regs[:3])], [(0, 0, hashes(0, 3))],
                  checkpoint(3))
    )
    await store.commit_seal(
        SealBatch([(r.seq, 3 + k) for k, r in enumerate(regs[3:])], [(0, 0, hashes(0, 5))],
                  checkpoint(5))
    )
    assert await store.count_pending() == 0 and await store.pending(10) == []
    assert await store.tree_size() == 5
    assert await store.latest_checkpoint() == checkpoint(5)
    assert await store.get_checkpoint(3) == checkpoint(3)
    assert await store.get_checkpoint(4) is None
    assert await store.first_checkpoint_covering(0) == checkpoint(3)
    assert await store.first_checkpoint_covering(3) == checkpoint(5)
    assert await store.first_checkpoint_covering(5) is None
    sealed = await store.get_registrations(r.seq for r in regs)
    assert [sealed[r.seq].leaf_index for r in regs] == list(range(5))
    assert await store.get_tiles([(0, 0), (1, 0)]) == {(0, 0): hashes(0, 5)}


@pytest.mark.parametrize("size", [1, 2, 4], ids=["stale", "same", "ahead"])
async def test_a_seal_at_the_wrong_size_is_refused_whole(store, size):
    await seal(store, 2)
    reg = await store.add_registration(registration(9))
    # One more leaf on a tree of 2 makes 3, nothing else.
    batch = SealBatch([(reg.seq, 2)], [(0, 0, hashes(0, 3))], checkpoint(size))
    with pytest.raises(StoreError, match="another sealer got there first"):
        await store.commit_seal(batch)
    await nothing_changed(store, 2, hashes(0, 2), pending=1)
    assert (await store.get_registration(reg.id)).leaf_index is None
    await then_the_right_seal_lands(store, reg, 2)


async def test_a_registration_is_sealed_once(store):
    (reg,) = await seal(store, 1)
    batch = SealBatch([(reg.seq, 1)], [(0, 0, hashes(0, 2))], checkpoint(2))
    with pytest.raises(StoreError, match="already sealed"):
        await store.commit_seal(batch)
    await nothing_changed(store, 1, hashes(0, 1), pending=0)
    assert (await store.get_registration(reg.id)).leaf_index == 0


async def test_a_checkpoint_size_is_written_once(store):
    await store.commit_seal(SealBatch([], [], checkpoint(0)))
    with pytest.raises(StoreError):
        await store.commit_seal(SealBatch([], [], checkpoint(0, key_id="k2")))
    assert await store.latest_checkpoint() == checkpoint(0)


@pytest.mark.parametrize(
    "tile",
    [
        hashes(0, 2),  # the same contents again
        hashes(0, 1),  # shrunk
        hashes(0, 1) + hashes(7, 2),  # a stored hash replaced, though longer
        hashes(7, 3),  # rewritten from the start
    ],
    ids=["rewritten", "shrunk", "changed", "replaced"],
)
async def test_a_tile_only_grows(store, tile):
    await seal(store, 2)
    reg = await store.add_registration(registration(9))
    batch = SealBatch([(reg.seq, 2)], [(1, 0, hashes(0, 1)), (0, 0, tile)], checkpoint(3))
    with pytest.raises(StoreError, match="change hashes already in the log"):
        await store.commit_seal(batch)
    await nothing_changed(store, 2, hashes(0, 2), pending=1)
    assert await store.get_tiles([(1, 0)]) == {}  # the seal's other tile was not kept either
    await then_the_right_seal_lands(store, reg, 2)


@pytest.mark.parametrize("length", [0, 31, 33, 257 * HASH])
async def test_a_tile_is_whole_hashes_and_at_most_256(store, length):
    await seal(store, 1)
    reg = await store.add_registration(registration(9))
    batch = SealBatch([(reg.seq, 1)], [(0, 1, b"\7" * length)], checkpoint(2))
    with pytest.raises(StoreError, match=f"tile \\(0, 1\\) of {length} bytes"):
        await store.commit_seal(batch)
    await nothing_changed(store, 1, hashes(0, 1), pending=1)
    await then_the_right_seal_lands(store, reg, 1)


async def test_a_seal_cancelled_midway_is_all_or_nothing(store):
    """Cancelled at each await in turn (a shutdown), a seal is whole or absent, and the
    store takes the next one."""
    await seal(store, 1)
    outcomes = set()
    for steps in range(16):
        size = await store.tree_size()
        reg = await store.add_registration(registration(100 + steps))
        batch = SealBatch([(reg.seq, size)], [(0, 0, hashes(0, size + 1))], checkpoint(size + 1))
        task = asyncio.create_task(store.commit_seal(batch))
        for _ in range(steps):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        done = await store.tree_size() == size + 1
        outcomes.add(done)
        assert (await store.get_registration(reg.id)).leaf_index == (size if done else None)
        assert (await store.get_tiles([(0, 0)]))[(0, 0)] == hashes(0, size + done)
        if not done:
            await store.commit_seal(batch)
    assert False in outcomes  # some cancellations did land mid-transaction


async def test_a_full_tile_and_a_new_one_are_written_in_one_seal(store):
    await seal(store, 255)
    regs = [await store.add_registration(registration(1000 + n)) for n in range(2)]
    batch = SealBatch(
        [(regs[0].seq, 255), (regs[1].seq, 256)],
        [(0, 0, hashes(0, 256)), (0, 1, hashes(256, 1)), (1, 0, hashes(900, 1))],
        checkpoint(257),
    )
    await store.commit_seal(batch)
    assert await store.get_tiles([(0, 0), (0, 1), (1, 0)]) == {
        (0, 0): hashes(0, 256),
        (0, 1): hashes(256, 1),
        (1, 0): hashes(900, 1),
    }


# -- webhooks and their outbox (OutboxStore) ------------------------------------


def webhook(hook_id: str, seller: str, created_at: str = "t1") -> WebhookRecord:
    return WebhookRecord(hook_id, seller, f"https://{seller}.example/h", "s3cret",
                         ("conflict",), created_at)


def delivery(n: int, hook_id: str = "wh1") -> WebhookDelivery:
    return WebhookDelivery(f"d{n}", hook_id, f"e{n}", "conflict", b'{"n":%d}' % n, "t",
                           next_attempt_at=float(n))


async def test_webhooks_belong_to_their_seller(store):
    await store.add_webhook(webhook("wh2", "acme", "t2"))
    await store.add_webhook(webhook("wh1", "acme", "t1"))
    await store.add_webhook(webhook("wh3", "other"))
    assert [h.id for h in await store.list_webhooks("acme")] == ["wh1", "wh2"]
    assert await store.get_webhook("wh3") == webhook("wh3", "other")
    assert [h.id for h in await store.webhooks_for_sellers(["other", "acme", "acme"])] == [
        "wh1", "wh3", "wh2"
    ]
    assert await store.webhooks_for_sellers([]) == []
    assert not await store.delete_webhook("wh3", "acme")  # not acme's
    assert await store.delete_webhook("wh3", "other")
    assert await store.get_webhook("wh3") is None


async def test_deliveries_are_claimed_under_a_lease_and_finished(store):
    await store.add_webhook(webhook("wh1", "acme"))
    await store.enqueue_deliveries([delivery(n) for n in (3, 1, 2, 50)])
    await store.enqueue_deliveries([])
    claimed = await store.claim_deliveries(now=10, lease_until=100, limit=2)
    assert [d.id for d in claimed] == ["d1", "d2"]  # due ones, oldest first
    assert all(d.url == "https://acme.example/h" and d.secret == "s3cret" for d in claimed)
    assert [d.payload for d in claimed] == [b'{"n":1}', b'{"n":2}']
    assert [d.id for d in await store.claim_deliveries(now=10, lease_until=100, limit=9)] == [
        "d3"
    ]
    assert await store.claim_deliveries(now=20, lease_until=200, limit=9) == []  # leased
    await store.finish_delivery_attempt(
        "d1", status="delivered", next_attempt_at=0, last_status=200, last_error=None,
        delivered_at="t9",
    )
    await store.finish_delivery_attempt(
        "d2", status="pending", next_attempt_at=60, last_status=500, last_error="boom",
        delivered_at=None,
    )
    # After the leases end: d2 at its retry time, d3 and d50 as they fall due.
    again = await store.claim_deliveries(now=100, lease_until=300, limit=9)
    assert [d.id for d in again] == ["d50", "d2", "d3"]
    listed = {d.id: d for d in await store.list_deliveries("wh1")}
    assert (listed["d1"].status, listed["d1"].attempts, listed["d1"].last_status) == (
        "delivered", 1, 200
    )
    assert (listed["d2"].status, listed["d2"].attempts, listed["d2"].last_error) == (
        "pending", 1, "boom"
    )
    assert [d.id for d in await store.list_deliveries("wh1", limit=2)] == ["d50", "d2"]
    assert await store.delete_webhook("wh1", "acme")
    assert await store.list_deliveries("wh1") == []  # the outbox went with it


# -- signing keys (SigningKeyStore) ---------------------------------------------


def signing_key(n: int, not_before: str) -> SigningKeyRecord:
    return SigningKeyRecord(f"key{n}", "test.example/log", "ed25519", bytes([n]) * 32, not_before)


async def test_signing_keys_are_swapped_compare_and_swap(store):
    first, second = signing_key(1, "2026-01-01T00:00:00Z"), signing_key(2, "2026-02-01T00:00:00Z")
    await store.activate_signing_key(first, replacing=None)
    with pytest.raises(ActiveKeyChanged):
        await store.activate_signing_key(second, replacing=None)  # there is one already
    with pytest.raises(ActiveKeyChanged):
        await store.activate_signing_key(second, replacing="key9")
    assert await store.list_signing_keys() == [first]  # the refused swaps changed nothing
    await store.activate_signing_key(second, replacing="key1")
    assert await store.list_signing_keys() == [
        replace(first, not_after="2026-02-01T00:00:00Z"),
        second,
    ]


async def test_of_swaps_racing_from_one_active_key_exactly_one_wins(store):
    await store.activate_signing_key(signing_key(1, "2026-01-01T00:00:00Z"), replacing=None)
    outcomes = await asyncio.gather(
        *(
            store.activate_signing_key(signing_key(n, f"2026-02-0{n}T00:00:00Z"), replacing="key1")
            for n in range(2, 6)
        ),
        return_exceptions=True,
    )
    assert sum(outcome is None for outcome in outcomes) == 1
    assert all(isinstance(o, ActiveKeyChanged) for o in outcomes if o is not None)
    assert [k.key_id for k in await store.list_signing_keys() if k.active] != ["key1"]
    assert sum(k.active for k in await store.list_signing_keys()) == 1


# -- anchors (AnchorStore) ----------------------------------------------------


async def anchored_log(store: Store, *sizes: int) -> None:
    """Checkpoints of these sizes to anchor (anchor jobs refer to stored checkpoints)."""
    await store.commit_seal(SealBatch([], [], checkpoint(0)))
    for size in sizes:
        await seal(store, size - await store.tree_size())


async def test_an_anchor_is_scheduled_once_per_interval_and_only_for_a_larger_tree(store):
    await anchored_log(store, 1, 2, 3)
    assert await store.schedule_anchor("tsa", "rfc3161", 1, now=1000, interval=60)
    assert not await store.schedule_anchor("tsa", "rfc3161", 1, now=2000, interval=60)  # same
    assert not await store.schedule_anchor("tsa", "rfc3161", 2, now=1030, interval=60)  # soon
    assert await store.schedule_anchor("chain", "evm", 2, now=1030, interval=60)  # another
    assert await store.schedule_anchor("tsa", "rfc3161", 3, now=1061, interval=60)
    assert not await store.schedule_anchor("tsa", "rfc3161", 2, now=5000, interval=60)  # older
    jobs = await store.list_anchor_jobs(anchor="tsa")
    assert [(j.tree_size, j.status) for j in jobs] == [(3, "pending"), (1, "superseded")]
    assert [j.anchor for j in await store.list_anchor_jobs()] == ["tsa", "chain", "tsa"]
    assert len(await store.list_anchor_jobs(limit=1)) == 1


async def test_a_job_with_progress_is_not_superseded(store):
    await anchored_log(store, 1, 2)
    assert await store.schedule_anchor("chain", "evm", 1, now=1000, interval=60)
    (job,) = await store.claim_anchor_jobs(["chain"], now=1000, lease_until=1010, limit=5)
    started = AnchorAttempt(status="pending", attempts=1, next_attempt_at=1020,
                            progress={"tx": "0xabc"})
    assert await store.finish_anchor_attempt(job.id, job.claim, started)
    assert await store.schedule_anchor("chain", "evm", 2, now=1100, interval=60)
    jobs = await store.list_anchor_jobs(anchor="chain")
    assert [(j.tree_size, j.status, j.progress) for j in jobs] == [
        (2, "pending", None), (1, "pending", {"tx": "0xabc"})
    ]


async def test_anchor_jobs_are_claimed_under_a_fenced_lease(store):
    await anchored_log(store, 1, 2)
    assert await store.schedule_anchor("tsa", "rfc3161", 1, now=1000, interval=60)
    assert await store.schedule_anchor("chain", "evm", 2, now=1000, interval=60)
    assert await store.claim_anchor_jobs([], now=1000, lease_until=1040, limit=8) == []
    (job,) = await store.claim_anchor_jobs(["tsa"], now=1000, lease_until=1040, limit=8)
    assert (job.anchor, job.tree_size, job.next_attempt_at) == ("tsa", 1, 1040)
    assert job.claim and job.checkpoint == checkpoint(1)
    assert await store.claim_anchor_jobs(["tsa"], now=1030, lease_until=1070, limit=8) == []
    (again,) = await store.claim_anchor_jobs(["tsa"], now=1040, lease_until=1080, limit=8)
    assert again.id == job.id and again.claim != job.claim  # a fresh token per lease
    done = AnchorAttempt(status="anchored", attempts=2, next_attempt_at=0,
                         evidence={"token": "AAEC"}, anchored_at="t")
    assert not await store.finish_anchor_attempt(job.id, job.claim, done)  # the lease moved on
    assert await store.finish_anchor_attempt(again.id, again.claim, done)
    assert not await store.finish_anchor_attempt(again.id, again.claim, done)  # claim cleared
    (covering,) = await store.anchors_covering(1)
    assert (covering.anchor, covering.status, covering.evidence, covering.claim) == (
        "tsa", "anchored", {"token": "AAEC"}, None
    )
    assert covering.checkpoint == checkpoint(1)
    assert await store.anchors_covering(2) == []  # the chain's job is not anchored yet
