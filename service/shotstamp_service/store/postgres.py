"""PostgreSQL backend: one database shared by several service replicas.

Durability: every session runs with `synchronous_commit=on` whatever the
server's default, so COMMIT returns only once the WAL is flushed; a
registration is acknowledged only after that.

Group commit: as in the SQLite store, concurrent uploads are queued and
written by one task in one transaction (one multi-row INSERT), so the WAL
flush is shared by every upload that arrived meanwhile.

Commit order is sequence order: each registration transaction first takes a
transaction-level advisory lock, so transactions that draw sequence numbers
commit one after another in that order. A replica that has read every
registration up to `seq` N can therefore never later see a new one below N,
which is what lets every replica follow the others' registrations by polling
`seq > N` (see `Registry.load_index`). The lock is held only for one INSERT and
its COMMIT; the fingerprinting that dominates an upload happens outside it.
Under that lock the store reads what the others committed since the
registration guard's pre-lock look and screens the batch against it without
awaiting (`ForeignScreen`); only when the screen cannot does it run the guard
itself (`Registry.recheck`). Either refuses an upload that has meanwhile
become a copy of another seller's registration, so two replicas never both
accept one photo from two sellers.

Sealing: `hold_sealer_lock` takes a session-level advisory lock on a
dedicated connection. Exactly one replica holds it; PostgreSQL releases it
when that connection ends, whether the replica exits, is killed, or hangs
(`idle_session_timeout` ends a holder that stops checking in). A seal's
transaction (`_seal_transaction`) locks the checkpoints table, and in it
`commit_seal` (`store/log.py`) refuses a stale tree size, so even two
replicas that both believe they seal cannot fork the log.

The log is stored as C2SP tlog tiles (`tiles`, one row per tile with its
widest contents), written by `commit_seal` under that same lock: a tile may
only grow by appending, so a seal that would change a hash already in the log
is refused whole. Signing keys (public halves only) are in `signing_keys`;
`activate_signing_key` (`store/signing_keys.py`) is a compare-and-swap under a
transaction advisory lock, so replicas adopting their first key and an admin
rotating take turns, and at most one key is ever active.

Requires PostgreSQL 14 or newer (`idle_session_timeout`), reached directly or
through a session-mode pooler (advisory session locks need a real session).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Collection,
    Coroutine,
    Iterable,
    Iterator,
    Sequence,
)
from typing import Any, Literal, TypeVar

import asyncpg

from shotstamp_service.log.tiles import TILE_BYTES, TILE_HEIGHT, TILE_WIDTH, TileCoord, TileWrite
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

# jsonb columns arrive decoded (the connection codec).
_ROWS = Rows(json_text=False)

__all__ = ["MIGRATIONS", "PostgresStore"]

log = logging.getLogger(__name__)

# This replica's latest commits, told apart from other replicas' under the insert lock;
# an older one read there is only screened needlessly.
_OWN_SEQS_KEPT = 4096
# Seconds the registration guard may hold the insert lock before the batch fails.
GUARD_TIMEOUT = 60.0

T = TypeVar("T")


def _lock_key(name: bytes) -> int:
    """A 64-bit advisory lock key spelled in ASCII, so operators can find it in pg_locks."""
    return int.from_bytes(name, "big", signed=True)


MIGRATION_LOCK = _lock_key(b"ss:migra")
INSERT_LOCK = _lock_key(b"ss:inser")
SEALER_LOCK = _lock_key(b"ss:seal_")
SIGNING_KEY_LOCK = _lock_key(b"ss:signk")
ANCHOR_LOCK = _lock_key(b"ss:ancho")

# Each entry migrates from version i to i+1; schema_migrations records which
# have been applied. Never edit an entry once released: append a new one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE registrations (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id text NOT NULL UNIQUE,
        seller text NOT NULL,
        sha256 text NOT NULL,
        perceptual jsonb NOT NULL,
        received_at text NOT NULL,  -- the exact RFC 3339 string that is in the leaf
        width integer NOT NULL,
        height integer NOT NULL,
        title text,
        reference text,
        idempotency_key text,
        features bytea,
        thumbnail bytea,
        leaf_index bigint UNIQUE
    );
    CREATE INDEX registrations_sha256 ON registrations (sha256);
    CREATE UNIQUE INDEX registrations_idempotency
        ON registrations (seller, idempotency_key) WHERE idempotency_key IS NOT NULL;
    CREATE INDEX registrations_pending ON registrations (seq) WHERE leaf_index IS NULL;
    CREATE TABLE tree_nodes (
        level smallint NOT NULL,
        idx bigint NOT NULL,
        hash bytea NOT NULL,
        PRIMARY KEY (level, idx)
    );
    CREATE TABLE checkpoints (
        tree_size bigint PRIMARY KEY,
        root_hash bytea NOT NULL,
        timestamp_ns bigint NOT NULL,
        note text NOT NULL,
        key_id text NOT NULL
    );
    CREATE TABLE api_keys (
        key_id text PRIMARY KEY,
        secret_hash bytea NOT NULL,
        seller text NOT NULL,
        role text NOT NULL CHECK (role IN ('seller', 'staff')),
        created_at text NOT NULL,
        revoked_at text,
        label text
    );
    """,
    # 2: webhooks and the outbox of their deliveries (as SQLite's migration 2).
    """
    CREATE TABLE webhooks (
        id text PRIMARY KEY,
        seller text NOT NULL,
        url text NOT NULL,
        secret text NOT NULL,
        events jsonb NOT NULL,
        created_at text NOT NULL
    );
    CREATE INDEX webhooks_seller ON webhooks (seller);
    CREATE TABLE webhook_deliveries (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id text NOT NULL UNIQUE,
        webhook_id text NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
        event_id text NOT NULL,
        event_type text NOT NULL,
        payload bytea NOT NULL,
        created_at text NOT NULL,
        status text NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
        attempts integer NOT NULL DEFAULT 0,
        next_attempt_at double precision NOT NULL,
        last_status integer,
        last_error text,
        delivered_at text
    );
    CREATE INDEX webhook_deliveries_due
        ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
    CREATE INDEX webhook_deliveries_by_hook ON webhook_deliveries (webhook_id, seq);
    """,
    # 3: the log as C2SP tlog tiles instead of a row per subtree (as SQLite's
    # migration 3). Only tree levels that are multiples of 8 are kept, packed
    # 256 hashes to a row in index order; every other node is rebuilt inside
    # a tile. A level-8L tile must hold its hashes from position 0 without a
    # gap, or the stored tree was broken: refuse rather than guess.
    f"""
    CREATE TABLE tiles (
        level smallint NOT NULL,
        idx bigint NOT NULL,
        data bytea NOT NULL CHECK (length(data) BETWEEN 32 AND {TILE_BYTES}
                                   AND length(data) % 32 = 0),
        PRIMARY KEY (level, idx)
    );
    DO $$
    BEGIN
        IF EXISTS (
            SELECT 1 FROM tree_nodes WHERE level % {TILE_HEIGHT} = 0
            GROUP BY level / {TILE_HEIGHT}, idx / {TILE_WIDTH}
            HAVING min(idx % {TILE_WIDTH}) <> 0 OR max(idx % {TILE_WIDTH}) <> count(*) - 1
        ) THEN
            RAISE EXCEPTION 'tree_nodes is missing nodes: cannot convert it to tiles';
        END IF;
    END $$;
    INSERT INTO tiles (level, idx, data)
        SELECT level / {TILE_HEIGHT}, idx / {TILE_WIDTH}, string_agg(hash, ''::bytea ORDER BY idx)
        FROM tree_nodes WHERE level % {TILE_HEIGHT} = 0
        GROUP BY level / {TILE_HEIGHT}, idx / {TILE_WIDTH};
    DROP TABLE tree_nodes;
    """,
    # 4: signing keys, for rotation (as SQLite's migration 4). At most one is
    # active (not_after IS NULL), whatever its name.
    """
    CREATE TABLE signing_keys (
        key_id text PRIMARY KEY,
        name text NOT NULL,
        algorithm text NOT NULL,
        public_key bytea NOT NULL UNIQUE,
        not_before text NOT NULL,
        not_after text
    );
    CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys ((true)) WHERE not_after IS NULL;
    """,
    # 5: anchors: checkpoints handed to a TSA or a chain, and their evidence (as
    # SQLite's migration 5). `progress` and `evidence` are JSON objects.
    """
    CREATE TABLE anchors (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        anchor text NOT NULL,
        kind text NOT NULL,
        tree_size bigint NOT NULL REFERENCES checkpoints (tree_size),
        status text NOT NULL CHECK (status IN ('pending', 'anchored', 'superseded')),
        created_at double precision NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        next_attempt_at double precision NOT NULL,
        claim text,
        progress jsonb,
        last_error text,
        evidence jsonb,
        anchored_at text,
        UNIQUE (anchor, tree_size)
    );
    CREATE INDEX anchors_due ON anchors (next_attempt_at) WHERE status = 'pending';
    CREATE INDEX anchors_anchored ON anchors (anchor, tree_size) WHERE status = 'anchored';
    """,
    # 6: each webhook's due deliveries in order (as SQLite's migration 6).
    "CREATE INDEX webhook_deliveries_due_by_hook"
    " ON webhook_deliveries (webhook_id, next_attempt_at, seq) WHERE status = 'pending'",
    # 7: what was sent with an idempotency key, to refuse its reuse for another photo (issue 19).
    "ALTER TABLE registrations ADD COLUMN idempotency_digest text",
    # 8: leaf version 2: the leaf commits to the seller through this salt (NULL: version 1).
    "ALTER TABLE registrations ADD COLUMN seller_salt bytea",
]


