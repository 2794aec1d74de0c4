"""What the clients return: plain frozen dataclasses parsed from the service's JSON.

Each has a `from_json(mapping)` that reads the wire form documented in the
service's `/openapi.json` and keeps the decoded answer in `raw` (fields this
SDK version does not know yet stay reachable there). Times are timezone-aware
UTC `datetime`s; hashes stay lowercase hex strings as on the wire, except
`CheckpointInfo.root_hash`, which is the raw 32 bytes the Merkle code uses.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from shotstamp._checkpoint import Checkpoint, NoteVerifier, open_note
from shotstamp._exceptions import (
    ConflictError,
    MalformedProofError,
    ShotstampError,
    VerificationError,
)
from shotstamp._verify import ProofBundle

__all__ = [
    "Check",
    "CheckpointInfo",
    "LogKey",
    "LogKeys",
    "Match",
    "RegisterResult",
    "Registration",
    "Webhook",
]

Outcome = Literal["new", "existing", "conflict", "error"]


def _parse_time(value: Any) -> datetime:
    """An RFC 3339 time from the API as an aware UTC `datetime`."""
    if not isinstance(value, str):
        raise ValueError(f"expected an RFC 3339 time string, got {value!r}")
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(f"time {value!r} has no UTC offset")
    return moment.astimezone(UTC)


def _optional_str(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    return value if isinstance(value, str) else None


def _optional_int(data: Mapping[str, Any], name: str) -> int | None:
    value = data.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True, kw_only=True)
class Match:
    """An earlier registration that an image resembles.

    `seller`, `title` and `reference` are set only for your own registrations
    (or for staff keys): the service never names another seller.
    """

    registration_id: str
    received_at: datetime
    distance: int | float
    distances: Mapping[str, int | float]
    verdict: Literal["copy", "similar"]
    exact: bool = False
    # Which stage and clause of the service's matching rule decided, and the verdict in
    # words (None from services older than these fields).
    stage: int | None = None
    clause: str | None = None
    explanation: str | None = None
    status: str | None = None
    proof_url: str | None = None
    seller: str | None = None
    title: str | None = None
    reference: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Match:
        verdict = data["verdict"]
        if verdict not in ("copy", "similar"):
            raise ValueError(f"unknown match verdict {verdict!r}")
        return cls(
            registration_id=str(data["registration_id"]),
            received_at=_parse_time(data["received_at"]),
            distance=data["distance"],
            distances=dict(data.get("distances") or {}),
            verdict=verdict,
            exact=bool(data.get("exact", False)),
            stage=data["stage"] if isinstance(data.get("stage"), int) else None,
            clause=_optional_str(data, "clause"),
            explanation=_optional_str(data, "explanation"),
            status=_optional_str(data, "status"),
            proof_url=_optional_str(data, "proof_url"),
            seller=_optional_str(data, "seller"),
            title=_optional_str(data, "title"),
            reference=_optional_str(data, "reference"),
            raw=dict(data),
        )

    @classmethod
    def from_conflict(cls, error: ConflictError) -> tuple[Match, ...]:
        """The typed matches of a `ConflictError` (whose `.matches` are the raw JSON)."""
        return tuple(cls.from_json(m) for m in error.matches)


@dataclass(frozen=True, kw_only=True)
class Registration:
    """A registered photo.

    `created` is True only on the answer to the `register` call that created
    it (HTTP 201); a re-upload of a photo you had already registered answers
    False with the earlier registration (HTTP 200). `proof` is present once
    sealed when you asked to wait.
    """

    id: str
    seller: str
    sha256: str
    perceptual: Mapping[str, str]
    received_at: datetime
    status: Literal["pending", "sealed"]
    created: bool = False
    width: int | None = None
    height: int | None = None
    title: str | None = None
    reference: str | None = None
    leaf_index: int | None = None
    proof: ProofBundle | None = field(default=None, repr=False)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def sealed(self) -> bool:
        """True once a signed checkpoint contains this registration."""
        return self.status == "sealed"

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, created: bool = False) -> Registration:
        status = data["status"]
        if status not in ("pending", "sealed"):
            raise ValueError(f"unknown registration status {status!r}")
        proof = data.get("proof")
        return cls(
            id=str(data["id"]),
            seller=str(data["seller"]),
            sha256=str(data["sha256"]),
            perceptual=dict(data["perceptual"]),
            received_at=_parse_time(data["received_at"]),
            status=status,
            created=created,
            width=_optional_int(data, "width"),
            height=_optional_int(data, "height"),
            title=_optional_str(data, "title"),
            reference=_optional_str(data, "reference"),
            leaf_index=_optional_int(data, "leaf_index"),
            proof=None if proof is None else ProofBundle.from_json(proof),
            raw=dict(data),
        )


@dataclass(frozen=True, kw_only=True)
class Check:
    """The answer to `check`: the image's fingerprints and what it matches."""

    sha256: str
    perceptual: Mapping[str, str]
    matches: tuple[Match, ...]
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def copies(self) -> tuple[Match, ...]:
        """The matches the service counts as copies (what `register` would act on)."""
        return tuple(m for m in self.matches if m.verdict == "copy")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Check:
        return cls(
            sha256=str(data["sha256"]),
            perceptual=dict(data["perceptual"]),
            matches=tuple(Match.from_json(m) for m in data["matches"]),
            raw=dict(data),
        )


