"""SQLite backend: the embedded default, one machine, zero set-up.

Durability: WAL journal with `synchronous=FULL`, so a transaction is on disk
when COMMIT returns; a registration is acknowledged only after that.

Concurrency: one writer thread owns the write connection. Concurrent uploads
are grouped into one transaction (group commit) so the fsync per commit is
shared by every upload that arrived meanwhile. Reads use a second connection
on their own thread and see the last committed state (WAL snapshots).

Several processes on one machine may share the file (`serve --processes N`,
docs/processes.md). Registrations commit under `BEGIN IMMEDIATE`, SQLite's one
write lock, so they commit in `seq` order, and under that lock the writer
thread screens the rows other processes committed since the registration
guard's pre-lock look (`ForeignScreen`), as on PostgreSQL; the guard itself
(`Registry.recheck`, on the event loop) runs only when the screen cannot.
One process seals: `hold_sealer_lock` is an `flock` on a file beside the
database, which the kernel releases when its holder dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import resource
import sqlite3
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

from shotstamp_service.files import create_private_file, tighten
from shotstamp_service.log.tiles import TILE_HEIGHT, TILE_WIDTH, TileCoord, TileWrite
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
    AnchorAttempt,
    DuplicateIdempotencyKey,
    RegistrationGuard,
    Store,
    StoredFingerprint,
    StoreError,
)
from shotstamp_service.store.group_commit import GroupCommit
from shotstamp_service.store.registrations import ForeignScreen, ScreenFactory
from shotstamp_service.store.rows import (
    ANCHOR_COLUMNS,
    CHECKPOINT_COLUMNS,
    DELIVERY_COLUMNS,
    FINGERPRINT_COLUMNS,
    REG_COLUMNS,
    Rows,
)

# JSON columns are TEXT here.
_ROWS = Rows(json_text=True)

__all__ = ["SQLiteStore"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Seconds the registration guard may hold the write lock before the batch fails.
GUARD_TIMEOUT = 60.0
# This process's latest commits, told apart from other processes' under the write lock;
# an older one read there is only screened needlessly.
_OWN_SEQS_KEPT = 4096


def _tiles_from_tree_nodes(conn: sqlite3.Connection) -> None:
    """Version 2: the first release's one row per complete subtree becomes tlog tiles.

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
    # 7: what was sent with an idempotency key, to refuse its reuse for another photo (issue 19).
    "ALTER TABLE registrations ADD COLUMN idempotency_digest TEXT",
    # 8: leaf version 2: the leaf commits to the seller through this salt (NULL: version 1).
    "ALTER TABLE registrations ADD COLUMN seller_salt BLOB",
]


def _json_or_null(value: dict[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), sort_keys=True)


def _read_tiles(conn: sqlite3.Connection, wanted: Iterable[TileCoord]) -> dict[TileCoord, bytes]:
    found: dict[TileCoord, bytes] = {}
    for level, idx in wanted:
        row = conn.execute(
            "SELECT data FROM tiles WHERE level = ? AND idx = ?", (level, idx)
        ).fetchone()
        if row is not None:
            found[(level, idx)] = bytes(row[0])
    return found


