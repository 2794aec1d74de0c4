"""The registration decision while another seller's upload of the same photo is in flight."""

from __future__ import annotations

import asyncio

import imagegen
from shotstamp_service.auth import Principal
from shotstamp_service.fingerprint import DecodeLimits, Fingerprint, fingerprint
from shotstamp_service.matching import Matcher
from shotstamp_service.records import NewRegistration, Registration
from shotstamp_service.registry import Registry


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


async def test_two_replicas_never_both_accept_copies_of_one_photo(postgres_url):
    """Both replicas search before either commits, so neither index knows the other's
    upload; the store's insert lock and the registry's last look still let only one in."""
    from shotstamp_service.store.postgres import PostgresStore

    stores = [GatedStore(PostgresStore(postgres_url)) for _ in range(2)]
    for gated in stores:
        await gated._store.open()
    replicas = [Registry(gated._store, Matcher(), fingerprint_here) for gated in stores]
    for registry, gated in zip(replicas, stores, strict=True):
        registry.store = gated  # commits pass the gate; the guard stays on the real store
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
    from shotstamp_service.store.postgres import PostgresStore

    stores = [GatedStore(PostgresStore(postgres_url)) for _ in range(2)]
    for gated in stores:
        await gated._store.open()
    replicas = [Registry(gated._store, Matcher(), fingerprint_here) for gated in stores]
    for registry, gated in zip(replicas, stores, strict=True):
        registry.store = gated
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
