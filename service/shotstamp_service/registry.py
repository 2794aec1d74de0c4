"""Registration decisions: new, already yours, or a copy of someone else's photo.

The rule (one place): among the index's `copy` matches and exact byte
duplicates, the earliest registration decides. If it is the uploader's own,
the upload is answered with it (200); if it is another seller's, the upload is
a conflict (409) and nothing is stored; with no copy match it is new (201).

Matching runs in two stages (matching.py): stage 1 reads the in-memory index
(global hashes decide most copies, and propose a few candidates), stage 2
verifies those candidates' stored features with local features, in the
process pool (CPU work, never on the event loop).

Race safety: between the last index read and the reservation of the new
fingerprint there is no `await`, so in one process two simultaneous uploads of
the same photo cannot both pass; the second sees the first's reservation.
Stage 2 awaits the pool, so `_match` loops: after verifying, it reads the index
again (stage 1 and the candidate list) and returns without awaiting only when
every candidate it now sees has been verified; a reservation or registration
that appeared meanwhile and is a candidate is verified in another round. The
later reads cover only the index entries added or discarded since the previous
one (`Matcher.look_again`), with nothing lost: under load every round used to be
a full lookup, since every upload changes the index. After
`_MAX_ROUNDS` rounds (a burst of look-alike uploads) it decides on what it has
verified, so a stage-2-only copy reserved in that window can still pass; a
stage-1 copy never can. A round whose stage 2 is tiny (a product shot against one
to three look-alikes, `_tiny`) is verified on the event loop, with no await, so no
further round follows it (`verify_many` is pure: the same evidence as the pool's).
Across processes and replicas, the guard looks twice.
Before the commit lock, on the event loop, `_check_foreign` reads what the
others committed and looks at what arrived since the decision (stage 2
included); the others' rows are read before deciding too, so usually nothing
has, and the decision's look stands for it. Under the lock, the store reads the
rows the others committed after that look and `_ForeignScreen.check` looks the
batch up among them alone, on the store's own thread, stage 2 included
(`verify_many` is pure), so the lock never waits for the event loop or the
pool. `recheck`, the same look on the event loop (stage 1 over what the index
gained since the last look, stage 2 for the candidates not verified yet),
remains for an upload without a pre-lock look (docs/processes.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import os
from array import array
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from shotstamp._verify import SALT_SIZE
from shotstamp_service.http.auth import Principal
from shotstamp_service.matching.engine import (
    MAX_CANDIDATES,
    BulkLoad,
    Candidate,
    Columns,
    IndexEntry,
    Match,
    Matcher,
    QuerySides,
    Stage1,
    Stage2Item,
    could_match,
    decide,
    index_entry,
    rank,
    verify_many,
    word_query,
)
from shotstamp_service.matching.features import keypoint_layout
from shotstamp_service.matching.fingerprint import Fingerprint
from shotstamp_service.matching.rule import clause_named, explain
from shotstamp_service.matching.segments import SegmentDir
from shotstamp_service.matching.verification import Evidence, Geometry
from shotstamp_service.records import (
    NewRegistration,
    Registration,
    format_time,
    new_registration_id,
    utc_now,
)
from shotstamp_service.store import (
    DuplicateIdempotencyKey,
    RegistrationStore,
    RegistrationSuperseded,
    StoredFingerprint,
    StoreError,
)

__all__ = [
    "IdempotencyKeyReused",
    "Outcome",
    "Owners",
    "Registry",
    "ResolvedMatch",
    "request_digest",
]

log = logging.getLogger(__name__)

# Reservation refs live far above any store sequence number, so that every
# committed registration sorts before every reservation still in flight.
_RESERVATION_BASE = 1 << 62
# Stage-2 rounds before `_match` decides on what it has verified (module docstring).
_MAX_ROUNDS = 4
# Reservations remembered by the seq they were committed as (`Registry._reservation_of`).
_RESERVATIONS_KEPT = 4096
# Loading the index from the store: rows past this many are bulk-loaded (see load_index).
_BULK_FROM = 1_000
# With an index directory: registrations past the last segment are written as a new one
# once there are this many, so at most this many are read from the store at start (≈ 0.4 ms
# of CPU each, reading and parsing the row: bench/startup.py store)...
SEGMENT_ROWS = 8_192
# ...and a store from before segments is written in segments of this many at its first
# start (bounding the memory the columns take while they are collected).
UPGRADE_ROWS = 500_000
# Uploads larger than this are hashed off the event loop.
_HASH_INLINE_MAX = 1 << 20
# Stage 2 runs on the event loop instead of as a pool job when it costs less than the job's
# exchange and wake-ups on both sides (~0.45 ms): an upload of at most this many keypoints (a
# product shot has ~76, a real photo the cap of 500)...
_INLINE_KEYPOINTS = 256
# ...against candidates of at most this many keypoint pairs (upload × stored) in all, none of
# them left to the shortlist: ≈ 0.1–0.25 ms of verification (docs/cpu-budget.md, branch rounds).
_INLINE_PAIRS = 40_000
# Other processes' registrations, parsed and with their index entries, that the index (on the
# loop) or the commit lock's screen (on the store's thread) hands the other (`_Parsed`): the
# latest this many, ample for the few committed between one upload's look and its commit.
_PARSED_KEPT = 512


class IdempotencyKeyReused(Exception):
    """The seller's idempotency key was first sent with another photo or other fields."""

    def __init__(self, key: str, existing: Registration) -> None:
        super().__init__(
            f"the Idempotency-Key {key!r} was used for registration {existing.id} with a "
            "different photo or fields; use a new key for a new upload"
        )
        self.existing = existing


