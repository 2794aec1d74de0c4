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
