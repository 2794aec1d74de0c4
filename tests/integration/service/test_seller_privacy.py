"""Who registered a photo (issue 19): the public log must not confirm a guessed seller.

A 409 gives a copied registration's id, time and leaf index, `/v1/checks` the photo's
sha256 and perceptual hashes, `/tile/0/...` the leaf hash: every leaf field but the seller.
On leaf version 1 one hash per guessed name confirmed the seller; version 2 leaves commit to
the seller through a salt only the owner's proof bundle carries.
"""

from __future__ import annotations

import copy
import json

import pytest

from shotstamp import VerificationError, verify_proof
from shotstamp._verify import FORMAT_V2, seller_commitment
from shotstamp.canonical import canonical_json
from shotstamp.merkle import leaf_hash
from tests.kit import TESTDATA, imagegen

WORDS = ["globex", "initech", "acme", "acme-shop", "umbrella", "mallory", "hooli"]
FIXTURE = TESTDATA / "proof_v1.json"


def guesses(public: dict, salt: bytes | None = None) -> dict[str, bytes]:
    """The leaf hash each guessed seller would give, in both leaf shapes; without the salt
    the version-2 shape can only be tried with one the attacker makes up."""
    out = {}
    for word in WORDS:
        out[f"v1:{word}"] = leaf_hash(canonical_json({**public, "seller": word}))
        commitment = seller_commitment(salt or bytes(32), word)
        out[f"v2:{word}"] = leaf_hash(canonical_json({**public, "seller_commitment": commitment}))
    return out


def confirmed(public: dict, published: bytes, salt: bytes | None = None) -> list[str]:
    return [name for name, digest in guesses(public, salt).items() if digest == published]


def test_the_guess_confirms_the_seller_of_a_version_1_leaf():
    """The attack, on a bundle today's code made before version 2 (the leaf hash stands for
    the tile's entry; the other fields are what the 409 and /v1/checks give anyone)."""
    bundle = json.loads(FIXTURE.read_text())["bundle"]
    public = {k: v for k, v in bundle["leaf"].items() if k != "seller"}
    assert confirmed(public, bytes.fromhex(bundle["leaf_hash"])) == ["v1:acme-shop"]


async def _tile_entry(service, index: int, size: int) -> bytes:
    tile, offset = divmod(index, 256)
    width = 256 if tile < size // 256 else size % 256
    resp = await service.client.get(f"/tile/0/{tile:03d}" + ("" if width == 256 else f".p/{width}"))
    assert resp.status == 200, await resp.text()
    return (await resp.read())[32 * offset : 32 * offset + 32]


async def test_the_public_fields_no_longer_confirm_a_guessed_seller(service):
    owner = await service.key("acme-shop")
    thief = await service.key("mallory")
    photo = imagegen.jpeg(4711)
    resp = await service.upload(owner, photo, params={"wait": "true"})
    assert resp.status == 201, await resp.text()
    registered = await resp.json()
    proof = registered["proof"]
    assert proof["format"] == FORMAT_V2 and "seller" not in proof["leaf"]

    # What anyone without the bundle learns: the 409, a check, the public tile.
    resp = await service.upload(thief, photo)
    assert resp.status == 409
    conflict = await resp.json()
    (match,) = conflict["matches"]
    resp = await service.upload(thief, photo, path="/v1/checks")
    assert resp.status == 200
    check = await resp.json()
    for answer in (conflict, check):
        text = json.dumps(answer)
        assert proof["seller_salt"] not in text and "seller_commitment" not in text
        assert "acme-shop" not in text
    public = {
        "id": match["registration_id"],
        "sha256": check["sha256"],
        "perceptual": check["perceptual"],
        "received_at": match["received_at"],
    }
    published = await _tile_entry(service, match["leaf_index"], proof["tree_size"])
    assert published.hex() == proof["leaf_hash"]

    assert confirmed(public, published) == []
    # The same computation with the owner's salt does confirm it: the attack failed for
    # want of the salt, not for want of a public field.
    salt = bytes.fromhex(proof["seller_salt"])
    assert confirmed(public, published, salt) == ["v2:acme-shop"]


async def test_a_version_2_bundle_verifies_and_a_tampered_salt_or_seller_fails(service):
    owner = await service.key("acme-shop")
    photo = imagegen.jpeg(4712)
    resp = await service.upload(owner, photo, params={"wait": "true"})
    proof = (await resp.json())["proof"]
    vkeys = [k["vkey"] for k in (await (await service.client.get("/v1/keys")).json())["keys"]]

    result = verify_proof(json.dumps(proof), keys=vkeys, image=photo)
    assert result.seller == "acme-shop"
    assert "seller" in result.checks

    salt = bytes.fromhex(proof["seller_salt"])
    for change in (
        {"seller_salt": bytes([salt[0] ^ 1]).hex() + proof["seller_salt"][2:]},
        {"seller": "globex"},
    ):
        with pytest.raises(VerificationError) as caught:
            verify_proof(json.dumps({**proof, **change}), keys=vkeys)
        assert caught.value.check == "seller"
    # A leaf rewritten to name another seller no longer hashes to the logged leaf.
    forged = copy.deepcopy(proof)
    forged["leaf"]["seller_commitment"] = seller_commitment(salt, "globex")
    forged["seller"] = "globex"
    with pytest.raises(VerificationError) as caught:
        verify_proof(json.dumps(forged), keys=vkeys)
    assert caught.value.check == "leaf-hash"


def test_version_1_bundles_still_verify_in_the_sdk():
    fixture = json.loads(FIXTURE.read_text())
    result = verify_proof(
        json.dumps(fixture["bundle"]),
        keys=fixture["vkeys"],
        image=imagegen.jpeg(fixture["photo_seed"]),
    )
    assert result.seller == "acme-shop"
    assert result.checks == (
        "format",
        "checkpoint-signature",
        "checkpoint-body",
        "tree-size",
        "leaf",
        "leaf-hash",
        "inclusion",
        "image",
    )