async def request_digest(data: bytes, title: str | None, reference: str | None) -> str:
    """SHA-256 (hex) of an upload's bytes and fields: what a true retry repeats exactly."""
    fields = json.dumps({"title": title, "reference": reference}, sort_keys=True)
    digest = hashlib.sha256(fields.encode() + b"\n")
    if len(data) > _HASH_INLINE_MAX:
        await asyncio.to_thread(digest.update, data)  # hashlib releases the GIL
    else:
        digest.update(data)
    return digest.hexdigest()


def _same_request(earlier: Registration, key: str, digest: str) -> Registration:
    # Rows stored before digests were kept (None) cannot be told apart: a retry.
    if earlier.idempotency_digest not in (None, digest):
        raise IdempotencyKeyReused(key, earlier)
    return earlier


class Owners:
    """Which seller owns each indexed ref, compactly (one int32 per registration)."""

    def __init__(self) -> None:
        self._by_seq = array("i")
        self._names: list[str] = []
        self._ids: dict[str, int] = {}
        self._reserved: dict[int, str] = {}

    def set(self, ref: int, seller: str) -> None:
        if ref >= _RESERVATION_BASE:
            self._reserved[ref] = seller
            return
        code = self._code(seller)
        if ref >= len(self._by_seq):
            self._by_seq.extend(itertools.repeat(-1, ref + 1 - len(self._by_seq)))
        self._by_seq[ref] = code

    def get(self, ref: int) -> str | None:
        if ref >= _RESERVATION_BASE:
            return self._reserved.get(ref)
        if ref < len(self._by_seq) and self._by_seq[ref] >= 0:
            return self._names[self._by_seq[ref]]
        return None

    def set_many(self, refs: np.ndarray, sellers: np.ndarray, names: Sequence[str]) -> None:
        """`set` for a segment's refs: `names[sellers[i]]` owns `refs[i]`."""
        if not len(refs):
            return
        codes = np.array([self._code(n) for n in names], np.int32)
        top = int(refs.max()) + 1
        if top > len(self._by_seq):
            self._by_seq.extend(itertools.repeat(-1, top - len(self._by_seq)))
        np.frombuffer(self._by_seq, np.int32)[refs] = codes[sellers]

    def _code(self, seller: str) -> int:
        code = self._ids.get(seller)
        if code is None:
            code = self._ids[seller] = len(self._names)
            self._names.append(seller)
        return code

    def drop_reservation(self, ref: int) -> None:
        self._reserved.pop(ref, None)


@dataclass(frozen=True)
class ResolvedMatch:
    """A match with the registration it points at."""

    registration: Registration
    distances: dict[str, float | int]
    verdict: Literal["copy", "similar"]
    exact: bool = False
    geometry: Geometry | None = None  # stage 2's alignment of the upload onto it, if any
    clause: str = ""  # the matching rule's clause that decided (`matching.rule.CLAUSES`)
    explanation: str = ""  # that clause's words for a seller

    @property
    def stage(self) -> int:
        return clause_named(self.clause).stage if self.clause else 0


@dataclass(frozen=True)
class Outcome:
    kind: Literal["created", "existing", "conflict"]
    registration: Registration | None = None
    matches: list[ResolvedMatch] = field(default_factory=list)


FingerprintFn = Callable[[bytes], Awaitable[Fingerprint]]
# Fingerprint and thumbnail of an upload in one worker call (see thumbnail.py).
AnalyseFn = Callable[[bytes], Awaitable[tuple[Fingerprint, bytes | None]]]
# Stage 2 for several candidates of one upload: (query features, [(ref, stored features,
# the candidate's global PDQ pair, whether only words proposed it)]) → [(ref, evidence)];
# `matching.verify_many` in the pool.
VerifyItems = list[Stage2Item]
VerifyFn = Callable[[bytes, VerifyItems], Awaitable[list[tuple[int, Evidence]]]]


@dataclass
class _Pending:
    """An upload between its decision and its commit: what `recheck` needs to look again."""

    fp: Fingerprint
    verified: set[int]  # candidate refs stage 2 already verified for the decision
    seen: Stage1 | None = None  # the decision's last look: `recheck` reads only what changed
    # The store seq through which `seen` holds every registration (taken before the commit
    # lock by `_check_foreign`); None: not taken, the guard under the lock looks in full.
    through: int | None = None
    # The store seq through which the decision's last look held every registration (taken
    # with no await after that look); None: not known, `_check_foreign` looks again.
    decided_through: int | None = None


@dataclass(frozen=True)
class _Parsed:
    """A registration another process committed, parsed once for both readers of it."""

    seq: int
    seller: str
    fp: Fingerprint
    entry: IndexEntry


def _copy_refs(matches: list[Match]) -> list[int]:
    """The refs of `matches` whose verdict is copy, ascending."""
    return sorted(m.ref for m in matches if m.verdict == "copy")


