"""The registration decision while another seller's upload of the same photo is in flight."""

from __future__ import annotations

import asyncio

from shotstamp_service.http.auth import Principal
from shotstamp_service.matching.engine import Matcher
from shotstamp_service.matching.fingerprint import DecodeLimits, Fingerprint, fingerprint
from shotstamp_service.records import NewRegistration, Registration
from shotstamp_service.registry import Registry
from tests.kit import imagegen


class GatedStore:
    """A real store whose registration commits wait until the test opens the gate,
    as a commit on a busy database does."""

    def __init__(self, store) -> None:
        self._store = store
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    def __getattr__(self, name):
        return getattr(self._store, name)

    async def add_registration(self, new: NewRegistration) -> Registration:
        self.waiting.set()
        await self.gate.wait()
        return await self._store.add_registration(new)


async def fingerprint_here(data: bytes) -> Fingerprint:
    return fingerprint(data, DecodeLimits())


async def test_a_copy_of_a_registration_still_being_committed_is_a_conflict(store_target):
    store = store_target.make()
    await store.open()
    gated = GatedStore(store)
    registry = Registry(gated, Matcher(), fingerprint_here)  # type: ignore[arg-type]
    acme = Principal("acme", "seller", "k1")
    thief = Principal("thief", "seller", "k2")
    original = imagegen.jpeg(60)

    first = asyncio.create_task(registry.register(acme, original))
    await gated.waiting.wait()  # acme's registration is reserved, its commit under way
    copy = asyncio.create_task(registry.register(thief, imagegen.recompressed_copy(original)))
    exact = asyncio.create_task(registry.register(thief, original))
    await asyncio.sleep(0.2)
    assert not copy.done() and not exact.done()  # they wait for the commit to decide
    gated.gate.set()

    created = await first
    assert created.kind == "created"
    for task, is_exact in ((copy, False), (exact, True)):
        outcome = await task
        assert outcome.kind == "conflict"
        (match,) = outcome.matches
        assert match.registration.id == created.registration.id
        assert match.exact is is_exact
    assert len(registry.matcher) == 1
    await store.close()


async def _two_replicas(postgres_url: str) -> tuple[list[GatedStore], list[Registry]]:
    """Two registries on one PostgreSQL database, each committing through its own gate
    (the commit-order guard stays on the real store)."""
    from shotstamp_service.store.postgres import PostgresStore

    stores = [GatedStore(PostgresStore(postgres_url)) for _ in range(2)]
    for gated in stores:
        await gated._store.open()
    replicas = [Registry(gated._store, Matcher(), fingerprint_here) for gated in stores]
    for registry, gated in zip(replicas, stores, strict=True):
        registry.store = gated
    return stores, replicas


async def test_two_replicas_never_both_accept_copies_of_one_photo(postgres_url):
    """Both replicas search before either commits, so neither index knows the other's
    upload; the store's insert lock and the registry's last look still let only one in."""
    stores, replicas = await _two_replicas(postgres_url)
    original = imagegen.jpeg(61)
    uploads = [
        asyncio.create_task(replicas[0].register(Principal("acme", "seller", "k1"), original)),
        asyncio.create_task(
            replicas[1].register(
                Principal("thief", "seller", "k2"), imagegen.recompressed_copy(original)
            )
        ),
    ]
    for gated in stores:
        await gated.waiting.wait()  # both decided "new" and are about to commit
    for gated in stores:
        gated.gate.set()
    outcomes = sorted([await task for task in uploads], key=lambda o: o.kind)
    assert [o.kind for o in outcomes] == ["conflict", "created"]
    conflict, created = outcomes
    assert conflict.matches[0].registration.id == created.registration.id
    for gated in stores:
        await gated._store.close()


