"""What only a shared store does: migrations from many replicas, group commit in seq
order, the sealer lock and its hand-over, and two sealers on one database."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shotstamp import _merkle as merkle
from shotstamp_service.log.sealer import Sealer
from shotstamp_service.log.signer import LogSigner
from shotstamp_service.log.tree import consistency_proof
from shotstamp_service.records import NewRegistration, format_time, new_registration_id, utc_now
from shotstamp_service.store import StoreError
from shotstamp_service.store.postgres import MIGRATIONS, PostgresStore


def registration(seller: str, n: int) -> NewRegistration:
    return NewRegistration(
        id=new_registration_id(),
        seller=seller,
        sha256=f"{n:064x}",
        perceptual={"phash": f"{n:016x}"},
        received_at=format_time(utc_now()),
        width=10,
        height=10,
    )


@contextlib.asynccontextmanager
async def opened(url: str, **options):
    store = PostgresStore(url, **options)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_replicas_starting_together_migrate_once(postgres_url):
    stores = [PostgresStore(postgres_url) for _ in range(3)]
    await asyncio.gather(*(store.open() for store in stores))
    conn = await asyncpg.connect(postgres_url)
    versions = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
    await conn.close()
    assert [row["version"] for row in versions] == list(range(1, len(MIGRATIONS) + 1))
    for store in stores:
        await store.close()


async def test_a_schema_newer_than_this_release_is_refused(postgres_url):
    async with opened(postgres_url):
        pass
    conn = await asyncpg.connect(postgres_url)
    await conn.execute("INSERT INTO schema_migrations (version) VALUES (99)")
    await conn.close()
    store = PostgresStore(postgres_url)
    with pytest.raises(StoreError, match="newer than this release"):
        await store.open()
    await store.close()


async def test_commits_are_durable_whatever_the_database_default(postgres_url):
    conn = await asyncpg.connect(postgres_url)
    await conn.execute(
        f'ALTER DATABASE "{postgres_url.rsplit("/", 1)[1]}" SET synchronous_commit = off'
    )
    await conn.close()
    async with opened(postgres_url) as store, store.pool.acquire() as session:
        assert await session.fetchval("SHOW synchronous_commit") == "on"


async def test_concurrent_uploads_are_committed_together(postgres_url):
    async with opened(postgres_url) as store:
        stored = await asyncio.gather(
            *(store.add_registration(registration("s", n)) for n in range(200))
        )
        assert len({reg.seq for reg in stored}) == 200
        conn = await asyncpg.connect(postgres_url)
        # Rows written by one transaction share its xmin: few transactions, many rows.
        transactions = await conn.fetchval(
            "SELECT count(DISTINCT xmin::text) FROM registrations"
        )
        await conn.close()
        assert transactions <= 10, transactions


async def test_registrations_commit_in_seq_order_across_replicas(postgres_url):
    """A reader that polls `seq > highest seen` must never miss a registration."""
    async with opened(postgres_url) as a, opened(postgres_url) as b:
        done = asyncio.Event()
        seen: set[int] = set()

        async def write(store: PostgresStore, seller: str) -> list[int]:
            seqs = []
            for round_ in range(40):
                batch = await asyncio.gather(
                    *(store.add_registration(registration(seller, round_ * 8 + k))
                      for k in range(8))
                )
                seqs.extend(reg.seq for reg in batch)
            return seqs

        async def follow() -> None:
            through = 0
            while True:
                final = done.is_set()
                async for stored in a.iter_fingerprints(after_seq=through):
                    seen.add(stored.seq)
                    through = max(through, stored.seq)
                if final:
                    return
                await asyncio.sleep(0)

        follower = asyncio.create_task(follow())
        written = await asyncio.gather(write(a, "a"), write(b, "b"))
        done.set()
        await follower
        assert seen == set(written[0]) | set(written[1])


async def test_the_sealer_lock_has_one_holder_and_passes_on_when_it_closes(postgres_url):
    async with opened(postgres_url) as a, opened(postgres_url) as b:
        assert await a.hold_sealer_lock()
        assert not await b.hold_sealer_lock()
        assert await a.hold_sealer_lock()  # still ours
        await a.release_sealer_lock()
        assert await b.hold_sealer_lock()
        assert not await a.hold_sealer_lock()


async def test_a_holder_whose_connection_dies_loses_the_lock(postgres_url, postgres_server):
    async with opened(postgres_url) as a, opened(postgres_url) as b:
        assert await a.hold_sealer_lock()
        admin = await asyncpg.connect(postgres_server.admin_url)
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = 'shotstamp-sealer-lock' AND datname = $1",
            postgres_url.rsplit("/", 1)[1],
        )
        await admin.close()
        assert killed == 1
        for _ in range(50):  # the server releases the lock as the backend exits
            if await b.hold_sealer_lock():
                break
            await asyncio.sleep(0.05)
        assert await b.hold_sealer_lock()
        assert not await a.hold_sealer_lock()


async def test_a_holder_that_stops_checking_in_is_cut_off(postgres_url):
    async with opened(postgres_url, sealer_idle_timeout=0.5) as a, opened(postgres_url) as b:
        assert await a.hold_sealer_lock()
        await asyncio.sleep(1.5)  # hung: no check-in for three timeouts
        assert await b.hold_sealer_lock()
        assert not await a.hold_sealer_lock()


async def test_two_sealers_on_one_database_keep_one_consistent_log(postgres_url):
    """Two replicas' sealers run at once; the leader is stopped mid-way; one log results."""
    signer = LogSigner("test.example/log", Ed25519PrivateKey.generate())
    store_a, store_b = PostgresStore(postgres_url), PostgresStore(postgres_url)
    await asyncio.gather(store_a.open(), store_b.open())
    checkpoints = []
    sealers = [
        Sealer(store, signer, interval=0.1, follow_interval=0.02,
               on_sealed=lambda cp, regs, s: checkpoints.append(cp))
        for store in (store_a, store_b)
    ]
    # Both load at once on an empty database: one empty checkpoint, no error.
    await asyncio.gather(*(sealer.load() for sealer in sealers))
    tasks = [asyncio.create_task(sealer.run()) for sealer in sealers]
    try:
        ids = []
        for n in range(30):
            ids.append((await store_b.add_registration(registration("s", n))).id)
            await asyncio.sleep(0.01)
        leader = next(i for i, s in enumerate(sealers) if s.leading)
        tasks[leader].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tasks[leader]
        await (store_a, store_b)[leader].release_sealer_lock()
        follower = 1 - leader
        for n in range(30, 60):
            ids.append((await store_b.add_registration(registration("s", n))).id)
            await asyncio.sleep(0.01)
        for _ in range(100):
            if await store_b.count_pending() == 0 and sealers[follower].leading:
                break
            await asyncio.sleep(0.05)
        assert sealers[follower].leading
        assert await store_b.count_pending() == 0
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    latest = await store_b.latest_checkpoint()
    assert latest is not None and latest.tree_size == 60
    regs = sorted(
        (await store_b.get_registrations(range(1, 200))).values(), key=lambda r: r.leaf_index
    )
    assert sorted(r.id for r in regs) == sorted(ids)
    assert [r.leaf_index for r in regs] == list(range(60))  # each sealed exactly once
    assert latest.root_hash == merkle.root_hash([merkle.leaf_hash(r.leaf_bytes()) for r in regs])
    assert {cp.tree_size for cp in checkpoints} >= {latest.tree_size}
    for cp in checkpoints:
        stored = await store_b.get_checkpoint(cp.tree_size)
        assert stored == cp
        proof = await consistency_proof(store_b, cp.tree_size, latest.tree_size)
        merkle.verify_consistency(
            cp.tree_size, latest.tree_size, proof, cp.root_hash, latest.root_hash
        )
    await store_a.close()
    await store_b.close()


