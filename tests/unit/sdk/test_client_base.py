"""The I/O-free half of the clients: settings, requests, answers, retry decisions."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from shotstamp import (
    APIError,
    AsyncClient,
    AuthError,
    Check,
    CheckpointInfo,
    Client,
    ConflictError,
    Match,
    RateLimited,
    RegisterResult,
    Registration,
    RetryPolicy,
    ServerError,
    TransportError,
    ValidationError,
    VerificationError,
)
from shotstamp._client import _BaseClient, _parse_retry_after, _Request, _Response
from shotstamp._config import load_settings

REG = {
    "id": "01ABC",
    "seller": "acme",
    "sha256": "ab" * 32,
    "perceptual": {"phash": "0123456789abcdef"},
    "received_at": "2025-01-02T03:04:05.123456Z",
    "status": "pending",
    "width": 640,
    "height": 480,
    "title": "Blue kettle",
}
MATCH = {
    "registration_id": "01OLD",
    "received_at": "2024-12-01T00:00:00.000000Z",
    "distance": 2,
    "distances": {"phash": 2},
    "verdict": "copy",
    "exact": False,
    "proof_url": "/v1/registrations/01OLD/proof",
}


def base(**options) -> _BaseClient:
    options.setdefault("api_key", "ss_000000000000_secret")
    client = _BaseClient("http://svc.test", **options)
    client._rand = lambda: 0.5
    return client


def answer(status: int, body: object = None, **headers: str) -> _Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return _Response(status, {k.lower().replace("_", "-"): v for k, v in headers.items()}, raw)


# -- settings -----------------------------------------------------------------------
def test_settings_precedence_argument_env_file_default(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('url = "https://file.example"\napi_key = "from-file"\n')
    env = {"SHOTSTAMP_CONFIG": str(config)}
    s = load_settings(env=env)
    assert (s.url, s.api_key, s.url_from) == ("https://file.example", "from-file", str(config))
    env |= {"SHOTSTAMP_URL": "https://env.example/", "SHOTSTAMP_API_KEY": "from-env"}
    s = load_settings(env=env)
    assert (s.url, s.api_key, s.api_key_from) == (
        "https://env.example",
        "from-env",
        "SHOTSTAMP_API_KEY",
    )
    s = load_settings(url="http://arg.example", api_key="from-arg", env=env)
    assert (s.url, s.api_key) == ("http://arg.example", "from-arg")
    s = load_settings(env={"HOME": str(tmp_path)})
    assert (s.url, s.api_key, s.url_from) == ("http://127.0.0.1:8080", None, "default")


def test_settings_default_file_is_xdg_config(tmp_path):
    (tmp_path / "shotstamp").mkdir()
    (tmp_path / "shotstamp" / "config.toml").write_text('api_key = "k"\n')
    assert load_settings(env={"XDG_CONFIG_HOME": str(tmp_path)}).api_key == "k"
    home = tmp_path / "home"
    (home / ".config" / "shotstamp").mkdir(parents=True)
    (home / ".config" / "shotstamp" / "config.toml").write_text('api_key = "h"\n')
    assert load_settings(env={"HOME": str(home)}).api_key == "h"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("url = ", "not valid TOML"),
        ('apikey = "x"', "unknown settings apikey"),
        ("api_key = 3", "must be a non-empty string"),
        ('url = "ftp://x"', "must be http:// or https://"),
    ],
)
def test_bad_config_files_are_refused_with_a_reason(tmp_path, text, reason):
    config = tmp_path / "c.toml"
    config.write_text(text)
    with pytest.raises(ValueError, match=reason):
        load_settings(config_file=config, env={})


def test_a_named_config_file_must_exist(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_settings(config_file=tmp_path / "missing.toml", env={})


# -- requests -----------------------------------------------------------------------
def test_register_request_carries_the_idempotency_key_and_fields():
    client = base()
    request = client._build_register(
        b"img", "kettle.jpg", wait=True, title="T", reference=None, idempotency_key="ik_1"
    )
    assert (request.method, request.path, request.params) == (
        "POST",
        "/v1/registrations",
        {"wait": "true"},
    )
    assert request.headers == {"Idempotency-Key": "ik_1"}
    assert request.upload is not None and request.upload.fields == {"title": "T"}
    assert request.upload.content_type == "image/jpeg"
    assert request.idempotent and request.waits
    headers = client._headers(request)
    assert headers["Authorization"] == "Bearer ss_000000000000_secret"
    assert headers["Idempotency-Key"] == "ik_1"
    assert client._attempt_timeout(request) == client.timeout + client.wait_timeout


def test_a_request_needing_a_key_without_one_is_an_auth_error(monkeypatch, tmp_path):
    monkeypatch.delenv("SHOTSTAMP_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SHOTSTAMP_CONFIG", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    client = _BaseClient("http://svc.test")
    with pytest.raises(AuthError, match="no API key"):
        client._headers(client._build_get("01ABC"))
    # Public endpoints need none.
    assert "Authorization" not in client._headers(client._build_checkpoint())


@pytest.mark.parametrize("bad", ["", "a/b", "..", "."])
def test_ids_cannot_escape_their_path_segment(bad):
    with pytest.raises(ValueError, match="not a valid id"):
        base()._build_get(bad)


# -- answers -------------------------------------------------------------------------
def test_conflict_answer_becomes_conflict_error_with_typed_matches():
    client = base()
    request = client._build_register(
        b"x", "x.jpg", wait=False, title=None, reference=None, idempotency_key="k"
    )
    error = client._error_for(
        request, answer(409, {"error": "conflict", "message": "a copy", "matches": [MATCH]})
    )
    assert isinstance(error, ConflictError)
    assert error.matches == [MATCH]
    assert (error.method, error.url) == ("POST", "http://svc.test/v1/registrations")
    (match,) = Match.from_conflict(error)
    assert match.registration_id == "01OLD" and match.verdict == "copy" and match.seller is None
    result = RegisterResult.of("stolen.jpg", error)
    assert (result.outcome, result.matches, result.ok) == ("conflict", (match,), False)


def test_rate_limit_answer_carries_retry_after():
    client = base()
    error = client._error_for(
        client._build_get("x"),
        answer(429, {"error": "rate_limited", "message": "slow"}, Retry_After="7"),
    )
    assert isinstance(error, RateLimited) and error.retry_after == 7.0


def test_non_json_error_answer_still_maps_by_status():
    client = base()
    error = client._error_for(client._build_get("x"), answer(502, b"<html>Bad gateway</html>"))
    assert isinstance(error, ServerError)
    assert (error.status, error.code) == (502, "http_502")
    assert "Bad gateway" in error.message


def test_unexpected_redirect_is_an_error_naming_the_target():
    client = base()
    error = client._error_for(
        client._build_get("x"), answer(301, b"", Location="https://elsewhere/")
    )
    assert type(error) is APIError and "https://elsewhere/" in error.message


def test_malformed_success_answer_is_a_bad_response():
    client = base()
    request = client._build_get("x")
    with pytest.raises(APIError, match="bad_response") as info:
        client._parse(request, answer(200, {"id": "x"}), Registration.from_json)
    assert info.value.code == "bad_response"
    with pytest.raises(APIError, match="not JSON"):
        client._parse(request, answer(200, b"{"), Registration.from_json)


def test_retry_after_parses_seconds_and_http_dates():
    assert _parse_retry_after("3") == 3.0
    assert _parse_retry_after("-1") == 0.0
    assert _parse_retry_after(None) is None
    assert _parse_retry_after("soon") is None
    later = datetime.now(UTC) + timedelta(seconds=30)
    assert 25 <= _parse_retry_after(format_datetime(later, usegmt=True)) <= 31


# -- retry decisions ------------------------------------------------------------------
def test_backoff_doubles_with_equal_jitter_and_caps():
    policy = RetryPolicy(retries=10, backoff=0.5, max_backoff=4)
    low = [policy.delay(n, rand=lambda: 0.0) for n in range(1, 7)]
    high = [policy.delay(n, rand=lambda: 1.0) for n in range(1, 7)]
    assert low == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert high == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    # Retry-After is a floor, with a little spread above it.
    assert 5.0 <= policy.delay(1, retry_after=5.0) <= 5.5
    with pytest.raises(ValueError):
        policy.delay(0)
    with pytest.raises(ValueError):
        RetryPolicy(retries=-1)


def _transport(sent: bool) -> TransportError:
    error = TransportError("boom")
    error.maybe_sent = sent
    return error


@pytest.mark.parametrize(
    ("idempotent", "error", "retry_after", "retried"),
    [
        (False, RateLimited(429, "rate_limited", "slow"), 1.0, True),
        (False, ServerError(503, "unavailable", "down"), None, True),
        (True, ServerError(502, "http_502", "gw"), None, True),
        (False, ServerError(502, "http_502", "gw"), None, False),
        (True, ServerError(500, "internal", "bug"), None, False),
        (True, _transport(sent=True), None, True),
        (False, _transport(sent=True), None, False),
        (False, _transport(sent=False), None, True),
        (True, ValidationError(400, "bad", "bad"), None, False),
        (True, RateLimited(429, "rate_limited", "slow"), 3600.0, False),
    ],
)
def test_what_is_retried(idempotent, error, retry_after, retried):
    client = base(retries=3)
    request = _Request("POST", "/x", idempotent=idempotent)
    delay = client._retry_delay(request, 1, error, retry_after)
    assert (delay is not None) is retried
    if retried and retry_after is not None:
        assert delay >= retry_after


def test_retries_stop_after_the_policy_allows():
    client = base(retries=2)
    request = _Request("GET", "/x")
    error = ServerError(503, "unavailable", "down")
    assert client._retry_delay(request, 2, error, None) is not None
    assert client._retry_delay(request, 3, error, None) is None
    assert base(retries=0)._retry_delay(request, 1, error, None) is None


# -- checkpoints ------------------------------------------------------------------------
def _cp(size: int, root: bytes) -> CheckpointInfo:
    return CheckpointInfo(tree_size=size, root_hash=root, timestamp=datetime.now(UTC), note="x")


def test_a_checkpoint_that_cannot_extend_the_last_one_is_refused():
    from shotstamp._consistency import ConsistencyProof
    from shotstamp._merkle import consistency_proof, leaf_hash, root_hash

    leaves = [leaf_hash(bytes([i])) for i in range(9)]
    forged = [leaf_hash(b"mallory"), *leaves[1:]]
    client = base()
    client._check_extends(_cp(5, root_hash(leaves[:5])))  # nothing seen yet: accepted
    client.last_checkpoint = _cp(5, root_hash(leaves[:5]))
    client._check_extends(_cp(5, root_hash(leaves[:5])))  # the same one again
    assert client._consistency_span(_cp(9, root_hash(leaves))) == (5, 9)
    # Larger: accepted with the proof from 5 to 9, and only with it.
    proof = ConsistencyProof(5, 9, tuple(consistency_proof(leaves, 5)))
    client._check_extends(_cp(9, root_hash(leaves)), proof)
    with pytest.raises(VerificationError, match="no consistency proof from size 5 to 9"):
        client._check_extends(_cp(9, root_hash(leaves)))
    with pytest.raises(VerificationError, match=r"^fork") as info:
        forged_proof = ConsistencyProof(5, 9, tuple(consistency_proof(forged, 5)))
        client._check_extends(_cp(9, root_hash(forged)), forged_proof)
    assert info.value.check == "consistency"
    with pytest.raises(VerificationError, match="shrank") as info:
        client._check_extends(_cp(4, b"c" * 32))
    assert info.value.check == "consistency"
    with pytest.raises(VerificationError, match="two different trees"):
        client._check_extends(_cp(5, b"d" * 32))


# -- models ------------------------------------------------------------------------------
def test_registration_and_check_parse_the_wire_form():
    reg = Registration.from_json(REG, created=True)
    assert reg.created and not reg.sealed and reg.proof is None
    assert reg.received_at == datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert reg.title == "Blue kettle" and reg.reference is None
    assert RegisterResult.of("k.jpg", reg).outcome == "new"
    existing = Registration.from_json(REG)
    assert RegisterResult.of("k.jpg", existing).outcome == "existing"
    check = Check.from_json({"sha256": "ab" * 32, "perceptual": {}, "matches": [MATCH]})
    assert [m.registration_id for m in check.copies] == ["01OLD"]
    assert (check.matches[0].stage, check.matches[0].explanation) == (None, None)  # older service
    words = {"stage": 2, "clause": "keypoints", "explanation": "The same photo shrunk: …"}
    (match,) = Check.from_json({"sha256": "ab" * 32, "perceptual": {},
                                "matches": [{**MATCH, **words}]}).matches
    assert (match.stage, match.clause, match.explanation) == (2, "keypoints", words["explanation"])
    with pytest.raises(ValueError):
        Registration.from_json({**REG, "status": "weird"})


# -- state ---------------------------------------------------------------------------------
def test_a_closed_client_cannot_be_reopened_or_used():
    client = Client("http://127.0.0.1:9", api_key="k")
    with client:
        pass
    with pytest.raises(RuntimeError, match="reopen"):
        client.__enter__()
    with pytest.raises(RuntimeError, match="closed"):
        client.get("x")
    assert "closed" in repr(client)


async def test_an_async_client_cannot_be_entered_twice():
    client = AsyncClient("http://127.0.0.1:9", api_key="k")
    async with client:
        with pytest.raises(RuntimeError, match="more than once"):
            await client.__aenter__()
    with pytest.raises(RuntimeError, match="closed"):
        await client.get("x")


def test_options_are_keyword_only_and_validated():
    with pytest.raises(TypeError):
        Client("http://x", "key")  # type: ignore[misc]
    with pytest.raises(ValueError, match="timeout"):
        Client("http://x", api_key="k", timeout=0)
    with pytest.raises(ValueError, match="http"):
        Client("svc.example", api_key="k")
    with pytest.raises(ValueError, match="concurrency"):
        Client("http://x", api_key="k").register_many([], concurrency=0)


def test_client_reads_env_like_the_cli(monkeypatch):
    monkeypatch.setenv("SHOTSTAMP_URL", "https://env.example")
    monkeypatch.setenv("SHOTSTAMP_API_KEY", "envkey")
    client = Client()
    assert (client.url, client.api_key) == ("https://env.example", "envkey")
    assert os.environ["SHOTSTAMP_URL"] == "https://env.example"
