"""End to end over HTTP: register, seal, prove offline, catch the copy."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest

from shotstamp import VerificationError, verify_proof
from shotstamp._checkpoint import NoteVerifier
from shotstamp._verify import seller_commitment
from tests.kit import imagegen


async def _vkey(service) -> str:
    resp = await service.client.get("/v1/keys")
    assert resp.status == 200
    body = await resp.json()
    (key,) = body["keys"]
    assert key["algorithm"] == "ed25519"
    return key["vkey"]


async def test_register_with_wait_returns_a_proof_that_verifies_offline(service):
    key = await service.key("acme")
    photo = imagegen.jpeg(1)
    resp = await service.upload(key, photo, params={"wait": "true"}, title="Blue kettle")
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert body["seller"] == "acme"
    assert body["status"] == "sealed"
    assert body["sha256"] == hashlib.sha256(photo).hexdigest()
    assert set(body["perceptual"]) >= {"phash"}
    assert body["received_at"].endswith("Z")
    proof = body["proof"]
    assert proof["format"] == "shotstamp-proof/2"
    assert proof["seller"] == "acme"
    commitment = seller_commitment(bytes.fromhex(proof["seller_salt"]), "acme")
    assert proof["leaf"] == {
        **{k: body[k] for k in ("id", "sha256", "perceptual", "received_at")},
        "seller_commitment": commitment,
    }
    assert f"\n{proof['tree_size']}\n" in proof["checkpoint"]

    verified = verify_proof(proof, keys=await _vkey(service), image=photo)
    assert verified.registration_id == body["id"]
    assert verified.tree_size == proof["tree_size"]
    assert verified.checkpoint_time is not None
    assert verified.checkpoint_time.isoformat() >= body["received_at"][:19]


async def test_proof_endpoint_waits_and_matches_registration(service):
    key = await service.key("acme")
    resp = await service.upload(key, imagegen.jpeg(2))
    assert resp.status == 201
    created = await resp.json()
    assert created["status"] in ("pending", "sealed")
    resp = await service.client.get(
        f"/v1/registrations/{created['id']}/proof",
        params={"wait": "true"},
        headers=service.auth(key),
    )
    assert resp.status == 200
    proof = await resp.json()
    verify_proof(proof, keys=[NoteVerifier.from_vkey(await _vkey(service))])
    resp = await service.client.get(f"/v1/registrations/{created['id']}", headers=service.auth(key))
    assert (await resp.json())["status"] == "sealed"


async def test_recompressed_resized_copy_by_another_seller_is_a_conflict(service):
    acme, thief = await service.key("acme"), await service.key("thief")
    original = imagegen.jpeg(3)
    resp = await service.upload(acme, original)
    assert resp.status == 201
    registered = await resp.json()

    stolen = imagegen.recompressed_copy(original, scale=0.55, quality=50)
    assert stolen != original
    resp = await service.upload(thief, stolen, params={"wait": "true"})
    assert resp.status == 409, await resp.text()
    body = await resp.json()
    assert body["error"] == "conflict"
    assert registered["id"] in body["message"]
    (match,) = body["matches"]
    assert match["registration_id"] == registered["id"]
    assert match["received_at"] == registered["received_at"]
    assert match["verdict"] == "copy"
    assert match["distance"] <= 6
    assert "seller" not in match  # the other seller's identity stays private

    # Nothing was registered for the thief.
    resp = await service.client.get("/healthz")
    assert (await resp.json())["indexed"] == 1


async def test_exact_copy_by_another_seller_is_a_conflict(service):
    acme, thief = await service.key("acme"), await service.key("thief")
    original = imagegen.jpeg(4)
    assert (await service.upload(acme, original)).status == 201
    resp = await service.upload(thief, original)
    assert resp.status == 409
    (match,) = (await resp.json())["matches"]
    assert match["exact"] is True and match["distance"] == 0
    assert (match["clause"], match["stage"], match["explanation"]) == (
        "same_file", 1, "The very same file")


async def test_same_seller_reupload_gets_the_existing_registration(service):
    key = await service.key("acme")
    original = imagegen.jpeg(5)
    first = await (await service.upload(key, original)).json()
    resp = await service.upload(key, original)
    assert resp.status == 200
    assert (await resp.json())["id"] == first["id"]
    # A near-duplicate of one's own photo is also "already yours".
    resp = await service.upload(key, imagegen.recompressed_copy(original))
    assert resp.status == 200
    assert (await resp.json())["id"] == first["id"]


async def test_different_photos_by_different_sellers_both_register(service):
    a, b = await service.key("a"), await service.key("b")
    assert (await service.upload(a, imagegen.jpeg(6))).status == 201
    assert (await service.upload(b, imagegen.jpeg(7))).status == 201


async def test_check_finds_matches_without_registering(service):
    acme, other = await service.key("acme"), await service.key("other")
    original = imagegen.jpeg(8)
    reg = await (await service.upload(acme, original)).json()
    resp = await service.upload(other, imagegen.recompressed_copy(original), path="/v1/checks")
    assert resp.status == 200
    body = await resp.json()
    assert [m["registration_id"] for m in body["matches"]] == [reg["id"]]
    assert "seller" not in body["matches"][0]
    resp = await service.upload(other, imagegen.jpeg(9), path="/v1/checks")
    assert (await resp.json())["matches"] == []
    assert (await (await service.client.get("/healthz")).json())["indexed"] == 1


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        (b"this is not an image at all", 415, "unsupported_format"),
        (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", 415, "unsupported_format"),
    ],
)
async def test_non_image_upload_is_rejected(service, payload, status, code):
    key = await service.key("acme")
    resp = await service.upload(key, payload)
    assert resp.status == status
    body = await resp.json()
    assert body["error"] == code
    assert body["message"]


async def test_truncated_jpeg_is_rejected_and_server_stays_up(service):
    key = await service.key("acme")
    photo = imagegen.jpeg(10)
    resp = await service.upload(key, photo[: len(photo) // 3])
    assert resp.status == 422
    assert (await resp.json())["error"] == "corrupt_image"
    assert (await service.upload(key, photo)).status == 201


async def test_upload_without_image_field_or_multipart(service):
    key = await service.key("acme")
    resp = await service.client.post(
        "/v1/registrations",
        data=b"\xff\xd8",
        headers={**service.auth(key), "Content-Type": "image/jpeg"},
    )
    assert resp.status == 415
    import aiohttp

    with aiohttp.MultipartWriter("form-data") as form:
        part = form.append("no image here")
        part.set_content_disposition("form-data", name="title")
    resp = await service.client.post("/v1/registrations", data=form, headers=service.auth(key))
    assert resp.status == 400
    assert (await resp.json())["error"] == "missing_image"


async def test_seller_cannot_read_another_sellers_registration(service):
    acme, rival, staff = (
        await service.key("acme"),
        await service.key("rival"),
        await service.key("desk", role="staff"),
    )
    reg = await (await service.upload(acme, imagegen.jpeg(11), params={"wait": "true"})).json()
    for path in (f"/v1/registrations/{reg['id']}", f"/v1/registrations/{reg['id']}/proof"):
        resp = await service.client.get(path, headers=service.auth(rival))
        assert resp.status == 404
        assert await resp.json() == {"error": "not_found", "message": "no such registration"}
        resp = await service.client.get(path, headers=service.auth(staff))
        assert resp.status == 200
        resp = await service.client.get(path)
        assert resp.status == 401


async def test_revoked_or_unknown_key_is_refused(service):
    from shotstamp_service.http.keys import STORE

    key = await service.key("acme")
    resp = await service.upload("ss_000000000000_nope", imagegen.jpeg(12))
    assert resp.status == 401
    key_id = key.split("_")[1]
    assert await service.app[STORE].revoke_api_key(key_id, "2026-01-01T00:00:00Z")
    resp = await service.upload(key, imagegen.jpeg(12))
    assert resp.status == 401
    assert (await resp.json())["error"] == "unauthorized"


async def test_tampered_service_proof_fails_with_the_right_check(service):
    key = await service.key("acme")
    await service.upload(key, imagegen.jpeg(13))  # so the path is not empty
    body = await (await service.upload(key, imagegen.jpeg(14), params={"wait": "true"})).json()
    vkey = await _vkey(service)
    proof = body["proof"]
    verify_proof(proof, keys=vkey)

    leaf = copy.deepcopy(proof)
    leaf["leaf"]["received_at"] = "2020-01-01T00:00:00.000000Z"
    with pytest.raises(VerificationError) as info:
        verify_proof(leaf, keys=vkey)
    assert info.value.check == "leaf-hash"

    leaf_and_hash = copy.deepcopy(leaf)
    del leaf_and_hash["leaf_hash"]
    with pytest.raises(VerificationError) as info:
        verify_proof(leaf_and_hash, keys=vkey)
    assert info.value.check == "inclusion"

    path = copy.deepcopy(proof)
    if not path["inclusion_path"]:
        pytest.skip("tree too small for a path")
    first = bytearray.fromhex(path["inclusion_path"][0])
    first[0] ^= 1
    path["inclusion_path"][0] = first.hex()
    with pytest.raises(VerificationError) as info:
        verify_proof(path, keys=vkey)
    assert info.value.check == "inclusion"

    root = copy.deepcopy(proof)
    lines = root["checkpoint"].split("\n")
    lines[2] = ("A" if lines[2][0] != "A" else "B") + lines[2][1:]
    root["checkpoint"] = "\n".join(lines)
    with pytest.raises(VerificationError) as info:
        verify_proof(root, keys=vkey)
    assert info.value.check == "checkpoint-signature"

    sig = copy.deepcopy(proof)
    head, _, sigline = sig["checkpoint"].rstrip("\n").rpartition("\n")
    name_part, _, b64 = sigline.rpartition(" ")
    flipped = b64[:-4] + ("AAAA" if b64[-4:] != "AAAA" else "BBBB")
    sig["checkpoint"] = f"{head}\n{name_part} {flipped}\n"
    with pytest.raises(VerificationError) as info:
        verify_proof(sig, keys=vkey)
    assert info.value.check == "checkpoint-signature"

    with pytest.raises(VerificationError) as info:
        verify_proof(proof, keys=vkey, image=imagegen.jpeg(99))
    assert info.value.check == "image"


async def test_checkpoints_and_keys_are_public(service):
    resp = await service.client.get("/v1/checkpoints/latest")
    assert resp.status == 200
    cp = await resp.json()
    assert cp["tree_size"] == 0
    assert cp["note"].splitlines()[1] == "0"
    key = await service.key("acme")
    await service.upload(key, imagegen.jpeg(15), params={"wait": "true"})
    cp = await (await service.client.get("/v1/checkpoints/latest")).json()
    assert cp["tree_size"] == 1
    again = await (await service.client.get("/v1/checkpoints/1")).json()
    assert again == cp
    assert (await service.client.get("/v1/checkpoints/99")).status == 404
    assert (await service.client.get("/v1/checkpoints/x")).status == 400
    keys = await (await service.client.get("/v1/keys")).json()
    assert keys["origin"] == cp["note"].splitlines()[0]


async def test_openapi_document_describes_every_route(service):
    doc = await (await service.client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in service.app.router.routes()
        if route.method != "HEAD"
    }
    documented = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert served <= documented, served - documented


async def test_errors_are_json_everywhere(service):
    resp = await service.client.get("/no/such/path")
    assert resp.status == 404
    assert set(await resp.json()) == {"error", "message"}
    resp = await service.client.delete("/v1/keys")
    assert resp.status == 405
    assert json.loads(await resp.text())["error"]
