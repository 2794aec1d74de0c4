"""`verify_webhook`: what a receiver accepts and each reason it refuses."""

from __future__ import annotations

import json

import pytest

from shotstamp import WebhookVerificationError, verify_webhook
from shotstamp._webhooks import sign_webhook

SECRET = "whsec_test-secret"
NOW = 1_750_000_000
EVENT = {
    "id": "evt_1",
    "type": "registration.conflict",
    "created_at": "2025-06-15T15:06:40.000000Z",
    "data": {"registration_id": "01ABC", "matches": []},
}
BODY = json.dumps(EVENT, separators=(",", ":")).encode()


def test_a_signed_delivery_verifies_and_yields_its_event():
    header = sign_webhook(BODY, SECRET, timestamp=NOW)
    assert header.startswith(f"t={NOW},v1=")
    event = verify_webhook(BODY, header, SECRET, now=NOW + 10)
    assert (event.id, event.type, event.data["registration_id"]) == (
        "evt_1",
        "registration.conflict",
        "01ABC",
    )
    assert event.created_at.year == 2025
    # Text bodies are taken as UTF-8; memoryviews as bytes.
    verify_webhook(BODY.decode(), header, SECRET, now=NOW)
    verify_webhook(memoryview(BODY), header, SECRET, now=NOW)


@pytest.mark.parametrize(
    ("body", "header", "secret", "now", "check"),
    [
        (BODY + b" ", None, SECRET, NOW, "webhook-header"),
        (BODY.replace(b"01ABC", b"01ABD"), "sign-original", SECRET, NOW, "webhook-signature"),
        (BODY, "sign", "whsec_other", NOW, "webhook-signature"),
        (BODY, "sign", SECRET, NOW + 301, "webhook-timestamp"),
        (BODY, "sign", SECRET, NOW - 301, "webhook-timestamp"),
        (BODY, "", SECRET, NOW, "webhook-header"),
        (BODY, f"v1={'0' * 64}", SECRET, NOW, "webhook-header"),
        (BODY, f"t={NOW}", SECRET, NOW, "webhook-header"),
        (BODY, f"t={NOW},t={NOW},v1=00", SECRET, NOW, "webhook-header"),
        (BODY, f"t=soon,v1={'0' * 64}", SECRET, NOW, "webhook-header"),
        (BODY, f"t={NOW},v1", SECRET, NOW, "webhook-header"),
        (b"[1, 2]", "sign", SECRET, NOW, "webhook-body"),
        (b'{"id": "x"}', "sign", SECRET, NOW, "webhook-body"),
    ],
)
def test_each_refusal_names_its_check(body, header, secret, now, check):
    if header == "sign":
        header = sign_webhook(body, SECRET, timestamp=NOW)
    elif header == "sign-original":
        header = sign_webhook(BODY, SECRET, timestamp=NOW)
    with pytest.raises(WebhookVerificationError) as info:
        verify_webhook(body, header, secret, now=now)
    assert info.value.check == check


def test_a_replay_with_a_fresh_timestamp_does_not_verify():
    old = sign_webhook(BODY, SECRET, timestamp=NOW)
    signature = old.split("v1=")[1]
    replay = f"t={NOW + 3600},v1={signature}"
    with pytest.raises(WebhookVerificationError) as info:
        verify_webhook(BODY, replay, SECRET, now=NOW + 3600)
    assert info.value.check == "webhook-signature"


def test_any_of_several_signatures_and_secrets_may_match():
    new = sign_webhook(BODY, "whsec_new", timestamp=NOW).split("v1=")[1]
    header = f"t={NOW},v1={'f' * 64},v0=ignored,v1={new}"
    verify_webhook(BODY, header, ["whsec_old", "whsec_new"], now=NOW)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(BODY, header, ["whsec_old"], now=NOW)


def test_tolerance_is_configurable_and_secrets_required():
    header = sign_webhook(BODY, SECRET, timestamp=NOW)
    verify_webhook(BODY, header, SECRET, now=NOW + 1000, tolerance=1000)
    with pytest.raises(ValueError):
        verify_webhook(BODY, header, "", now=NOW)
    with pytest.raises(ValueError):
        verify_webhook(BODY, header, [], now=NOW)
    with pytest.raises(ValueError):
        sign_webhook(BODY, "")
