"""Access: every endpoint the app serves, tried without a key, with a revoked key and
with another seller's key; nothing private leaks, and only admin commands make keys.

The routes are enumerated from the running app, and their parameters and
bodies are read from its own OpenAPI document, so an endpoint added later is
attacked here without anyone editing this file.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from tests.kit import imagegen

# Private to the seller "owner": none of these may reach anyone but it and staff.
OWNER = "owner-private-5c1e"
TITLE = "Kettle TITLE-CANARY-93af"
REFERENCE = "SKU-REF-CANARY-07d2"
CANARIES = (OWNER, TITLE, REFERENCE)
PUBLIC_MATCH_FIELDS = {
    "registration_id",
    "received_at",
    "distance",
    "distances",
    "verdict",
    "stage",  # which stage and clause of the rule decided, and that in words:
    "clause",  # made from the distances alone, nothing about the other seller
    "explanation",
    "exact",
    "status",
    "proof_url",
    "leaf_index",
}
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@dataclass
class World:
    service: Any
    photo: bytes
    registration: dict[str, Any]
    owner: str
    revoked: str
    rival: str
    staff: str
    doc: dict[str, Any]


@pytest.fixture
async def world(service) -> World:
    from shotstamp_service.http.keys import STORE

    owner, rival, staff = (
        await service.key(OWNER),
        await service.key("rival-seller"),
        await service.key("desk", role="staff"),
    )
    revoked = await service.key(OWNER)
    assert await service.app[STORE].revoke_api_key(revoked.split("_")[1], "2026-01-01T00:00:00Z")
    photo = imagegen.jpeg(77)
    resp = await service.upload(
        owner, photo, params={"wait": "true"}, title=TITLE, reference=REFERENCE
    )
    assert resp.status == 201
    registration = await resp.json()
    assert registration["status"] == "sealed"
    doc = await (await service.client.get("/openapi.json")).json()
    return World(service, photo, registration, owner, revoked, rival, staff, doc)


def _routes(app: Any) -> list[tuple[str, str]]:
    out = []
    for route in app.router.routes():
        if route.method in ("HEAD", "OPTIONS"):
            continue
        methods = METHODS if route.method == "*" else (route.method,)
        out += [(method, route.resource.canonical) for method in methods]
    return sorted(set(out))


def _operation(doc: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    return doc.get("paths", {}).get(path, {}).get(method.lower(), {})


def _fill(path: str, world: World, registration_id: str) -> str:
    values = {"id": registration_id, "size": "1"}
    return re.sub(r"\{(\w+)(:[^}]*)?\}", lambda m: values.get(m.group(1), registration_id), path)


def _query(operation: dict[str, Any], world: World) -> dict[str, str]:
    query = {}
    for param in operation.get("parameters", []):
        if param.get("in") != "query":
            continue
        kind = param.get("schema", {}).get("type")
        query[param["name"]] = {"integer": "1", "boolean": "true", "number": "1"}.get(
            kind, world.registration["id"]
        )
    return query


def _body(operation: dict[str, Any], world: World) -> Any:
    content = operation.get("requestBody", {}).get("content", {})
    if "multipart/form-data" in content:
        form = aiohttp.FormData()
        form.add_field("image", world.photo, filename="p.jpg", content_type="image/jpeg")
        return form
    if "application/json" in content:
        return aiohttp.JsonPayload({})
    return None


async def _call(
    world: World, method: str, path: str, key: str | None, registration_id: str
) -> tuple[int, str, str]:
    operation = _operation(world.doc, method, path)
    headers = world.service.auth(key) if key else {}
    resp = await world.service.client.request(
        method,
        _fill(path, world, registration_id),
        params=_query(operation, world),
        data=_body(operation, world),
        headers=headers,
    )
    text = (await resp.read()).decode("utf-8", errors="replace")  # some answers are images
    return resp.status, text, "\n".join(f"{k}: {v}" for k, v in resp.headers.items())


def _leaks(text: str, headers: str) -> list[str]:
    return [canary for canary in CANARIES if canary in text or canary in headers]


async def test_every_endpoint_without_a_key_or_with_a_revoked_one(world):
    routes = _routes(world.service.app)
    assert len(routes) >= 10
    secured = 0
    for method, path in routes:
        operation = _operation(world.doc, method, path)
        for label, key in (("no key", None), ("revoked key", world.revoked), ("bogus key", "x")):
            status, text, headers = await _call(world, method, path, key, world.registration["id"])
            where = f"{method} {path} with {label}: {status} {text[:200]}"
            assert status < 500, where
            assert not _leaks(text, headers), where
            assert world.registration["id"] not in text or not operation.get("security"), where
            if operation.get("security"):
                assert status == 401, where
                assert '"unauthorized"' in text, where
        secured += bool(operation.get("security"))
    assert secured >= 4  # registrations, checks, one registration, its proof


async def test_every_endpoint_with_another_sellers_key(world):
    missing_id = "01" + uuid.uuid4().hex[:24].upper()
    for method, path in _routes(world.service.app):
        status, text, headers = await _call(
            world, method, path, world.rival, world.registration["id"]
        )
        where = f"{method} {path} as another seller: {status} {text[:300]}"
        assert status < 500, where
        assert not _leaks(text, headers), where
        if "{" in path:
            # Someone else's registration looks exactly like one that does not exist.
            status2, text2, _ = await _call(world, method, path, world.rival, missing_id)
            assert (status, text.replace(world.registration["id"], missing_id)) == (
                status2,
                text2,
            ), where


async def test_a_conflict_shows_the_evidence_and_nothing_private(world):
    stolen = imagegen.recompressed_copy(world.photo)
    resp = await world.service.upload(world.rival, stolen)
    assert resp.status == 409
    body = await resp.json()
    text = await resp.text()
    assert not _leaks(text, "")
    (match,) = body["matches"]
    assert set(match) <= PUBLIC_MATCH_FIELDS, set(match) - PUBLIC_MATCH_FIELDS
    assert match["registration_id"] == world.registration["id"]
    assert match["received_at"] == world.registration["received_at"]
    assert match["distances"] and isinstance(match["distance"], int)
    assert match["proof_url"] == f"/v1/registrations/{world.registration['id']}/proof"
    assert match["leaf_index"] == world.registration["proof"]["leaf_index"]
    # The same for a check.
    resp = await world.service.upload(world.rival, stolen, path="/v1/checks")
    assert not _leaks(await resp.text(), "")


async def test_staff_read_everything_and_the_owner_reads_its_own(world):
    reg_id = world.registration["id"]
    for key in (world.staff, world.owner):
        for path in (f"/v1/registrations/{reg_id}", f"/v1/registrations/{reg_id}/proof"):
            resp = await world.service.client.get(path, headers=world.service.auth(key))
            assert resp.status == 200
            assert OWNER in await resp.text()
    resp = await world.service.client.get(
        f"/v1/registrations/{reg_id}", headers=world.service.auth(world.staff)
    )
    body = await resp.json()
    assert (body["seller"], body["title"], body["reference"]) == (OWNER, TITLE, REFERENCE)
    resp = await world.service.upload(world.staff, world.photo, path="/v1/checks")
    (match,) = (await resp.json())["matches"]
    assert (match["seller"], match["title"]) == (OWNER, TITLE)


async def test_no_endpoint_makes_or_reveals_api_keys(world):
    from shotstamp_service.http.keys import STORE

    store = world.service.app[STORE]
    before = await store.list_api_keys()
    for path in sorted({path for _, path in _routes(world.service.app)}):
        for verb in METHODS:
            for key in (None, world.rival, world.staff, world.owner):
                status, text, headers = await _call(
                    world, verb, path, key, world.registration["id"]
                )
                assert status < 500, (verb, path, status, text[:200])
                for secret in (world.owner, world.rival, world.staff, world.revoked):
                    assert secret.split("_", 2)[2] not in text + headers, (verb, path)
    assert [k.key_id for k in await store.list_api_keys()] == [k.key_id for k in before]
    key_routes = [(m, p) for m, p in _routes(world.service.app) if "key" in p and m != "GET"]
    assert key_routes == []