class _ForeignScreen:
    """A batch's `store.ForeignScreen`: each upload's fingerprint and the seq its pre-lock
    look covers. `check` runs under the commit lock on the store's thread, touching nothing
    of the registry: a scratch matcher holds only the rows other processes committed since,
    and each upload is looked up in it under the same rule as in the index (stage 1, then
    stage 2 for its candidates, as `recheck` would), so it never needs the event loop."""

    def __init__(self, looks: list[tuple[Fingerprint, int] | None], after: int,
                 sides: QuerySides | None = None, known: dict[int, _Parsed] | None = None,
                 parsed: deque[_Parsed] | None = None) -> None:
        self._looks = looks
        self.after = after
        self._sides = sides  # the uploads' query sides, made on the loop already
        self._known = known or {}  # rows the index has parsed already, by seq
        self._parsed = parsed  # where the rows parsed here go, for the index (thread-safe)

    def check(self, rows: Sequence[StoredFingerprint]) -> list[StoreError | None] | None:
        if not rows:
            return [None] * len(self._looks)
        parsed: list[_Parsed] = []
        features: dict[int, bytes] = {}
        for row in rows:
            known = self._known.get(row.seq)
            if known is None:
                fp = Fingerprint.from_store(
                    row.sha256, row.perceptual, row.features, row.width, row.height)
                known = _Parsed(row.seq, row.seller, fp, index_entry(fp))
                if self._parsed is not None:
                    self._parsed.append(known)
            parsed.append(known)
            if row.features is not None:
                features[row.seq] = row.features
        scratch: Matcher | None = None
        verdicts: list[StoreError | None] = []
        newest = max(row.seq for row in rows)
        for look in self._looks:
            # None: not decided by `register`, nothing to guard; a look that covered every
            # row has nothing to look at (a batch's rows start after its lowest `through`).
            if look is None or look[1] >= newest:
                verdicts.append(None)
                continue
            fp, through = look
            held = self._sides.get(id(fp)) if self._sides else None
            query = held[1] if held is not None and held[0] is fp else word_query(fp)
            if not any(could_match(fp, query, p.fp, p.entry) for p in parsed if p.seq > through):
                verdicts.append(None)  # no row it could match: no scratch matcher, no search
                continue
            if scratch is None:
                scratch = Matcher.scratch(self._sides)
                for p in parsed:
                    scratch.add(p.seq, p.fp, p.entry)
            # Stage 1 and stage 2 under the index's rule, for the rows past this upload's
            # look only, every word candidate, and on past a similar-only hash match.
            copies = _copy_refs(scratch.match(fp, features.get, limit=None, after=through,
                                              past_similar=True))
            verdicts.append(
                RegistrationSuperseded(f"registration {copies[0]} came first") if copies else None
            )
        return verdicts