# Settings every session gets, whatever the server's defaults say.
_SESSION_SETTINGS = {
    "synchronous_commit": "on",  # durable before acknowledged
    "application_name": "shotstamp",
}

# PostgreSQL errors that mean "try again later" rather than a bug: they, and
# lost connections, become StoreError (503 at the edge).
_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except StoreError:
        raise
    except _DRIVER_ERRORS as exc:
        raise StoreError(f"postgres {what} failed: {exc}") from exc


async def _listed(verdicts: Awaitable[Sequence[StoreError | None]]) -> list[StoreError | None]:
    return list(await verdicts)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda value: json.dumps(value, sort_keys=True),
        decoder=json.loads,
        schema="pg_catalog",
    )


async def migrate(conn: asyncpg.Connection) -> int:
    """Bring the schema to the newest version; returns it. Safe to run from many replicas."""
    async with conn.transaction():
        # Replicas starting together take turns; the later ones find nothing to do.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        version = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")
        if version > len(MIGRATIONS):
            raise StoreError(
                f"database schema version {version} is newer than this release "
                f"knows ({len(MIGRATIONS)}); upgrade shotstamp"
            )
        for number in range(version, len(MIGRATIONS)):
            await conn.execute(MIGRATIONS[number])
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", number + 1)
            log.info("applied schema migration %d", number + 1)
    return len(MIGRATIONS)