async def test_two_replicas_claim_disjoint_webhook_deliveries(postgres_url):
    from shotstamp_service.records import WebhookDelivery, WebhookRecord

    async with opened(postgres_url) as a, opened(postgres_url) as b:
        await a.add_webhook(
            WebhookRecord("wh1", "acme", "https://example.com/h", "s3cret", ("conflict",), "t")
        )
        await a.enqueue_deliveries(
            [WebhookDelivery(f"d{n}", "wh1", f"e{n}", "conflict", b"{}", "t", next_attempt_at=n)
             for n in range(20)]
        )
        first, second = await asyncio.gather(
            a.claim_deliveries(now=100, lease_until=200, limit=15),
            b.claim_deliveries(now=100, lease_until=200, limit=15),
        )
        ids = [d.id for d in first] + [d.id for d in second]
        assert sorted(ids) == sorted(f"d{n}" for n in range(20))  # each claimed once
        assert all(d.url == "https://example.com/h" and d.secret == "s3cret" for d in first)
        assert [d.next_attempt_at for d in first] == sorted(d.next_attempt_at for d in first)
        # Leased: nothing is due again until the lease ends.
        assert await a.claim_deliveries(now=150, lease_until=300, limit=50) == []
        assert len(await b.claim_deliveries(now=200, lease_until=300, limit=50)) == 20


