"""The log over HTTP: consistency proofs, key rotation, and the C2SP tlog-tiles layout."""

from __future__ import annotations

import asyncio
import base64
import hashlib

import pytest

from shotstamp import VerificationError, verify_consistency_between, verify_proof
from shotstamp._checkpoint import Checkpoint, NoteVerifier, SignedNote, open_note
from shotstamp._merkle import verify_inclusion
from shotstamp_service.http.app import make_signing_keys, make_store
from shotstamp_service.http.keys import CONFIG, SIGNING_KEYS, STORE
from shotstamp_service.log.sealer import Sealer
from shotstamp_service.records import NewRegistration, format_time, new_registration_id, utc_now
from tests.kit import imagegen


async def _keys(service) -> list[str]:
    body = await (await service.client.get("/v1/keys")).json()
    return [key["vkey"] for key in body["keys"]]


async def _register(service, key: str, seed: int) -> dict:
    resp = await service.upload(key, imagegen.jpeg(seed), params={"wait": "true"})
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def test_consistency_proofs_between_published_checkpoints(service):
    key = await service.key("acme")
    notes = {}
    for seed in range(40, 44):
        reg = await _register(service, key, seed)
        notes[reg["proof"]["tree_size"]] = reg["proof"]["checkpoint"]
    keys = await _keys(service)
    sizes = sorted(notes)
    for old in sizes:
        for new in sizes:
            if old > new:
                continue
            resp = await service.client.get(
                "/v1/proofs/consistency", params={"from": old, "to": new}
            )
            assert resp.status == 200
            proof = await resp.json()
            assert (proof["from"], proof["to"]) == (old, new)
            result = verify_consistency_between(notes[old], notes[new], proof, keys=keys)
            assert result.checks[-1] == "consistency"
    # The published checkpoint at each size is the one the proof bundle carried.
    for size, note in notes.items():
        body = await (await service.client.get(f"/v1/checkpoints/{size}")).json()
        assert body["note"] == note


async def test_consistency_proof_errors(service):
    key = await service.key("acme")
    await _register(service, key, 50)
    for query, status, match in [
        ("to=1", 400, "give 'from'"),
        ("from=1", 400, "give 'to'"),
        ("from=x&to=1", 400, "non-negative integer"),
        ("from=-1&to=1", 400, "non-negative integer"),
        ("from=0&to=1", 400, "at least 1"),
        ("from=2&to=1", 400, "larger than"),
        ("from=1&to=99", 404, "no tree of size 99"),
        ("from=1&to=9223372036854775808", 400, "below 2^63"),
    ]:
        resp = await service.client.get(f"/v1/proofs/consistency?{query}")
        assert resp.status == status, query
        body = await resp.json()
        assert set(body) == {"error", "message"} and match in body["message"], query


async def test_a_bundle_can_carry_the_consistency_proof_to_a_later_checkpoint(service):
    key = await service.key("acme")
    first = await _register(service, key, 60)
    later = None
    for seed in (61, 62):
        later = await _register(service, key, seed)
    trusted = later["proof"]["checkpoint"]
    size = later["proof"]["tree_size"]
    resp = await service.client.get(
        f"/v1/registrations/{first['id']}/proof",
        params={"consistency_with": str(size)},
        headers=service.auth(key),
    )
    bundle = await resp.json()
    assert bundle["consistency"][0]["to"] == size
    result = verify_proof(bundle, keys=await _keys(service), trusted_checkpoint=trusted)
    assert result.trusted_size == size and not result.extends_trusted
    resp = await service.client.get(
        f"/v1/registrations/{first['id']}/proof",
        params={"consistency_with": "999"},
        headers=service.auth(key),
    )
    assert resp.status == 404
    assert (await service.client.get("/v1/checkpoints/99999999999999999999")).status == 400