async def _read_tiles(
    conn: asyncpg.Connection | asyncpg.Pool, wanted: Sequence[TileCoord]
) -> dict[TileCoord, bytes]:
    rows = await conn.fetch(
        "SELECT t.level, t.idx, t.data FROM tiles t"
        " JOIN unnest($1::smallint[], $2::bigint[]) AS w(level, idx)"
        " ON t.level = w.level AND t.idx = w.idx",
        [level for level, _ in wanted],
        [idx for _, idx in wanted],
    )
    return {(row["level"], row["idx"]): bytes(row["data"]) for row in rows}


class PostgresStore(Store):
    """The shared store: a PostgreSQL database reached with asyncpg."""

    def __init__(
        self,
        dsn: str,
        *,
        pool_size: int = 10,
        group_commit_max: int = 512,
        sealer_idle_timeout: float = 10.0,
        command_timeout: float = 30.0,
    ) -> None:
        self.dsn = dsn
        self._pool_size = pool_size
        self._sealer_idle_timeout = sealer_idle_timeout
        self._command_timeout = command_timeout
        self._pool: asyncpg.Pool | None = None
        self._commits = GroupCommit(
            self._write_registrations, max_batch=group_commit_max, name="postgres-group-commit"
        )
        self._lock_conn: asyncpg.Connection | None = None
        self._lock_held = False
        self._guard: RegistrationGuard | None = None
        self._screen: ScreenFactory | None = None
        self._own_seqs: dict[int, None] = {}  # seqs this replica committed lately
        # Registrations commit on a thread of their own, with its own event loop and
        # connection, so the insert lock is never held while the main loop is busy.
        self._writer_loop: asyncio.AbstractEventLoop | None = None
        self._writer_thread: threading.Thread | None = None
        self._writer_conn: asyncpg.Connection | None = None

    # -- plumbing ---------------------------------------------------------
    async def open(self) -> None:
        with _translated("connect"):
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self._pool_size,
                server_settings=_SESSION_SETTINGS,
                command_timeout=self._command_timeout,
                init=_init_connection,
            )
            async with self._pool.acquire() as conn:
                await migrate(conn)
        loop = asyncio.new_event_loop()
        self._writer_thread = threading.Thread(
            target=loop.run_forever, name="postgres-writer", daemon=True
        )
        self._writer_thread.start()
        self._writer_loop = loop
        self._commits.start()

    async def close(self) -> None:
        await self._commits.stop()
        await self.release_sealer_lock()
        loop, thread = self._writer_loop, self._writer_thread
        if loop is not None and thread is not None:
            with contextlib.suppress(Exception):
                await self._on_writer(self._close_writer_connection())
            loop.call_soon_threadsafe(loop.stop)
            await asyncio.to_thread(thread.join)
            loop.close()
            self._writer_loop = self._writer_thread = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _on_writer(self, work: Coroutine[Any, Any, T]) -> T:
        """Run `work` on the writer thread's loop; this loop waits without blocking."""
        if self._writer_loop is None:
            work.close()
            raise StoreError("store is not open")
        return await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(work, self._writer_loop)
        )

    async def _writer_connection(self) -> asyncpg.Connection:
        """The writer thread's connection, (re)made on first use or after it was lost."""
        conn = self._writer_conn
        if conn is None or conn.is_closed():
            conn = await asyncpg.connect(
                self.dsn, server_settings=_SESSION_SETTINGS,
                command_timeout=self._command_timeout,
            )
            await _init_connection(conn)
            self._writer_conn = conn
        return conn

    async def _close_writer_connection(self) -> None:
        conn, self._writer_conn = self._writer_conn, None
        if conn is not None:
            await conn.close()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("store is not open")
        return self._pool

    def guard_registrations(
        self, guard: RegistrationGuard, screen: ScreenFactory | None = None
    ) -> None:
        self._guard = guard
        self._screen = screen

    @contextlib.asynccontextmanager
    async def _begin(self, lock: str | None, *args: Any) -> AsyncIterator[_Transaction]:
        """A transaction that first runs `lock` (the statement that orders its kind)."""
        with _translated("write"):
            async with self.pool.acquire() as conn, conn.transaction():
                if lock is not None:
                    await conn.execute(lock, *args)
                yield _Transaction(conn)

    def _seal_transaction(self) -> contextlib.AbstractAsyncContextManager[_Transaction]:
        # Seals are serialised here, so the size check cannot race: a sealer
        # working from a stale tree fails instead of forking the log.
        return self._begin("LOCK TABLE checkpoints IN EXCLUSIVE MODE")

    def _key_transaction(self) -> contextlib.AbstractAsyncContextManager[_Transaction]:
        # Replicas adopting their first key and admins rotating take turns, so
        # the compare cannot race (READ COMMITTED: each statement sees whatever
        # the previous holder committed).
        return self._begin("SELECT pg_advisory_xact_lock($1)", SIGNING_KEY_LOCK)

    def _anchor_transaction(self) -> contextlib.AbstractAsyncContextManager[_Transaction]:
        # Replicas' runners schedule in turn, so the check cannot race.
        return self._begin("SELECT pg_advisory_xact_lock($1)", ANCHOR_LOCK)

    def _anchor_claim_transaction(self) -> contextlib.AbstractAsyncContextManager[_Transaction]:
        # No lock: SKIP LOCKED lets runners on several replicas claim disjoint jobs.
        return self._begin(None)

    # -- the sealer lock --------------------------------------------------
    async def hold_sealer_lock(self) -> bool:
        try:
            conn = self._lock_conn
            if conn is None or conn.is_closed():
                conn = self._lock_conn = await asyncpg.connect(
                    self.dsn,
                    timeout=5,
                    server_settings={
                        **_SESSION_SETTINGS,
                        "application_name": "shotstamp-sealer-lock",
                        # A holder that stops checking in (hung, partitioned) is
                        # disconnected by the server, which releases the lock.
                        "idle_session_timeout": str(int(self._sealer_idle_timeout * 1000)),
                        "tcp_keepalives_idle": "5",
                        "tcp_keepalives_interval": "2",
                        "tcp_keepalives_count": "3",
                    },
                )
                self._lock_held = False
            if self._lock_held:
                # Same session, so the session-level lock is still ours.
                await conn.fetchval("SELECT 1", timeout=5)
            else:
                self._lock_held = bool(
                    await conn.fetchval("SELECT pg_try_advisory_lock($1)", SEALER_LOCK, timeout=5)
                )
            return self._lock_held
        except _DRIVER_ERRORS as exc:
            if self._lock_held:
                log.warning("lost the sealer lock: %s", exc)
            await self._drop_lock_connection()
            return False

    async def release_sealer_lock(self) -> None:
        """Let another replica seal now (closing the session releases the lock)."""
        conn, self._lock_conn, self._lock_held = self._lock_conn, None, False
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), 5)
            except _DRIVER_ERRORS:
                conn.terminate()

    async def _drop_lock_connection(self) -> None:
        conn, self._lock_conn, self._lock_held = self._lock_conn, None, False
        if conn is not None:
            conn.terminate()

    # -- API keys ---------------------------------------------------------
    async def add_api_key(self, key: ApiKey) -> None:
        with _translated("write"):
            await self.pool.execute(
                "INSERT INTO api_keys (key_id, secret_hash, seller, role, created_at, label)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                key.key_id,
                key.secret_hash,
                key.seller,
                key.role,
                key.created_at,
                key.label,
            )

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        with _translated("read"):
            row = await self.pool.fetchrow("SELECT * FROM api_keys WHERE key_id = $1", key_id)
        return _ROWS.api_key(row) if row else None

    async def list_api_keys(self) -> list[ApiKey]:
        with _translated("read"):
            rows = await self.pool.fetch("SELECT * FROM api_keys ORDER BY created_at, key_id")
        return [_ROWS.api_key(row) for row in rows]

    async def revoke_api_key(self, key_id: str, revoked_at: str) -> bool:
        with _translated("write"):
            status = await self.pool.execute(
                "UPDATE api_keys SET revoked_at = $1 WHERE key_id = $2 AND revoked_at IS NULL",
                revoked_at,
                key_id,
            )
        return bool(status == "UPDATE 1")

    # -- registrations ----------------------------------------------------
    async def add_registration(self, new: NewRegistration) -> Registration:
        return await self._commits.add(new)

    async def _write_registrations(
        self, items: list[NewRegistration]
    ) -> list[Registration | Exception]:
        # The guard's look at the batch, taken before the lock (no await).
        screen = self._screen(items) if self._guard and self._screen else None
        main = asyncio.get_running_loop()
        with _translated("write"):
            return await self._on_writer(self._insert_many(items, screen, main))

    async def _insert_many(
        self, batch: Sequence[NewRegistration], screen: ForeignScreen | None,
        main: asyncio.AbstractEventLoop,
    ) -> list[Registration | Exception]:
        """On the writer thread's loop: nothing else runs there, so no await under the
        insert lock waits for other work (the main loop's stage-1 lookups)."""
        items = list(batch)
        conn = await self._writer_connection()
        guard = self._guard
        async with conn.transaction():
            # Commit in sequence order (see the module docstring).
            await conn.execute("SELECT pg_advisory_xact_lock($1)", INSERT_LOCK)
            # Under the lock every other replica's registration is committed: the
            # screen reads those past its look on this connection and decides without
            # awaiting; without a screen, the whole guard runs.
            verdicts: list[StoreError | None] | None = None
            if guard is None:
                verdicts = [None] * len(items)
            else:
                if screen is not None:
                    foreign = await conn.fetch(
                        f"SELECT {FINGERPRINT_COLUMNS} FROM registrations"
                        " WHERE seq > $1 AND NOT seq = ANY($2::bigint[]) ORDER BY seq",
                        screen.after,
                        [seq for seq in self._own_seqs if seq > screen.after],
                    )
                    verdicts = screen.check([_ROWS.fingerprint(row) for row in foreign])
                if verdicts is None:  # the guard runs on the main loop; this one waits
                    verdicts = list(await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(
                        asyncio.wait_for(_listed(guard(items)), GUARD_TIMEOUT), main)))
            assert verdicts is not None
            refused = {new.id: v for new, v in zip(items, verdicts, strict=True) if v is not None}
            items = [new for new in items if new.id not in refused]
            rows = await conn.fetch(
                "INSERT INTO registrations (id, seller, sha256, perceptual, received_at,"
                " width, height, title, reference, idempotency_key, features, thumbnail,"
                " idempotency_digest, seller_salt)"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[],"
                " $5::text[], $6::int[], $7::int[], $8::text[], $9::text[], $10::text[],"
                " $11::bytea[], $12::bytea[], $13::text[], $14::bytea[])"
                " ON CONFLICT (seller, idempotency_key) WHERE idempotency_key IS NOT NULL"
                " DO NOTHING RETURNING id, seq",
                [new.id for new in items],
                [new.seller for new in items],
                [new.sha256 for new in items],
                [new.perceptual for new in items],
                [new.received_at for new in items],
                [new.width for new in items],
                [new.height for new in items],
                [new.title for new in items],
                [new.reference for new in items],
                [new.idempotency_key for new in items],
                [new.features for new in items],
                [new.thumbnail for new in items],
                [new.idempotency_digest for new in items],
                [new.seller_salt for new in items],
            )
            seqs = {row["id"]: row["seq"] for row in rows}
            committed = list(seqs.values())
            out: list[Registration | Exception] = []
            for new in batch:
                if new.id in refused:
                    out.append(refused[new.id])
                    continue
                seq = seqs.get(new.id)
                if seq is not None:
                    out.append(Registration(**{**new.__dict__, "seq": seq}))
                    continue
                # Skipped by ON CONFLICT: this seller already used the key (perhaps
                # earlier in this very batch); answer with that registration.
                existing = await conn.fetchrow(
                    f"SELECT {REG_COLUMNS} FROM registrations"
                    " WHERE seller = $1 AND idempotency_key = $2",
                    new.seller,
                    new.idempotency_key,
                )
                out.append(
                    DuplicateIdempotencyKey(_ROWS.registration(existing))
                    if existing is not None
                    else StoreError(f"registration {new.id} was not stored")
                )
        for seq in committed:
            self._own_seqs[seq] = None
        while len(self._own_seqs) > _OWN_SEQS_KEPT:
            del self._own_seqs[next(iter(self._own_seqs))]
        return out

    async def get_registration(self, registration_id: str) -> Registration | None:
        with _translated("read"):
            row = await self.pool.fetchrow(
                f"SELECT {REG_COLUMNS} FROM registrations WHERE id = $1", registration_id
            )
        return _ROWS.registration(row) if row else None

    async def get_registrations(self, seqs: Iterable[int]) -> dict[int, Registration]:
        wanted = sorted(set(seqs))
        if not wanted:
            return {}
        with _translated("read"):
            rows = await self.pool.fetch(
                f"SELECT {REG_COLUMNS} FROM registrations WHERE seq = ANY($1::bigint[])", wanted
            )
        return {row["seq"]: _ROWS.registration(row) for row in rows}

    async def find_by_sha256(self, sha256: str) -> list[Registration]:
        with _translated("read"):
            rows = await self.pool.fetch(
                f"SELECT {REG_COLUMNS} FROM registrations WHERE sha256 = $1 ORDER BY seq", sha256
            )
        return [_ROWS.registration(row) for row in rows]

    async def find_by_idempotency_key(self, seller: str, key: str) -> Registration | None:
        with _translated("read"):
            row = await self.pool.fetchrow(
                f"SELECT {REG_COLUMNS} FROM registrations"
                " WHERE seller = $1 AND idempotency_key = $2",
                seller,
                key,
            )
        return _ROWS.registration(row) if row else None

    async def _fingerprint_page(
        self, after_seq: int, limit: int, skip: Sequence[int] = ()
    ) -> list[StoredFingerprint]:
        with _translated("read"):
            rows = await self.pool.fetch(
                f"SELECT {FINGERPRINT_COLUMNS} FROM registrations"
                " WHERE seq > $1 AND NOT seq = ANY($3::bigint[]) ORDER BY seq LIMIT $2",
                after_seq,
                limit,
                [seq for seq in skip if seq > after_seq],
            )
        return [_ROWS.fingerprint(row) for row in rows]

    async def get_features(self, seqs: Iterable[int]) -> dict[int, bytes]:
        wanted = sorted(set(seqs))
        if not wanted:
            return {}
        with _translated("read"):
            rows = await self.pool.fetch(
                "SELECT seq, features FROM registrations"
                " WHERE seq = ANY($1::bigint[]) AND features IS NOT NULL",
                wanted,
            )
        return {row["seq"]: bytes(row["features"]) for row in rows}

    async def get_thumbnail(self, seq: int) -> bytes | None:
        with _translated("read"):
            value = await self.pool.fetchval(
                "SELECT thumbnail FROM registrations WHERE seq = $1", seq
            )
        return bytes(value) if value is not None else None

    # -- the log ----------------------------------------------------------
    async def pending(self, limit: int) -> list[Registration]:
        with _translated("read"):
            rows = await self.pool.fetch(
                f"SELECT {REG_COLUMNS} FROM registrations WHERE leaf_index IS NULL"
                " ORDER BY seq LIMIT $1",
                limit,
            )
        return [_ROWS.registration(row) for row in rows]

    async def count_pending(self) -> int:
        with _translated("read"):
            count = await self.pool.fetchval(
                "SELECT count(*) FROM registrations WHERE leaf_index IS NULL"
            )
        return int(count)

    async def tree_size(self) -> int:
        with _translated("read"):
            size = await self.pool.fetchval("SELECT coalesce(max(tree_size), 0) FROM checkpoints")
        return int(size)

    async def get_tiles(self, coords: Iterable[TileCoord]) -> dict[TileCoord, bytes]:
        wanted = sorted(set(coords))
        if not wanted:
            return {}
        with _translated("read"):
            return await _read_tiles(self.pool, wanted)

    async def latest_checkpoint(self) -> CheckpointRecord | None:
        return await self._one_checkpoint("ORDER BY tree_size DESC LIMIT 1")

    async def get_checkpoint(self, tree_size: int) -> CheckpointRecord | None:
        return await self._one_checkpoint("WHERE tree_size = $1", tree_size)

    async def first_checkpoint_covering(self, leaf_index: int) -> CheckpointRecord | None:
        return await self._one_checkpoint(
            "WHERE tree_size > $1 ORDER BY tree_size LIMIT 1", leaf_index
        )

    async def _one_checkpoint(self, where: str, *args: Any) -> CheckpointRecord | None:
        with _translated("read"):
            row = await self.pool.fetchrow(
                f"SELECT tree_size, root_hash, timestamp_ns, note, key_id FROM checkpoints {where}",
                *args,
            )
        return _ROWS.checkpoint(row) if row else None

    # -- webhooks and their outbox ---------------------------------------
    async def add_webhook(self, hook: WebhookRecord) -> None:
        with _translated("write"):
            await self.pool.execute(
                "INSERT INTO webhooks (id, seller, url, secret, events, created_at)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                hook.id,
                hook.seller,
                hook.url,
                hook.secret,
                list(hook.events),
                hook.created_at,
            )

    async def list_webhooks(self, seller: str) -> list[WebhookRecord]:
        with _translated("read"):
            rows = await self.pool.fetch(
                "SELECT * FROM webhooks WHERE seller = $1 ORDER BY created_at, id", seller
            )
        return [_ROWS.webhook(row) for row in rows]

    async def get_webhook(self, webhook_id: str) -> WebhookRecord | None:
        with _translated("read"):
            row = await self.pool.fetchrow("SELECT * FROM webhooks WHERE id = $1", webhook_id)
        return _ROWS.webhook(row) if row else None

    async def delete_webhook(self, webhook_id: str, seller: str) -> bool:
        with _translated("write"):
            # The outbox rows go with it (ON DELETE CASCADE).
            status = await self.pool.execute(
                "DELETE FROM webhooks WHERE id = $1 AND seller = $2", webhook_id, seller
            )
        return bool(status == "DELETE 1")

    async def webhooks_for_sellers(self, sellers: Iterable[str]) -> list[WebhookRecord]:
        wanted = sorted(set(sellers))
        if not wanted:
            return []
        with _translated("read"):
            rows = await self.pool.fetch(
                "SELECT * FROM webhooks WHERE seller = ANY($1::text[]) ORDER BY created_at, id",
                wanted,
            )
        return [_ROWS.webhook(row) for row in rows]

    async def enqueue_deliveries(self, deliveries: Sequence[WebhookDelivery]) -> None:
        if not deliveries:
            return
        with _translated("write"):
            await self.pool.execute(
                "INSERT INTO webhook_deliveries (id, webhook_id, event_id, event_type, payload,"
                " created_at, status, attempts, next_attempt_at)"
                " SELECT i, w, e, t, p, c, 'pending', 0, n FROM unnest($1::text[], $2::text[],"
                " $3::text[], $4::text[], $5::bytea[], $6::text[], $7::float8[])"
                " AS x(i, w, e, t, p, c, n)",
                [d.id for d in deliveries],
                [d.webhook_id for d in deliveries],
                [d.event_id for d in deliveries],
                [d.event_type for d in deliveries],
                [d.payload for d in deliveries],
                [d.created_at for d in deliveries],
                [d.next_attempt_at for d in deliveries],
            )

    async def claim_deliveries(
        self,
        now: float,
        lease_until: float,
        limit: int,
        *,
        per_seller: int | None = None,
        exclude_sellers: Collection[str] = (),
    ) -> list[WebhookDelivery]:
        # Each row comes back with the due time it had, as SQLite's claim reads it.
        claimed = DELIVERY_COLUMNS.replace("d.next_attempt_at", "due.next_attempt_at")
        with _translated("write"):
            # As SQLite's: the webhooks with pending deliveries (a skip scan),
            # the first few due of each, at most `per_seller` of each seller's.
            # Each webhook's few are locked as they are picked (SKIP LOCKED in the
            # LATERAL, before its LIMIT), so a replica racing another takes the next
            # due rows instead of ranking rows the other holds and then skipping them
            # all (it came back empty while deliveries were due). The final lock
            # (FOR UPDATE cannot go with the window) re-checks each row is still due.
            rows = await self.pool.fetch(
                "WITH RECURSIVE hooks AS ("
                " (SELECT webhook_id FROM webhook_deliveries WHERE status = 'pending'"
                "  ORDER BY webhook_id LIMIT 1)"
                " UNION ALL SELECT (SELECT x.webhook_id FROM webhook_deliveries x"
                "  WHERE x.status = 'pending' AND x.webhook_id > h.webhook_id"
                "  ORDER BY x.webhook_id LIMIT 1)"
                " FROM hooks h WHERE h.webhook_id IS NOT NULL),"
                " ranked AS ("
                " SELECT seq FROM ("
                "  SELECT p.seq, p.next_attempt_at, row_number() OVER (PARTITION BY w.seller"
                "   ORDER BY p.next_attempt_at, p.seq) AS seller_rank"
                "  FROM hooks h JOIN webhooks w ON w.id = h.webhook_id CROSS JOIN LATERAL ("
                "   SELECT seq, next_attempt_at FROM webhook_deliveries"
                "   WHERE webhook_id = w.id AND status = 'pending' AND next_attempt_at <= $1"
                "   ORDER BY next_attempt_at, seq LIMIT $5 FOR UPDATE SKIP LOCKED) p"
                "  WHERE NOT (w.seller = ANY($4::text[]))) r"
                " WHERE seller_rank <= $5 ORDER BY next_attempt_at, seq LIMIT $3),"
                " due AS ("
                " SELECT seq, next_attempt_at FROM webhook_deliveries"
                " WHERE seq IN (SELECT seq FROM ranked)"
                " AND status = 'pending' AND next_attempt_at <= $1"
                " FOR UPDATE SKIP LOCKED)"
                " UPDATE webhook_deliveries d SET next_attempt_at = $2"
                " FROM due, webhooks w WHERE d.seq = due.seq AND w.id = d.webhook_id"
                f" RETURNING {claimed}, d.seq, w.url, w.secret, w.seller",
                now,
                lease_until,
                limit,
                sorted(exclude_sellers),
                per_seller or limit,
            )
        ordered = sorted(rows, key=lambda row: (row["next_attempt_at"], row["seq"]))
        return [_ROWS.delivery(row, joined=True) for row in ordered]

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
        with _translated("write"):
            await self.pool.execute(
                "UPDATE webhook_deliveries SET status = $1, attempts = attempts + 1,"
                " next_attempt_at = $2, last_status = $3, last_error = $4, delivered_at = $5"
                " WHERE id = $6",
                status,
                next_attempt_at,
                last_status,
                last_error,
                delivered_at,
                delivery_id,
            )

    async def list_deliveries(self, webhook_id: str, limit: int = 100) -> list[WebhookDelivery]:
        with _translated("read"):
            rows = await self.pool.fetch(
                f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d"
                " WHERE d.webhook_id = $1 ORDER BY d.seq DESC LIMIT $2",
                webhook_id,
                limit,
            )
        return [_ROWS.delivery(row) for row in rows]

    # -- signing keys (public halves; the private keys live on disk) ------
    async def list_signing_keys(self) -> list[SigningKeyRecord]:
        with _translated("read"):
            rows = await self.pool.fetch("SELECT * FROM signing_keys ORDER BY not_before, key_id")
        return [_ROWS.signing_key(row) for row in rows]

    # -- anchors (checkpoints handed to a TSA, a chain, ...) -------------------
    async def finish_anchor_attempt(self, job_id: int, claim: str, outcome: AnchorAttempt) -> bool:
        with _translated("write"):
            status = await self.pool.execute(
                "UPDATE anchors SET status = $1, attempts = $2, next_attempt_at = $3,"
                " progress = $4, last_error = $5, evidence = $6, anchored_at = $7, claim = NULL"
                " WHERE id = $8 AND claim = $9",
                outcome.status,
                outcome.attempts,
                outcome.next_attempt_at,
                outcome.progress,
                outcome.last_error,
                outcome.evidence,
                outcome.anchored_at,
                job_id,
                claim,
            )
        return bool(status == "UPDATE 1")

    async def anchors_covering(self, tree_size: int) -> list[AnchorJob]:
        with _translated("read"):
            rows = await self.pool.fetch(
                f"SELECT {ANCHOR_COLUMNS}, {CHECKPOINT_COLUMNS} FROM anchors a"
                " JOIN checkpoints c ON c.tree_size = a.tree_size"
                " WHERE a.status = 'anchored' AND a.tree_size = ("
                "   SELECT min(b.tree_size) FROM anchors b WHERE b.anchor = a.anchor"
                "   AND b.status = 'anchored' AND b.tree_size >= $1)"
                " ORDER BY a.anchor",
                tree_size,
            )
        return [_ROWS.anchor_job(row, joined=True) for row in rows]

    async def list_anchor_jobs(self, *, anchor: str | None = None, limit: int = 100) -> list[
        AnchorJob
    ]:
        with _translated("read"):
            if anchor is None:
                rows = await self.pool.fetch(
                    f"SELECT {ANCHOR_COLUMNS} FROM anchors a ORDER BY a.id DESC LIMIT $1", limit
                )
            else:
                rows = await self.pool.fetch(
                    f"SELECT {ANCHOR_COLUMNS} FROM anchors a WHERE a.anchor = $1"
                    " ORDER BY a.id DESC LIMIT $2",
                    anchor,
                    limit,
                )
        return [_ROWS.anchor_job(row) for row in rows]


