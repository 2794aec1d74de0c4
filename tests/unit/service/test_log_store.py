"""The log's tiles: a SQLite database of the first release is migrated (the rest, on each
real store: tests/integration/service)."""

from __future__ import annotations

import hashlib
import sqlite3

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shotstamp import merkle
from shotstamp_service.log.signer import LogSigner
from shotstamp_service.log.tree import LogTree, consistency_proof, inclusion_proof
from shotstamp_service.store.sqlite import MIGRATIONS, SQLiteStore

SIGNER = LogSigner("test.example/log", Ed25519PrivateKey.generate())


async def test_a_first_release_database_is_migrated_to_tiles(tmp_path):
    # Build a version-1 database by hand: one tree_nodes row per complete subtree.
    path = tmp_path / "db.sqlite"
    leaves = [merkle.leaf_hash(hashlib.sha256(str(i).encode()).digest()) for i in range(600)]
    _, _, nodes = LogTree.empty()._grow(leaves)
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0])
    conn.execute("PRAGMA user_version=1")
    conn.executemany("INSERT INTO tree_nodes (level, idx, hash) VALUES (?, ?, ?)", nodes)
    root = merkle.root_hash(leaves)
    conn.execute(
        "INSERT INTO checkpoints (tree_size, root_hash, timestamp_ns, note, key_id)"
        " VALUES (600, ?, 1, 'note', ?)",
        (root, SIGNER.key_id),
    )
    conn.commit()
    conn.close()

    store = SQLiteStore(path)
    await store.open()
    tree = await LogTree.load(store, 600)
    assert tree.root() == root
    assert await inclusion_proof(store, 300, 600) == merkle.inclusion_proof(leaves, 300)
    assert await consistency_proof(store, 257, 600) == merkle.consistency_proof(leaves, 257)
    tiles = await store.get_tiles([(0, 0), (0, 1), (0, 2), (1, 0)])
    assert [len(tiles[c]) // 32 for c in [(0, 0), (0, 1), (0, 2), (1, 0)]] == [256, 256, 88, 2]
    await store.close()
    conn = sqlite3.connect(path)
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert "tree_nodes" not in tables and "tiles" in tables


