"""The exception tree other modules (and the HTTP client) build on."""

from __future__ import annotations

import pytest

from shotstamp._exceptions import (
    APIError,
    AuthError,
    ConflictError,
    MalformedProofError,
    NotFoundError,
    RateLimited,
    RootMismatchError,
    ServerError,
    ShotstampError,
    TransportError,
    ValidationError,
    VerificationError,
    error_class_for_status,
)


@pytest.mark.parametrize(
    ("child", "parent"),
    [
        (MalformedProofError, ShotstampError),
        (MalformedProofError, ValueError),
        (VerificationError, ShotstampError),
        (RootMismatchError, VerificationError),
        (APIError, ShotstampError),
        (AuthError, APIError),
        (NotFoundError, APIError),
        (ValidationError, APIError),
        (ConflictError, APIError),
        (RateLimited, APIError),
        (ServerError, APIError),
        (TransportError, ShotstampError),
    ],
)
def test_tree(child: type[Exception], parent: type[Exception]) -> None:
    assert issubclass(child, parent)


def test_branches_do_not_overlap() -> None:
    assert not issubclass(VerificationError, ValueError)
    assert not issubclass(TransportError, APIError)
    assert not issubclass(MalformedProofError, VerificationError)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, ValidationError),
        (401, AuthError),
        (403, AuthError),
        (404, NotFoundError),
        (409, ConflictError),
        (413, ValidationError),
        (415, ValidationError),
        (422, ValidationError),
        (429, RateLimited),
        (500, ServerError),
        (503, ServerError),
        (418, APIError),
    ],
)
def test_status_mapping(status: int, cls: type[APIError]) -> None:
    assert error_class_for_status(status) is cls


def test_api_errors_carry_the_answer() -> None:
    body = {"error": {"code": "duplicate", "message": "registered by another seller"}}
    conflict = ConflictError(
        409,
        "duplicate",
        "registered by another seller",
        body,
        matches=[{"id": "01J", "distance": 2}],
    )
    assert (conflict.status, conflict.code, conflict.body) == (409, "duplicate", body)
    assert conflict.matches == [{"id": "01J", "distance": 2}]
    assert str(conflict) == "409 duplicate: registered by another seller"
    assert ConflictError(409, "duplicate", "x").matches == []
    limited = RateLimited(429, "rate_limited", "slow down", retry_after=1.5)
    assert limited.retry_after == 1.5
    assert RateLimited(429, "rate_limited", "slow down").retry_after is None


def test_verification_error_diagnostics() -> None:
    try:
        try:
            raise RootMismatchError(b"\x01" * 32, b"\x02" * 32, size=7)
        except VerificationError as exc:
            raise VerificationError("leaf 3 is not in the tree", check="inclusion") from exc
    except VerificationError as outer:
        text = outer.diagnostics()
    assert text.splitlines() == [
        "verification failed: check 'inclusion' did not pass",
        "  leaf 3 is not in the tree",
        f"  caused by RootMismatchError: calculated root {'02' * 32} at tree size 7 "
        f"does not match expected root {'01' * 32}",
    ]


def test_other_errors_diagnostics() -> None:
    error = MalformedProofError("malformed checkpoint: invalid tree size", field="size")
    assert error.field == "size"
    assert error.diagnostics() == "MalformedProofError: malformed checkpoint: invalid tree size"
    assert TransportError("timed out").diagnostics() == "TransportError: timed out"
