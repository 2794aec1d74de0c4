"""Requests that once slipped through (issue 19): each refused with a 4xx that loses
nothing, through the real server on a real socket, on both stores."""

from __future__ import annotations

import dataclasses
import json
import sqlite3

import pytest

from tests.kit import imagegen
from tests.kit.liveserver import multipart
from tests.kit.rawhttp import exchange, request_head


@pytest.fixture
def service_config(service_config):
    # The webhook tests register a receiver URL on loopback.
    return dataclasses.replace(service_config, webhook_allow_private=True)


def _port(service) -> int:
    return int(service.client.server.port)


async def _indexed(service) -> int:
    return int((await (await service.client.get("/healthz")).json())["indexed"])


# -- 8: an idempotency key reused with another photo ---------------------------------
async def test_an_idempotency_key_reused_for_another_photo_is_refused(service):
    key = await service.key("acme")
    first = await service.client.post(
        "/v1/registrations",
        data=_form(imagegen.jpeg(1901)),
        headers={**service.auth(key), "Idempotency-Key": "upload-1"},
    )
    assert first.status == 201, await first.text()
    created = await first.json()

    other = await service.client.post(
        "/v1/registrations",
        data=_form(imagegen.jpeg(1902)),
        headers={**service.auth(key), "Idempotency-Key": "upload-1"},
    )
    assert other.status == 422, await other.text()
    body = await other.json()
    assert body["error"] == "idempotency_key_reused"
    assert created["id"] in body["message"]

    # The same photo with another title is another request too.
    retitled = await service.client.post(
        "/v1/registrations",
        data=_form(imagegen.jpeg(1901), title="Teapot"),
        headers={**service.auth(key), "Idempotency-Key": "upload-1"},
    )
    assert retitled.status == 422
    assert (await retitled.json())["error"] == "idempotency_key_reused"

    # A true retry still gets the first answer; the refused photo was not lost.
    retry = await service.client.post(
        "/v1/registrations",
        data=_form(imagegen.jpeg(1901)),
        headers={**service.auth(key), "Idempotency-Key": "upload-1"},
    )
    assert retry.status == 200
    assert (await retry.json())["id"] == created["id"]
    fresh = await service.client.post(
        "/v1/registrations",
        data=_form(imagegen.jpeg(1902)),
        headers={**service.auth(key), "Idempotency-Key": "upload-2"},
    )
    assert fresh.status == 201
    assert (await fresh.json())["id"] != created["id"]


def _form(photo: bytes, **fields: str):
    import aiohttp

    form = aiohttp.FormData()
    form.add_field("image", photo, filename="p.jpg", content_type="image/jpeg")
    for name, value in fields.items():
        form.add_field(name, value)
    return form


async def test_a_key_stored_before_digests_were_kept_still_answers_its_retry(
    store_target, monkeypatch
):
    """The migration adds the digest column; rows from before it have none and stay retries."""
    from shotstamp_service.http.auth import Principal
    from shotstamp_service.matching.engine import Matcher
    from shotstamp_service.registry import Registry

    before_digest = await _database_before_digest(store_target, monkeypatch)
    store = store_target.make()
    await store.open()
    try:
        earlier = await store.find_by_idempotency_key("acme", "old-key")
        assert earlier is not None and earlier.id == before_digest
        assert earlier.idempotency_digest is None
        registry = Registry(store, Matcher(), _no_fingerprint)
        who = Principal("acme", "seller", "k")
        outcome = await registry.register(who, b"any bytes", idempotency_key="old-key")
        assert (outcome.kind, outcome.registration.id) == ("existing", before_digest)
    finally:
        await store.close()


async def _no_fingerprint(data: bytes):
    raise AssertionError("a retry is answered without fingerprinting")


