"""The log's tiles in each real store (SQLite, PostgreSQL): migration and proofs through
real seals (the append-only rules themselves: test_store_contract.py)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shotstamp import _merkle as merkle
from shotstamp_service.log.sealer import Sealer
from shotstamp_service.log.signer import LogSigner
from shotstamp_service.log.tree import LogTree, consistency_proof, inclusion_proof
from shotstamp_service.store import Store, StoreError
from shotstamp_service.store.postgres import MIGRATIONS as PG_MIGRATIONS
from shotstamp_service.store.postgres import PostgresStore
from shotstamp_service.store.sqlite import SQLiteStore
from tests.kit.rows import new_registration as registration

SIGNER = LogSigner("test.example/log", Ed25519PrivateKey.generate())


async def seal_batches(store: Store, batches: list[int]) -> tuple[list[bytes], list]:
    """Register and seal these batches through the real sealer; the leaf hashes and checkpoints."""
    sealer = Sealer(store, SIGNER)
    await sealer.load()
    checkpoints, count = [], 0
    for size in batches:
        await asyncio.gather(
            *(store.add_registration(registration(count + k)) for k in range(size))
        )
        count += size
        checkpoints.append(await sealer.seal_once())
    regs = await store.get_registrations(range(1, count + 1))
    ordered = sorted(regs.values(), key=lambda r: r.leaf_index)
    return [merkle.leaf_hash(r.leaf_bytes()) for r in ordered], checkpoints


@pytest.fixture
def fresh_store(request, store_kind) -> Callable[[], contextlib.AbstractAsyncContextManager[Any]]:
    """Opens a new, empty store of this kind at each call (one per hypothesis example)."""
    server = request.getfixturevalue("postgres_server") if store_kind == "postgres" else None

    @contextlib.asynccontextmanager
    async def fresh() -> AsyncIterator[Store]:
        if server is None:
            with tempfile.TemporaryDirectory() as tmp:
                store: Store = SQLiteStore(Path(tmp) / "db.sqlite")
                await store.open()
                try:
                    yield store
                finally:
                    await store.close()
        else:
            url = await server.create_database()
            store = PostgresStore(url)
            await store.open()
            try:
                yield store
            finally:
                await store.close()
                await server.drop_database(url)

    return fresh


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=4), st.data())
async def test_proofs_through_the_store_match_the_reference(fresh_store, batches, data):
    async with fresh_store() as store:
        leaves, checkpoints = await seal_batches(store, batches)
        sizes = [cp.tree_size for cp in checkpoints]
        for cp in checkpoints:
            assert cp.root_hash == merkle.root_hash(leaves[: cp.tree_size])
        # Between any two published checkpoints, and any two sizes at all.
        old = data.draw(st.sampled_from(sizes))
        new = data.draw(st.sampled_from([s for s in sizes if s >= old]))
        for first, second in [
            (old, new),
            (
                data.draw(st.integers(1, len(leaves))),
                len(leaves),
            ),
        ]:
            path = await consistency_proof(store, first, second)
            assert path == merkle.consistency_proof(leaves[:second], first)
            merkle.verify_consistency(
                first,
                second,
                path,
                merkle.root_hash(leaves[:first]),
                merkle.root_hash(leaves[:second]),
            )
        index = data.draw(st.integers(0, len(leaves) - 1))
        path = await inclusion_proof(store, index, len(leaves))
        assert path == merkle.inclusion_proof(leaves, index)


async def _postgres_at_version_2(url: str, nodes: list[tuple[int, int, bytes]], root: bytes):
    """A database as the PostgreSQL store left it before tiles: one tree_nodes row per subtree."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for number in (0, 1):
            await conn.execute(PG_MIGRATIONS[number])
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", number + 1)
        await conn.executemany(
            "INSERT INTO tree_nodes (level, idx, hash) VALUES ($1, $2, $3)", nodes
        )
        await conn.execute(
            "INSERT INTO checkpoints (tree_size, root_hash, timestamp_ns, note, key_id)"
            " VALUES ($1, $2, 1, 'note', $3)",
            600,
            root,
            SIGNER.key_id,
        )
    finally:
        await conn.close()


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row["tablename"] for row in rows}
    finally:
        await conn.close()


async def test_a_postgres_database_with_tree_nodes_is_migrated_to_tiles(postgres_url):
    leaves = [merkle.leaf_hash(hashlib.sha256(str(i).encode()).digest()) for i in range(600)]
    _, _, nodes = LogTree.empty()._grow(leaves)
    root = merkle.root_hash(leaves)
    await _postgres_at_version_2(postgres_url, nodes, root)

    store = PostgresStore(postgres_url)
    await store.open()
    try:
        tree = await LogTree.load(store, 600)
        assert tree.root() == root
        assert await inclusion_proof(store, 300, 600) == merkle.inclusion_proof(leaves, 300)
        assert await consistency_proof(store, 257, 600) == merkle.consistency_proof(leaves, 257)
        tiles = await store.get_tiles([(0, 0), (0, 1), (0, 2), (1, 0)])
        assert [len(tiles[c]) // 32 for c in [(0, 0), (0, 1), (0, 2), (1, 0)]] == [256, 256, 88, 2]
        assert tiles[(0, 2)] == b"".join(leaves[512:600])
        # The migrated tiles are extended by the next seal like any others.
        sealer = Sealer(store, SIGNER)
        await sealer.load()
        regs = [await store.add_registration(registration(n)) for n in range(3)]
        checkpoint = await sealer.seal_once()
        assert checkpoint is not None and checkpoint.tree_size == 603
        sealed = await store.get_registrations(r.seq for r in regs)
        grown = leaves + [merkle.leaf_hash(sealed[r.seq].leaf_bytes()) for r in regs]
        assert checkpoint.root_hash == merkle.root_hash(grown)
        assert await consistency_proof(store, 600, 603) == merkle.consistency_proof(grown, 600)
        assert len((await store.get_tiles([(0, 2)]))[(0, 2)]) == 91 * 32
    finally:
        await store.close()
    tables = await _tables(postgres_url)
    assert "tree_nodes" not in tables and {"tiles", "signing_keys"} <= tables


async def test_a_postgres_tree_with_a_missing_node_is_not_migrated(postgres_url):
    leaves = [merkle.leaf_hash(hashlib.sha256(str(i).encode()).digest()) for i in range(600)]
    _, _, nodes = LogTree.empty()._grow(leaves)
    broken = [node for node in nodes if node[:2] != (0, 300)]
    await _postgres_at_version_2(postgres_url, broken, merkle.root_hash(leaves))

    store = PostgresStore(postgres_url)
    with pytest.raises(StoreError, match="tree_nodes is missing nodes"):
        await store.open()
    await store.close()
    # Nothing of the migration stayed: still version 2, the old table whole.
    conn = await asyncpg.connect(postgres_url)
    try:
        assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == 2
        assert await conn.fetchval("SELECT count(*) FROM tree_nodes") == len(broken)
    finally:
        await conn.close()
    assert "tiles" not in await _tables(postgres_url)
