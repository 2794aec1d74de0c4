"""SQLite backend: the embedded default, one machine, zero set-up.

Durability: WAL journal with `synchronous=FULL`, so a transaction is on disk
when COMMIT returns; a registration is acknowledged only after that.

Concurrency: one writer thread owns the write connection. Concurrent uploads
are grouped into one transaction (group commit) so the fsync per commit is
shared by every upload that arrived meanwhile. Reads use a second connection
on their own thread and see the last committed state (WAL snapshots).

Several processes on one machine may share the file (`serve --processes N`,
docs/processes.md). Registrations commit under `BEGIN IMMEDIATE`, SQLite's one
write lock, so they commit in `seq` order, and the registration guard
(`Registry.recheck`) takes its last look under that lock, as on PostgreSQL.
One process seals: `hold_sealer_lock` is an `flock` on a file beside the
database, which the kernel releases when its holder dies.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

from shotstamp_service.files import create_private_file, tighten
from shotstamp_service.log.tiles import TILE_BYTES, TILE_HEIGHT, TILE_WIDTH, TileCoord
from shotstamp_service.records import (
    AnchorJob,
    ApiKey,
    CheckpointRecord,
    NewRegistration,
    Registration,
    SigningKeyRecord,
    WebhookDelivery,
    WebhookRecord,
)
from shotstamp_service.store.base import (
    ActiveKeyChanged,
    AnchorAttempt,
    DuplicateIdempotencyKey,
    RegistrationGuard,
    SealBatch,
    Store,
    StoredFingerprint,
    StoreError,
)
from shotstamp_service.store.group_commit import Batch, GroupCommit
from shotstamp_service.store.rows import (
    ANCHOR_COLUMNS,
    CHECKPOINT_COLUMNS,
    DELIVERY_COLUMNS,
    REG_COLUMNS,
    Rows,
)

# JSON columns are TEXT here.
_ROWS = Rows(json_text=True)

__all__ = ["SQLiteStore"]

T = TypeVar("T")

# Seconds the registration guard may hold the write lock before the batch fails.
GUARD_TIMEOUT = 60.0


def _tiles_from_tree_nodes(conn: sqlite3.Connection) -> None:
    """Version 2: the foundation's one row per complete subtree becomes tlog tiles.

    Only the levels that are multiples of 8 are kept (every other node is
    rebuilt inside a tile), packed 256 hashes to a row: about half the rows'
    hashes and a 1/256 of the rows.
    """
    conn.execute(
        "CREATE TABLE tiles (level INTEGER NOT NULL, idx INTEGER NOT NULL, data BLOB NOT NULL,"
        " PRIMARY KEY (level, idx))"
    )
    rows = conn.execute(
        "SELECT level, idx, hash FROM tree_nodes WHERE level % ? = 0 ORDER BY level, idx",
        (TILE_HEIGHT,),
    )
    tile: tuple[int, int] | None = None
    hashes: list[bytes] = []

    def flush() -> None:
        if tile is not None and hashes:
            conn.execute(
                "INSERT INTO tiles (level, idx, data) VALUES (?, ?, ?)",
                (*tile, b"".join(hashes)),
            )

    for level, idx, digest in rows.fetchall():
        here = (level // TILE_HEIGHT, idx // TILE_WIDTH)
        if here != tile:
            flush()
            tile, hashes = here, []
        if idx % TILE_WIDTH != len(hashes):
            raise StoreError(f"tree_nodes is missing nodes before ({level}, {idx})")
        hashes.append(bytes(digest))
    flush()
    conn.execute("DROP TABLE tree_nodes")


# Each entry migrates from version i to i+1; PRAGMA user_version records where a
# database stands. Never edit an entry once released: append a new one.
MIGRATIONS: list[str | Callable[[sqlite3.Connection], None]] = [
    """
    CREATE TABLE registrations (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        seller TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        perceptual TEXT NOT NULL,
        received_at TEXT NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        title TEXT,
        reference TEXT,
        idempotency_key TEXT,
        features BLOB,
        thumbnail BLOB,
        leaf_index INTEGER UNIQUE
    );
    CREATE INDEX registrations_sha256 ON registrations (sha256);
    CREATE UNIQUE INDEX registrations_idempotency
        ON registrations (seller, idempotency_key) WHERE idempotency_key IS NOT NULL;
    CREATE INDEX registrations_pending ON registrations (seq) WHERE leaf_index IS NULL;
    CREATE TABLE tree_nodes (
        level INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        hash BLOB NOT NULL,
        PRIMARY KEY (level, idx)
    ) WITHOUT ROWID;
    CREATE TABLE checkpoints (
        tree_size INTEGER PRIMARY KEY,
        root_hash BLOB NOT NULL,
        timestamp_ns INTEGER NOT NULL,
        note TEXT NOT NULL,
        key_id TEXT NOT NULL
    );
    CREATE TABLE api_keys (
        key_id TEXT PRIMARY KEY,
        secret_hash BLOB NOT NULL,
        seller TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('seller', 'staff')),
        created_at TEXT NOT NULL,
        revoked_at TEXT,
        label TEXT
    );
    """,
    # 2: webhooks and the outbox of their deliveries (issue 6).
    """
    CREATE TABLE webhooks (
        id TEXT PRIMARY KEY,
        seller TEXT NOT NULL,
        url TEXT NOT NULL,
        secret TEXT NOT NULL,
        events TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX webhooks_seller ON webhooks (seller);
    CREATE TABLE webhook_deliveries (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        webhook_id TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
        event_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        payload BLOB NOT NULL,
        created_at TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        last_status INTEGER,
        last_error TEXT,
        delivered_at TEXT
    );
    CREATE INDEX webhook_deliveries_due
        ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
    CREATE INDEX webhook_deliveries_by_hook ON webhook_deliveries (webhook_id, seq);
    """,
    # 3: the log as tlog tiles instead of a row per subtree (issue 5).
    _tiles_from_tree_nodes,
    # 4: signing keys, for rotation (issue 5).
    """
    CREATE TABLE signing_keys (
        key_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        algorithm TEXT NOT NULL,
        public_key BLOB NOT NULL UNIQUE,
        not_before TEXT NOT NULL,
        not_after TEXT
    );
    CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (name) WHERE not_after IS NULL;
    """,
    # 5: anchors: checkpoints handed to a TSA or a chain, and their evidence (issue 11).
    """
    CREATE TABLE anchors (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        anchor TEXT NOT NULL,
        kind TEXT NOT NULL,
        tree_size INTEGER NOT NULL REFERENCES checkpoints (tree_size),
        status TEXT NOT NULL CHECK (status IN ('pending', 'anchored', 'superseded')),
        created_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        claim TEXT,
        progress TEXT,
        last_error TEXT,
        evidence TEXT,
        anchored_at TEXT,
        UNIQUE (anchor, tree_size)
    );
    CREATE INDEX anchors_due ON anchors (next_attempt_at) WHERE status = 'pending';
    CREATE INDEX anchors_anchored ON anchors (anchor, tree_size) WHERE status = 'anchored';
    """,
    # 6: each webhook's due deliveries in order, so a claim takes a few of each
    # webhook's without reading one seller's whole backlog (issue 19).
    "CREATE INDEX webhook_deliveries_due_by_hook"
    " ON webhook_deliveries (webhook_id, next_attempt_at, seq) WHERE status = 'pending'",
]


def _json_or_null(value: dict[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), sort_keys=True)


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to the newest version; returns it."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreError(
                f"database schema version {version} is newer than this release "
                f"knows ({len(MIGRATIONS)}); upgrade shotstamp"
            )
        for number in range(version, len(MIGRATIONS)):
            step = MIGRATIONS[number]
            if callable(step):
                step(conn)
            else:
                for statement in step.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            conn.execute(f"PRAGMA user_version={number + 1}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return len(MIGRATIONS)


class SQLiteStore(Store):
    """The embedded store: a single SQLite file in the data directory."""

    def __init__(self, path: Path | str, *, group_commit_max: int = 512) -> None:
        self.path = Path(path)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-reader")
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._commits = GroupCommit(
            self._flush, max_batch=group_commit_max, name="sqlite-group-commit"
        )
        self._guard: RegistrationGuard | None = None
        self._sealer_fd: int | None = None  # open while this process holds the sealer lock

    @property
    def sealer_lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".sealer-lock")

    # -- plumbing ---------------------------------------------------------
    async def open(self) -> None:
        if not self.path.parent.exists():
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # It holds webhook secrets: created 0600, and SQLite gives its -wal,
        # -shm and -journal the database file's mode.
        create_private_file(self.path)
        tighten(*(self.path.with_name(self.path.name + end) for end in ("", "-wal", "-shm")))
        loop = asyncio.get_running_loop()
        self._wconn = await loop.run_in_executor(self._writer, connect, self.path)
        await loop.run_in_executor(self._writer, migrate, self._wconn)
        self._rconn = await loop.run_in_executor(self._reader, connect, self.path)
        self._commits.start()

    async def close(self) -> None:
        await self._commits.stop()
        await self.release_sealer_lock()
        loop = asyncio.get_running_loop()
        if self._wconn is not None:
            await loop.run_in_executor(self._writer, self._wconn.close)
            self._wconn = None
        if self._rconn is not None:
            await loop.run_in_executor(self._reader, self._rconn.close)
            self._rconn = None
        self._writer.shutdown(wait=True)
        self._reader.shutdown(wait=True)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._wconn
        if conn is None:
            raise StoreError("store is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._writer, fn, conn)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite write failed: {exc}") from exc

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._rconn
        if conn is None:
            raise StoreError("store is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._reader, fn, conn)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite read failed: {exc}") from exc

    @staticmethod
    def _transaction(conn: sqlite3.Connection, body: Callable[[], T]) -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = body()
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def guard_registrations(self, guard: RegistrationGuard) -> None:
        self._guard = guard

    # -- the sealer lock --------------------------------------------------
    async def hold_sealer_lock(self) -> bool:
        if self._sealer_fd is not None:
            return True  # an flock stays ours while the descriptor is open
        # O_CLOEXEC: no decoder or other child may keep the lock alive after us.
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        fd = os.open(self.sealer_lock_path, flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._sealer_fd = fd
        return True

    async def release_sealer_lock(self) -> None:
        fd, self._sealer_fd = self._sealer_fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor releases the flock

    # -- API keys ---------------------------------------------------------
    async def add_api_key(self, key: ApiKey) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO api_keys (key_id, secret_hash, seller, role, created_at, label)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (key.key_id, key.secret_hash, key.seller, key.role, key.created_at, key.label),
            )

        await self._write(run)

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        def run(conn: sqlite3.Connection) -> ApiKey | None:
            row = conn.execute("SELECT * FROM api_keys WHERE key_id = ?", (key_id,)).fetchone()
            return _ROWS.api_key(row) if row else None

        return await self._read(run)

    async def list_api_keys(self) -> list[ApiKey]:
        def run(conn: sqlite3.Connection) -> list[ApiKey]:
            rows = conn.execute("SELECT * FROM api_keys ORDER BY created_at, key_id")
            return [_ROWS.api_key(row) for row in rows]

        return await self._read(run)

    async def revoke_api_key(self, key_id: str, revoked_at: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                (revoked_at, key_id),
            )
            return cur.rowcount == 1

        return await self._write(run)

    # -- registrations ----------------------------------------------------
    async def add_registration(self, new: NewRegistration) -> Registration:
        return await self._commits.add(new)

    async def _flush(self, batch: Batch) -> None:
        items = [new for new, _ in batch]
        loop = asyncio.get_running_loop()
        try:
            results = await self._write(lambda conn: self._insert_many(conn, items, loop))
        except Exception as exc:  # the whole transaction failed: nobody is acknowledged
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # the caller went away; the row stays, as committed
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    def _insert_many(
        self,
        conn: sqlite3.Connection,
        items: Sequence[NewRegistration],
        loop: asyncio.AbstractEventLoop,
    ) -> list[Registration | Exception]:
        def body() -> list[Registration | Exception]:
            verdicts: list[StoreError | None] = [None] * len(items)
            guard = self._guard
            if guard is not None:

                async def look() -> list[StoreError | None]:
                    return list(await guard(items))

                # Under the write lock every other process's registration is
                # committed: the guard's last look (on the read connection) sees it.
                verdicts = asyncio.run_coroutine_threadsafe(look(), loop).result(GUARD_TIMEOUT)
            out: list[Registration | Exception] = []
            for new, verdict in zip(items, verdicts, strict=True):
                if verdict is not None:
                    out.append(verdict)
                    continue
                try:
                    cur = conn.execute(
                        "INSERT INTO registrations (id, seller, sha256, perceptual, received_at,"
                        " width, height, title, reference, idempotency_key, features, thumbnail)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            new.id,
                            new.seller,
                            new.sha256,
                            json.dumps(new.perceptual, sort_keys=True),
                            new.received_at,
                            new.width,
                            new.height,
                            new.title,
                            new.reference,
                            new.idempotency_key,
                            new.features,
                            new.thumbnail,
                        ),
                    )
                except sqlite3.IntegrityError as exc:
                    existing = None
                    if new.idempotency_key is not None:
                        row = conn.execute(
                            f"SELECT {REG_COLUMNS} FROM registrations"
                            " WHERE seller = ? AND idempotency_key = ?",
                            (new.seller, new.idempotency_key),
                        ).fetchone()
                        existing = _ROWS.registration(row) if row else None
                    out.append(
                        DuplicateIdempotencyKey(existing)
                        if existing is not None
                        else StoreError(f"cannot store registration: {exc}")
                    )
                    continue
                seq = cur.lastrowid
                assert seq is not None
                out.append(Registration(**{**new.__dict__, "seq": seq}))
            return out

        return self._transaction(conn, body)

    async def get_registration(self, registration_id: str) -> Registration | None:
        def run(conn: sqlite3.Connection) -> Registration | None:
            row = conn.execute(
                f"SELECT {REG_COLUMNS} FROM registrations WHERE id = ?", (registration_id,)
            ).fetchone()
            return _ROWS.registration(row) if row else None

        return await self._read(run)

    async def get_registrations(self, seqs: Iterable[int]) -> dict[int, Registration]:
        wanted = sorted(set(seqs))
        if not wanted:
            return {}

        def run(conn: sqlite3.Connection) -> dict[int, Registration]:
            found: dict[int, Registration] = {}
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for row in conn.execute(
                    f"SELECT {REG_COLUMNS} FROM registrations WHERE seq IN ({marks})", chunk
                ):
                    found[row["seq"]] = _ROWS.registration(row)
            return found

        return await self._read(run)

    async def find_by_sha256(self, sha256: str) -> list[Registration]:
        def run(conn: sqlite3.Connection) -> list[Registration]:
            rows = conn.execute(
                f"SELECT {REG_COLUMNS} FROM registrations WHERE sha256 = ? ORDER BY seq",
                (sha256,),
            )
            return [_ROWS.registration(row) for row in rows]

        return await self._read(run)

    async def find_by_idempotency_key(self, seller: str, key: str) -> Registration | None:
        def run(conn: sqlite3.Connection) -> Registration | None:
            row = conn.execute(
                f"SELECT {REG_COLUMNS} FROM registrations"
                " WHERE seller = ? AND idempotency_key = ?",
                (seller, key),
            ).fetchone()
            return _ROWS.registration(row) if row else None

        return await self._read(run)

    async def iter_fingerprints(self, after_seq: int = 0) -> AsyncIterator[StoredFingerprint]:
        page = 20_000
        while True:

            def run(conn: sqlite3.Connection, after: int = after_seq) -> list[StoredFingerprint]:
                rows = conn.execute(
                    "SELECT seq, seller, sha256, perceptual, features, width, height"
                    " FROM registrations WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after, page),
                )
                return [
                    StoredFingerprint(
                        seq=row["seq"],
                        seller=row["seller"],
                        sha256=row["sha256"],
                        perceptual=json.loads(row["perceptual"]),
                        features=bytes(row["features"]) if row["features"] is not None else None,
                        width=row["width"],
                        height=row["height"],
                    )
                    for row in rows
                ]

            batch = await self._read(run)
            for item in batch:
                yield item
            if len(batch) < page:
                return
            after_seq = batch[-1].seq

    async def get_features(self, seqs: Iterable[int]) -> dict[int, bytes]:
        wanted = sorted(set(seqs))

        def run(conn: sqlite3.Connection) -> dict[int, bytes]:
            found: dict[int, bytes] = {}
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for row in conn.execute(
                    f"SELECT seq, features FROM registrations"
                    f" WHERE seq IN ({marks}) AND features IS NOT NULL",
                    chunk,
                ):
                    found[row["seq"]] = bytes(row["features"])
            return found

        return await self._read(run) if wanted else {}

    async def get_thumbnail(self, seq: int) -> bytes | None:
        def run(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT thumbnail FROM registrations WHERE seq = ?", (seq,)
            ).fetchone()
            return bytes(row["thumbnail"]) if row and row["thumbnail"] is not None else None

        return await self._read(run)

    # -- the log ----------------------------------------------------------
    async def pending(self, limit: int) -> list[Registration]:
        def run(conn: sqlite3.Connection) -> list[Registration]:
            rows = conn.execute(
                f"SELECT {REG_COLUMNS} FROM registrations WHERE leaf_index IS NULL"
                " ORDER BY seq LIMIT ?",
                (limit,),
            )
            return [_ROWS.registration(row) for row in rows]

        # The sealer reads through the writer connection: it must see every
        # registration committed before it, and it is the writer's next job anyway.
        return await self._write(run)

    async def count_pending(self) -> int:
        def run(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT count(*) FROM registrations WHERE leaf_index IS NULL")
            return int(row.fetchone()[0])

        return await self._read(run)

    async def tree_size(self) -> int:
        def run(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT max(tree_size) FROM checkpoints").fetchone()
            return int(row[0] or 0)

        return await self._write(run)

    async def get_tiles(self, coords: Iterable[TileCoord]) -> dict[TileCoord, bytes]:
        wanted = sorted(set(coords))
        if not wanted:
            return {}

        def run(conn: sqlite3.Connection) -> dict[TileCoord, bytes]:
            found: dict[TileCoord, bytes] = {}
            for level, idx in wanted:
                row = conn.execute(
                    "SELECT data FROM tiles WHERE level = ? AND idx = ?", (level, idx)
                ).fetchone()
                if row is not None:
                    found[(level, idx)] = bytes(row[0])
            return found

        return await self._read(run)

    async def commit_seal(self, batch: SealBatch) -> None:
        def run(conn: sqlite3.Connection) -> None:
            def body() -> None:
                current = conn.execute("SELECT max(tree_size) FROM checkpoints").fetchone()[0]
                expected = (current or 0) + len(batch.assignments)
                if batch.checkpoint.tree_size != expected:
                    raise StoreError(
                        f"seal would make tree size {batch.checkpoint.tree_size}, "
                        f"want {expected}: another sealer got there first"
                    )
                cur = conn.executemany(
                    "UPDATE registrations SET leaf_index = ? WHERE seq = ? AND leaf_index IS NULL",
                    [(leaf_index, seq) for seq, leaf_index in batch.assignments],
                )
                if cur.rowcount != len(batch.assignments):
                    raise StoreError("a registration in the seal batch was already sealed")
                for level, idx, data in batch.tiles:
                    if not data or len(data) > TILE_BYTES or len(data) % 32:
                        raise StoreError(f"tile ({level}, {idx}) of {len(data)} bytes")
                # A tile may only grow: the update applies only when the stored
                # contents are a strict prefix of the new ones.
                cur = conn.executemany(
                    "INSERT INTO tiles (level, idx, data) VALUES (?, ?, ?)"
                    " ON CONFLICT (level, idx) DO UPDATE SET data = excluded.data"
                    " WHERE length(excluded.data) > length(tiles.data)"
                    " AND substr(excluded.data, 1, length(tiles.data)) = tiles.data",
                    batch.tiles,
                )
                if cur.rowcount != len(batch.tiles):
                    raise StoreError("a tile write would change hashes already in the log")
                cp = batch.checkpoint
                conn.execute(
                    "INSERT INTO checkpoints (tree_size, root_hash, timestamp_ns, note, key_id)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (cp.tree_size, cp.root_hash, cp.timestamp_ns, cp.note, cp.key_id),
                )

            self._transaction(conn, body)

        await self._write(run)

    async def latest_checkpoint(self) -> CheckpointRecord | None:
        return await self._one_checkpoint("ORDER BY tree_size DESC LIMIT 1", ())

    async def get_checkpoint(self, tree_size: int) -> CheckpointRecord | None:
        return await self._one_checkpoint("WHERE tree_size = ?", (tree_size,))

    async def first_checkpoint_covering(self, leaf_index: int) -> CheckpointRecord | None:
        return await self._one_checkpoint(
            "WHERE tree_size > ? ORDER BY tree_size LIMIT 1", (leaf_index,)
        )

    async def _one_checkpoint(self, where: str, args: tuple[Any, ...]) -> CheckpointRecord | None:
        def run(conn: sqlite3.Connection) -> CheckpointRecord | None:
            row = conn.execute(
                "SELECT tree_size, root_hash, timestamp_ns, note, key_id"
                f" FROM checkpoints {where}",
                args,
            ).fetchone()
            return _ROWS.checkpoint(row) if row else None

        return await self._read(run)

    # -- webhooks and their outbox ---------------------------------------
    async def add_webhook(self, hook: WebhookRecord) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO webhooks (id, seller, url, secret, events, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    hook.id,
                    hook.seller,
                    hook.url,
                    hook.secret,
                    json.dumps(list(hook.events)),
                    hook.created_at,
                ),
            )

        await self._write(run)

    async def list_webhooks(self, seller: str) -> list[WebhookRecord]:
        def run(conn: sqlite3.Connection) -> list[WebhookRecord]:
            rows = conn.execute(
                "SELECT * FROM webhooks WHERE seller = ? ORDER BY created_at, id", (seller,)
            )
            return [_ROWS.webhook(row) for row in rows]

        return await self._read(run)

    async def get_webhook(self, webhook_id: str) -> WebhookRecord | None:
        def run(conn: sqlite3.Connection) -> WebhookRecord | None:
            row = conn.execute("SELECT * FROM webhooks WHERE id = ?", (webhook_id,)).fetchone()
            return _ROWS.webhook(row) if row else None

        return await self._read(run)

    async def delete_webhook(self, webhook_id: str, seller: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            def body() -> bool:
                # The outbox rows go with it (ON DELETE CASCADE).
                cur = conn.execute(
                    "DELETE FROM webhooks WHERE id = ? AND seller = ?", (webhook_id, seller)
                )
                return cur.rowcount == 1

            return self._transaction(conn, body)

        return await self._write(run)

    async def webhooks_for_sellers(self, sellers: Iterable[str]) -> list[WebhookRecord]:
        wanted = sorted(set(sellers))
        if not wanted:
            return []

        def run(conn: sqlite3.Connection) -> list[WebhookRecord]:
            marks = ",".join("?" * len(wanted))
            rows = conn.execute(
                f"SELECT * FROM webhooks WHERE seller IN ({marks}) ORDER BY created_at, id",
                wanted,
            )
            return [_ROWS.webhook(row) for row in rows]

        return await self._read(run)

    async def enqueue_deliveries(self, deliveries: Sequence[WebhookDelivery]) -> None:
        if not deliveries:
            return

        def run(conn: sqlite3.Connection) -> None:
            def body() -> None:
                conn.executemany(
                    "INSERT INTO webhook_deliveries (id, webhook_id, event_id, event_type,"
                    " payload, created_at, status, attempts, next_attempt_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?)",
                    [
                        (
                            d.id,
                            d.webhook_id,
                            d.event_id,
                            d.event_type,
                            d.payload,
                            d.created_at,
                            d.next_attempt_at,
                        )
                        for d in deliveries
                    ],
                )

            self._transaction(conn, body)

        await self._write(run)

    async def claim_deliveries(
        self,
        now: float,
        lease_until: float,
        limit: int,
        *,
        per_seller: int | None = None,
        exclude_sellers: Collection[str] = (),
    ) -> list[WebhookDelivery]:
        excluded = json.dumps(sorted(exclude_sellers))

        def run(conn: sqlite3.Connection) -> list[WebhookDelivery]:
            def body() -> list[WebhookDelivery]:
                # The webhooks with pending deliveries (a skip scan of the index),
                # the first few due of each (a probe each), then at most
                # `per_seller` of each seller's, oldest first: no step reads a
                # whole backlog, nor webhooks with nothing pending.
                rows = conn.execute(
                    "WITH RECURSIVE hooks(id) AS ("
                    " SELECT min(webhook_id) FROM webhook_deliveries WHERE status = 'pending'"
                    " UNION ALL SELECT (SELECT min(webhook_id) FROM webhook_deliveries"
                    "  WHERE status = 'pending' AND webhook_id > hooks.id)"
                    " FROM hooks WHERE hooks.id IS NOT NULL)"
                    " SELECT * FROM ("
                    f" SELECT {DELIVERY_COLUMNS}, d.seq, w.url, w.secret, w.seller,"
                    " row_number() OVER (PARTITION BY w.seller"
                    "  ORDER BY d.next_attempt_at, d.seq) AS seller_rank"
                    " FROM hooks JOIN webhooks w ON w.id = hooks.id, webhook_deliveries d"
                    " WHERE w.seller NOT IN (SELECT value FROM json_each(?))"
                    " AND d.seq IN (SELECT x.seq FROM webhook_deliveries x"
                    "  WHERE x.webhook_id = w.id AND x.status = 'pending'"
                    "  AND x.next_attempt_at <= ? ORDER BY x.next_attempt_at, x.seq LIMIT ?))"
                    " WHERE seller_rank <= ? ORDER BY next_attempt_at, seq LIMIT ?",
                    (excluded, now, per_seller or limit, per_seller or limit, limit),
                ).fetchall()
                conn.executemany(
                    "UPDATE webhook_deliveries SET next_attempt_at = ? WHERE id = ?",
                    [(lease_until, row["id"]) for row in rows],
                )
                return [_ROWS.delivery(row, joined=True) for row in rows]

            return self._transaction(conn, body)

        return await self._write(run)

    async def finish_delivery_attempt(
        self,
        delivery_id: str,
        *,
        status: Literal["pending", "delivered", "failed"],
        next_attempt_at: float,
        last_status: int | None,
        last_error: str | None,
        delivered_at: str | None,
    ) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE webhook_deliveries SET status = ?, attempts = attempts + 1,"
                " next_attempt_at = ?, last_status = ?, last_error = ?, delivered_at = ?"
                " WHERE id = ?",
                (status, next_attempt_at, last_status, last_error, delivered_at, delivery_id),
            )

        await self._write(run)

    async def list_deliveries(self, webhook_id: str, limit: int = 100) -> list[WebhookDelivery]:
        def run(conn: sqlite3.Connection) -> list[WebhookDelivery]:
            rows = conn.execute(
                f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d"
                " WHERE d.webhook_id = ? ORDER BY d.seq DESC LIMIT ?",
                (webhook_id, limit),
            )
            return [_ROWS.delivery(row) for row in rows]

        return await self._read(run)

    # -- signing keys -------------------------------------------------------
    async def list_signing_keys(self) -> list[SigningKeyRecord]:
        def run(conn: sqlite3.Connection) -> list[SigningKeyRecord]:
            rows = conn.execute("SELECT * FROM signing_keys ORDER BY not_before, key_id")
            return [_ROWS.signing_key(row) for row in rows]

        return await self._read(run)

    async def activate_signing_key(self, key: SigningKeyRecord, *, replacing: str | None) -> None:
        def run(conn: sqlite3.Connection) -> None:
            def body() -> None:
                row = conn.execute(
                    "SELECT key_id FROM signing_keys WHERE not_after IS NULL"
                ).fetchone()
                active = row[0] if row else None
                if active != replacing:
                    raise ActiveKeyChanged(
                        f"the active signing key is {active}, not {replacing}"
                    )
                conn.execute(
                    "UPDATE signing_keys SET not_after = ? WHERE not_after IS NULL",
                    (key.not_before,),
                )
                conn.execute(
                    "INSERT INTO signing_keys"
                    " (key_id, name, algorithm, public_key, not_before, not_after)"
                    " VALUES (?, ?, ?, ?, ?, NULL)",
                    (key.key_id, key.name, key.algorithm, key.public_key, key.not_before),
                )

            self._transaction(conn, body)

        await self._write(run)

    # -- anchors ------------------------------------------------------------------
    async def schedule_anchor(
        self, anchor: str, kind: str, tree_size: int, *, now: float, interval: float
    ) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            def body() -> bool:
                largest, newest = conn.execute(
                    "SELECT max(tree_size), max(created_at) FROM anchors WHERE anchor = ?",
                    (anchor,),
                ).fetchone()
                if largest is not None and (largest >= tree_size or newest > now - interval):
                    return False
                conn.execute(
                    "UPDATE anchors SET status = 'superseded' WHERE anchor = ?"
                    " AND status = 'pending' AND progress IS NULL AND tree_size < ?",
                    (anchor, tree_size),
                )
                conn.execute(
                    "INSERT INTO anchors (anchor, kind, tree_size, status, created_at,"
                    " next_attempt_at) VALUES (?, ?, ?, 'pending', ?, ?)",
                    (anchor, kind, tree_size, now, now),
                )
                return True

            return self._transaction(conn, body)

        return await self._write(run)

    async def claim_anchor_jobs(
        self, anchors: Sequence[str], now: float, lease_until: float, limit: int
    ) -> list[AnchorJob]:
        names = sorted(set(anchors))
        if not names:
            return []

        def run(conn: sqlite3.Connection) -> list[AnchorJob]:
            def body() -> list[AnchorJob]:
                marks = ",".join("?" * len(names))
                rows = conn.execute(
                    f"SELECT {ANCHOR_COLUMNS} FROM anchors a WHERE a.status = 'pending'"
                    f" AND a.next_attempt_at <= ? AND a.anchor IN ({marks})"
                    " ORDER BY a.next_attempt_at, a.id LIMIT ?",
                    (now, *names, limit),
                ).fetchall()
                claimed = []
                for row in rows:
                    claim = secrets.token_hex(8)
                    conn.execute(
                        "UPDATE anchors SET next_attempt_at = ?, claim = ? WHERE id = ?",
                        (lease_until, claim, row["id"]),
                    )
                    claimed.append((row["id"], claim))
                if not claimed:
                    return []
                ids = ",".join(str(job_id) for job_id, _ in claimed)
                joined = conn.execute(
                    f"SELECT {ANCHOR_COLUMNS}, {CHECKPOINT_COLUMNS} FROM anchors a"
                    f" JOIN checkpoints c ON c.tree_size = a.tree_size WHERE a.id IN ({ids})"
                    " ORDER BY a.id"
                ).fetchall()
                return [_ROWS.anchor_job(row, joined=True) for row in joined]

            return self._transaction(conn, body)

        return await self._write(run)

    async def finish_anchor_attempt(self, job_id: int, claim: str, outcome: AnchorAttempt) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE anchors SET status = ?, attempts = ?, next_attempt_at = ?,"
                " progress = ?, last_error = ?, evidence = ?, anchored_at = ?, claim = NULL"
                " WHERE id = ? AND claim = ?",
                (
                    outcome.status,
                    outcome.attempts,
                    outcome.next_attempt_at,
                    _json_or_null(outcome.progress),
                    outcome.last_error,
                    _json_or_null(outcome.evidence),
                    outcome.anchored_at,
                    job_id,
                    claim,
                ),
            )
            return cur.rowcount == 1

        return await self._write(run)

    async def anchors_covering(self, tree_size: int) -> list[AnchorJob]:
        def run(conn: sqlite3.Connection) -> list[AnchorJob]:
            rows = conn.execute(
                f"SELECT {ANCHOR_COLUMNS}, {CHECKPOINT_COLUMNS} FROM anchors a"
                " JOIN checkpoints c ON c.tree_size = a.tree_size"
                " WHERE a.status = 'anchored' AND a.tree_size = ("
                "   SELECT min(b.tree_size) FROM anchors b WHERE b.anchor = a.anchor"
                "   AND b.status = 'anchored' AND b.tree_size >= ?)"
                " ORDER BY a.anchor",
                (tree_size,),
            )
            return [_ROWS.anchor_job(row, joined=True) for row in rows]

        return await self._read(run)

    async def list_anchor_jobs(self, *, anchor: str | None = None, limit: int = 100) -> list[
        AnchorJob
    ]:
        def run(conn: sqlite3.Connection) -> list[AnchorJob]:
            where, args = ("WHERE a.anchor = ?", (anchor,)) if anchor is not None else ("", ())
            rows = conn.execute(
                f"SELECT {ANCHOR_COLUMNS} FROM anchors a {where} ORDER BY a.id DESC LIMIT ?",
                (*args, limit),
            )
            return [_ROWS.anchor_job(row) for row in rows]

        return await self._read(run)
