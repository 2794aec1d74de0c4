"""HTTP clients for the shotstamp service: `AsyncClient` and its sync twin `Client`.

Both have the same methods, keyword-only options and return values:

    with shotstamp.Client(api_key="ss_...") as client:        # or: async with AsyncClient(...)
        reg = client.register("kettle.jpg", wait=True)      # Registration, with .proof
        for result in client.register_many(paths, concurrency=8):
            print(result.path, result.outcome)             # new | existing | conflict | error

Layers (as in httpx): `_BaseClient` does no I/O. It resolves settings,
builds each request, maps answers to return values and errors, and decides
whether and when to retry. `AsyncClient` sends requests over one
`aiohttp.ClientSession`. `Client` runs an `AsyncClient` on a private event
loop in a background thread: one HTTP stack, one session, the same code.

Retries: 429 (honouring `Retry-After`) and 503 always; 502/504, timeouts and
dropped connections only for requests that cannot take effect twice. Every
`register` call sends an `Idempotency-Key` generated for that upload and
reused on each of its retries, so a retry after a lost answer returns the
registration the first attempt made instead of making a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import io
import json
import mimetypes
import os
import queue
import random
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self, TypeVar, cast

import aiohttp

from shotstamp._checkpoint import NoteVerifier
from shotstamp._config import load_settings
from shotstamp._consistency import ConsistencyProof, check_tree_extends
from shotstamp._exceptions import (
    APIError,
    AuthError,
    ConflictError,
    NotSealedError,
    RateLimited,
    ServerError,
    ShotstampError,
    TransportError,
    VerificationError,
    error_class_for_status,
)
from shotstamp._models import (
    Check,
    CheckpointInfo,
    LogKeys,
    RegisterResult,
    Registration,
    Webhook,
)
from shotstamp._verify import ProofBundle, verify_proof

__all__ = ["AsyncClient", "Client", "RetryPolicy"]

T = TypeVar("T")

ImageInput = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes]
"""A photo to upload: a path, its bytes, or a binary file object."""

PathInput = str | os.PathLike[str]


# -- policy and plumbing (no I/O) ----------------------------------------------
@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before retrying a request.

    **Parameters:**

    * **retries** - retries after the first attempt (0 disables retrying).
    * **backoff** - the first delay in seconds; each retry doubles it.
    * **max_backoff** - the longest computed delay.
    * **max_retry_after** - a `Retry-After` longer than this is not waited
      for: the error is raised instead.

    Delays use "equal jitter": half the exponential delay plus a random part
    of the other half, so many clients retrying at once spread out. A
    server's `Retry-After` is honoured as the minimum wait.
    """

    retries: int = 4
    backoff: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.backoff < 0 or self.max_backoff < 0 or self.max_retry_after < 0:
            raise ValueError("backoff, max_backoff and max_retry_after must be >= 0")

    def delay(
        self,
        retry: int,
        *,
        retry_after: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait before retry number `retry` (1 for the first retry)."""
        if retry < 1:
            raise ValueError(f"retry numbers start at 1, got {retry}")
        if retry_after is not None:
            # At least what the server asked, plus a little spread.
            return max(0.0, retry_after) + rand() * min(self.backoff, 1.0)
        ceiling = min(self.max_backoff, self.backoff * 2.0 ** (retry - 1))
        return ceiling / 2 + rand() * ceiling / 2


class _State(enum.Enum):
    UNOPENED = 1
    OPENED = 2
    CLOSED = 3


@dataclass(frozen=True)
class _Upload:
    data: bytes
    filename: str
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def content_type(self) -> str:
        guessed, _ = mimetypes.guess_type(self.filename)
        return guessed or "application/octet-stream"


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = None
    upload: _Upload | None = None
    auth: bool = True
    # True when sending it twice has the effect of sending it once: safe to
    # retry after a timeout or dropped connection.
    idempotent: bool = True
    # The caller handles these statuses; anything else >= 300 is an error.
    expect: frozenset[int] = frozenset({200})
    waits: bool = False


@dataclass(frozen=True)
class _Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def _parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """`Retry-After` as seconds: delta-seconds or an HTTP date; None if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def _user_agent() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"shotstamp-python/{version('shotstamp')}"
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "shotstamp-python"


def _read_image(image: ImageInput) -> tuple[bytes, str]:
    """The bytes to upload and a file name for the multipart part."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image), "image"
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        return path.read_bytes(), path.name
    if isinstance(image, io.TextIOBase):
        raise TypeError("the file object must be opened in binary mode ('rb')")
    read = getattr(image, "read", None)
    if read is None:
        raise TypeError(
            f"register/check take a path, bytes or a binary file object, not {type(image).__name__}"
        )
    data = read()
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError("the file object must be opened in binary mode ('rb')")
    name = getattr(image, "name", None)
    return bytes(data), Path(name).name if isinstance(name, str) else "image"


def _new_idempotency_key() -> str:
    return f"ik_{uuid.uuid4().hex}"


class _BaseClient:
    """Settings, request building, answer mapping and the retry decision; no I/O."""

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        config_file: str | os.PathLike[str] | None = None,
        timeout: float = 30.0,
        wait_timeout: float = 60.0,
        retries: int | RetryPolicy = 4,
        trusted_keys: Iterable[str | NoteVerifier] | None = None,
        user_agent: str | None = None,
    ) -> None:
        settings = load_settings(url=url, api_key=api_key, config_file=config_file)
        if timeout <= 0 or wait_timeout < 0:
            raise ValueError("timeout must be > 0 and wait_timeout >= 0")
        self.url = settings.url
        self.api_key = settings.api_key
        self.timeout = timeout
        self.wait_timeout = wait_timeout
        self.retry_policy = retries if isinstance(retries, RetryPolicy) else RetryPolicy(retries)
        self.trusted_keys: list[NoteVerifier] | None = (
            None
            if trusted_keys is None
            else [
                k if isinstance(k, NoteVerifier) else NoteVerifier.from_vkey(k)
                for k in trusted_keys
            ]
        )
        self.user_agent = user_agent or _user_agent()
        # The latest checkpoint this client has seen; a later one that does not
        # extend it is refused (see `_check_extends`). Assign a saved one to
        # carry the guarantee across runs.
        self.last_checkpoint: CheckpointInfo | None = None
        self._state = _State.UNOPENED
        self._rand: Callable[[], float] = random.random

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} {self._state.name.lower()}>"

    def _settings(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "api_key": self.api_key,
            "timeout": self.timeout,
            "wait_timeout": self.wait_timeout,
            "retries": self.retry_policy,
            "trusted_keys": self.trusted_keys,
            "user_agent": self.user_agent,
        }

    # -- state ------------------------------------------------------------
    def _enter(self) -> None:
        if self._state is _State.OPENED:
            raise RuntimeError("Cannot open a client instance more than once.")
        if self._state is _State.CLOSED:
            raise RuntimeError("Cannot reopen a client instance, once it has been closed.")
        self._state = _State.OPENED

    def _usable(self) -> None:
        if self._state is _State.CLOSED:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        self._state = _State.OPENED

    # -- request building --------------------------------------------------
    def _build_register(
        self,
        data: bytes,
        filename: str,
        *,
        wait: bool,
        title: str | None,
        reference: str | None,
        idempotency_key: str,
    ) -> _Request:
        fields = {
            name: value
            for name, value in (("title", title), ("reference", reference))
            if value is not None
        }
        return _Request(
            "POST",
            "/v1/registrations",
            params={"wait": "true"} if wait else {},
            headers={"Idempotency-Key": idempotency_key},
            upload=_Upload(data, filename, fields),
            idempotent=True,  # the idempotency key makes it so
            expect=frozenset({200, 201}),
            waits=wait,
        )

    def _build_check(self, data: bytes, filename: str) -> _Request:
        return _Request("POST", "/v1/checks", upload=_Upload(data, filename))

    def _build_dispute_file(
        self, registration_id: str, data: bytes, filename: str, fmt: str
    ) -> _Request:
        return _Request(
            "POST",
            "/v1/desk/evidence",
            params={"format": fmt},
            upload=_Upload(
                data, filename, {"registration_id": registration_id, "suspect_name": filename}
            ),
        )

    def _build_get(self, registration_id: str) -> _Request:
        return _Request("GET", f"/v1/registrations/{_segment(registration_id)}")

    def _build_proof(self, registration_id: str, *, wait: bool) -> _Request:
        return _Request(
            "GET",
            f"/v1/registrations/{_segment(registration_id)}/proof",
            params={"wait": "true"} if wait else {},
            expect=frozenset({200, 202}),
            waits=wait,
        )

    def _build_checkpoint(self) -> _Request:
        return _Request("GET", "/v1/checkpoints/latest", auth=False)

    def _build_keys(self) -> _Request:
        return _Request("GET", "/v1/keys", auth=False)

    def _build_consistency(self, first: int, second: int) -> _Request:
        return _Request(
            "GET",
            "/v1/proofs/consistency",
            params={"from": str(first), "to": str(second)},
            auth=False,
        )

    def _build_create_webhook(self, url: str, events: Iterable[str] | None) -> _Request:
        body: dict[str, Any] = {"url": url}
        if events is not None:
            body["events"] = list(events)
        return _Request(
            "POST", "/v1/webhooks", json=body, idempotent=False, expect=frozenset({201})
        )

    def _build_list_webhooks(self) -> _Request:
        return _Request("GET", "/v1/webhooks")

    def _build_delete_webhook(self, webhook_id: str) -> _Request:
        return _Request("DELETE", f"/v1/webhooks/{_segment(webhook_id)}", expect=frozenset({204}))

    def _full_url(self, request: _Request) -> str:
        return self.url + request.path

    def _headers(self, request: _Request) -> dict[str, str]:
        headers = {"User-Agent": self.user_agent, "Accept": "application/json"}
        if request.auth:
            if not self.api_key:
                raise AuthError(
                    401,
                    "no_api_key",
                    "no API key: pass api_key=, set SHOTSTAMP_API_KEY, or put api_key in "
                    "the config file",
                )
            headers["Authorization"] = f"Bearer {self.api_key}"
        headers.update(request.headers)
        return headers

    def _attempt_timeout(self, request: _Request) -> float:
        # A waiting request legitimately stays silent while the service waits
        # for the seal; give it the wait budget on top of the normal timeout.
        return self.timeout + (self.wait_timeout if request.waits else 0.0)

    # -- answers -------------------------------------------------------------
    def _error_for(self, request: _Request, response: _Response) -> APIError:
        """The typed error for an answer with a status the caller does not handle."""
        body: Any = None
        code, message = f"http_{response.status}", ""
        try:
            body = _decode_json(response.body)
        except ValueError:
            message = response.body[:200].decode("utf-8", "replace").strip()
        if isinstance(body, dict):
            code = str(body.get("error") or code)
            message = str(body.get("message") or message)
        if 300 <= response.status < 400:
            where = response.header("Location") or "?"
            message = message or f"unexpected redirect to {where}"
        message = message or "no error message"
        cls = error_class_for_status(response.status)
        error: APIError
        if cls is ConflictError:
            matches = body.get("matches") if isinstance(body, dict) else None
            error = ConflictError(
                response.status,
                code,
                message,
                body,
                matches=matches if isinstance(matches, list) else [],
            )
        elif cls is RateLimited:
            error = RateLimited(
                response.status,
                code,
                message,
                body,
                retry_after=_parse_retry_after(response.header("Retry-After")),
            )
        else:
            error = cls(response.status, code, message, body)
        error.method, error.url = request.method, self._full_url(request)
        return error

    def _retry_delay(
        self, request: _Request, retry: int, error: ShotstampError, retry_after: float | None
    ) -> float | None:
        """Seconds to wait before retry number `retry`, or None: raise `error` now."""
        policy = self.retry_policy
        if retry > policy.retries:
            return None
        if isinstance(error, RateLimited) or (
            isinstance(error, ServerError) and error.status == 503
        ):
            # The service refused before acting: always safe to send again.
            if retry_after is not None and retry_after > policy.max_retry_after:
                return None
            return policy.delay(retry, retry_after=retry_after, rand=self._rand)
        if isinstance(error, ServerError) and error.status in (502, 504):
            return policy.delay(retry, rand=self._rand) if request.idempotent else None
        if isinstance(error, TransportError) and (request.idempotent or not error.maybe_sent):
            return policy.delay(retry, rand=self._rand)
        return None

    def _json(self, request: _Request, response: _Response) -> Any:
        try:
            return _decode_json(response.body)
        except ValueError as exc:
            raise self._bad_answer(request, response, f"not JSON: {exc}") from exc

    def _parse(self, request: _Request, response: _Response, parse: Callable[[Any], T]) -> T:
        body = self._json(request, response)
        try:
            return parse(body)
        except (KeyError, TypeError, ValueError, ShotstampError) as exc:
            raise self._bad_answer(request, response, f"unexpected answer: {exc!r}") from exc

    def _bad_answer(self, request: _Request, response: _Response, why: str) -> APIError:
        error = APIError(response.status, "bad_response", f"{request.method} {request.path}: {why}")
        error.method, error.url = request.method, self._full_url(request)
        return error

    def _verify_proof(self, proof: ProofBundle, registration_id: str) -> None:
        if self.trusted_keys is not None:
            verify_proof(proof, keys=self.trusted_keys)
        if proof.leaf.get("id") != registration_id:
            raise VerificationError(
                f"the service sent the proof of {proof.leaf.get('id')!r} "
                f"for registration {registration_id!r}",
                check="leaf",
            )

    def _consistency_span(self, new: CheckpointInfo) -> tuple[int, int] | None:
        """`(from, to)` of the consistency proof `new` needs, or None if it needs none."""
        old = self.last_checkpoint
        if old is None or old.tree_size == 0 or new.tree_size <= old.tree_size:
            return None
        return (old.tree_size, new.tree_size)

    def _check_extends(
        self, new: CheckpointInfo, proof: ConsistencyProof | None = None
    ) -> None:
        """Refuse a checkpoint that does not extend the last one this client saw.

        A larger tree must come with the RFC 9162 consistency proof from
        `last_checkpoint`'s size (`_consistency_span`); a tree of the same
        size must have the same root; a smaller one is a rollback. With
        `trusted_keys`, the new note's signature is checked first.
        """
        if self.trusted_keys is not None:
            new.verify(self.trusted_keys)
        old = self.last_checkpoint
        if old is None:
            return
        span = self._consistency_span(new)
        path: tuple[bytes, ...] = ()
        if span is not None:
            if proof is None or (proof.first, proof.second) != span:
                raise VerificationError(
                    f"no consistency proof from size {span[0]} to {span[1]}",
                    check="consistency",
                )
            path = proof.path
        check_tree_extends(old.tree_size, old.root_hash, new.tree_size, new.root_hash, path)


def _segment(value: str) -> str:
    if not value or "/" in value or value in (".", ".."):
        raise ValueError(f"not a valid id: {value!r}")
    return value


def _decode_json(body: bytes) -> Any:
    return json.loads(body)


# -- the asynchronous client ---------------------------------------------------
class AsyncClient(_BaseClient):
    """An asynchronous client for the shotstamp service (one aiohttp session).

    **Parameters:**

    * **url** - the service, e.g. `https://shotstamp.example.com` (default:
      `SHOTSTAMP_URL`, the config file, then `http://127.0.0.1:8080`).
    * **api_key** - your API key (default: `SHOTSTAMP_API_KEY`, the config file).
    * **config_file** - a TOML file with `url` and `api_key` (see `shotstamp.config`).
    * **timeout** - seconds for one attempt of one request.
    * **wait_timeout** - the longest `wait=True` waits for a seal.
    * **retries** - how many retries, or a `RetryPolicy`.
    * **trusted_keys** - the log's verifier keys: proofs and checkpoints the
      service sends are verified against them before they are returned.

    Usage:

        async with AsyncClient(api_key=key) as client:
            reg = await client.register("kettle.jpg", wait=True)
            async for result in client.register_many(paths, concurrency=8):
                ...
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        config_file: str | os.PathLike[str] | None = None,
        timeout: float = 30.0,
        wait_timeout: float = 60.0,
        retries: int | RetryPolicy = 4,
        trusted_keys: Iterable[str | NoteVerifier] | None = None,
        user_agent: str | None = None,
    ) -> None:
        super().__init__(
            url,
            api_key=api_key,
            config_file=config_file,
            timeout=timeout,
            wait_timeout=wait_timeout,
            retries=retries,
            trusted_keys=trusted_keys,
            user_agent=user_agent,
        )
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._enter()
        self._open_session()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session. The client cannot be used (or reopened) afterwards."""
        self._state = _State.CLOSED
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _open_session(self) -> aiohttp.ClientSession:
        self._usable()
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=100),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout),
            )
        return self._session

    # -- sending -----------------------------------------------------------
    async def _send(self, request: _Request) -> _Response:
        """One attempt; connection problems become `TransportError`."""
        session = self._open_session()
        url = self._full_url(request)
        try:
            headers = self._headers(request)
        except APIError as exc:
            exc.method, exc.url = request.method, url
            raise
        data: aiohttp.FormData | None = None
        if request.upload is not None:
            data = aiohttp.FormData()
            upload = request.upload
            data.add_field(
                "image", upload.data, filename=upload.filename, content_type=upload.content_type
            )
            for name, value in upload.fields.items():
                data.add_field(name, value)
        try:
            async with session.request(
                request.method,
                url,
                params=request.params or None,
                headers=headers,
                json=request.json,
                data=data,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    total=self._attempt_timeout(request), sock_connect=self.timeout
                ),
            ) as answer:
                body = await answer.read()
                return _Response(
                    answer.status, {k.lower(): v for k, v in answer.headers.items()}, body
                )
        except aiohttp.ClientConnectorError as exc:
            error = TransportError(f"cannot connect to {self.url}: {exc}")
            error.maybe_sent = False
            cause: BaseException = exc
        except TimeoutError as exc:
            error = TransportError(
                f"{request.method} {url} timed out after {self._attempt_timeout(request):g}s"
            )
            cause = exc
        except aiohttp.ClientError as exc:
            error = TransportError(f"{request.method} {url} failed: {type(exc).__name__}: {exc}")
            cause = exc
        error.method, error.url = request.method, url
        raise error from cause

    async def _request(self, request: _Request) -> _Response:
        """Send with retries; an answer with an unexpected status raises its `APIError`."""
        retry = 0
        while True:
            retry_after: float | None = None
            try:
                response = await self._send(request)
                if response.status in request.expect:
                    return response
                retry_after = _parse_retry_after(response.header("Retry-After"))
                raise self._error_for(request, response)
            except (APIError, TransportError) as error:
                retry += 1
                delay = self._retry_delay(request, retry, error, retry_after)
                if delay is None:
                    raise
            await asyncio.sleep(delay)

    # -- the API -------------------------------------------------------------
    async def register(
        self,
        image: ImageInput,
        *,
        wait: bool = False,
        title: str | None = None,
        reference: str | None = None,
        filename: str | None = None,
        idempotency_key: str | None = None,
    ) -> Registration:
        """Register a photo; returns the new registration or the one you already had.

        **Parameters:**

        * **image** - a path, the file's bytes, or a binary file object.
        * **wait** - wait (up to `wait_timeout`) until it is sealed and
          include the proof; if the wait runs out the pending registration
          is returned (`status == "pending"`, `proof is None`).
        * **title**, **reference** - your own description and reference (e.g. a SKU).
        * **filename** - the name sent with the upload (default: the path's name).
        * **idempotency_key** - a key for this logical upload; by default a
          fresh one, reused across this call's retries.

        Raises `ConflictError` (with `.matches`) when the photo is a copy of
        another seller's earlier registration; nothing is registered then.
        If the answer to an attempt was lost and its retry finds the
        registration that attempt made, `created` is False: the service
        cannot tell that retry from a re-upload.
        """
        data, name = await _load(image)
        # Waiting happens in `proof`, bounded by this client's `wait_timeout`,
        # not in the upload: an upload is never cut short by the wait budget.
        request = self._build_register(
            data,
            filename or name,
            wait=False,
            title=title,
            reference=reference,
            idempotency_key=idempotency_key or _new_idempotency_key(),
        )
        response = await self._request(request)
        created = response.status == 201
        registration = self._parse(
            request, response, lambda body: Registration.from_json(body, created=created)
        )
        if registration.proof is not None:
            self._verify_proof(registration.proof, registration.id)
        if wait and registration.proof is None:
            try:
                proof = await self.proof(registration.id, wait=True)
            except NotSealedError:
                return registration
            registration = dataclasses.replace(
                registration, proof=proof, status="sealed", leaf_index=proof.leaf_index
            )
        return registration

    async def check(self, image: ImageInput, *, filename: str | None = None) -> Check:
        """Look for earlier registrations of a photo without registering it."""
        data, name = await _load(image)
        request = self._build_check(data, filename or name)
        response = await self._request(request)
        return self._parse(request, response, Check.from_json)

    async def dispute_file(
        self,
        registration_id: str,
        suspect: ImageInput,
        *,
        format: str = "html",
        filename: str | None = None,
    ) -> bytes:
        """A dispute file (staff keys): the registration, `suspect` and how they match, with
        the proof and how to check it; `format` "html" (checks itself offline) or "pdf"."""
        if format not in ("html", "pdf"):
            raise ValueError("format must be 'html' or 'pdf'")
        data, name = await _load(suspect)
        request = self._build_dispute_file(registration_id, data, filename or name, format)
        response = await self._request(request)
        return response.body

    async def get(self, registration_id: str) -> Registration:
        """One of your registrations (staff keys: anyone's). Raises `NotFoundError`."""
        request = self._build_get(registration_id)
        response = await self._request(request)
        return self._parse(request, response, Registration.from_json)

    async def proof(self, registration_id: str, *, wait: bool = True) -> ProofBundle:
        """The proof bundle of a registration (save it with `.to_json()`).

        With `wait=True` (the default) waits up to `wait_timeout` for the
        seal; otherwise, or when the wait runs out, a pending registration
        raises `NotSealedError`.
        """
        deadline = time.monotonic() + self.wait_timeout
        while True:
            remaining = deadline - time.monotonic()
            waiting = wait and remaining > 0
            request = self._build_proof(registration_id, wait=waiting)
            try:
                if waiting:
                    # The service may hold a waiting request longer than our budget.
                    response = await asyncio.wait_for(self._request(request), remaining)
                else:
                    response = await self._request(request)
            except TimeoutError:
                raise NotSealedError(registration_id, retry_after=1.0) from None
            if response.status == 200:
                proof = self._parse(request, response, ProofBundle.from_json)
                self._verify_proof(proof, registration_id)
                return proof
            retry_after = _parse_retry_after(response.header("Retry-After"))
            remaining = deadline - time.monotonic()
            if not waiting or remaining <= 0:
                raise NotSealedError(registration_id, retry_after=retry_after)
            await asyncio.sleep(min(retry_after if retry_after is not None else 1.0, remaining))

    async def checkpoint(self) -> CheckpointInfo:
        """The log's latest signed checkpoint.

        When the log has grown since `last_checkpoint`, fetches the consistency
        proof between the two and checks it. Raises `VerificationError` (check
        `consistency`) if the new checkpoint does not extend the last one this
        client saw (a rewritten entry, a different tree of a size it saw, a
        log that shrank), and, with `trusted_keys`, if its signature does not
        verify. For a memory that survives restarts, see `CheckpointWitness`.
        """
        request = self._build_checkpoint()
        response = await self._request(request)
        info = self._parse(request, response, CheckpointInfo.from_json)
        span = self._consistency_span(info)
        proof = None if span is None else await self.consistency(*span)
        self._check_extends(info, proof)
        self.last_checkpoint = info
        return info

    async def consistency(self, first: int, second: int) -> ConsistencyProof:
        """The RFC 9162 proof that the log's tree of `second` leaves extends the tree of
        `first` (`GET /v1/proofs/consistency`); verify it with
        `verify_consistency_between` or a `CheckpointWitness`."""
        request = self._build_consistency(first, second)
        response = await self._request(request)
        proof = self._parse(request, response, ConsistencyProof.from_json)
        if (proof.first, proof.second) != (first, second):
            raise self._bad_answer(
                request, response, f"a proof from {proof.first} to {proof.second}"
            )
        return proof

    async def keys(self) -> LogKeys:
        """The log's origin and public keys (what `verify_proof(keys=...)` needs)."""
        request = self._build_keys()
        response = await self._request(request)
        return self._parse(request, response, LogKeys.from_json)

    def register_many(
        self,
        paths: Iterable[PathInput],
        *,
        concurrency: int = 4,
        wait: bool = False,
    ) -> AsyncIterator[RegisterResult]:
        """Register many files, yielding a `RegisterResult` for each as it completes.

        At most `concurrency` uploads run at once; `paths` is read lazily.
        Per-file failures (a conflict, an unreadable file, a service error
        after retries) are results with `outcome` `conflict` or `error`,
        never exceptions: one bad file does not stop the stream. Closing the
        iterator early cancels the uploads in flight.

        Usage:

            async for result in client.register_many(paths, concurrency=8):
                if result.outcome == "conflict":
                    print(result.path, result.matches[0].registration_id)
        """
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self._usable()
        return self._register_stream(iter(paths), concurrency, wait)

    async def _register_one(self, path: PathInput, wait: bool) -> RegisterResult:
        try:
            return RegisterResult.of(path, await self.register(path, wait=wait))
        except (ShotstampError, OSError) as exc:
            return RegisterResult.of(path, exc)

    async def _register_stream(
        self, paths: Iterator[PathInput], concurrency: int, wait: bool
    ) -> AsyncIterator[RegisterResult]:
        results: asyncio.Queue[RegisterResult | BaseException | None] = asyncio.Queue()

        async def worker() -> None:
            try:
                # Workers share one iterator; next() never awaits, so no two
                # workers take the same path.
                for path in paths:
                    results.put_nowait(await self._register_one(path, wait))
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # a bug, not a per-file failure: re-raise below
                results.put_nowait(exc)
            results.put_nowait(None)

        tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
        running = len(tasks)
        try:
            while running:
                item = await results.get()
                if item is None:
                    running -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def create_webhook(self, url: str, *, events: Iterable[str] | None = None) -> Webhook:
        """Ask the service to POST events to `url`; the answer's `.secret` is shown once.

        Events are signed with that secret (see `verify_webhook`). `events`
        defaults to every event type (today: `registration.conflict`).
        """
        request = self._build_create_webhook(url, events)
        response = await self._request(request)
        return self._parse(request, response, Webhook.from_json)

    async def webhooks(self) -> list[Webhook]:
        """Your webhooks (without their secrets)."""
        request = self._build_list_webhooks()
        response = await self._request(request)
        return self._parse(
            request, response, lambda body: [Webhook.from_json(w) for w in body["webhooks"]]
        )

    async def delete_webhook(self, webhook_id: str) -> None:
        """Stop deliveries to a webhook and forget it. Raises `NotFoundError`."""
        await self._request(self._build_delete_webhook(webhook_id))


async def _load(image: ImageInput) -> tuple[bytes, str]:
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _read_image(image)
    # Reading a file may block: keep it off the event loop.
    return await asyncio.to_thread(_read_image, image)


# -- the synchronous twin ---------------------------------------------------------
class _Portal:
    """A private event loop on a daemon thread that runs the sync client's coroutines."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="shotstamp-client", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Any:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a shotstamp.Client cannot be called from its own callbacks")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        future = self.submit(coro)
        try:
            return cast(T, future.result())
        except BaseException:
            # KeyboardInterrupt and friends: stop the work on the loop too.
            future.cancel()
            raise

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()


def _shutdown(portal: _Portal, inner: AsyncClient) -> None:
    try:
        portal.call(inner.aclose())
    finally:
        portal.stop()


class Client(_BaseClient):
    """The synchronous twin of `AsyncClient`: same methods, same options, same results.

    It drives an `AsyncClient` (one aiohttp session) on a private event loop
    in a background thread, so it also works inside programs that run their
    own event loop. Use it as a context manager, or call `close()`.

    Usage:

        with shotstamp.Client(api_key=key) as client:
            reg = client.register("kettle.jpg", wait=True)
            open(f"{reg.id}.json", "w").write(reg.proof.to_json())
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        config_file: str | os.PathLike[str] | None = None,
        timeout: float = 30.0,
        wait_timeout: float = 60.0,
        retries: int | RetryPolicy = 4,
        trusted_keys: Iterable[str | NoteVerifier] | None = None,
        user_agent: str | None = None,
    ) -> None:
        super().__init__(
            url,
            api_key=api_key,
            config_file=config_file,
            timeout=timeout,
            wait_timeout=wait_timeout,
            retries=retries,
            trusted_keys=trusted_keys,
            user_agent=user_agent,
        )
        self._portal: _Portal | None = None
        self._async: AsyncClient | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> Self:
        self._enter()
        self._inner()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the session and stop the background loop. Final."""
        with self._lock:
            self._state = _State.CLOSED
            finalizer, self._finalizer = self._finalizer, None
            self._portal = self._async = None
        if finalizer is not None:
            finalizer()

    def _inner(self) -> tuple[_Portal, AsyncClient]:
        with self._lock:
            self._usable()
            if self._portal is None or self._async is None:
                settings = self._settings()
                self._portal = _Portal()

                async def make() -> AsyncClient:
                    client = AsyncClient(**settings)
                    client._open_session()
                    return client

                self._async = self._portal.call(make())
                # A client dropped without close() still closes its session and
                # stops its thread (at garbage collection or interpreter exit).
                self._finalizer = weakref.finalize(self, _shutdown, self._portal, self._async)
            return self._portal, self._async

    def _call(self, fn: Callable[[AsyncClient], Awaitable[T]]) -> T:
        portal, inner = self._inner()
        inner.last_checkpoint = self.last_checkpoint

        async def run() -> T:
            return await fn(inner)

        try:
            return portal.call(run())
        finally:
            self.last_checkpoint = inner.last_checkpoint

    def register(
        self,
        image: ImageInput,
        *,
        wait: bool = False,
        title: str | None = None,
        reference: str | None = None,
        filename: str | None = None,
        idempotency_key: str | None = None,
    ) -> Registration:
        """See `AsyncClient.register`."""
        return self._call(
            lambda c: c.register(
                image,
                wait=wait,
                title=title,
                reference=reference,
                filename=filename,
                idempotency_key=idempotency_key,
            )
        )

    def check(self, image: ImageInput, *, filename: str | None = None) -> Check:
        """See `AsyncClient.check`."""
        return self._call(lambda c: c.check(image, filename=filename))

    def dispute_file(
        self,
        registration_id: str,
        suspect: ImageInput,
        *,
        format: str = "html",
        filename: str | None = None,
    ) -> bytes:
        """See `AsyncClient.dispute_file`."""
        return self._call(
            lambda c: c.dispute_file(registration_id, suspect, format=format, filename=filename)
        )

    def get(self, registration_id: str) -> Registration:
        """See `AsyncClient.get`."""
        return self._call(lambda c: c.get(registration_id))

    def proof(self, registration_id: str, *, wait: bool = True) -> ProofBundle:
        """See `AsyncClient.proof`."""
        return self._call(lambda c: c.proof(registration_id, wait=wait))

    def checkpoint(self) -> CheckpointInfo:
        """See `AsyncClient.checkpoint`."""
        return self._call(lambda c: c.checkpoint())

    def keys(self) -> LogKeys:
        """See `AsyncClient.keys`."""
        return self._call(lambda c: c.keys())

    def consistency(self, first: int, second: int) -> ConsistencyProof:
        """See `AsyncClient.consistency`."""
        return self._call(lambda c: c.consistency(first, second))

    def register_many(
        self,
        paths: Iterable[PathInput],
        *,
        concurrency: int = 4,
        wait: bool = False,
    ) -> Iterator[RegisterResult]:
        """See `AsyncClient.register_many`; here an iterator. Closing it early
        (`break`, or `.close()`) cancels the uploads in flight."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self._usable()
        return self._register_stream(paths, concurrency, wait)

    def _register_stream(
        self, paths: Iterable[PathInput], concurrency: int, wait: bool
    ) -> Iterator[RegisterResult]:
        portal, inner = self._inner()
        handoff: queue.Queue[tuple[str, Any]] = queue.Queue()

        async def pump() -> None:
            stream = inner.register_many(paths, concurrency=concurrency, wait=wait)
            try:
                async for result in stream:
                    handoff.put(("item", result))
            except BaseException as exc:
                handoff.put(("error", exc))
                raise
            finally:
                await cast(Any, stream).aclose()
                handoff.put(("done", None))

        future = portal.submit(pump())
        try:
            while True:
                kind, value = handoff.get()
                if kind == "item":
                    yield value
                elif kind == "error":
                    if isinstance(value, asyncio.CancelledError):
                        return
                    raise value
                else:
                    return
        finally:
            if not future.done():
                future.cancel()
                with contextlib.suppress(BaseException):
                    future.result(timeout=10)

    def create_webhook(self, url: str, *, events: Iterable[str] | None = None) -> Webhook:
        """See `AsyncClient.create_webhook`."""
        return self._call(lambda c: c.create_webhook(url, events=events))

    def webhooks(self) -> list[Webhook]:
        """See `AsyncClient.webhooks`."""
        return self._call(lambda c: c.webhooks())

    def delete_webhook(self, webhook_id: str) -> None:
        """See `AsyncClient.delete_webhook`."""
        return self._call(lambda c: c.delete_webhook(webhook_id))
