"""`AsyncClient` against the real service (real store, sealer and fingerprint pool)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
from datetime import timedelta

import pytest

from shotstamp import (
    AsyncClient,
    AuthError,
    CheckpointInfo,
    ConflictError,
    Match,
    NotFoundError,
    NotSealedError,
    ProofBundle,
    Registration,
    VerificationError,
    verify_proof,
)
from tests.kit import imagegen


def base_url(service) -> str:
    return str(service.client.make_url("")).rstrip("/")


async def vkeys(client: AsyncClient) -> list[str]:
    return (await client.keys()).vkeys


async def test_register_wait_returns_a_sealed_registration_whose_proof_verifies(service):
    key = await service.key("acme")
    photo = imagegen.jpeg(201)
    async with AsyncClient(base_url(service), api_key=key) as client:
        reg = await client.register(photo, wait=True, title="Blue kettle", reference="SKU-1")
        assert isinstance(reg, Registration)
        assert reg.created and reg.sealed and reg.status == "sealed"
        assert reg.sha256 == hashlib.sha256(photo).hexdigest()
        assert (reg.seller, reg.title, reg.reference) == ("acme", "Blue kettle", "SKU-1")
        assert isinstance(reg.proof, ProofBundle)
        verified = verify_proof(reg.proof, keys=await vkeys(client), image=photo)
        assert verified.registration_id == reg.id
        fetched = await client.get(reg.id)
        assert (fetched.id, fetched.sealed, fetched.created) == (reg.id, True, False)
        again = await client.proof(reg.id)
        assert again.to_dict() == reg.proof.to_dict()


async def test_register_takes_a_path_bytes_or_a_file_object(service, tmp_path):
    key = await service.key("acme")
    path = tmp_path / "kettle.jpg"
    path.write_bytes(imagegen.jpeg(202))
    async with AsyncClient(base_url(service), api_key=key) as client:
        from_path = await client.register(path)
        from_str = await client.register(str(path))
        with path.open("rb") as handle:
            from_file = await client.register(handle)
        from_buffer = await client.register(io.BytesIO(path.read_bytes()))
        assert from_path.created and from_path.status in ("pending", "sealed")
        # The same photo again is "already yours": the same registration, 200.
        for other in (from_str, from_file, from_buffer):
            assert (other.id, other.created) == (from_path.id, False)
        with pytest.raises(TypeError, match="binary mode"), path.open("r") as text:
            await client.register(text)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await client.register(12)  # type: ignore[arg-type]
        with pytest.raises(FileNotFoundError):
            await client.register(tmp_path / "missing.jpg")


async def test_a_copy_by_another_seller_raises_conflict_with_typed_matches(service):
    acme, thief = await service.key("acme"), await service.key("thief")
    original = imagegen.jpeg(203)
    url = base_url(service)
    async with AsyncClient(url, api_key=acme) as a, AsyncClient(url, api_key=thief) as t:
        reg = await a.register(original)
        stolen = imagegen.recompressed_copy(original, scale=0.5, quality=50)
        with pytest.raises(ConflictError) as info:
            await t.register(stolen)
        (match,) = Match.from_conflict(info.value)
        assert match.registration_id == reg.id
        assert match.verdict == "copy" and match.seller is None
        assert abs(match.received_at - reg.received_at) < timedelta(milliseconds=1)
        check = await t.check(stolen)
        assert [m.registration_id for m in check.copies] == [reg.id]
        assert check.sha256 == hashlib.sha256(stolen).hexdigest()
        # The original seller sees its own registration named in a check.
        (own,) = (await a.check(stolen)).matches
        assert own.seller == "acme"
        with pytest.raises(NotFoundError):
            await t.get(reg.id)


async def test_wrong_key_is_an_auth_error(service):
    async with AsyncClient(base_url(service), api_key="ss_000000000000_nope") as client:
        with pytest.raises(AuthError) as info:
            await client.register(imagegen.jpeg(204))
        assert info.value.status == 401
        # Public endpoints work without a valid key.
        assert (await client.checkpoint()).tree_size >= 0


async def test_checkpoint_is_verified_and_remembered(service):
    key = await service.key("acme")
    async with AsyncClient(base_url(service), api_key=key) as probe:
        keys = await vkeys(probe)
    async with AsyncClient(base_url(service), api_key=key, trusted_keys=keys) as client:
        await client.register(imagegen.jpeg(205), wait=True)
        first = await client.checkpoint()
        assert isinstance(first, CheckpointInfo) and first.tree_size >= 1
        assert client.last_checkpoint == first
        assert first.verify(keys).size == first.tree_size
        # A client that saw a larger tree refuses one that shrank.
        client.last_checkpoint = dataclasses.replace(first, tree_size=first.tree_size + 5)
        with pytest.raises(VerificationError) as info:
            await client.checkpoint()
        assert info.value.check == "consistency"
        # And one that saw another root at this size refuses it too.
        client.last_checkpoint = dataclasses.replace(first, root_hash=b"\x00" * 32)
        with pytest.raises(VerificationError, match="two different trees"):
            await client.checkpoint()


async def test_a_growing_log_is_followed_with_consistency_proofs(service):
    key = await service.key("acme")
    async with AsyncClient(base_url(service), api_key=key) as probe:
        keys = await vkeys(probe)
    async with AsyncClient(base_url(service), api_key=key, trusted_keys=keys) as client:
        await client.register(imagegen.jpeg(207), wait=True)
        first = await client.checkpoint()
        await client.register(imagegen.jpeg(208), wait=True)
        later = await client.checkpoint()  # fetches and checks the proof first -> later
        assert later.tree_size == first.tree_size + 1 and client.last_checkpoint == later
        proof = await client.consistency(first.tree_size, later.tree_size)
        assert (proof.first, proof.second) == (first.tree_size, later.tree_size)
        # A client that remembers a different history at an earlier size (a
        # server that rewrote it since) refuses the log's proof.
        client.last_checkpoint = dataclasses.replace(first, root_hash=b"\x01" * 32)
        with pytest.raises(VerificationError, match=r"^fork") as info:
            await client.checkpoint()
        assert info.value.check == "consistency"
        assert client.last_checkpoint.root_hash == b"\x01" * 32  # kept what it had


async def test_trusted_keys_reject_proofs_from_another_log(service):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from shotstamp._checkpoint import NoteSigner

    key = await service.key("acme")
    stranger = NoteSigner("shotstamp.local/log", Ed25519PrivateKey.generate())
    wrong = stranger.verifier.vkey
    async with AsyncClient(base_url(service), api_key=key, trusted_keys=[wrong]) as client:
        with pytest.raises(VerificationError) as info:
            await client.register(imagegen.jpeg(206), wait=True)
        assert info.value.check == "checkpoint-signature"
        with pytest.raises(VerificationError):
            await client.checkpoint()


async def test_proof_without_wait_on_a_pending_registration_raises_not_sealed(service):
    from shotstamp_service.http.keys import SEALER

    key = await service.key("acme")
    sealer = service.app[SEALER]
    async with AsyncClient(base_url(service), api_key=key, wait_timeout=0.5) as client:
        # Hold the sealer so the registration stays pending.
        original = sealer.seal_once

        async def stalled():
            return None

        sealer.seal_once = stalled  # type: ignore[method-assign]
        try:
            reg = await client.register(imagegen.jpeg(207))
            assert reg.status == "pending"
            with pytest.raises(NotSealedError) as info:
                await client.proof(reg.id, wait=False)
            assert info.value.registration_id == reg.id
            assert info.value.retry_after == 1.0
            with pytest.raises(NotSealedError):
                await client.proof(reg.id)  # waits 0.5 s, then gives up
            # register(wait=True) whose wait runs out returns the pending registration.
            pending = await client.register(imagegen.jpeg(208), wait=True)
            assert pending.status == "pending" and pending.proof is None
        finally:
            sealer.seal_once = original  # type: ignore[method-assign]
        proof = await client.proof(reg.id)
        assert proof.leaf["id"] == reg.id


async def test_register_many_streams_every_outcome_as_results(service, tmp_path):
    acme, rival = await service.key("acme"), await service.key("rival")
    url = base_url(service)
    taken = imagegen.jpeg(210)
    async with AsyncClient(url, api_key=rival) as client:
        await client.register(taken)
    files = []
    for seed in range(211, 217):
        path = tmp_path / f"p{seed}.jpg"
        path.write_bytes(imagegen.jpeg(seed))
        files.append(path)
    (tmp_path / "stolen.jpg").write_bytes(imagegen.recompressed_copy(taken))
    (tmp_path / "notes.jpg").write_bytes(b"not an image")
    paths = [*files, tmp_path / "stolen.jpg", tmp_path / "notes.jpg", tmp_path / "gone.jpg"]
    async with AsyncClient(url, api_key=acme) as client:
        already = await client.register(files[0])
        results = [r async for r in client.register_many(paths, concurrency=3)]
    by_name = {r.path.name: r for r in results}
    assert len(results) == len(paths) and set(by_name) == {p.name for p in paths}
    assert by_name["p211.jpg"].outcome == "existing"
    assert by_name["p211.jpg"].registration.id == already.id
    assert [by_name[f"p{s}.jpg"].outcome for s in range(212, 217)] == ["new"] * 5
    conflict = by_name["stolen.jpg"]
    assert conflict.outcome == "conflict" and conflict.matches[0].verdict == "copy"
    assert isinstance(conflict.error, ConflictError)
    assert by_name["notes.jpg"].outcome == "error"
    assert by_name["notes.jpg"].error.status == 415
    assert by_name["gone.jpg"].outcome == "error"
    assert isinstance(by_name["gone.jpg"].error, FileNotFoundError)
    assert sum(r.ok for r in results) == 6


async def test_register_many_yields_as_results_arrive_and_stops_when_closed(service, tmp_path):
    key = await service.key("acme")
    taken: list[str] = []

    def paths():
        for seed in range(220, 240):
            path = tmp_path / f"q{seed}.jpg"
            path.write_bytes(imagegen.jpeg(seed, size=(320, 240)))
            taken.append(path.name)
            yield path

    async with AsyncClient(base_url(service), api_key=key) as client:
        stream = client.register_many(paths(), concurrency=2)
        first = await anext(stream)
        assert first.outcome == "new"
        # Only what the two workers have picked up so far was read: the
        # iterator is consumed lazily, not drained up front.
        assert len(taken) <= 4
        await stream.aclose()  # type: ignore[attr-defined]
        await asyncio.sleep(0.3)
        read_when_closed = len(taken)
        await asyncio.sleep(0.5)
        assert len(taken) == read_when_closed  # nothing runs after close
        resp = await service.client.get("/healthz")
        assert (await resp.json())["indexed"] <= read_when_closed
