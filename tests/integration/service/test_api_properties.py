"""Property-based API tests: schemathesis against the service's own /openapi.json.

A real server process, authenticated with a real key so the generated
requests reach the handlers. Every response must be free of 5xx and must
conform to the document: status codes, content types, headers and bodies.
"""

from __future__ import annotations

import json
import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    positive_data_acceptance,
)

from shotstamp_service.http.openapi import openapi_document
from shotstamp_service.log.tiles import parse_tile_path
from tests.kit.liveserver import LiveServer, http

EXAMPLES = int(os.environ.get("API_EXAMPLES", "40"))


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    server = LiveServer(
        tmp_path_factory.mktemp("api") / "data",
        env={
            "SHOTSTAMP_UPLOAD_RATE": "0",
            "SHOTSTAMP_MAX_UPLOADS_PER_KEY": "0",
            "SHOTSTAMP_READ_RATE": "0",
            "SHOTSTAMP_WAIT_TIMEOUT": "1",
            "SHOTSTAMP_SEAL_INTERVAL": "0.2",
        },
    )
    server.key = server.create_key("acme")  # type: ignore[attr-defined]
    server.start()
    yield server
    server.stop()
    assert "Traceback" not in server.log(), server.log()[-4000:]


TILE_PATH_PATTERN = openapi_document()["paths"]["/tile/{path}"]["get"]["parameters"][0]["schema"][
    "pattern"
]

# The document the service serves, built by the same code (a test below checks
# that they are equal). Loaded at import rather than from the live server:
# schemathesis's lazy fixture loader does not work with this pytest.
#
# Unknown query parameters are ignored, as HTTP APIs do for forward
# compatibility, and OpenAPI cannot say otherwise; so schemathesis is told not
# to count sending one as a schema violation that must be refused.
schema = schemathesis.openapi.from_dict(
    openapi_document(),
    config=schemathesis.Config.from_dict({"generation": {"allow-extra-parameters": False}}),
)


def test_the_tested_document_is_the_served_one(live):
    status, served, _ = http("GET", f"{live.base}/openapi.json")
    assert status == 200 and served == json.loads(json.dumps(openapi_document()))


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_keeps_to_its_own_description(case, live):
    excluded = []
    if case.operation.body:
        # Uploads are multipart forms, which schemathesis's data checks misjudge
        # both ways: (1) `image` is any bytes to the schema, but only a photo
        # is accepted, so random bytes rightly get 415/422 ("valid data
        # rejected"); (2) a form field carries text only, so a "number" sent as
        # `title` arrives as the valid string "3.5e-252" ("invalid data
        # accepted"). test_bad_input.py tests what uploads must refuse.
        excluded += [positive_data_acceptance, negative_data_rejection]
    if case.operation.path == "/v1/proofs/consistency":
        # `from` ≤ `to` ties two parameters together, which OpenAPI cannot say;
        # from > to is rightly a 400 (documented), not a valid request refused.
        excluded.append(positive_data_acceptance)
    case.call_and_validate(
        base_url=live.base,
        headers={"Authorization": f"Bearer {live.key}"},
        excluded_checks=excluded,
        timeout=30,
    )


def test_a_key_revoked_from_the_cli_stops_working_at_once(live):
    key = live.create_key("short-lived")
    assert http("GET", f"{live.base}/v1/registrations/x", key=key)[0] == 404
    listed = live.cli("keys", "list").stdout
    assert key.split("_", 2)[2] not in listed
    assert live.cli("keys", "revoke", key.split("_")[1]).returncode == 0
    status, body, _ = http("GET", f"{live.base}/v1/registrations/x", key=key)
    assert (status, body["error"]) == (401, "unauthorized")


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(st.from_regex(TILE_PATH_PATTERN, fullmatch=True))
def test_the_documented_tile_path_pattern_is_what_the_handler_parses(path):
    parse_tile_path(path)  # raises ValueError (a 400) for a path it refuses


def test_a_cropped_turned_copy_reports_its_geometry_as_documented(live):
    """Random bytes never match, so the geometry of a match is validated here on a real copy:
    the answer must conform to the document (MatchGeometry, strict), as schemathesis checks."""
    from tests.kit import imagegen

    original = imagegen.detailed_photo(5)
    suspect, _ = imagegen.crop_and_turn(original, (40, 60, 600, 530), 4.0)
    operation = schema["/v1/registrations"]["POST"]
    case = operation.Case(body={"image": imagegen.encode(original)},
                          media_type="multipart/form-data", query={"wait": "true"})
    case.call_and_validate(base_url=live.base, headers={"Authorization": f"Bearer {live.key}"},
                           excluded_checks=[positive_data_acceptance, negative_data_rejection])
    check = schema["/v1/checks"]["POST"].Case(body={"image": imagegen.encode(suspect)},
                                              media_type="multipart/form-data")
    response = check.call_and_validate(
        base_url=live.base, headers={"Authorization": f"Bearer {live.key}"},
        excluded_checks=[positive_data_acceptance, negative_data_rejection])
    matches = response.json()["matches"]
    assert [m["verdict"] for m in matches] == ["copy"]
    geometry = matches[0]["geometry"]
    assert geometry["model"] == "similarity" and abs(geometry["rotation"] - 4.0) < 0.5
    # and the document describes it strictly: an unknown field would not validate
    described = openapi_document()["components"]["schemas"]["MatchGeometry"]
    assert described["additionalProperties"] is False
    assert set(geometry) == set(described["properties"])
