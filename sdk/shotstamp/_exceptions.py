"""Every exception the shotstamp SDK raises on purpose.

The hierarchy:

    ShotstampError
    ├── MalformedProofError      a bundle, note or checkpoint that does not parse
    ├── VerificationError        a proof that parses but does not hold (.check)
    │   ├── RootMismatchError    a Merkle proof that leads to another root
    │   └── WebhookVerificationError  a webhook delivery whose signature does not hold
    ├── NotSealedError           the registration is not in a signed checkpoint yet
    ├── APIError                 the service answered with an error (.status, .code)
    │   ├── AuthError            401, 403
    │   ├── NotFoundError        404
    │   ├── ValidationError      400, 413, 415, 422
    │   ├── ConflictError        409: another seller registered it first (.matches)
    │   ├── RateLimited          429 (.retry_after)
    │   └── ServerError          5xx
    └── TransportError           no answer: connection refused, reset, timed out

`MalformedProofError` is also a `ValueError`, so code that treats "this input
does not parse" generically keeps working.  Misuse of the SDK itself (a bad
verifier key string, no keys at all) raises plain `ValueError` / `TypeError`.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "APIError",
    "AuthError",
    "ConflictError",
    "MalformedProofError",
    "NotFoundError",
    "NotSealedError",
    "RateLimited",
    "RootMismatchError",
    "ServerError",
    "ShotstampError",
    "TransportError",
    "ValidationError",
    "VerificationError",
    "WebhookVerificationError",
]


class ShotstampError(Exception):
    """Base class of every error the SDK raises on purpose."""

    def diagnostics(self) -> str:
        """A human-readable account of the error, for command-line output."""
        lines = [f"{type(self).__name__}: {self}"]
        cause = self.__cause__
        while cause is not None:
            lines.append(f"  caused by {type(cause).__name__}: {cause}")
            cause = cause.__cause__
        return "\n".join(lines)


class MalformedProofError(ShotstampError, ValueError):
    """Proof material (bundle, signed note, checkpoint) that does not parse."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class VerificationError(ShotstampError):
    """A proof that parses but fails one check; `check` names which one."""

    def __init__(self, message: str, *, check: str) -> None:
        super().__init__(message)
        self.check = check

    def diagnostics(self) -> str:
        lines = [f"verification failed: check {self.check!r} did not pass", f"  {self}"]
        cause = self.__cause__
        while cause is not None:
            lines.append(f"  caused by {type(cause).__name__}: {cause}")
            cause = cause.__cause__
        return "\n".join(lines)


class RootMismatchError(VerificationError):
    """A Merkle proof that is well-formed but leads to a different root."""

    def __init__(
        self,
        expected: bytes,
        calculated: bytes,
        *,
        check: str = "inclusion",
        size: int | None = None,
    ) -> None:
        where = "" if size is None else f" at tree size {size}"
        super().__init__(
            f"calculated root {calculated.hex()}{where} does not match "
            f"expected root {expected.hex()}",
            check=check,
        )
        self.expected = expected
        self.calculated = calculated
        self.size = size


class WebhookVerificationError(VerificationError):
    """A webhook delivery whose signature header is missing, stale or wrong."""


class NotSealedError(ShotstampError):
    """The registration is still pending: no signed checkpoint contains it yet.

    Raised by `proof(..., wait=False)` and when a wait runs out; retry after
    `retry_after` seconds (sealing takes about a second).
    """

    def __init__(self, registration_id: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"registration {registration_id} is not sealed yet; retry shortly")
        self.registration_id = registration_id
        self.retry_after = retry_after


class APIError(ShotstampError):
    """The service answered with an error status.

    The clients set `method` and `url` to the request that got this answer.
    """

    method: str | None = None
    url: str | None = None

    def __init__(self, status: int, code: str, message: str, body: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body

    def diagnostics(self) -> str:
        text = super().diagnostics()
        if self.method and self.url:
            text += f"\n  request: {self.method} {self.url}"
        return text


class AuthError(APIError):
    """401 or 403: the API key is missing, unknown, revoked or not allowed this."""


class NotFoundError(APIError):
    """404: no such registration, proof or checkpoint."""


class ValidationError(APIError):
    """400, 413, 415 or 422: the request or the upload was refused as invalid."""


class ConflictError(APIError):
    """409: the photo matches one registered earlier by another seller."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        body: Any = None,
        *,
        matches: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(status, code, message, body)
        self.matches: list[dict[str, Any]] = list(matches or [])


class RateLimited(APIError):
    """429: too many requests; `retry_after` is in seconds when the service said."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        body: Any = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, code, message, body)
        self.retry_after = retry_after


class ServerError(APIError):
    """5xx: the service failed; the request may be retried."""


class TransportError(ShotstampError):
    """The request got no HTTP answer: connection failure or timeout.

    `maybe_sent` is False when the connection failed before the request left,
    so the service cannot have acted on it.
    """

    method: str | None = None
    url: str | None = None
    maybe_sent: bool = True


_BY_STATUS: dict[int, type[APIError]] = {
    400: ValidationError,
    401: AuthError,
    403: AuthError,
    404: NotFoundError,
    409: ConflictError,
    413: ValidationError,
    415: ValidationError,
    422: ValidationError,
    429: RateLimited,
}


def error_class_for_status(status: int) -> type[APIError]:
    """The `APIError` subclass that stands for an HTTP error status."""
    if status >= 500:
        return ServerError
    return _BY_STATUS.get(status, APIError)