class _Transaction:
    """Plain reads and writes on one connection, inside `PostgresStore._begin`.

    Implements the core's `SealWriter`, `KeySwap` and `AnchorQueue`.
    """

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    # -- the log (SealWriter) -------------------------------------------------
    async def tree_size(self) -> int:
        return int(await self._conn.fetchval("SELECT coalesce(max(tree_size), 0) FROM checkpoints"))

    async def assign_leaves(self, assignments: Sequence[tuple[int, int]]) -> int:
        return int(
            await self._conn.fetchval(
                "WITH sealed AS ("
                " UPDATE registrations r SET leaf_index = a.leaf_index"
                " FROM unnest($1::bigint[], $2::bigint[]) AS a(seq, leaf_index)"
                " WHERE r.seq = a.seq AND r.leaf_index IS NULL RETURNING 1)"
                " SELECT count(*) FROM sealed",
                [seq for seq, _ in assignments],
                [leaf for _, leaf in assignments],
            )
        )

    async def get_tiles(self, coords: Iterable[TileCoord]) -> dict[TileCoord, bytes]:
        return await _read_tiles(self._conn, sorted(set(coords)))

    async def put_tiles(self, tiles: Sequence[TileWrite]) -> None:
        await self._conn.execute(
            "INSERT INTO tiles (level, idx, data)"
            " SELECT * FROM unnest($1::smallint[], $2::bigint[], $3::bytea[])"
            " ON CONFLICT (level, idx) DO UPDATE SET data = excluded.data",
            [level for level, _, _ in tiles],
            [idx for _, idx, _ in tiles],
            [data for _, _, data in tiles],
        )

    async def add_checkpoint(self, checkpoint: CheckpointRecord) -> None:
        # A second empty checkpoint (two replicas starting on a new database)
        # fails here on the primary key, changing nothing.
        await self._conn.execute(
            "INSERT INTO checkpoints (tree_size, root_hash, timestamp_ns, note, key_id)"
            " VALUES ($1, $2, $3, $4, $5)",
            checkpoint.tree_size,
            checkpoint.root_hash,
            checkpoint.timestamp_ns,
            checkpoint.note,
            checkpoint.key_id,
        )

    # -- signing keys (KeySwap) -----------------------------------------------
    async def active_signing_key(self) -> str | None:
        active = await self._conn.fetchval(
            "SELECT key_id FROM signing_keys WHERE not_after IS NULL"
        )
        return None if active is None else str(active)

    async def retire_signing_key(self, not_after: str) -> None:
        await self._conn.execute(
            "UPDATE signing_keys SET not_after = $1 WHERE not_after IS NULL", not_after
        )

    async def add_signing_key(self, key: SigningKeyRecord) -> None:
        await self._conn.execute(
            "INSERT INTO signing_keys (key_id, name, algorithm, public_key, not_before, not_after)"
            " VALUES ($1, $2, $3, $4, $5, NULL)",
            key.key_id,
            key.name,
            key.algorithm,
            key.public_key,
            key.not_before,
        )

    # -- anchors (AnchorQueue) ------------------------------------------------
    async def anchor_history(self, anchor: str) -> tuple[int | None, float | None]:
        row = await self._conn.fetchrow(
            "SELECT max(tree_size) AS largest, max(created_at) AS newest"
            " FROM anchors WHERE anchor = $1",
            anchor,
        )
        return row["largest"], row["newest"]

    async def supersede_anchor_jobs(self, anchor: str, below: int) -> None:
        await self._conn.execute(
            "UPDATE anchors SET status = 'superseded' WHERE anchor = $1"
            " AND status = 'pending' AND progress IS NULL AND tree_size < $2",
            anchor,
            below,
        )

    async def add_anchor_job(self, anchor: str, kind: str, tree_size: int, now: float) -> None:
        await self._conn.execute(
            "INSERT INTO anchors (anchor, kind, tree_size, status, created_at,"
            " next_attempt_at) VALUES ($1, $2, $3, 'pending', $4, $4)",
            anchor,
            kind,
            tree_size,
            now,
        )

    async def due_anchor_jobs(self, anchors: Sequence[str], now: float, limit: int) -> list[int]:
        rows = await self._conn.fetch(
            "SELECT id FROM anchors WHERE status = 'pending' AND next_attempt_at <= $1"
            " AND anchor = ANY($2::text[])"
            " ORDER BY next_attempt_at, id LIMIT $3 FOR UPDATE SKIP LOCKED",
            now,
            list(anchors),
            limit,
        )
        return [int(row["id"]) for row in rows]

    async def lease_anchor_jobs(self, claims: dict[int, str], lease_until: float) -> None:
        await self._conn.execute(
            "UPDATE anchors a SET next_attempt_at = $1, claim = c.claim"
            " FROM unnest($2::bigint[], $3::text[]) AS c(id, claim) WHERE a.id = c.id",
            lease_until,
            list(claims),
            list(claims.values()),
        )

    async def anchor_jobs_with_checkpoints(self, ids: Sequence[int]) -> list[AnchorJob]:
        rows = await self._conn.fetch(
            f"SELECT {ANCHOR_COLUMNS}, {CHECKPOINT_COLUMNS} FROM anchors a"
            " JOIN checkpoints c ON c.tree_size = a.tree_size"
            " WHERE a.id = ANY($1::bigint[]) ORDER BY a.id",
            list(ids),
        )
        return [_ROWS.anchor_job(row, joined=True) for row in rows]
