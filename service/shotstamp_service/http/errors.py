"""The service's one error type at the HTTP edge: a status, a code and a message; and the
one table that gives the domain's errors their HTTP status."""

from __future__ import annotations

from enum import Enum
from typing import Any

from shotstamp_service.log.proofs import ProofRange, ProofRangeError
from shotstamp_service.matching.decode import ImageRejected, Rejection

__all__ = ["STATUS", "ApiError", "from_domain"]

# Each domain reason's HTTP status (the domain raises reasons; only this layer knows statuses).
STATUS: dict[Enum, int] = {
    Rejection.UNSUPPORTED_FORMAT: 415,
    Rejection.IMAGE_TOO_LARGE: 413,
    Rejection.TOO_MANY_FRAMES: 413,
    Rejection.CORRUPT_IMAGE: 422,
    Rejection.TOO_COSTLY: 422,
    Rejection.NOT_PROCESSED: 422,
    ProofRange.FROM_BELOW_ONE: 400,
    ProofRange.FROM_AFTER_TO: 400,
    ProofRange.NOT_YET: 404,
}


class ApiError(Exception):
    """Answered as `{"error": code, "message": message, **extra}` with `status`."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.extra}


def from_domain(exc: ImageRejected | ProofRangeError) -> ApiError:
    """The answer to a domain error: its reason's status, and its code on the wire."""
    if isinstance(exc, ImageRejected):
        return ApiError(STATUS[exc.reason], exc.code, exc.message)
    return ApiError(STATUS[exc.reason], "invalid_size", str(exc))
