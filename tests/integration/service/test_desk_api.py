"""The desk's side of the service: thumbnails, staff-only calls, /v1/verify, the page's files."""

from __future__ import annotations

import copy
import io
import json

import numpy as np
import pytest
from PIL import Image

from shotstamp import verify_proof
from shotstamp._verify import seller_commitment
from tests.kit import imagegen


async def _register(service, key: str, data: bytes, **fields: str) -> dict:
    resp = await service.upload(key, data, params={"wait": "true"}, **fields)
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def _thumbnail(service, key: str, registration_id: str):
    return await service.client.get(
        f"/v1/registrations/{registration_id}/thumbnail", headers=service.auth(key)
    )


# -- thumbnails -------------------------------------------------------------------
async def test_registration_keeps_a_thumbnail_staff_can_fetch(service):
    acme, staff = await service.key("acme"), await service.key("desk", "staff")
    reg = await _register(service, acme, imagegen.jpeg(40, size=(640, 480)))

    resp = await _thumbnail(service, staff, reg["id"])
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "image/jpeg"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    thumb = Image.open(io.BytesIO(await resp.read()))
    assert thumb.format == "JPEG"
    assert thumb.size == (256, 192)  # longest side 256, aspect kept
    assert not thumb.getexif()  # no metadata carried over from the upload


async def test_thumbnail_looks_like_the_photo(service):
    acme, staff = await service.key("acme"), await service.key("desk", "staff")
    photo = imagegen.photo(41, size=(800, 600))
    reg = await _register(service, acme, imagegen.encode(photo))
    thumb = Image.open(io.BytesIO(await (await _thumbnail(service, staff, reg["id"])).read()))
    # Compare with a plain downscale: the mean colour error is small.
    expected = np.asarray(photo.resize(thumb.size, Image.LANCZOS).convert("RGB"), dtype=float)
    assert np.abs(expected - np.asarray(thumb.convert("RGB"), dtype=float)).mean() < 8


async def test_thumbnail_is_upright_and_transparency_is_white(service):
    acme, staff = await service.key("acme"), await service.key("desk", "staff")
    # A landscape JPEG whose EXIF says "rotate 90°": shown upright it is portrait.
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = imagegen.encode(imagegen.photo(42, size=(640, 400)), exif=exif.tobytes())
    reg = await _register(service, acme, rotated)
    thumb = Image.open(io.BytesIO(await (await _thumbnail(service, staff, reg["id"])).read()))
    assert thumb.size == (160, 256)

    # A transparent PNG cut-out: the transparent corner comes out white.
    cutout = imagegen.photo(43, size=(300, 300)).convert("RGBA")
    cutout.putalpha(Image.new("L", (300, 300), 0))
    cutout.paste(imagegen.photo(44, size=(200, 200)), (50, 50))
    reg = await _register(service, acme, imagegen.encode(cutout, "PNG"))
    thumb = Image.open(io.BytesIO(await (await _thumbnail(service, staff, reg["id"])).read()))
    assert thumb.size == (256, 256)
    assert all(channel > 245 for channel in thumb.convert("RGB").getpixel((3, 3)))


async def test_thumbnail_is_for_staff_only(service):
    acme, staff = await service.key("acme"), await service.key("desk", "staff")
    reg = await _register(service, acme, imagegen.jpeg(45))

    resp = await _thumbnail(service, acme, reg["id"])  # even the owner: it is a desk call
    assert resp.status == 403
    body = await resp.json()
    assert body["error"] == "forbidden"
    assert "seller key" in body["message"] and "staff key" in body["message"]
    resp = await service.client.get(f"/v1/registrations/{reg['id']}/thumbnail")
    assert resp.status == 401
    resp = await _thumbnail(service, staff, "01NOSUCHREGISTRATION00000")
    assert resp.status == 404 and (await resp.json())["error"] == "not_found"


@pytest.fixture
def service_config(request, tmp_path, store_target):
    # conftest's configuration, with the overrides a test passes as its parameter.
    from tests.kit.servicekit import service_settings

    return service_settings(tmp_path, store_target.url, **getattr(request, "param", {}))


@pytest.mark.parametrize(
    "service_config",
    [pytest.param({"thumbnails": False}, id="off")],
    indirect=True,
)
async def test_thumbnails_off_keeps_none(service):
    acme, staff = await service.key("acme"), await service.key("desk", "staff")
    reg = await _register(service, acme, imagegen.jpeg(46))
    resp = await _thumbnail(service, staff, reg["id"])
    assert resp.status == 404
    body = await resp.json()
    assert body["error"] == "no_thumbnail"
    assert reg["id"] in body["message"]


@pytest.mark.parametrize(
    "service_config", [pytest.param({"thumbnail_size": 64}, id="64px")], indirect=True
)
async def test_thumbnail_size_is_configurable(service):
    acme, staff = await service.key("acme"), await service.key("desk", "staff")
    reg = await _register(service, acme, imagegen.jpeg(47, size=(300, 600)))
    thumb = Image.open(io.BytesIO(await (await _thumbnail(service, staff, reg["id"])).read()))
    assert thumb.size == (32, 64)