async def _database_before_digest(store_target, monkeypatch) -> str:
    """A database as schema version 6 left it (before the digest), with one keyed registration."""
    from shotstamp_service.store import postgres, sqlite

    row = (
        "01OLDREGISTRATION000000000",
        "acme",
        "ab" * 32,
        json.dumps({"phash": "00"}),
        "2026-01-01T00:00:00.000000Z",
        10,
        10,
        "old-key",
    )
    insert = (
        "INSERT INTO registrations (id, seller, sha256, perceptual, received_at, width, height,"
        " idempotency_key) VALUES ({})"
    )
    if store_target.url is None:
        monkeypatch.setattr(sqlite, "MIGRATIONS", sqlite.MIGRATIONS[:6])
        store = store_target.make()
        await store.open()
        await store.close()
        conn = sqlite3.connect(store_target.path)
        conn.execute(insert.format(", ".join("?" * len(row))), row)
        conn.commit()
        conn.close()
    else:
        import asyncpg

        monkeypatch.setattr(postgres, "MIGRATIONS", postgres.MIGRATIONS[:6])
        store = store_target.make()
        await store.open()
        await store.close()
        conn = await asyncpg.connect(store_target.url)
        values = ", ".join(f"${n}" for n in range(1, len(row) + 1))
        await conn.execute(insert.format(values).replace("$4", "$4::jsonb"), *row)
        await conn.close()
    monkeypatch.undo()
    return row[0]


# -- 9: every parameter checked before anything is stored -----------------------------
async def test_a_bad_wait_parameter_stores_nothing(service):
    key = await service.key("acme")
    photo = imagegen.jpeg(1911)
    resp = await service.upload(key, photo, params={"wait": "maybe"})
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_parameter"
    assert await _indexed(service) == 0
    again = await service.upload(key, photo)
    assert again.status == 201  # new, not "already yours"


async def test_a_bad_idempotency_key_stores_nothing(service):
    key = await service.key("acme")
    photo = imagegen.jpeg(1912)
    resp = await service.client.post(
        "/v1/registrations",
        data=_form(photo),
        headers={**service.auth(key), "Idempotency-Key": "x" * 201},
    )
    assert resp.status == 400
    assert await _indexed(service) == 0
    assert (await service.upload(key, photo)).status == 201


# -- 10: header bytes that are not ASCII --------------------------------------------
@pytest.mark.parametrize(
    "header",
    ["Authorization", "Idempotency-Key", "Content-Type", "X-Request-Id"],
)
async def test_a_header_with_latin1_bytes_gets_a_4xx(service, header):
    key = await service.key("acme")
    body, ctype = multipart(imagegen.jpeg(1921))
    headers: dict[str, bytes | str] = {
        "Authorization": f"Bearer {key}",
        "Idempotency-Key": "k-1",
        "Content-Type": ctype,
        "X-Request-Id": "req-1",
    }
    headers[header] = headers[header].encode() + b"caf\xe9"  # type: ignore[union-attr]
    answer = await exchange(
        _port(service), request_head("POST", "/v1/registrations", headers, len(body)) + body
    )
    assert answer is not None
    assert 400 <= answer.status < 500, answer
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json()["error"] in ("invalid_header", "unauthorized")
    assert await _indexed(service) == 0
    # The server is fine, and the same upload with clean headers registers.
    headers[header] = headers[header][:-4]  # type: ignore[index]
    clean = await exchange(
        _port(service), request_head("POST", "/v1/registrations", headers, len(body)) + body
    )
    assert clean is not None and clean.status == 201, clean


async def test_a_latin1_header_on_a_read_gets_a_4xx(service):
    key = await service.key("acme")
    head = request_head(
        "GET", "/v1/webhooks", {"Authorization": f"Bearer {key}", "X-Request-Id": b"r\xe9"}
    )
    answer = await exchange(_port(service), head)
    assert answer is not None and answer.status == 400, answer
    assert answer.json()["error"] == "invalid_header"
    assert answer.headers["x-request-id"].isascii()


# -- 11: a JSON body in several segments ---------------------------------------------
async def test_a_json_body_sent_in_two_segments_is_read_whole(service):
    key = await service.key("acme")
    body = json.dumps(
        {"url": "http://127.0.0.1:9/hook", "events": ["registration.conflict"]}
    ).encode()
    head = request_head(
        "POST",
        "/v1/webhooks",
        {"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        len(body),
    )
    answer = await exchange(_port(service), head, 0.2, body[:10], 0.2, body[10:])
    assert answer is not None and answer.status == 201, answer
    assert answer.json()["url"] == "http://127.0.0.1:9/hook"


async def test_a_json_body_over_the_cap_is_refused_however_it_arrives(service):
    key = await service.key("acme")
    body = b'{"url": "' + b"a" * 20000 + b'"}'
    # No Content-Length: the size is known only by reading.
    head = (
        b"POST /v1/webhooks HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        + f"Authorization: Bearer {key}\r\n".encode()
        + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    answer = await exchange(_port(service), head, 0.1, chunk)
    assert answer is not None and answer.status == 413, answer
    assert answer.json()["error"] == "body_too_large"