# Fingerprint rows read on the event loop before the rest go to the reader thread.
_FOLLOW_ROWS_INLINE = 32
# Feature blobs read on the event loop: a stage-2 round's candidates (up to the engine's
# 64-word shortlist and the PDQ candidates) cost less there than the hop to the reader.
_FEATURES_INLINE = 128
# ...unless those reads wait for the disk: then on the reader, so that the loop serves the other
# requests meanwhile. A blob the OS has not cached costs ~2.5 page reads from the disk (~200 µs
# of wall, the loop idle); one it has, none. Above this many disk pages per blob (recent mean),
# a 64-blob round waits more than the hop costs (docs/storage.md, "Stage 2's blobs at 1 M").
_FEATURES_DISK_PAGES = 1 / 16
# Weight of the newest round in that mean: a few rounds move it across the limit.
_FEATURES_DISK_WEIGHT = 0.25
# The same for the sha256 lookup of each upload: one descent of the sha256 index, whose leaf
# at 1 M registrations is often not in the OS's cache (~0.7 ms of the loop's wall an upload,
# bench/RESULTS.md, branch full). Above a quarter of a disk page a lookup (recent mean), the
# loop would wait longer than the hop to the reader costs (~50 µs).
_SHA256_DISK_PAGES = 1 / 4
# Feature blobs kept in memory (`_BlobCache`), in bytes: an upload's stage 2 reads ~50 blobs of
# ~5.5 KB (product shots), mostly the same look-alikes and recent registrations again.
FEATURES_CACHED_BYTES = 32 << 20
_FEATURES_BY_SEQ = (
    "SELECT seq, features FROM registrations"
    " WHERE seq IN (SELECT value FROM json_each(?)) AND features IS NOT NULL"
)
# The same rows' blobs as one row (seqs, lengths, the blobs end to end), for the reader thread:
# one `sqlite3_step`. Python's sqlite3 releases the GIL around each step, and a reader that
# must win it back from a busy loop after every row waited up to the 5 ms switch interval for
# each of the 64 rows it read from the disk (~100 ms a round instead of ~12). On the loop,
# row by row is cheaper (no concatenation; ~0.1 ms a cached round).
_FEATURES_BY_SEQ_ONE_ROW = (
    "SELECT group_concat(seq), group_concat(length(features)),"
    " CAST(group_concat(features, x'') AS BLOB) FROM"
    " (SELECT seq, features FROM registrations"
    "  WHERE seq IN (SELECT value FROM json_each(?)) AND features IS NOT NULL)"
)


_RUSAGE_THREAD: int | None = getattr(resource, "RUSAGE_THREAD", None)  # Linux only


def _read_features(conn: sqlite3.Connection, listed: str) -> dict[int, bytes]:
    """`_FEATURES_BY_SEQ` for the seqs `listed` (a JSON list): {seq: feature blob}."""
    return {seq: bytes(blob) for seq, blob in conn.execute(_FEATURES_BY_SEQ, (listed,))}


def _read_features_one_row(conn: sqlite3.Connection, listed: str) -> dict[int, bytes]:
    """`_read_features` in one `sqlite3_step` (`_FEATURES_BY_SEQ_ONE_ROW`)."""
    seqs, lengths, blobs = conn.execute(_FEATURES_BY_SEQ_ONE_ROW, (listed,)).fetchone()
    found: dict[int, bytes] = {}
    if seqs is None:
        return found
    at = 0
    for seq, length in zip(seqs.split(","), lengths.split(","), strict=True):
        found[int(seq)] = blobs[at:at + int(length)]
        at += int(length)
    if at != len(blobs):
        raise StoreError(f"feature blobs of {len(found)} rows: {len(blobs)} bytes, want {at}")
    return found


class _DiskPages:
    """Pages some reads (stage 2's blobs; `what`) fetched from the disk, per item (a blob, a
    lookup): a recent mean, and whether it is above `limit`.

    Counted by the kernel for the thread that read (`ru_inblock`, 512-byte blocks), so a read
    served by SQLite's or the OS's page cache counts none, whatever the host's CPU contention.
    """

    def __init__(self, what: str = "stage 2's blob reads", limit: float = _FEATURES_DISK_PAGES,
                 unit: str = "a blob") -> None:
        self.per_blob = 0.0
        self.what, self.limit, self.unit = what, limit, unit

    @property
    def waiting(self) -> bool:
        return self.per_blob > self.limit

    def counted(self, read: Callable[[], T], blobs: int) -> T:
        if _RUSAGE_THREAD is None:
            return read()  # no per-thread count (not Linux): on the loop, as before
        before = resource.getrusage(_RUSAGE_THREAD).ru_inblock
        out = read()
        pages = (resource.getrusage(_RUSAGE_THREAD).ru_inblock - before) / 8
        self.record(pages, blobs)
        return out

    def record(self, pages: float, blobs: int) -> None:
        if not blobs:
            return
        was = self.waiting
        self.per_blob += _FEATURES_DISK_WEIGHT * (pages / blobs - self.per_blob)
        if self.waiting != was:  # rare: the data directory outgrew the OS's cache, or back
            log.info("%s: %.2f disk pages %s, now on the %s", self.what, self.per_blob,
                     self.unit, "reader thread" if self.waiting else "event loop")