async def test_one_seller_uploading_one_photo_to_two_replicas_registers_it_once(postgres_url):
    stores, replicas = await _two_replicas(postgres_url)
    acme = Principal("acme", "seller", "k1")
    original = imagegen.jpeg(62)
    uploads = [
        asyncio.create_task(replicas[0].register(acme, original)),
        asyncio.create_task(replicas[1].register(acme, imagegen.recompressed_copy(original))),
    ]
    for gated in stores:
        await gated.waiting.wait()
    for gated in stores:
        gated.gate.set()
    outcomes = sorted([await task for task in uploads], key=lambda o: o.kind)
    assert [o.kind for o in outcomes] == ["created", "existing"]
    assert outcomes[0].registration.id == outcomes[1].registration.id
    for gated in stores:
        await gated._store.close()


def _crop_90(data: bytes) -> bytes:
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = image.size
    return imagegen.encode(image.crop((w // 20, h // 20, w - w // 20, h - h // 20)), quality=85)


async def test_a_crop_of_a_registration_still_being_committed_is_a_conflict(store_target):
    """Stage 2 verifies the reservation's own features (the commit has not stored them yet)."""
    store = store_target.make()
    await store.open()
    gated = GatedStore(store)
    registry = Registry(gated, Matcher(), fingerprint_here)  # type: ignore[arg-type]
    original = imagegen.encode(imagegen.detailed_photo(63))
    first = asyncio.create_task(registry.register(Principal("acme", "seller", "k1"), original))
    await gated.waiting.wait()
    crop = asyncio.create_task(registry.register(Principal("thief", "seller", "k2"),
                                                 _crop_90(original)))
    await asyncio.sleep(0.2)
    assert not crop.done()  # a stage-2 copy of an in-flight upload waits for its commit
    gated.gate.set()
    created, outcome = await first, await crop
    assert created.kind == "created" and outcome.kind == "conflict"
    (match,) = outcome.matches
    assert match.registration.id == created.registration.id
    assert match.distances["orb_inliers"] >= 20
    await store.close()


async def test_two_replicas_never_both_accept_an_original_and_its_crop(postgres_url):
    """The crop is a copy only for stage 2: the last look under the insert lock verifies
    the candidates registered since the decision."""
    stores, replicas = await _two_replicas(postgres_url)
    original = imagegen.encode(imagegen.detailed_photo(64))
    uploads = [
        asyncio.create_task(replicas[0].register(Principal("acme", "seller", "k1"), original)),
        asyncio.create_task(
            replicas[1].register(Principal("thief", "seller", "k2"), _crop_90(original))
        ),
    ]
    for gated in stores:
        await gated.waiting.wait()
    for gated in stores:
        gated.gate.set()
    outcomes = sorted([await task for task in uploads], key=lambda o: o.kind)
    assert [o.kind for o in outcomes] == ["conflict", "created"]
    assert outcomes[0].matches[0].registration.id == outcomes[1].registration.id
    for gated in stores:
        await gated._store.close()


async def test_registrations_stored_before_the_engine_are_still_matched(store_target):
    """A row with only the first release's pHash (no PDQ, no features) loads and matches."""
    from shotstamp_service.records import format_time, new_registration_id, utc_now

    store = store_target.make()
    await store.open()
    original = imagegen.jpeg(65)
    fp = fingerprint(original, DecodeLimits())
    await store.add_registration(
        NewRegistration(
            id=new_registration_id(),
            seller="acme",
            sha256="00" * 32,  # not the upload's bytes: matched by its pixels alone
            perceptual={"phash": fp.perceptual()["phash"]},
            received_at=format_time(utc_now()),
            width=fp.width,
            height=fp.height,
        )
    )
    registry = Registry(store, Matcher(), fingerprint_here)
    assert await registry.load_index() == 1
    outcome = await registry.register(
        Principal("thief", "seller", "k2"), imagegen.recompressed_copy(original)
    )
    assert outcome.kind == "conflict"
    (match,) = outcome.matches
    assert match.verdict == "copy" and match.distances["phash"] <= 6
    assert (await registry.register(Principal("b", "seller", "k3"), imagegen.jpeg(66))).kind == (
        "created"
    )
    await store.close()


class SellerGatedStore:
    """A real store whose registration commits wait for their seller's gate."""

    def __init__(self, store) -> None:
        self._store = store
        self.gates: dict[str, asyncio.Event] = {}
        self.waiting: dict[str, asyncio.Event] = {}

    def __getattr__(self, name):
        return getattr(self._store, name)

    async def add_registration(self, new: NewRegistration) -> Registration:
        self.waiting.setdefault(new.seller, asyncio.Event()).set()
        await self.gates.setdefault(new.seller, asyncio.Event()).wait()
        return await self._store.add_registration(new)


async def test_a_registration_verified_while_reserved_is_not_verified_again_once_stored(
    store_target, monkeypatch,
):
    """Stage 2 compared the upload with another seller's reservation; that upload commits
    first, and the guard sees it under its seq: the evidence stands (same fingerprint),
    nothing is verified twice (in the pool or on the loop), and both are registered."""
    import shotstamp_service.registry as registry_module
    from shotstamp_service.matching.engine import verify_many

    store = store_target.make()
    await store.open()
    gated = SellerGatedStore(store)
    pairs: list[int] = []

    def here(query: bytes, items):
        pairs.extend(item[0] for item in items)
        return verify_many(query, items)

    async def verify(query: bytes, items):
        return here(query, items)

    monkeypatch.setattr(registry_module, "verify_many", here)
    registry = Registry(gated, Matcher(), fingerprint_here, verify=verify)  # type: ignore[arg-type]
    acme, globex = Principal("acme", "seller", "k1"), Principal("globex", "seller", "k2")
    # Different photos, but with enough words in common to be a stage-2 candidate.
    first = asyncio.create_task(registry.register(acme, imagegen.jpeg(0)))
    await gated.waiting.setdefault("acme", asyncio.Event()).wait()
    second = asyncio.create_task(registry.register(globex, imagegen.jpeg(2)))
    await gated.waiting.setdefault("globex", asyncio.Event()).wait()
    assert len(pairs) == 1 and pairs[0] >= 1 << 62  # acme's reservation, verified
    gated.gates.setdefault("acme", asyncio.Event()).set()
    assert (await first).kind == "created"
    gated.gates.setdefault("globex", asyncio.Event()).set()
    assert (await second).kind == "created"
    assert len(pairs) == 1
    await store.close()


async def test_another_process_registration_is_verified_before_the_commit_lock(
    tmp_path, monkeypatch,
):
    """A registration another process committed after this upload's decision (read by the
    index's follow) is verified before the commit (in the pool or on the loop), not under
    SQLite's write lock, which every process's commits wait for."""
    import fcntl
    import os

    import shotstamp_service.registry as registry_module
    from shotstamp_service.matching.engine import verify_many
    from shotstamp_service.store.sqlite import SQLiteStore

    here, there = SQLiteStore(tmp_path / "db.sqlite"), SQLiteStore(tmp_path / "db.sqlite")
    await here.open()
    await there.open()
    lock_free: list[bool] = []

    async def verify(query: bytes, items):
        return checked(query, items)

    def checked(query: bytes, items):
        fd = os.open(here.write_lock_path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            lock_free.append(True)
        except BlockingIOError:
            lock_free.append(False)
        finally:
            os.close(fd)
        return verify_many(query, items)

    monkeypatch.setattr(registry_module, "verify_many", checked)
    registry = Registry(here, Matcher(), fingerprint_here, verify=verify)
    other = Registry(there, Matcher(), fingerprint_here)
    real = registry._check_foreign

    async def after_a_follow_tick(pending):
        # The other process registers a look-alike; this one's follow reads it.
        assert (await other.register(Principal("acme", "seller", "k1"),
                                     imagegen.jpeg(0))).kind == "created"
        assert await registry.load_index() == 1
        await real(pending)

    registry._check_foreign = after_a_follow_tick  # type: ignore[method-assign]
    outcome = await registry.register(Principal("globex", "seller", "k2"), imagegen.jpeg(2))
    assert outcome.kind == "created"
    assert lock_free == [True]  # verified once, outside the lock
    await here.close()
    await there.close()


async def _here_and_there(store_target):
    """Two registries on one database, as two processes (or replicas) have; `guard_calls`
    counts the whole guard's runs (the event-loop hop under the commit lock)."""
    here, there = store_target.make(), store_target.make()
    await here.open()
    await there.open()
    registry = Registry(here, Matcher(), fingerprint_here)
    other = Registry(there, Matcher(), fingerprint_here)
    guard_calls: list[int] = []

    async def counted(batch):
        guard_calls.append(len(batch))
        return await registry.recheck(batch)

    here.guard_registrations(counted, registry.screen)
    return here, there, registry, other, guard_calls


def _commit_elsewhere_after_the_pre_lock_look(registry: Registry, other: Registry,
                                              photo: bytes) -> list[str]:
    """Have `other` register `photo` (as acme) right after `registry`'s pre-lock look, before
    its commit takes the lock; `registry`'s index never follows it meanwhile."""
    real = registry._check_foreign
    kinds: list[str] = []

    async def then_the_other_commits(pending):
        await real(pending)
        if not kinds:
            kinds.append((await other.register(Principal("acme", "seller", "k1"), photo)).kind)

    registry._check_foreign = then_the_other_commits  # type: ignore[method-assign]
    return kinds


async def test_a_copy_committed_elsewhere_between_the_pre_lock_look_and_the_lock_is_refused(
    store_target,
):
    """The window the pre-lock look leaves: the store screens the rows committed since, under
    the commit lock on its own thread; a copy is refused there, without the event-loop hop."""
    here, there, registry, other, guard_calls = await _here_and_there(store_target)
    original = imagegen.jpeg(65)
    kinds = _commit_elsewhere_after_the_pre_lock_look(registry, other, original)
    outcome = await registry.register(Principal("thief", "seller", "k2"),
                                      imagegen.recompressed_copy(original))
    assert kinds == ["created"]
    assert outcome.kind == "conflict"
    (match,) = outcome.matches
    assert match.registration.seller == "acme"
    assert guard_calls == []  # decided by the screen, never waiting for the event loop
    await here.close()
    await there.close()


async def test_a_crop_committed_elsewhere_between_the_pre_lock_look_and_the_lock_is_refused(
    store_target,
):
    """A stage-2 copy in that window: the screen verifies the candidate itself, on the
    store's thread, without the pool or the event loop."""
    here, there, registry, other, guard_calls = await _here_and_there(store_target)
    original = imagegen.encode(imagegen.detailed_photo(66))
    kinds = _commit_elsewhere_after_the_pre_lock_look(registry, other, original)
    outcome = await registry.register(Principal("thief", "seller", "k2"), _crop_90(original))
    assert kinds == ["created"]
    assert outcome.kind == "conflict"
    assert outcome.matches[0].registration.seller == "acme"
    assert outcome.matches[0].stage == 2  # a copy for stage 2 only
    assert guard_calls == []
    await here.close()
    await there.close()


async def test_an_unrelated_registration_committed_in_that_window_costs_no_hop(store_target):
    here, there, registry, other, guard_calls = await _here_and_there(store_target)
    kinds = _commit_elsewhere_after_the_pre_lock_look(registry, other, imagegen.jpeg(67))
    outcome = await registry.register(Principal("globex", "seller", "k2"), imagegen.jpeg(68))
    assert kinds == ["created"]
    assert outcome.kind == "created"
    assert guard_calls == []
    await here.close()
    await there.close()


def test_the_screen_looks_only_for_uploads_whose_pre_lock_look_missed_a_row(monkeypatch):
    """A batch's rows start after its lowest `through`: an upload whose own look already
    covered every row is not looked up again (the look is where the screen's CPU goes), and
    one that did not is still refused as a copy."""
    from shotstamp_service.registry import _ForeignScreen
    from shotstamp_service.store import RegistrationSuperseded, StoredFingerprint

    original = fingerprint(imagegen.jpeg(70))
    perceptual, features = original.to_store()
    row = StoredFingerprint(7, "acme", original.sha256, perceptual, features, original.width,
                            original.height)
    copy = fingerprint(imagegen.recompressed_copy(imagegen.jpeg(70)))
    looked: list[Fingerprint] = []
    real = Matcher.search

    def counted(self: Matcher, fp: Fingerprint) -> list:  # type: ignore[type-arg]
        looked.append(fp)
        return real(self, fp)

    monkeypatch.setattr(Matcher, "search", counted)
    covered, missed = (copy, 7), (copy, 6)
    verdicts = _ForeignScreen([covered, missed, None], after=6).check([row])
    assert verdicts is not None
    assert verdicts[0] is None and verdicts[2] is None
    assert isinstance(verdicts[1], RegistrationSuperseded)
    assert looked == [copy]  # the missed upload's look alone


async def test_a_decision_that_saw_the_other_process_s_rows_needs_no_second_look(
    store_target,
):
    """The rows another process committed are read before the decision, so its look covers
    them: the pre-lock look is not repeated (it is a scratch matcher and a word search per
    upload), and a copy of such a row is still refused, by the decision itself."""
    here, there, registry, other, guard_calls = await _here_and_there(store_target)
    second_looks: list[object] = []
    real = registry._recheck_one

    async def counted(pending):
        second_looks.append(pending)
        return await real(pending)

    registry._recheck_one = counted  # type: ignore[method-assign]
    original = imagegen.jpeg(71)
    assert (await other.register(Principal("acme", "seller", "k1"), original)).kind == "created"
    outcome = await registry.register(Principal("globex", "seller", "k2"), imagegen.jpeg(72))
    assert outcome.kind == "created"
    assert second_looks == []
    copy = await registry.register(Principal("thief", "seller", "k3"),
                                   imagegen.recompressed_copy(original))
    assert copy.kind == "conflict"
    assert copy.matches[0].registration.seller == "acme"
    assert guard_calls == []
    await here.close()
    await there.close()


async def test_the_index_does_not_read_back_the_rows_it_committed_itself(store_target):
    """A registration's own row is indexed at its commit: the next `load_index` skips it
    (it used to read it back, feature blob and all, once per upload), also when another
    process's row lies below it unread: that row alone is read, or, when the screen under
    the commit lock parsed it, none (it is indexed from what the screen parsed)."""
    here, there, registry, other, _ = await _here_and_there(store_target)
    read: list[int] = []
    real = here._fingerprint_page

    async def page(after_seq: int, limit: int, skip=()):
        rows = await real(after_seq, limit, skip)
        read.extend(row.seq for row in rows)
        return rows

    here._fingerprint_page = page  # type: ignore[method-assign]
    seqs = []
    for n in (81, 82, 83):
        outcome = await registry.register(Principal("globex", "seller", "k2"), imagegen.jpeg(n))
        assert outcome.kind == "created"
        seqs.append(outcome.registration.seq)
        assert registry.indexed_through == outcome.registration.seq
    assert await registry.load_index() == 0
    assert read == []  # none of the three read back

    # Another process commits between this one's look and its commit: a gap below its seq.
    kinds = _commit_elsewhere_after_the_pre_lock_look(registry, other, imagegen.jpeg(84))
    outcome = await registry.register(Principal("globex", "seller", "k2"), imagegen.jpeg(85))
    assert kinds == ["created"] and outcome.kind == "created"
    foreign = outcome.registration.seq - 1
    assert registry.indexed_through == seqs[-1] < foreign  # not advanced over the unread row
    assert registry.owners.get(foreign) is None
    assert [parsed.seq for parsed in registry._screened] == [foreign]  # the screen's
    assert await registry.load_index() == 1  # the other's row, indexed; its own, skipped
    assert registry.owners.get(foreign) == "acme"
    assert registry.indexed_through == outcome.registration.seq
    assert read == []

    # The same gap, with what the screen parsed lost: the other's row is read, its own not.
    kinds = _commit_elsewhere_after_the_pre_lock_look(registry, other, imagegen.jpeg(86))
    outcome = await registry.register(Principal("globex", "seller", "k2"), imagegen.jpeg(87))
    assert kinds == ["created"] and outcome.kind == "created"
    foreign = outcome.registration.seq - 1
    registry._screened.clear()
    assert registry.owners.get(foreign) is None
    assert await registry.load_index() == 1
    assert registry.owners.get(foreign) == "acme"
    assert registry.indexed_through == outcome.registration.seq
    assert read == [foreign]
    # Both rows of the other's are found by their copies.
    for n in (84, 86):
        copy = await registry.register(Principal("thief", "seller", "k3"),
                                       imagegen.recompressed_copy(imagegen.jpeg(n)))
        assert copy.kind == "conflict" and copy.matches[0].registration.seller == "acme"
    await here.close()
    await there.close()


async def _register_crop(tmp_path, monkeypatch, *, inline: bool, original: bytes):
    """An original, then its crop by another seller (a copy only stage 2 finds), on a fresh
    store; with `inline` False the tiny stage 2 goes to the pool as before. Returns the pool
    jobs and the crop's outcome."""
    import shotstamp_service.registry as registry_module
    from shotstamp_service.matching.engine import verify_many

    if not inline:
        monkeypatch.setattr(registry_module, "_INLINE_PAIRS", 0)
    from shotstamp_service.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / f"{'here' if inline else 'pool'}.sqlite")
    await store.open()
    jobs: list[list[int]] = []

    async def pool(query: bytes, items):
        jobs.append([item[0] for item in items])
        return verify_many(bytes(query), [(i[0], bytes(i[1]), *i[2:]) for i in items])

    registry = Registry(store, Matcher(), fingerprint_here, verify=pool)
    first = await registry.register(Principal("acme", "seller", "k1"), original)
    assert first.kind == "created"
    crop = await registry.register(Principal("thief", "seller", "k2"), _crop_90(original))
    await store.close()
    monkeypatch.undo()
    return jobs, crop


async def test_a_tiny_stage_2_is_verified_on_the_loop_with_the_pool_s_evidence(
    tmp_path, monkeypatch,
):
    """A small upload against one candidate: verified on the event loop, no pool job, and
    the same conflict, clause, evidence and geometry as through the pool."""
    from shotstamp_service.matching.features import keypoint_layout
    from shotstamp_service.registry import _INLINE_KEYPOINTS

    original = imagegen.jpeg(7)
    fp = await fingerprint_here(_crop_90(original))
    assert fp.features is not None and keypoint_layout(fp.features).keypoints <= _INLINE_KEYPOINTS
    here_jobs, here = await _register_crop(tmp_path, monkeypatch, inline=True,
                                           original=original)
    pool_jobs, pooled = await _register_crop(tmp_path, monkeypatch, inline=False,
                                             original=original)
    assert here_jobs == [] and pool_jobs == [[1]]
    assert here.kind == pooled.kind == "conflict"
    assert [(m.registration.seq, m.verdict, m.clause, m.distances, m.geometry)
            for m in here.matches] == [(m.registration.seq, m.verdict, m.clause, m.distances,
                                        m.geometry) for m in pooled.matches]
    assert here.matches[0].stage == 2


async def test_a_large_upload_s_stage_2_still_goes_to_the_pool(tmp_path, monkeypatch):
    """An upload with more keypoints than `_INLINE_KEYPOINTS` (a real photo) is verified in
    the pool even against one candidate."""
    from shotstamp_service.matching.features import keypoint_layout
    from shotstamp_service.registry import _INLINE_KEYPOINTS

    original = imagegen.encode(imagegen.detailed_photo(3))
    fp = await fingerprint_here(_crop_90(original))
    assert fp.features is not None and keypoint_layout(fp.features).keypoints > _INLINE_KEYPOINTS
    jobs, crop = await _register_crop(tmp_path, monkeypatch, inline=True, original=original)
    assert jobs == [[1]] and crop.kind == "conflict"


async def _a_look_alike_reserved_during_stage_2(tmp_path, monkeypatch, *, inline: bool):
    """Nine photos registered; an upload with five word candidates among them (its first
    stage 2 a pool job: the shortlist ranks them); while that job runs, another seller's
    look-alike is reserved (its commit held). Returns the upload's pool jobs and the
    evidence the look-alike's reservation got."""
    import shotstamp_service.registry as registry_module
    from shotstamp_service.matching.engine import verify_many

    if not inline:
        monkeypatch.setattr(registry_module, "_INLINE_PAIRS", 0)
    from shotstamp_service.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / f"{'here' if inline else 'pool'}.sqlite")
    await store.open()
    gated = SellerGatedStore(store)
    for seller in ("acme", "globex", "thief"):
        gated.gates.setdefault(seller, asyncio.Event())
        gated.waiting.setdefault(seller, asyncio.Event())
    gated.gates["acme"].set()
    gated.gates["thief"].set()
    watching, started, release = [False], asyncio.Event(), asyncio.Event()
    jobs: list[list[int]] = []
    evidence: dict[int, dict] = {}

    def here(query: bytes, items):
        found = verify_many(query, items)
        if watching[0]:
            evidence.update((ref, e.as_dict()) for ref, e in found)
        return found

    async def pool(query: bytes, items):
        if watching[0] and not started.is_set():
            jobs.append([item[0] for item in items])
            started.set()
            await release.wait()  # the job runs while the look-alike is reserved
        elif watching[0]:
            jobs.append([item[0] for item in items])
        return here(query, items)

    monkeypatch.setattr(registry_module, "verify_many", here)
    registry = Registry(gated, Matcher(), fingerprint_here, verify=pool)  # type: ignore[arg-type]
    acme = Principal("acme", "seller", "k1")
    for seed in (0, 1, 3, 4, 5, 6, 7, 8, 9):
        assert (await registry.register(acme, imagegen.jpeg(seed))).kind == "created"
    watching[0] = True
    upload = asyncio.create_task(registry.register(Principal("thief", "seller", "k2"),
                                                   imagegen.jpeg(12)))
    await asyncio.wait_for(started.wait(), 10)
    watching[0] = False
    look_alike = asyncio.create_task(registry.register(Principal("globex", "seller", "k3"),
                                                       imagegen.jpeg(2)))
    await asyncio.wait_for(gated.waiting["globex"].wait(), 10)
    watching[0] = True
    release.set()
    assert (await asyncio.wait_for(upload, 30)).kind == "created"
    gated.gates["globex"].set()
    assert (await asyncio.wait_for(look_alike, 30)).kind == "created"
    await store.close()
    monkeypatch.undo()
    return jobs, {ref: e for ref, e in evidence.items() if ref >= 1 << 62}


async def test_a_look_alike_reserved_during_stage_2_is_verified_on_the_loop(
    tmp_path, monkeypatch,
):
    """The decision's later round (a candidate reserved while its first pool job ran) is
    verified on the event loop, not as a second job, with the evidence the job would give."""
    here_jobs, here = await _a_look_alike_reserved_during_stage_2(tmp_path, monkeypatch,
                                                                  inline=True)
    pool_jobs, pooled = await _a_look_alike_reserved_during_stage_2(tmp_path, monkeypatch,
                                                                    inline=False)
    assert len(here_jobs) == 1 and len(here_jobs[0]) > 3  # the shortlist's job only
    assert len(pool_jobs) == 2 and len(pool_jobs[1]) == 1 and pool_jobs[1][0] >= 1 << 62
    assert len(here) == len(pooled) == 1
    assert list(here.values()) == list(pooled.values())