class Registry:
    def __init__(
        self,
        store: RegistrationStore,
        matcher: Matcher,
        fingerprint: FingerprintFn,
        analyse: AnalyseFn | None = None,
        verify: VerifyFn | None = None,
        segments: SegmentDir | None = None,
    ) -> None:
        self.store = store
        self.segments = segments  # None: the whole index is built in memory at start
        self._segments_opened = False
        self._since_segment = 0  # registrations indexed since the last segment was written
        self._persisting = False
        self._mapped: tuple[str, ...] = ()  # names of the segments the matcher searches
        self._manifest_seen: tuple[int, int, int] | None = None  # its (inode, mtime, size)
        self._mapped_through = 0
        self._refreshing = False
        self.matcher = matcher
        self.owners = Owners()
        self._fingerprint = fingerprint
        self._analyse = analyse
        self._verify = verify  # None: verify in this process (tests, tools)
        self._reservations = itertools.count(_RESERVATION_BASE)
        self._inflight: dict[int, asyncio.Future[Registration]] = {}
        self._pending: dict[str, _Pending] = {}  # registration id → its decision's inputs
        self._reserved_features: dict[int, bytes] = {}  # reservation ref → its feature blob
        # seq → the reservation it was committed from (the latest few): stage 2's evidence
        # for the reservation holds for the seq (the same fingerprint; `verify` is pure).
        self._reservation_of: dict[int, int] = {}
        # The index's generation when it last read registrations of other processes.
        self._foreign_generation = 0
        self.indexed_through = 0  # highest store seq the index has seen
        # A bulk load has read rows past what the index holds until it finishes.
        self._bulk_loading = 0
        # This process's own registrations committed past `indexed_through` (a gap below
        # them): indexed already, so `load_index` does not read them back.
        self._own_ahead: set[int] = set()
        # Other processes' rows parsed by the screen (appended on the store's thread) and
        # by `load_index` (the latest _PARSED_KEPT, by seq): each is parsed once (`_Parsed`).
        self._screened: deque[_Parsed] = deque(maxlen=_PARSED_KEPT)
        self._followed: OrderedDict[int, _Parsed] = OrderedDict()
        store.guard_registrations(self.recheck, self.screen)

    async def load_index(self) -> int:
        """Add every stored registration not yet in the index; returns how many it added.

        Called at start and then every `follow` interval, so the index also holds
        what other replicas registered. Stores commit registrations in `seq`
        order, so everything up to the highest seq read has been seen. Rows
        indexed already are not read: the process's own, and other processes' that
        the commit lock's screen parsed (`_Parsed`).
        """
        added = 0
        if self.segments is not None and not self._segments_opened:
            self._segments_opened = True
            try:
                added = await self._open_segments(self.segments)
            except OSError as exc:  # e.g. a read-only or full disk: serve from memory
                log.error("index directory %s unusable (%s): the index is built in memory",
                          self.segments.path, exc)
                self.segments = None
        # What needs no read: other processes' rows the screen has parsed (indexed here, now)
        # and this process's own past a gap (indexed when committed). Each is committed and
        # stores commit in seq order, so once the rows between them are read, the index holds
        # everything up to the highest of them.
        held: list[int] = []
        while self._screened:
            parsed = self._screened.popleft()
            if parsed.seq > self.indexed_through and self.owners.get(parsed.seq) is None:
                self._index_parsed(parsed)
                held.append(parsed.seq)
        if held:  # a look while the rows are read must know
            self._foreign_generation = self.matcher.generation
        indexed = len(held)  # registrations this call indexes
        held.extend(seq for seq in self._own_ahead if seq > self.indexed_through)
        held.sort()
        # A few rows (following other replicas) go straight into the index's tail;
        # past _BULK_FROM rows (the load at start) the rest is built in one pass. Made only
        # then: a follow's read (every upload makes one) has no use for its empty columns.
        bulk: BulkLoad | None = None
        try:
            async for stored in self.store.iter_fingerprints(after_seq=self.indexed_through,
                                                             skip=held):
                if self.owners.get(stored.seq) is None:  # else registered here, already indexed
                    fp = Fingerprint.from_store(
                        stored.sha256, stored.perceptual, stored.features, stored.width,
                        stored.height
                    )
                    if added + indexed < _BULK_FROM:
                        self._index_parsed(_Parsed(stored.seq, stored.seller, fp,
                                                   self.matcher.entry(fp)))
                        # At once, not at the end: a look between two pages must know.
                        self._foreign_generation = self.matcher.generation
                    else:
                        if bulk is None:
                            bulk = self.matcher.bulk()
                            self._bulk_loading += 1
                        bulk.add(stored.seq, fp)
                        self.owners.set(stored.seq, stored.seller)
                    indexed += 1
                self.indexed_through = max(self.indexed_through, stored.seq)
            if bulk is not None:
                bulk.finish()
        finally:
            if bulk is not None:
                self._bulk_loading -= 1
        if held:  # the read is complete: every row between them has been indexed
            self.indexed_through = max(self.indexed_through, held[-1])
        self._own_ahead = {seq for seq in self._own_ahead if seq > self.indexed_through}
        if indexed:
            self._since_segment += indexed
            self._foreign_generation = self.matcher.generation
        return added + indexed

    def _index_parsed(self, parsed: _Parsed) -> None:
        """Index another process's registration, and keep it for the screen (`_Parsed`)."""
        self.matcher.add(parsed.seq, parsed.fp, parsed.entry)
        self.owners.set(parsed.seq, parsed.seller)
        self._followed[parsed.seq] = parsed
        if len(self._followed) > _PARSED_KEPT:
            self._followed.popitem(last=False)

    async def _open_segments(self, directory: SegmentDir) -> int:
        """Map the index's segments, first writing segments for what the store holds past
        them (all of a store from before segments, in UPGRADE_ROWS steps, logged) when that
        is at least SEGMENT_ROWS; what is left is loaded into memory. Returns the count."""
        await asyncio.to_thread(directory.open)  # drops damaged segments from the manifest
        after = directory.through
        columns, sellers, through, written = Columns(), [], after, 0
        async for stored in self.store.iter_fingerprints(after_seq=after):
            columns.add(stored.seq, Fingerprint.from_store(
                stored.sha256, stored.perceptual, stored.features, stored.width, stored.height))
            sellers.append(stored.seller)
            through = stored.seq
            if len(columns) >= UPGRADE_ROWS:
                await asyncio.to_thread(directory.add, columns, sellers, after, through)
                written += len(columns)
                log.info("index: %d registrations written to segments (through seq %d)",
                         written, through)
                columns, sellers, after = Columns(), [], through
        if len(columns) >= SEGMENT_ROWS:
            await asyncio.to_thread(directory.add, columns, sellers, after, through)
            columns, sellers, after = Columns(), [], through
        seen = await asyncio.to_thread(directory.stamp)
        segments = await asyncio.to_thread(directory.open)
        self._manifest_seen = seen
        self._mapped = tuple(s.name for s in segments)
        self._mapped_through = segments[-1].through if segments else 0
        count = 0
        for segment in segments:
            self.matcher.attach(segment)
            self.owners.set_many(segment.refs, segment.sellers, segment.names)
            count += len(segment.refs)
        mapped = segments[-1].through if segments else 0
        self.indexed_through = max(self.indexed_through, mapped)
        if mapped != after:  # another process changed the manifest meanwhile: the rows past
            return count  # what is mapped are read again by load_index
        self.matcher.adopt(columns)
        for ref, seller in zip(columns.refs, sellers, strict=True):
            self.owners.set(ref, seller)
        self._since_segment = len(columns)
        self.indexed_through = max(self.indexed_through, through)
        log.info("index: %d registrations in %d segment(s), %d more in memory", count,
                 len(segments), len(columns))
        return count + len(columns)

    async def persist(self) -> bool:
        """Write the registrations past the last segment as a new one, once there are
        SEGMENT_ROWS of them (read back from the store, the source of truth, and parsed off
        the event loop). This process keeps them in memory; the next start maps them."""
        directory = self.segments
        if directory is None or self._persisting or self._since_segment < SEGMENT_ROWS:
            return False
        self._persisting = True
        try:
            after = await asyncio.to_thread(lambda: directory.through)
            columns, sellers, through = Columns(), [], after
            batch: list[StoredFingerprint] = []

            def parse(items: list[StoredFingerprint]) -> None:
                for stored in items:
                    columns.add(stored.seq, Fingerprint.from_store(
                        stored.sha256, stored.perceptual, stored.features, stored.width,
                        stored.height))

            async for stored in self.store.iter_fingerprints(after_seq=after):
                batch.append(stored)
                sellers.append(stored.seller)
                through = stored.seq
                if len(batch) >= 1024:
                    await asyncio.to_thread(parse, batch)
                    batch = []
                    if len(columns) >= UPGRADE_ROWS:
                        break
            await asyncio.to_thread(parse, batch)
            if len(columns) < SEGMENT_ROWS:  # another process wrote them: count what is left
                self._since_segment = len(columns)
                return False
            written = await asyncio.to_thread(directory.add, columns, sellers, after, through)
            if written:
                log.info("index: registrations through seq %d written to a segment", through)
            self._since_segment = 0
            await self.refresh()
            return written
        finally:
            self._persisting = False

    async def refresh(self) -> bool:
        """Map the segments written since (by this process or another on the directory, or
        merged), swap them in, and drop from memory the registrations they cover. Cheap
        when the manifest is unchanged (one stat). True if the mapped segments changed."""
        directory = self.segments
        if directory is None or not self._segments_opened or self._refreshing:
            return False
        self._refreshing = True
        try:
            seen = await asyncio.to_thread(directory.stamp)
            if seen == self._manifest_seen:
                return False
            segments = await asyncio.to_thread(directory.open)
            self._manifest_seen = seen
            names = tuple(s.name for s in segments)
            through = segments[-1].through if segments else 0
            if names == self._mapped or through < self._mapped_through:
                # fewer (a damaged segment dropped): keep what is mapped, its pages stay valid
                return False
            self.matcher.replace_segments(segments)
            # They may hold other processes' registrations this one had not read yet.
            self._foreign_generation = self.matcher.generation
            fresh = set(names) - set(self._mapped)
            for segment in segments:
                if segment.name in fresh:
                    self.owners.set_many(segment.refs, segment.sellers, segment.names)
            self._mapped = names
            self._mapped_through = through
            self.indexed_through = max(self.indexed_through, through)
            self._since_segment = self.matcher.resident
            log.info("index: %d segment(s) mapped through seq %d, %d registrations in memory",
                     len(segments), through, self.matcher.resident)
            return True
        finally:
            self._refreshing = False

    async def keep_segments(self, interval: float) -> None:
        """Call `persist` and `refresh` every `interval` seconds (with an index directory)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.persist()
                await self.refresh()
            except Exception:  # the store is the source of truth: log, try again later
                log.exception("cannot write an index segment")

    async def follow(self, interval: float) -> None:
        """Read other replicas' registrations into the index every `interval` seconds."""
        failing = False
        while True:
            await asyncio.sleep(interval)
            try:
                await self.load_index()
            except Exception as exc:  # a store outage: keep trying, say so once
                if not failing:
                    log.warning("cannot follow registrations: %s", exc)
                failing = True
            else:
                failing = False

    async def fingerprint(self, data: bytes) -> Fingerprint:
        return await self._fingerprint(data)

    async def analyse(self, data: bytes) -> tuple[Fingerprint, bytes | None]:
        """What registering needs: the fingerprint and the thumbnail to keep, if any."""
        if self._analyse is None:
            return await self._fingerprint(data), None
        return await self._analyse(data)

    async def _match(
        self,
        fp: Fingerprint,
        verified: dict[int, Evidence | None] | None = None,
        *,
        complete: bool = False,
    ) -> tuple[list[Match], Stage1]:
        """Both stages of matching, and the final look (for `recheck`); returns with no
        await after that look.

        `verified` (ref → evidence, None when a candidate could not be verified)
        is filled in and may be passed again to skip what was verified already.
        A stage-1 copy ends the search (a registration needs no more), unless
        `complete` (a check, the desk's compare): then the other candidates are
        verified too, so similar registrations are listed beside the copy.
        """
        verified = {} if verified is None else verified
        seen: Stage1 | None = None
        for round_ in range(_MAX_ROUNDS + 1):
            # After an await, only what the index gained or lost since is read (look_again).
            seen = (self.matcher.look(fp, stop_at_copy=not complete) if seen is None
                    else self.matcher.look_again(seen, stop_at_copy=not complete))
            found, candidates = seen.found, seen.candidates
            if candidates is None:
                return found, seen  # stage 1 decides: no verification needed
            for c in candidates:
                was = self._reservation_of.get(c.ref)
                if c.ref not in verified and was in verified:
                    verified[c.ref] = verified[was]
            todo = [c for c in candidates if c.ref not in verified]
            if not todo or round_ == _MAX_ROUNDS:
                decided = [decide(c, verified.get(c.ref)) for c in candidates]
                return rank(found + [m for m in decided if m is not None]), seen
            await self._stage2(fp, todo, verified)
        raise AssertionError("unreachable: the last round returns")

    async def _stage2(
        self, fp: Fingerprint, candidates: list[Candidate], verified: dict[int, Evidence | None]
    ) -> None:
        """Verify `candidates` with their stored features, in the pool; record the evidence."""
        for c in candidates:
            verified[c.ref] = None  # unless evidence arrives below
        if fp.features is None:
            return
        blobs = {
            c.ref: self._reserved_features[c.ref]
            for c in candidates
            if c.ref in self._reserved_features
        }
        blobs.update(
            await self.store.get_features(c.ref for c in candidates if c.ref < _RESERVATION_BASE)
        )
        items: VerifyItems = [(c.ref, blobs[c.ref], c.global_pair, c.by_words)
                              for c in candidates if c.ref in blobs]
        if not items:
            return
        if self._verify is None or _tiny(fp.features, items):
            results = verify_many(fp.features, items)  # pure: the pool's answer, bit for bit
        else:
            results = await self._verify(fp.features, items)
        verified.update(results)

    async def register(
        self,
        who: Principal,
        data: bytes,
        *,
        title: str | None = None,
        reference: str | None = None,
        idempotency_key: str | None = None,
    ) -> Outcome:
        """Decide an upload and store it if new.

        Raises IdempotencyKeyReused when the key was first sent with another
        photo or other fields; the same ones again get the first answer.
        """
        digest = None
        if idempotency_key is not None:
            digest = await request_digest(data, title, reference)
            earlier = await self.store.find_by_idempotency_key(who.seller, idempotency_key)
            if earlier is not None:
                return Outcome("existing", _same_request(earlier, idempotency_key, digest))
        fp, thumbnail = await self.analyse(data)
        verified: dict[int, Evidence | None] = {}  # stage 2's evidence, kept across rounds
        while True:
            # Read the other processes' rows before deciding, so the decision's look covers
            # them and the pre-lock look has nothing left to do (`_check_foreign`).
            await self.load_index()
            decided = await self._decide(who, fp, verified)
            if isinstance(decided, Outcome):
                return decided
            # No await since the decision's last look (`_decide` returns it right after).
            pending = _Pending(fp, set(verified), decided)
            pending.decided_through = None if self._bulk_loading else self.indexed_through
            try:
                return await self._store_new(
                    who, fp, thumbnail, title, reference, idempotency_key, digest, pending,
                )
            except RegistrationSuperseded:
                continue  # another replica committed a copy first: decide again, against it

    async def _decide(
        self, who: Principal, fp: Fingerprint, verified: dict[int, Evidence | None],
    ) -> Outcome | Stage1:
        """`existing` or `conflict` from what is indexed; when the upload is new, the
        decision's final look (`_Pending.seen`).

        Returns with no await after the final index read, so the caller can
        reserve the fingerprint before anyone else searches (module docstring).
        """
        while True:
            exact = await self.store.find_by_sha256(fp.sha256)
            matches, seen = await self._match(fp, verified)
            candidates = sorted({*_copy_refs(matches), *(r.seq for r in exact)})
            if not candidates:
                return seen
            first = candidates[0]
            owner = self.owners.get(first)
            if owner == who.seller:
                return Outcome("existing", await self._registration_for(first))
            if owner is None:
                return seen
            inflight = self._inflight.get(first)
            if inflight is not None:
                # Another seller's upload of this photo is still being committed:
                # wait for it, then decide against the stored registration (a 409
                # names it), or without it if its commit failed.
                with contextlib.suppress(Exception):
                    await asyncio.shield(inflight)
                continue
            resolved = await self.resolve(matches, exact, only_copies=True, fp=fp)
            others = [m for m in resolved if m.registration.seller != who.seller]
            return Outcome("conflict", None, others)

    async def _store_new(
        self,
        who: Principal,
        fp: Fingerprint,
        thumbnail: bytes | None,
        title: str | None,
        reference: str | None,
        idempotency_key: str | None,
        idempotency_digest: str | None,
        pending: _Pending,
    ) -> Outcome:
        """Reserve the fingerprint, commit the registration, index it under its seq."""
        ref = next(self._reservations)
        self.matcher.add(ref, fp)
        self.owners.set(ref, who.seller)
        if fp.features is not None:
            self._reserved_features[ref] = fp.features
        future: asyncio.Future[Registration] = asyncio.get_running_loop().create_future()
        self._inflight[ref] = future
        perceptual, features = fp.to_store()
        new = NewRegistration(
            id=new_registration_id(),
            seller=who.seller,
            sha256=fp.sha256,
            perceptual=perceptual,
            received_at=format_time(utc_now()),
            width=fp.width,
            height=fp.height,
            title=title,
            reference=reference,
            idempotency_key=idempotency_key,
            idempotency_digest=idempotency_digest,
            features=features,
            thumbnail=thumbnail,
            seller_salt=os.urandom(SALT_SIZE),
        )
        self._pending[new.id] = pending
        registration: Registration | None = None
        try:
            await self._check_foreign(pending)
            registration = await self.store.add_registration(new)
        except DuplicateIdempotencyKey as dup:
            future.set_result(dup.existing)
            assert idempotency_key is not None and idempotency_digest is not None
            return Outcome(
                "existing", _same_request(dup.existing, idempotency_key, idempotency_digest)
            )
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody logs it twice
            raise
        finally:
            if registration is None:
                self.matcher.discard(ref)
            else:  # indexed once: the reservation's entries become the seq's (no await)
                self.matcher.rekey(ref, registration.seq, fp)
            self.owners.drop_reservation(ref)
            self._reserved_features.pop(ref, None)
            self._inflight.pop(ref, None)
            self._pending.pop(new.id, None)
        assert registration is not None  # else the try returned or raised
        future.set_result(registration)
        self._reservation_of[registration.seq] = ref
        if len(self._reservation_of) > _RESERVATIONS_KEPT:
            del self._reservation_of[next(iter(self._reservation_of))]
        self._since_segment += 1
        self.owners.set(registration.seq, registration.seller)
        # Stores commit in seq order, so with no seq between it and the index's last, nothing
        # unread lies below it: the next load_index need not read this row back (its blob).
        # With a gap (another replica's rows, or a batch resuming out of order) it waits,
        # and the next load_index reads the rows below it but not it.
        if registration.seq == self.indexed_through + 1:
            self.indexed_through = registration.seq
        else:
            self._own_ahead.add(registration.seq)
        return Outcome("created", registration)

    async def recheck(self, batch: Sequence[NewRegistration]) -> list[StoreError | None]:
        """The store's last look before writing `batch` (`RegistrationStore.guard_registrations`).

        A shared store calls this under the lock that orders registration
        commits, so reading the index up to date here sees everything other
        replicas committed. An upload that has since become a copy of a stored
        registration is refused (`RegistrationSuperseded`), and `register`
        decides it again: a 409 if that is another seller's, a 200 with it if
        it is the uploader's own. Two replicas never register one photo twice.

        Stage 1 is read for every upload, but only for what the index gained or
        lost since the decision's last look (`Matcher.look_again`: the same
        copies and a superset of the candidates a full look finds); stage 2
        verifies only the candidates its decision had not verified
        (registrations committed since), so in the usual case this adds no
        verification under the lock.
        """
        await self.load_index()
        verdicts: list[StoreError | None] = []
        for new in batch:
            pending = self._pending.get(new.id)
            refs = [] if pending is None else await self._recheck_one(pending)
            stored = [ref for ref in refs if ref < _RESERVATION_BASE]  # not this batch's
            verdicts.append(
                RegistrationSuperseded(f"registration {stored[0]} came first") if stored else None
            )
        return verdicts

    async def _check_foreign(self, pending: _Pending) -> None:
        """The guard's look, before the commit lock: read what other processes committed,
        and when some of it arrived since the decision's last look, look at it (stage 2, a
        pool round trip, included). Under the lock the store then screens only the rows
        committed after `pending.through`, on its own thread (`screen`).

        When the decision verified every candidate it saw and the index has read no other
        process's row since (there is no await from the decision to here), its look stands
        as the pre-lock look: the screen then reads everything committed after it
        (`decided_through`), and no second look (a scratch matcher and a word search, about
        a millisecond) is made here."""
        seen = pending.seen
        if (pending.decided_through is not None and seen is not None
                and seen.candidates is not None
                and self._foreign_generation <= seen.generation
                and all(c.ref in pending.verified for c in seen.candidates)):
            pending.through = pending.decided_through
            return
        await self.load_index()
        through = self.indexed_through  # no await from here to the look: it covers this far
        if pending.seen is None or self._foreign_generation > pending.seen.generation:
            stored = [ref for ref in await self._recheck_one(pending) if ref < _RESERVATION_BASE]
            if stored:
                raise RegistrationSuperseded(f"registration {stored[0]} came first")
        # During a bulk load the index lags `indexed_through`: leave it to the whole guard.
        pending.through = None if self._bulk_loading else through

    def screen(self, batch: Sequence[NewRegistration]) -> _ForeignScreen | None:
        """The batch's screen for the rows committed after its uploads' pre-lock looks
        (`RegistrationStore.guard_registrations`); None when one of them has no such look."""
        looks: list[tuple[Fingerprint, int] | None] = []
        for new in batch:
            pending = self._pending.get(new.id)
            if pending is None:
                looks.append(None)
                continue
            if pending.through is None:
                return None
            looks.append((pending.fp, pending.through))
        after = min((look[1] for look in looks if look is not None), default=self.indexed_through)
        # What the screen need not make again on its thread: the uploads' query sides and
        # the rows past `after` the index has parsed already.
        known: dict[int, _Parsed] = {}
        for seq in reversed(self._followed):
            if seq <= after:
                break
            known[seq] = self._followed[seq]
        sides = self.matcher.query_sides(look[0] for look in looks if look is not None)
        return _ForeignScreen(looks, after, sides, known, self._screened)

    async def _recheck_one(self, pending: _Pending) -> list[int]:
        """Stored registrations `pending` is now a copy of (stage 1, then unverified stage 2)."""
        # Not stopping at a copy: this upload's own reservation is one, and is not stored.
        seen = (self.matcher.look(pending.fp, stop_at_copy=False) if pending.seen is None
                else self.matcher.look_again(pending.seen, stop_at_copy=False,
                                             below=_RESERVATION_BASE))
        pending.seen = seen
        # Reservations (this upload's own among them) are not stored registrations.
        copies = [ref for ref in _copy_refs(seen.found) if ref < _RESERVATION_BASE]
        if copies:
            return copies
        assert seen.candidates is not None  # a look that does not stop at a copy has them
        fresh = [
            c
            for c in seen.candidates
            if c.ref < _RESERVATION_BASE and c.ref not in pending.verified
            and self._reservation_of.get(c.ref) not in pending.verified
        ]
        if not fresh:
            return []
        evidence: dict[int, Evidence | None] = {}
        await self._stage2(pending.fp, fresh, evidence)
        pending.verified.update(evidence)
        decided = [decide(c, evidence.get(c.ref)) for c in fresh]
        return _copy_refs([m for m in decided if m is not None])

    async def _registration_for(self, ref: int) -> Registration:
        inflight = self._inflight.get(ref)
        if inflight is not None:
            return await asyncio.shield(inflight)
        found = await self.store.get_registrations([ref])
        return found[ref]

    async def resolve(
        self,
        matches: list[Match],
        exact: list[Registration] | None = None,
        *,
        only_copies: bool = False,
        fp: Fingerprint | None = None,
    ) -> list[ResolvedMatch]:
        """Attach registrations to matches, oldest first; exact duplicates count as copies.

        With the upload's `fp`, every match also carries the global hashes'
        distances to the registration (`pdq`, `phash`) where stage 1 did not
        record them: a stage-2 copy is reported with the same names.
        """
        by_ref = {m.ref: m for m in matches if m.ref < _RESERVATION_BASE}
        if only_copies:
            by_ref = {ref: m for ref, m in by_ref.items() if m.verdict == "copy"}
        exact = exact or []
        registrations = await self.store.get_registrations(by_ref)
        out: dict[int, ResolvedMatch] = {}
        for reg in exact:
            distances = dict(by_ref[reg.seq].distances) if reg.seq in by_ref else {}
            geometry = by_ref[reg.seq].geometry if reg.seq in by_ref else None
            same = clause_named("same_file")
            out[reg.seq] = ResolvedMatch(reg, _with_hashes(distances, fp, reg), "copy", exact=True,
                                         geometry=geometry, clause=same.name,
                                         explanation=explain(same, distances))
        for ref, match in by_ref.items():
            if ref not in out and ref in registrations:
                reg = registrations[ref]
                distances = _with_hashes(dict(match.distances), fp, reg)
                out[ref] = ResolvedMatch(reg, distances, match.verdict, geometry=match.geometry,
                                         clause=match.clause, explanation=match.explanation)
        return [out[ref] for ref in sorted(out)]

    async def check(self, data: bytes) -> tuple[Fingerprint, list[ResolvedMatch]]:
        fp = await self.fingerprint(data)
        exact = await self.store.find_by_sha256(fp.sha256)
        matches, _ = await self._match(fp, complete=True)
        return fp, await self.resolve(matches, exact, fp=fp)

    async def check_with_thumbnail(
        self, data: bytes
    ) -> tuple[Fingerprint, bytes | None, list[ResolvedMatch]]:
        """`check`, and a thumbnail of the upload from the same decode (a dispute file's
        picture of the suspect; None when thumbnails are off or it cannot be made)."""
        fp, thumbnail = await self.analyse(data)
        exact = await self.store.find_by_sha256(fp.sha256)
        found, _ = await self._match(fp, complete=True)
        matches = await self.resolve(found, exact, fp=fp)
        return fp, thumbnail, matches