async def test_a_claim_takes_the_due_deliveries_another_replica_does_not_hold(postgres_url):
    """The race above, made deterministic: another replica's claim holds the first 15 rows
    (locked, not yet committed). A claim skips them and takes the 5 after, where it used
    to rank the 15 held ones first and then skip them all, coming back empty."""
    from shotstamp_service.records import WebhookDelivery, WebhookRecord

    async with opened(postgres_url) as b:
        await b.add_webhook(
            WebhookRecord("wh1", "acme", "https://example.com/h", "s3cret", ("conflict",), "t")
        )
        await b.enqueue_deliveries(
            [WebhookDelivery(f"d{n}", "wh1", f"e{n}", "conflict", b"{}", "t", next_attempt_at=n)
             for n in range(20)]
        )
        other = await asyncpg.connect(postgres_url)
        try:
            async with other.transaction():
                held = await other.fetch(
                    "SELECT id FROM webhook_deliveries WHERE next_attempt_at < 15 FOR UPDATE"
                )
                assert len(held) == 15
                claimed = await b.claim_deliveries(now=100, lease_until=200, limit=15)
                assert [d.id for d in claimed] == [f"d{n}" for n in range(15, 20)]
        finally:
            await other.close()
        # Released uncommitted: the 15 are due again, the 5 are leased.
        again = await b.claim_deliveries(now=100, lease_until=200, limit=50)
        assert [d.id for d in again] == [f"d{n}" for n in range(15)]


async def test_replicas_racing_to_schedule_and_claim_an_anchor_job_get_one_each_time(postgres_url):
    from shotstamp_service.store import AnchorAttempt

    stores = [PostgresStore(postgres_url) for _ in range(6)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        sealer = Sealer(stores[0], LogSigner("test.example/log", Ed25519PrivateKey.generate()))
        await sealer.load()
        for n in range(3):
            await stores[0].add_registration(registration("s", n))
            await sealer.seal_once()
        # Every replica's runner schedules the newest checkpoint at the same moment.
        scheduled = await asyncio.gather(
            *(s.schedule_anchor("tsa", "rfc3161", 3, now=1000.0, interval=60) for s in stores)
        )
        assert sorted(scheduled) == [False] * 5 + [True]
        # Within the interval nothing more is queued, not even a larger tree.
        assert not await stores[1].schedule_anchor("tsa", "rfc3161", 3, now=1030.0, interval=60)
        claims = await asyncio.gather(
            *(s.claim_anchor_jobs(["tsa"], 1000.0, 1040.0, 8) for s in stores)
        )
        (job,) = [job for claimed in claims for job in claimed]
        assert job.tree_size == 3 and job.checkpoint is not None
        assert job.checkpoint.root_hash == (await stores[0].get_checkpoint(3)).root_hash
        assert job.next_attempt_at == 1040.0 and job.claim
        # The lease fences: a stale claim changes nothing; the holder's result is kept.
        done = AnchorAttempt(
            status="anchored", attempts=1, next_attempt_at=0, evidence={"token": "AAEC", "n": 7}
        )
        assert not await stores[2].finish_anchor_attempt(job.id, "not-the-claim", done)
        assert await stores[3].finish_anchor_attempt(job.id, job.claim, done)
        (covering,) = await stores[4].anchors_covering(1)
        assert (covering.status, covering.evidence, covering.claim) == (
            "anchored", {"token": "AAEC", "n": 7}, None
        )
        assert await stores[5].anchors_covering(4) == []
    finally:
        for s in stores:
            await s.close()
