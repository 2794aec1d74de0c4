"""What an operator sees: Prometheus metrics and JSON log lines carrying the request id."""

from __future__ import annotations

import io
import json
import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shotstamp_service.logs import JsonFormatter, RequestIdFilter
from tests.kit import imagegen


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def scrape(service) -> dict:
    resp = await service.client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return samples(await resp.text())


async def test_metrics_count_uploads_conflicts_and_seals(service):
    acme, thief = await service.key("acme"), await service.key("thief")
    before = await scrape(service)
    assert before[("shotstamp_uploads_total", (("outcome", "created"),))] == 0
    assert before[("shotstamp_log_size", ())] == 0

    original = imagegen.jpeg(40)
    assert (await service.upload(acme, original, params={"wait": "true"})).status == 201
    assert (await service.upload(acme, original)).status == 200
    assert (await service.upload(thief, imagegen.recompressed_copy(original))).status == 409
    assert (await service.upload(thief, original)).status == 409
    assert (await service.upload(thief, b"not an image")).status == 415
    assert (await service.upload("ss_nope_nope", original)).status == 401

    after = await scrape(service)

    def uploads(outcome: str) -> float:
        return after[("shotstamp_uploads_total", (("outcome", outcome),))]

    assert [uploads(o) for o in ("created", "existing", "conflict", "rejected", "unauthorized")] \
        == [1, 1, 2, 1, 1]
    assert after[("shotstamp_conflicts_total", (("match", "near_duplicate"),))] == 1
    assert after[("shotstamp_conflicts_total", (("match", "exact"),))] == 1
    # Fingerprinted: the new upload and the three copies of it (the same seller's exact
    # re-upload too); the non-image was refused before or during fingerprinting.
    assert after[("shotstamp_fingerprint_seconds_count", ())] >= 4
    assert after[("shotstamp_seal_delay_seconds_count", ())] == 1
    assert 0 < after[("shotstamp_seal_delay_seconds_sum", ())] < 5
    assert after[("shotstamp_seal_seconds_count", ())] >= 1
    assert after[("shotstamp_sealed_registrations_total", ())] == 1
    assert after[("shotstamp_log_size", ())] == 1
    assert after[("shotstamp_pending_registrations", ())] == 0
    assert after[("shotstamp_index_size", ())] == 1
    assert after[("shotstamp_sealing", ())] == 1


async def test_pending_registrations_show_until_sealed(service):
    import asyncio

    from shotstamp_service.http.keys import SEALER

    acme = await service.key("acme")
    sealer = service.app[SEALER]
    sealer.interval = 3600  # after the tick under way, the next one is an hour away
    await asyncio.sleep(0.5)
    assert (await service.upload(acme, imagegen.jpeg(41))).status == 201
    assert (await service.upload(acme, imagegen.jpeg(44))).status == 201
    assert (await scrape(service))[("shotstamp_pending_registrations", ())] == 2
    await sealer.seal_once()
    metrics = await scrape(service)
    assert metrics[("shotstamp_pending_registrations", ())] == 0
    assert metrics[("shotstamp_log_size", ())] == 2


@pytest.fixture
def captured_logs():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


async def test_each_upload_logs_json_lines_with_its_request_id(service, captured_logs):
    acme = await service.key("acme")
    form_resp = await service.client.post(
        "/v1/registrations",
        data=_form(imagegen.jpeg(42)),
        headers={**service.auth(acme), "X-Request-Id": "req-from-the-client"},
    )
    assert form_resp.status == 201
    assert form_resp.headers["X-Request-Id"] == "req-from-the-client"
    registration = await form_resp.json()
    plain = await service.upload(acme, imagegen.jpeg(43))
    generated = plain.headers["X-Request-Id"]
    assert len(generated) == 32 and generated != "req-from-the-client"

    lines = [json.loads(line) for line in captured_logs.getvalue().splitlines()]
    mine = [line for line in lines if line.get("request_id") == "req-from-the-client"]
    outcome = next(line for line in mine if line.get("outcome") == "created")
    assert outcome["registration_id"] == registration["id"]
    assert outcome["seller"] == "acme" and outcome["level"] == "info"
    access = next(line for line in mine if line["logger"] == "shotstamp_service.access")
    assert (access["method"], access["path"], access["status"]) == (
        "POST", "/v1/registrations", 201)
    assert access["duration_ms"] > 0
    assert any(line.get("request_id") == generated for line in lines)
    # A line logged outside any request carries no request id.
    logging.getLogger("shotstamp_service.test").info("outside")
    last = json.loads(captured_logs.getvalue().splitlines()[-1])
    assert last["message"] == "outside" and "request_id" not in last


def _form(photo: bytes):
    import aiohttp

    form = aiohttp.FormData()
    form.add_field("image", photo, filename="p.jpg", content_type="image/jpeg")
    return form


async def test_the_root_points_to_the_desk_the_api_and_the_docs(service):
    answer = await service.client.get("/")
    assert answer.status == 200 and answer.content_type == "application/json"
    body = await answer.json()
    assert body["links"]["desk"] == "/desk" and body["links"]["openapi"] == "/openapi.json"
    assert "docs/api.md" in body["docs"]
    for path in body["links"].values():  # every link leads somewhere real
        assert (await service.client.get(path)).status == 200, path
    browser = await service.client.get(
        "/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    )
    assert browser.status == 200 and browser.content_type == "text/html"
    page = await browser.text()
    assert '<a href="/desk">' in page and '<a href="/openapi.json">' in page
    assert "docs/api.md" in page
    curl = await service.client.get("/", headers={"Accept": "*/*"})
    assert curl.content_type == "application/json"