async def test_proofs_sealed_under_a_retired_key_still_verify(service):
    key = await service.key("acme")
    before = await _register(service, key, 70)
    (only,) = (await (await service.client.get("/v1/keys")).json())["keys"]
    assert only["status"] == "active" and only["not_after"] is None

    # What `shotstamp-service signing-key rotate` does, from another process's view.
    admin = make_signing_keys(service.app[CONFIG], service.app[STORE])
    new_record, _ = await admin.rotate()
    after = await _register(service, key, 71)

    body = await (await service.client.get("/v1/keys")).json()
    active, retired = body["keys"]
    assert (active["status"], retired["status"]) == ("active", "retired")
    assert active["key_id"] == new_record.key_id and retired["key_id"] == only["key_id"]
    assert retired["not_after"] == active["not_before"] and active["not_after"] is None
    for entry in body["keys"]:
        verifier = NoteVerifier.from_vkey(entry["vkey"])
        assert base64.b64decode(entry["public_key"]) == verifier.public_key_raw
        assert verifier.key_hash.hex() == entry["key_id"]

    # Each checkpoint names its key; both proofs verify with the listed keys.
    assert f"+{only['key_id']}" not in after["proof"]["checkpoint"]
    keys = [entry["vkey"] for entry in body["keys"]]
    assert verify_proof(before["proof"], keys=keys).key_hash == only["key_id"]
    assert verify_proof(after["proof"], keys=keys).key_hash == active["key_id"]
    with pytest.raises(VerificationError) as exc:
        verify_proof(before["proof"], keys=active["vkey"])
    assert exc.value.check == "checkpoint-signature"
    # And the log stayed one log across the rotation.
    old, new = before["proof"], after["proof"]
    proof = await (
        await service.client.get(
            "/v1/proofs/consistency", params={"from": old["tree_size"], "to": new["tree_size"]}
        )
    ).json()
    verify_consistency_between(old["checkpoint"], new["checkpoint"], proof, keys=keys)
    assert service.app[SIGNING_KEYS] is not admin


# --- C2SP tlog-tiles, checked with code written from the spec alone ---------------------
#
# c2sp.org/tlog-tiles: tile L/N holds, for i in 0..255,
#     MTH(D[(N*256 + i) * 256**L : (N*256 + i + 1) * 256**L])
# the partial tile at level L of a tree of size s has floor(s / 256**L) mod 256 hashes,
# and N is written in 3-digit groups, all but the last prefixed with "x".


def spec_tile_path(level: int, index: int, width: int) -> str:
    digits = f"{index:03d}"
    digits = "0" * (-len(digits) % 3) + digits
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    path = "/".join([*("x" + g for g in groups[:-1]), groups[-1]])
    return f"/tile/{level}/{path}" + (f".p/{width}" if width < 256 else "")