class _BlobCache:
    """Feature blobs by seq, the most recently used first out of `limit` bytes; loop only.

    A committed registration's blob never changes (rows are only added; `leaf_index` is the
    one column sealing sets), so a blob kept is the one the row holds. Kept: blobs read for
    stage 2, and this process's own registrations once committed, which the next uploads
    meet as candidates. Reading them again cost the loop SQLite's page reads and a copy.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self._blobs: OrderedDict[int, bytes] = OrderedDict()
        self.asked = 0  # blobs asked for, and found here: logged at close (the hit rate)
        self.found = 0

    def get(self, seq: int) -> bytes | None:
        blob = self._blobs.get(seq)
        self.asked += 1
        if blob is not None:
            self.found += 1
            self._blobs.move_to_end(seq)
        return blob

    def put(self, seq: int, blob: bytes) -> None:
        if not self.limit or len(blob) > self.limit or seq in self._blobs:
            return
        self._blobs[seq] = blob
        self.size += len(blob)
        while self.size > self.limit:
            _, dropped = self._blobs.popitem(last=False)
            self.size -= len(dropped)


def _roll_back(conn: sqlite3.Connection | None) -> None:
    try:
        if conn is not None and conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        log.exception("sqlite rollback failed")


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

    def __init__(
        self,
        path: Path | str,
        *,
        group_commit_max: int = 512,
        features_cached_bytes: int = FEATURES_CACHED_BYTES,
    ) -> None:
        self.path = Path(path)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-reader")
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        # Point reads on the event loop itself (`_read_here`): a hop to the reader
        # thread costs ~10× the CPU of the lookup (bench/RESULTS.md, CPU per upload).
        self._lconn: sqlite3.Connection | None = None
        # Held by every write, and by a transaction across its awaits (`_begin`).
        self._write_lock = asyncio.Lock()
        self._commits = GroupCommit(
            self._write_registrations, max_batch=group_commit_max, name="sqlite-group-commit"
        )
        self._guard: RegistrationGuard | None = None
        self._screen: ScreenFactory | None = None
        # Seqs this process committed lately (writer thread only): not screened as foreign.
        self._own_seqs: dict[int, None] = {}
        self._sealer_fd: int | None = None  # open while this process holds the sealer lock
        self._blob_disk = _DiskPages()  # where stage 2's blob reads run (`get_features`)
        # where the sha256 lookups run (`find_by_sha256`)
        self._sha256_disk = _DiskPages("sha256 lookups", _SHA256_DISK_PAGES, "a lookup")
        self._blobs = _BlobCache(features_cached_bytes)  # what they need not read again
        # Every write transaction first takes an flock on this file (`_lock_and_begin`).
        self._write_fd: int | None = None

    @property
    def sealer_lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".sealer-lock")

    @property
    def write_lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".write-lock")

    def _lock_and_begin(self, conn: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE, after waiting for the other processes' writes in the kernel.

        SQLite's own busy handler polls with sleeps growing to 100 ms, so serving processes
        that write at once wait far longer than the write lasts; a blocking flock wakes the
        next writer as soon as the lock is released. (On the writer thread: one at a time.)
        """
        fd = self._write_fd
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._unlock()
            raise

    def _connect_and_migrate(self) -> sqlite3.Connection:
        """The writer's connection, made under the write lock: on a new file `journal_mode=WAL`
        writes the header, and two processes doing so at once get "database is locked" at
        once, not after the busy timeout (SQLite's deadlock rule)."""
        assert self._write_fd is not None
        fcntl.flock(self._write_fd, fcntl.LOCK_EX)
        try:
            conn = connect(self.path)
            migrate(conn)
            return conn
        finally:
            self._unlock()

    def _unlock(self) -> None:
        if self._write_fd is not None:
            fcntl.flock(self._write_fd, fcntl.LOCK_UN)

    # -- plumbing ---------------------------------------------------------
    async def open(self) -> None:
        if not self.path.parent.exists():
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # It holds webhook secrets: created 0600, and SQLite gives its -wal,
        # -shm and -journal the database file's mode.
        create_private_file(self.path)
        tighten(*(self.path.with_name(self.path.name + end) for end in ("", "-wal", "-shm")))
        loop = asyncio.get_running_loop()
        # O_CLOEXEC: no decoder or other child may hold it after us.
        self._write_fd = os.open(self.write_lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                                 0o600)
        self._wconn = await loop.run_in_executor(self._writer, self._connect_and_migrate)
        self._rconn = await loop.run_in_executor(self._reader, connect, self.path)
        self._lconn = connect(self.path)
        # Never wait for a lock on the loop: a busy database sends the read to the reader.
        self._lconn.execute("PRAGMA busy_timeout=0")
        self._lconn.execute("PRAGMA query_only=ON")
        self._commits.start()

    async def close(self) -> None:
        if self._blobs.asked:
            log.info("stage 2's feature blobs: %d asked for, %.1f %% kept in memory (%d of "
                     "%d MiB held)", self._blobs.asked, 100 * self._blobs.found / self._blobs.asked,
                     self._blobs.size >> 20, self._blobs.limit >> 20)
        await self._commits.stop()
        await self.release_sealer_lock()
        loop = asyncio.get_running_loop()
        if self._wconn is not None:
            await loop.run_in_executor(self._writer, self._wconn.close)
            self._wconn = None
        if self._rconn is not None:
            await loop.run_in_executor(self._reader, self._rconn.close)
            self._rconn = None
        if self._lconn is not None:
            self._lconn.close()
            self._lconn = None
        self._writer.shutdown(wait=True)
        self._reader.shutdown(wait=True)
        if self._write_fd is not None:
            os.close(self._write_fd)
            self._write_fd = None

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        async with self._write_lock:
            return await self._on_writer(fn)

    async def _on_writer(self, fn: Callable[[sqlite3.Connection], T]) -> T:
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

    async def _read_here(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`_read` for a lookup by key, run on the event loop; on the reader if SQLite is busy.

        WAL readers do not wait for the writer; the rare lock a reader can meet
        (a checkpoint resetting the log) is left to the reader thread to wait out.
        """
        conn = self._lconn
        if conn is None:
            raise StoreError("store is not open")
        try:
            return fn(conn)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise StoreError(f"sqlite read failed: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite read failed: {exc}") from exc
        return await self._read(fn)

    def _transaction(self, conn: sqlite3.Connection, body: Callable[[], T]) -> T:
        self._lock_and_begin(conn)
        try:
            try:
                result = body()
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            self._unlock()
        return result

    @contextlib.asynccontextmanager
    async def _begin(self) -> AsyncIterator[_Transaction]:
        """A write transaction that spans awaits (the core's rules run inside it)."""
        async with self._write_lock:
            try:
                await self._on_writer(self._lock_and_begin)
                yield _Transaction(self)
                await self._on_writer(lambda conn: conn.execute("COMMIT"))
            except BaseException:
                # Queued behind whatever still runs on the writer thread, and never cancelled.
                self._writer.submit(_roll_back, self._wconn)
                raise
            finally:
                self._writer.submit(self._unlock)  # after the commit or the rollback

    # One writer orders every kind of transaction the core's rules run in.
    _seal_transaction = _key_transaction = _anchor_transaction = _begin
    _anchor_claim_transaction = _begin

    def guard_registrations(
        self, guard: RegistrationGuard, screen: ScreenFactory | None = None
    ) -> None:
        self._guard = guard
        self._screen = screen

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

        return await self._read_here(run)

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

    async def _write_registrations(
        self, items: list[NewRegistration]
    ) -> list[Registration | Exception]:
        loop = asyncio.get_running_loop()
        # The guard's look at the batch, taken before the lock (on the loop, no await).
        screen = self._screen(items) if self._screen is not None else None
        out = await self._write(lambda conn: self._insert_many(conn, items, loop, screen))
        for result in out:  # committed: the next uploads' stage 2 finds these blobs here
            if isinstance(result, Registration) and result.features is not None:
                self._blobs.put(result.seq, result.features)
        return out

    def _insert_many(
        self,
        conn: sqlite3.Connection,
        items: Sequence[NewRegistration],
        loop: asyncio.AbstractEventLoop,
        screen: ForeignScreen | None,
    ) -> list[Registration | Exception]:
        added: list[int] = []

        def body() -> list[Registration | Exception]:
            verdicts: list[StoreError | None] = [None] * len(items)
            guard = self._guard
            if guard is not None:
                # Under the write lock every other process's registration is committed:
                # the screen reads those past its look here, on this thread...
                found = None if screen is None else screen.check(
                    self._foreign_rows(conn, screen.after))
                if found is not None:
                    verdicts = found
                else:  # ...without a screen, the guard waits for the event loop.

                    async def look() -> list[StoreError | None]:
                        return list(await guard(items))

                    verdicts = asyncio.run_coroutine_threadsafe(look(), loop).result(
                        GUARD_TIMEOUT)
            out: list[Registration | Exception] = []
            for new, verdict in zip(items, verdicts, strict=True):
                if verdict is not None:
                    out.append(verdict)
                    continue
                try:
                    cur = conn.execute(
                        "INSERT INTO registrations (id, seller, sha256, perceptual, received_at,"
                        " width, height, title, reference, idempotency_key, features, thumbnail,"
                        " idempotency_digest, seller_salt)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                            new.idempotency_digest,
                            new.seller_salt,
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
                added.append(seq)
                out.append(Registration(**{**new.__dict__, "seq": seq}))
            return out

        out = self._transaction(conn, body)
        # Only once committed: a rolled-back seq may be drawn again by another process.
        for seq in added:
            self._own_seqs[seq] = None
        while len(self._own_seqs) > _OWN_SEQS_KEPT:
            del self._own_seqs[next(iter(self._own_seqs))]
        return out

    def _foreign_rows(self, conn: sqlite3.Connection, after: int) -> list[StoredFingerprint]:
        """The registrations other processes committed past `after` (under the write lock)."""
        seqs = [seq for (seq,) in conn.execute("SELECT seq FROM registrations WHERE seq > ?",
                                               (after,)) if seq not in self._own_seqs]
        if not seqs:
            return []
        marks = ",".join("?" * len(seqs))
        rows = conn.execute(f"SELECT {FINGERPRINT_COLUMNS} FROM registrations"
                            f" WHERE seq IN ({marks}) ORDER BY seq", seqs)
        return [_ROWS.fingerprint(row) for row in rows]

    async def get_registration(self, registration_id: str) -> Registration | None:
        def run(conn: sqlite3.Connection) -> Registration | None:
            row = conn.execute(
                f"SELECT {REG_COLUMNS} FROM registrations WHERE id = ?", (registration_id,)
            ).fetchone()
            return _ROWS.registration(row) if row else None

        return await self._read_here(run)

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

        def counted(conn: sqlite3.Connection) -> list[Registration]:
            return self._sha256_disk.counted(lambda: run(conn), 1)

        # On the loop while the index's pages are cached; on the reader while they come from
        # the disk (`_DiskPages`), so that the loop serves other requests meanwhile.
        if self._sha256_disk.waiting:
            return await self._read(counted)
        return await self._read_here(counted)

    async def find_by_idempotency_key(self, seller: str, key: str) -> Registration | None:
        def run(conn: sqlite3.Connection) -> Registration | None:
            row = conn.execute(
                f"SELECT {REG_COLUMNS} FROM registrations"
                " WHERE seller = ? AND idempotency_key = ?",
                (seller, key),
            ).fetchone()
            return _ROWS.registration(row) if row else None

        return await self._read_here(run)

    async def _fingerprint_page(
        self, after_seq: int, limit: int, skip: Sequence[int] = ()
    ) -> list[StoredFingerprint]:
        # Two statement texts, each prepared once: `skip` as one JSON list (`get_features`).
        skipped = [seq for seq in skip if seq > after_seq]
        listed = json.dumps(skipped) if skipped else None

        def run(after: int, most: int) -> Callable[[sqlite3.Connection], list[StoredFingerprint]]:
            def rows(conn: sqlite3.Connection) -> list[StoredFingerprint]:
                found = conn.execute(
                    f"SELECT {FINGERPRINT_COLUMNS} FROM registrations WHERE seq > ?"
                    " ORDER BY seq LIMIT ?", (after, most),
                ) if listed is None else conn.execute(
                    f"SELECT {FINGERPRINT_COLUMNS} FROM registrations WHERE seq > ?"
                    " AND seq NOT IN (SELECT value FROM json_each(?)) ORDER BY seq LIMIT ?",
                    (after, listed, most),
                )
                return [_ROWS.fingerprint(row) for row in found]

            return rows

        # The few rows other processes added since the last read (the registration guard
        # reads them under the commit lock) come on the loop, without a hop; more, on the reader.
        inline = min(limit, _FOLLOW_ROWS_INLINE)
        first = await self._read_here(run(after_seq, inline))
        if len(first) < inline or inline == limit:
            return first
        return first + await self._read(run(first[-1].seq, limit - inline))

    async def get_features(self, seqs: Iterable[int]) -> dict[int, bytes]:
        kept: dict[int, bytes] = {}
        wanted: list[int] = []
        for seq in sorted(set(seqs)):
            blob = self._blobs.get(seq)
            if blob is None:
                wanted.append(seq)
            else:
                kept[seq] = blob
        if not wanted:
            return kept
        read = await self._features_from_db(wanted)
        for seq, blob in read.items():
            self._blobs.put(seq, blob)
        if not kept:
            return read
        return {seq: kept[seq] if seq in kept else read[seq]
                for seq in sorted((*kept, *read))}

    async def _features_from_db(self, wanted: list[int]) -> dict[int, bytes]:
        """`wanted` (sorted seqs) from SQLite: on the loop, or on the reader (below)."""
        listed = json.dumps(wanted)

        # One statement text for any count, so it is prepared once (the IN list of `?`
        # marks was a new statement for each length).
        def here(conn: sqlite3.Connection) -> dict[int, bytes]:
            return self._blob_disk.counted(lambda: _read_features(conn, listed), len(wanted))

        def reader(conn: sqlite3.Connection) -> dict[int, bytes]:
            return self._blob_disk.counted(lambda: _read_features_one_row(conn, listed),
                                           len(wanted))

        # A stage-2 round's candidates on the loop; a longer list, or one whose rows the disk
        # would have to give (`_DiskPages`), on the reader, whose reads keep the mean current.
        if len(wanted) <= _FEATURES_INLINE and not self._blob_disk.waiting:
            return await self._read_here(here)
        return await self._read(reader)

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

        return await self._read(lambda conn: _read_tiles(conn, wanted))

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

        return await self._read_here(run)

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

    # -- anchors ------------------------------------------------------------------
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


class _Transaction:
    """Plain reads and writes on the writer connection, inside `SQLiteStore._begin`.

    Implements the core's `SealWriter`, `KeySwap` and `AnchorQueue`.
    """

    def __init__(self, store: SQLiteStore) -> None:
        self._run = store._on_writer  # no lock: `_begin` holds it

    # -- the log (SealWriter) -------------------------------------------------
    async def tree_size(self) -> int:
        def run(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT max(tree_size) FROM checkpoints").fetchone()[0] or 0)

        return await self._run(run)

    async def assign_leaves(self, assignments: Sequence[tuple[int, int]]) -> int:
        def run(conn: sqlite3.Connection) -> int:
            return conn.executemany(
                "UPDATE registrations SET leaf_index = ? WHERE seq = ? AND leaf_index IS NULL",
                [(leaf_index, seq) for seq, leaf_index in assignments],
            ).rowcount

        return await self._run(run)

    async def get_tiles(self, coords: Iterable[TileCoord]) -> dict[TileCoord, bytes]:
        wanted = sorted(set(coords))
        return await self._run(lambda conn: _read_tiles(conn, wanted))

    async def put_tiles(self, tiles: Sequence[TileWrite]) -> None:
        await self._run(
            lambda conn: conn.executemany(
                "INSERT INTO tiles (level, idx, data) VALUES (?, ?, ?)"
                " ON CONFLICT (level, idx) DO UPDATE SET data = excluded.data",
                tiles,
            )
        )

    async def add_checkpoint(self, checkpoint: CheckpointRecord) -> None:
        cp = checkpoint
        await self._run(
            lambda conn: conn.execute(
                "INSERT INTO checkpoints (tree_size, root_hash, timestamp_ns, note, key_id)"
                " VALUES (?, ?, ?, ?, ?)",
                (cp.tree_size, cp.root_hash, cp.timestamp_ns, cp.note, cp.key_id),
            )
        )

    # -- signing keys (KeySwap) -----------------------------------------------
    async def active_signing_key(self) -> str | None:
        def run(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT key_id FROM signing_keys WHERE not_after IS NULL").fetchone()
            return str(row[0]) if row else None

        return await self._run(run)

    async def retire_signing_key(self, not_after: str) -> None:
        await self._run(
            lambda conn: conn.execute(
                "UPDATE signing_keys SET not_after = ? WHERE not_after IS NULL", (not_after,)
            )
        )

    async def add_signing_key(self, key: SigningKeyRecord) -> None:
        await self._run(
            lambda conn: conn.execute(
                "INSERT INTO signing_keys"
                " (key_id, name, algorithm, public_key, not_before, not_after)"
                " VALUES (?, ?, ?, ?, ?, NULL)",
                (key.key_id, key.name, key.algorithm, key.public_key, key.not_before),
            )
        )

    # -- anchors (AnchorQueue) ------------------------------------------------
    async def anchor_history(self, anchor: str) -> tuple[int | None, float | None]:
        def run(conn: sqlite3.Connection) -> tuple[int | None, float | None]:
            largest, newest = conn.execute(
                "SELECT max(tree_size), max(created_at) FROM anchors WHERE anchor = ?", (anchor,)
            ).fetchone()
            return largest, newest

        return await self._run(run)

    async def supersede_anchor_jobs(self, anchor: str, below: int) -> None:
        await self._run(
            lambda conn: conn.execute(
                "UPDATE anchors SET status = 'superseded' WHERE anchor = ?"
                " AND status = 'pending' AND progress IS NULL AND tree_size < ?",
                (anchor, below),
            )
        )

    async def add_anchor_job(self, anchor: str, kind: str, tree_size: int, now: float) -> None:
        await self._run(
            lambda conn: conn.execute(
                "INSERT INTO anchors (anchor, kind, tree_size, status, created_at,"
                " next_attempt_at) VALUES (?, ?, ?, 'pending', ?, ?)",
                (anchor, kind, tree_size, now, now),
            )
        )

    async def due_anchor_jobs(self, anchors: Sequence[str], now: float, limit: int) -> list[int]:
        def run(conn: sqlite3.Connection) -> list[int]:
            marks = ",".join("?" * len(anchors))
            rows = conn.execute(
                f"SELECT id FROM anchors WHERE status = 'pending' AND next_attempt_at <= ?"
                f" AND anchor IN ({marks}) ORDER BY next_attempt_at, id LIMIT ?",
                (now, *anchors, limit),
            )
            return [int(row[0]) for row in rows]

        return await self._run(run)

    async def lease_anchor_jobs(self, claims: dict[int, str], lease_until: float) -> None:
        await self._run(
            lambda conn: conn.executemany(
                "UPDATE anchors SET next_attempt_at = ?, claim = ? WHERE id = ?",
                [(lease_until, claim, job_id) for job_id, claim in claims.items()],
            )
        )

    async def anchor_jobs_with_checkpoints(self, ids: Sequence[int]) -> list[AnchorJob]:
        def run(conn: sqlite3.Connection) -> list[AnchorJob]:
            marks = ",".join("?" * len(ids))
            rows = conn.execute(
                f"SELECT {ANCHOR_COLUMNS}, {CHECKPOINT_COLUMNS} FROM anchors a"
                f" JOIN checkpoints c ON c.tree_size = a.tree_size WHERE a.id IN ({marks})"
                " ORDER BY a.id",
                list(ids),
            )
            return [_ROWS.anchor_job(row, joined=True) for row in rows]

        return await self._run(run)