def _tiny(query: bytes, items: VerifyItems) -> bool:
    """Whether stage 2 of `items` is cheaper on the event loop than as a pool job: a small
    upload against few keypoint pairs, with no word candidates for the shortlist to rank
    (`_INLINE_KEYPOINTS`, `_INLINE_PAIRS`). A blob it cannot read goes to the pool."""
    if sum(len(item) > 3 and bool(item[3]) for item in items) > MAX_CANDIDATES:
        return False  # the shortlist would rank them (its kernel, compiled for the workers)
    try:
        upload = keypoint_layout(query).keypoints
        if upload > _INLINE_KEYPOINTS:
            return False
        pairs = 0
        for item in items:
            pairs += upload * keypoint_layout(item[1]).keypoints
            if pairs > _INLINE_PAIRS:
                return False
    except ValueError:
        return False
    return True


def _with_hashes(
    distances: dict[str, float | int], fp: Fingerprint | None, reg: Registration
) -> dict[str, float | int]:
    """`distances` plus the PDQ and pHash distances between `fp` and `reg` it lacks."""
    if fp is None:
        return distances
    stored = Fingerprint.from_store(reg.sha256, reg.perceptual, None, reg.width, reg.height)
    if "pdq" not in distances and "pdq" in fp.hashes and "pdq" in stored.hashes:
        distances["pdq"] = fp - stored
    if "phash" not in distances and "phash" in fp.hashes and "phash" in stored.hashes:
        distances["phash"] = stored.code("phash") - fp.code("phash")
    return distances