@dataclass(frozen=True, kw_only=True)
class CheckpointInfo:
    """The log's latest signed checkpoint as `GET /v1/checkpoints/latest` serves it.

    The fields are the service's account of the note; `verify(keys)` checks
    the signature and that the signed text says the same.
    """

    tree_size: int
    root_hash: bytes
    timestamp: datetime
    note: str
    key_id: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CheckpointInfo:
        size = data["tree_size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"tree_size must be a non-negative integer, got {size!r}")
        root = bytes.fromhex(str(data["root_hash"]))
        if len(root) != 32:
            raise ValueError("root_hash is not a 32-byte hash")
        return cls(
            tree_size=size,
            root_hash=root,
            timestamp=_parse_time(data["timestamp"]),
            note=str(data["note"]),
            key_id=_optional_str(data, "key_id"),
            raw=dict(data),
        )

    def verify(self, keys: str | NoteVerifier | Iterable[str | NoteVerifier]) -> Checkpoint:
        """Check the note's signature by one of `keys` and that it states this size and root.

        Returns the parsed signed `Checkpoint`; raises `VerificationError`
        (`checkpoint-signature` or `checkpoint-body`) otherwise.
        """
        items = [keys] if isinstance(keys, (str, NoteVerifier)) else list(keys)
        verifiers = [k if isinstance(k, NoteVerifier) else NoteVerifier.from_vkey(k) for k in items]
        try:
            note = open_note(self.note, verifiers)
        except MalformedProofError as exc:
            raise VerificationError(
                f"checkpoint note does not verify: {exc}", check="checkpoint-signature"
            ) from exc
        try:
            signed = Checkpoint.from_text(note.text)
        except MalformedProofError as exc:
            raise VerificationError(
                f"signed checkpoint does not parse: {exc}", check="checkpoint-body"
            ) from exc
        if signed.size != self.tree_size or signed.root_hash != self.root_hash:
            raise VerificationError(
                f"signed checkpoint states size {signed.size} root {signed.root_hash.hex()}, "
                f"the answer says size {self.tree_size} root {self.root_hash.hex()}",
                check="checkpoint-body",
            )
        return signed


@dataclass(frozen=True, kw_only=True)
class LogKey:
    """One public key of the log (`GET /v1/keys`)."""

    key_id: str
    algorithm: str
    public_key: str
    vkey: str
    status: str | None = None


@dataclass(frozen=True, kw_only=True)
class LogKeys:
    """The log's origin and its public keys; `vkeys` is what `verify_proof` takes."""

    origin: str
    keys: tuple[LogKey, ...]
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def vkeys(self) -> list[str]:
        return [key.vkey for key in self.keys]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LogKeys:
        return cls(
            origin=str(data["origin"]),
            keys=tuple(
                LogKey(
                    key_id=str(k["key_id"]),
                    algorithm=str(k["algorithm"]),
                    public_key=str(k["public_key"]),
                    vkey=str(k["vkey"]),
                    status=_optional_str(k, "status"),
                )
                for k in data["keys"]
            ),
            raw=dict(data),
        )


@dataclass(frozen=True, kw_only=True)
class Webhook:
    """A webhook endpoint the service calls when someone uploads a copy of your photo.

    `secret` (the HMAC key for `verify_webhook`) is set only on the answer to
    `create_webhook`: the service shows it once.
    """

    id: str
    url: str
    events: tuple[str, ...]
    created_at: datetime
    secret: str | None = field(default=None, repr=False)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Webhook:
        return cls(
            id=str(data["id"]),
            url=str(data["url"]),
            events=tuple(str(e) for e in data.get("events", ())),
            created_at=_parse_time(data["created_at"]),
            secret=_optional_str(data, "secret"),
            raw={k: v for k, v in data.items() if k != "secret"},
        )


@dataclass(frozen=True, kw_only=True)
class RegisterResult:
    """One item of `register_many`: what happened to one file, never an exception.

    `outcome` is `new` (registered now), `existing` (you had registered it
    already), `conflict` (a copy of another seller's photo: see `matches`)
    or `error` (see `error`: the service or the file could not be read).
    """

    path: Path
    outcome: Outcome
    registration: Registration | None = None
    matches: tuple[Match, ...] = ()
    error: ShotstampError | OSError | None = None

    @property
    def ok(self) -> bool:
        """True when the file is registered to you (new or existing)."""
        return self.outcome in ("new", "existing")

    @classmethod
    def of(
        cls,
        path: str | os.PathLike[str],
        result: Registration | ConflictError | ShotstampError | OSError,
    ) -> RegisterResult:
        """The result for `path` from a registration or the error its upload raised."""
        where = Path(path)
        if isinstance(result, Registration):
            return cls(
                path=where,
                outcome="new" if result.created else "existing",
                registration=result,
            )
        if isinstance(result, ConflictError):
            return cls(
                path=where,
                outcome="conflict",
                matches=Match.from_conflict(result),
                error=result,
            )
        return cls(path=where, outcome="error", error=result)