def spec_node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class TileClient:
    """Fetches the tiles of the tree of one size, and derives hashes from them alone."""

    def __init__(self, http, size: int) -> None:
        self.http, self.size, self.cache, self.fetched = http, size, {}, []

    async def entries(self, level: int, start: int, count: int) -> list[bytes]:
        """Hashes start .. start+count-1 of tree level 8*level (all in one tile)."""
        index, offset = divmod(start, 256)
        full = (self.size // 256**level) // 256
        width = 256 if index < full else (self.size // 256**level) % 256
        path = spec_tile_path(level, index, width)
        if path not in self.cache:
            resp = await self.http.get(path)
            assert resp.status == 200, (path, await resp.text())
            assert resp.content_type == "application/octet-stream"
            assert "immutable" in resp.headers["Cache-Control"]
            data = await resp.read()
            assert len(data) == 32 * width
            self.cache[path] = data
            self.fetched.append(path)
        data = self.cache[path]
        return [data[32 * i : 32 * (i + 1)] for i in range(offset, offset + count)]

    async def perfect(self, start: int, height: int) -> bytes:
        """MTH(D[start : start + 2**height]), an aligned perfect subtree."""
        level, rest = divmod(height, 8)
        hashes = await self.entries(level, start >> (8 * level), 1 << rest)
        while len(hashes) > 1:
            hashes = [spec_node(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
        return hashes[0]

    async def mth(self, begin: int, end: int) -> bytes:
        """RFC 6962 MTH(D[begin:end]) by its recursive definition, perfect subtrees from tiles."""
        n = end - begin
        if n & (n - 1) == 0 and begin % n == 0:
            return await self.perfect(begin, n.bit_length() - 1)
        k = 1 << ((n - 1).bit_length() - 1)
        return spec_node(await self.mth(begin, begin + k), await self.mth(begin + k, end))

    async def path(self, m: int, begin: int, end: int) -> list[bytes]:
        """RFC 6962 PATH(m, D[begin:end])."""
        n = end - begin
        if n == 1:
            return []
        k = 1 << ((n - 1).bit_length() - 1)
        if m < k:
            return [*await self.path(m, begin, begin + k), await self.mth(begin + k, end)]
        return [*await self.path(m - k, begin + k, end), await self.mth(begin, begin + k)]


def registration(n: int) -> NewRegistration:
    return NewRegistration(
        id=new_registration_id(),
        seller="bulk",
        sha256=hashlib.sha256(b"bulk %d" % n).hexdigest(),
        perceptual={"phash": hashlib.sha256(b"phash %d" % n).hexdigest()[:16]},
        received_at=format_time(utc_now()),
        width=10,
        height=10,
    )


@pytest.fixture
async def prefilled(service_config) -> list[int]:
    """A log of 601 leaves sealed in four batches (two tile levels, partial tiles)."""
    store = make_store(service_config)  # the service's own store, SQLite or PostgreSQL
    await store.open()
    keys = make_signing_keys(service_config, store)
    await keys.open()
    sealer = Sealer(store, keys)
    await sealer.load()
    sizes, count = [], 0
    for batch in (300, 1, 260, 40):
        await asyncio.gather(
            *(store.add_registration(registration(count + k)) for k in range(batch))
        )
        count += batch
        sizes.append((await sealer.seal_once()).tree_size)
    await store.close()
    return sizes


async def _checkpoint(service, keys: list[str], path: str = "/checkpoint") -> Checkpoint:
    resp = await service.client.get(path)
    assert resp.status == 200
    note = await resp.text()
    return Checkpoint.from_text(open_note(note, [NoteVerifier.from_vkey(k) for k in keys]).text)


async def test_tiles_rebuild_roots_and_inclusion_proofs(prefilled, service):
    key = await service.key("acme")
    reg = await _register(service, key, 80)  # leaf 601, sealed after the bulk
    keys = await _keys(service)

    resp = await service.client.get("/checkpoint")
    assert resp.content_type == "text/plain" and resp.charset == "utf-8"
    assert "max-age=1" in resp.headers["Cache-Control"]
    latest = await _checkpoint(service, keys)
    assert latest.size == 602 == reg["proof"]["tree_size"]

    tiles = TileClient(service.client, latest.size)
    assert await tiles.mth(0, latest.size) == latest.root_hash
    index = reg["proof"]["leaf_index"]
    (leaf,) = await tiles.entries(0, index, 1)
    assert leaf.hex() == reg["proof"]["leaf_hash"]
    path = await tiles.path(index, 0, latest.size)
    assert [h.hex() for h in path] == reg["proof"]["inclusion_path"]
    verify_inclusion(index, latest.size, leaf, path, latest.root_hash)
    assert "/tile/0/002.p/90" in tiles.fetched and "/tile/1/000.p/2" in tiles.fetched

    # Every earlier checkpoint's tree is still served, through narrower partial tiles.
    for size in prefilled:
        old = Checkpoint.from_text(
            SignedNote.from_text(
                (await (await service.client.get(f"/v1/checkpoints/{size}")).json())["note"]
            ).text
        )
        assert await TileClient(service.client, size).mth(0, size) == old.root_hash


async def test_tile_paths_over_http(service):
    key = await service.key("acme")
    leaves = [(await _register(service, key, seed))["proof"]["leaf_hash"] for seed in (90, 91, 92)]
    for path, status in [
        ("/tile/0/000", 404),  # not full yet: only 3 leaves
        ("/tile/0/000.p/4", 404),  # wider than the tree
        ("/tile/0/000.p/3", 200),
        ("/tile/0/000.p/2", 200),  # an older tree's width is a prefix
        ("/tile/1/000.p/1", 404),
        ("/tile/0/x000/000.p/3", 400),
        ("/tile/00/000.p/3", 400),
        ("/tile/0/000.p/256", 400),
        ("/tile/entries/000.p/3", 404),
    ]:
        resp = await service.client.get(path)
        assert resp.status == status, (path, await resp.text())
        if status == 200:
            width = int(path.rsplit("/", 1)[1])
            assert (await resp.read()).hex() == "".join(leaves[:width])
        else:
            assert set(await resp.json()) == {"error", "message"}
    resp = await service.client.get("/tile/entries/000.p/3")
    assert "entries are private" in (await resp.json())["message"]
