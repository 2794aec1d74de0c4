"""The sealer over each real store (SQLite, PostgreSQL): seals, restarts, refuses a stale view."""

from __future__ import annotations

import asyncio
import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shotstamp import _merkle as merkle
from shotstamp._checkpoint import Checkpoint, open_note
from shotstamp_service.log.sealer import Sealer
from shotstamp_service.log.signer import LogSigner
from shotstamp_service.log.tree import inclusion_proof
from shotstamp_service.records import NewRegistration, format_time, new_registration_id, utc_now
from shotstamp_service.store import StoreError


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


@pytest.fixture
def signer() -> LogSigner:
    return LogSigner("test.example/log", Ed25519PrivateKey.generate())


async def test_seal_assigns_indices_in_arrival_order_and_signs(store_target, signer):
    store = store_target.make()
    await store.open()
    sealer = Sealer(store, signer)
    await sealer.load()
    assert (await store.latest_checkpoint()).tree_size == 0
    regs = [await store.add_registration(registration("s", n)) for n in range(5)]
    cp = await sealer.seal_once()
    assert cp is not None and cp.tree_size == 5
    assert await sealer.seal_once() is None  # nothing pending: no new checkpoint
    sealed = await store.get_registrations(r.seq for r in regs)
    assert [sealed[r.seq].leaf_index for r in regs] == list(range(5))

    leaves = [merkle.leaf_hash(sealed[r.seq].leaf_bytes()) for r in regs]
    assert cp.root_hash == merkle.root_hash(leaves)
    note = open_note(cp.note, [signer.verifier])
    body = Checkpoint.from_text(note.text)
    assert (body.origin, body.size, body.root_hash) == ("test.example/log", 5, cp.root_hash)
    assert body.timestamp is not None
    assert base64.b64decode(cp.note.splitlines()[2]) == cp.root_hash
    await store.close()


async def test_restart_continues_the_same_tree(store_target, signer):
    store = store_target.make()
    await store.open()
    sealer = Sealer(store, signer)
    await sealer.load()
    for n in range(7):
        await store.add_registration(registration("s", n))
    first = await sealer.seal_once()
    for n in range(7, 10):
        await store.add_registration(registration("s", n))  # pending at "crash"
    await store.close()

    store = store_target.make()
    await store.open()
    sealer = Sealer(store, signer)
    await sealer.load()
    assert sealer.tree_size == 7
    second = await sealer.seal_once()
    assert second.tree_size == 10
    regs = sorted((await store.get_registrations(range(1, 11))).values(), key=lambda r: r.seq)
    leaves = [merkle.leaf_hash(r.leaf_bytes()) for r in regs]
    assert second.root_hash == merkle.root_hash(leaves)
    merkle.verify_consistency(
        7, 10, merkle.consistency_proof(leaves, 7), first.root_hash, second.root_hash
    )
    proof = await inclusion_proof(store, 3, 10)
    merkle.verify_inclusion(3, 10, leaves[3], proof, second.root_hash)
    await store.close()


async def test_a_stale_sealer_cannot_fork_the_log(store_target, signer):
    store = store_target.make()
    await store.open()
    a, b = Sealer(store, signer), Sealer(store, signer)
    await a.load()
    await b.load()
    await store.add_registration(registration("s", 1))
    assert (await a.seal_once()).tree_size == 1
    await store.add_registration(registration("s", 2))
    # b still believes the tree is empty: its seal must fail, not fork.
    b._tree = type(b._tree).empty()
    with pytest.raises(StoreError):
        await b.seal_once()
    assert (await b.seal_once()).tree_size == 2  # reloaded from the store
    await store.close()


async def test_startup_refuses_a_store_whose_tiles_disagree_with_its_checkpoint(
    store_target, signer
):
    store = store_target.make()
    await store.open()
    sealer = Sealer(store, signer)
    await sealer.load()
    for n in range(4):
        await store.add_registration(registration("s", n))
    await sealer.seal_once()
    await store.close()
    # The level-0 tile holds the four leaf hashes; zero them all.
    await tamper(
        store_target, "UPDATE tiles SET data = {} WHERE level = 0 AND idx = 0", b"\0" * 32 * 4
    )
    store = store_target.make()
    await store.open()
    with pytest.raises(RuntimeError, match="checkpoint says"):
        await Sealer(store, signer).load()
    await store.close()


async def tamper(target, statement: str, value: bytes = b"\0" * 32) -> None:
    """Rewrite stored data behind the store's back, as a broken disk or an attacker would."""
    if target.kind == "sqlite":
        import sqlite3

        conn = sqlite3.connect(target.path)
        conn.execute(statement.format("?"), (value,))
        conn.commit()
        conn.close()
    else:
        import asyncpg

        conn = await asyncpg.connect(target.url)
        await conn.execute(statement.format("$1"), value)
        await conn.close()




async def test_a_seal_cancelled_after_its_commit_leaves_the_final_seal_whole(store_target, signer):
    """A clean stop cancels the sealer's beat, then drains. A cancel that lands while the
    store's seal has committed but not yet returned must not leave a stale tree behind:
    the drain seals what arrived since instead of failing on it (a flaky SIGTERM test)."""
    store = store_target.make()
    await store.open()
    sealer = Sealer(store, signer)
    await sealer.load()
    for n in range(3):
        await store.add_registration(registration("s", n))
    committed = asyncio.Event()
    real = store.commit_seal

    async def commit_then_wait(batch):
        await real(batch)
        committed.set()
        await asyncio.Event().wait()  # the stop's cancel arrives here

    store.commit_seal = commit_then_wait
    beat = asyncio.create_task(sealer.run())  # leads, then seals at once
    await committed.wait()
    beat.cancel()
    with pytest.raises(asyncio.CancelledError):
        await beat
    store.commit_seal = real
    for n in range(3, 5):
        await store.add_registration(registration("s", n))
    await sealer.drain()
    assert await store.pending(10) == []
    assert (await store.latest_checkpoint()).tree_size == 5
    await store.close()