# -- the desk's session --------------------------------------------------------------
async def test_session_accepts_staff_and_refuses_a_seller_key_in_words(service):
    acme, staff = await service.key("acme"), await service.key("dana", "staff")
    resp = await service.client.get("/v1/desk/session", headers=service.auth(staff))
    assert resp.status == 200
    body = await resp.json()
    assert body["seller"] == "dana" and body["role"] == "staff" and body["key_id"]

    resp = await service.client.get("/v1/desk/session", headers=service.auth(acme))
    assert resp.status == 403
    assert (await resp.json())["message"].startswith("this is a seller key (seller 'acme')")
    resp = await service.client.get("/v1/desk/session")
    assert resp.status == 401


# -- verification by the service ---------------------------------------------------------
async def _verify(service, key: str, bundle, **params: str):
    body = bundle if isinstance(bundle, (bytes, str)) else json.dumps(bundle)
    resp = await service.client.post(
        "/v1/verify",
        data=body,
        params=params,
        headers={**service.auth(key), "Content-Type": "application/json"},
    )
    return resp.status, await resp.json()


async def test_verify_endpoint_agrees_with_the_sdk(service):
    acme, staff = await service.key("acme"), await service.key("desk", "staff")
    photo = imagegen.jpeg(48)
    reg = await _register(service, acme, photo)
    proof = reg["proof"]
    keys = (await (await service.client.get("/v1/keys")).json())["keys"]

    status, body = await _verify(service, staff, proof, image_sha256=reg["sha256"])
    assert status == 200
    sdk = verify_proof(proof, keys=[k["vkey"] for k in keys], image=photo)
    assert body["verified"] is True and body["failed"] is None
    assert body["checks"] == list(sdk.checks)
    assert body["result"]["registration_id"] == reg["id"]
    assert body["result"]["seller"] == "acme"
    assert body["keys"] == [k["vkey"] for k in keys]

    # Any key may ask: verification is no secret.
    status, body = await _verify(service, acme, proof)
    assert status == 200 and body["verified"] is True

    tampered = copy.deepcopy(proof)
    # The leaf rewritten to commit to another seller, whose name and salt open it.
    salt = bytes.fromhex(proof["seller_salt"])
    tampered["leaf"]["seller_commitment"] = seller_commitment(salt, "thief")
    tampered["seller"] = "thief"
    status, body = await _verify(service, staff, tampered)
    assert status == 200
    assert body["verified"] is False
    assert body["failed"]["check"] == "leaf-hash"
    assert body["checks"] == [
        "format",
        "checkpoint-signature",
        "checkpoint-body",
        "tree-size",
        "leaf",
        "seller",
    ]

    # Without a stated leaf hash the SDK skips that check: it is not listed as passed.
    no_hash = {k: v for k, v in tampered.items() if k != "leaf_hash"}
    status, body = await _verify(service, staff, no_hash)
    assert body["failed"]["check"] == "inclusion"
    assert "leaf-hash" not in body["checks"] and "leaf" in body["checks"]

    status, body = await _verify(service, staff, proof, image_sha256="0" * 64)
    assert body["failed"]["check"] == "image"
    status, body = await _verify(service, staff, b"{not json")
    assert body["failed"]["check"] == "format" and body["checks"] == []


async def test_verify_endpoint_refuses_bad_requests_in_words(service):
    staff = await service.key("desk", "staff")
    status, body = await _verify(service, staff, "{}", image_sha256="XYZ")
    assert status == 400 and body["error"] == "invalid_sha256"
    status, body = await _verify(service, staff, b"x" * (256 * 1024 + 1))
    assert status == 413 and "at most" in body["message"]
    resp = await service.client.post("/v1/verify", data=b"{}")
    assert resp.status == 401


# -- the page's files ---------------------------------------------------------------------------
async def test_desk_files_are_served_with_a_strict_policy(service):
    resp = await service.client.get("/desk")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    page = await resp.text()
    assert '<script type="module" src="/desk/desk.js">' in page
    policy = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    for name, kind in [
        ("desk.js", "text/javascript"),
        ("verify.js", "text/javascript"),
        ("desk.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ]:
        resp = await service.client.get(f"/desk/{name}")
        assert resp.status == 200, name
        assert resp.content_type == kind
        # No third-party origin anywhere: everything the page loads is served here.
        text = (await resp.text()).replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert "http://" not in text and "https://" not in text, name
    assert "http://" not in page and "https://" not in page
    for wrong in ("/desk/app.py", "/desk/..%2fdesk.py", "/desk/index.html.bak"):
        resp = await service.client.get(wrong)
        assert resp.status == 404, wrong
        assert set(await resp.json()) == {"error", "message"}
