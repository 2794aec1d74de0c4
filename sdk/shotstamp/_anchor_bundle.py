"""A bundle's `anchors` list: one element's format, and what checking each proves."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from shotstamp._exceptions import MalformedProofError, VerificationError

__all__ = ["AnchorReport", "AnchorResult"]

Status = Literal["verified", "failed", "skipped", "unavailable"]


def _malformed(reason: str) -> MalformedProofError:
    return MalformedProofError(f"malformed anchor: {reason}", field="anchors")


def is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True)
class AnchorEntry:
    """One element of a bundle's `anchors` list (wire format in docs/DESIGN.md).

    `evidence` holds the type's own fields, as received.
    """

    name: str
    type: str
    tree_size: int
    checkpoint: str
    evidence: Mapping[str, Any]
    anchored_at: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> AnchorEntry:
        """Parse a decoded element; `MalformedProofError` naming what is wrong."""
        if not isinstance(data, Mapping):
            raise _malformed("not a JSON object")
        for name in ("name", "type", "tree_size", "checkpoint", "evidence"):
            if name not in data:
                raise _malformed(f"field {name!r} is missing")
        if not isinstance(data["name"], str) or not data["name"]:
            raise _malformed("'name' must be a non-empty string")
        if not isinstance(data["type"], str) or not data["type"]:
            raise _malformed("'type' must be a non-empty string")
        if not is_count(data["tree_size"]) or data["tree_size"] == 0:
            raise _malformed("'tree_size' must be a positive integer")
        if not isinstance(data["checkpoint"], str) or not data["checkpoint"]:
            raise _malformed("'checkpoint' must be the signed note's text")
        if not isinstance(data["evidence"], Mapping):
            raise _malformed("'evidence' must be an object")
        anchored_at = data.get("anchored_at")
        if anchored_at is not None and not isinstance(anchored_at, str):
            raise _malformed("'anchored_at' must be a string")
        return cls(
            name=data["name"],
            type=data["type"],
            tree_size=data["tree_size"],
            checkpoint=data["checkpoint"],
            evidence=dict(data["evidence"]),
            anchored_at=anchored_at,
        )

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "tree_size": self.tree_size,
            "checkpoint": self.checkpoint,
        }
        if self.anchored_at is not None:
            result["anchored_at"] = self.anchored_at
        result["evidence"] = dict(self.evidence)
        return result


@dataclass(frozen=True)
class AnchorResult:
    """What one anchor proves, or why it could not be checked.

    `status`: `verified` (then `statement`, `time` and `authority` say what
    it proves), `failed` (`error` names the check), `skipped` (nothing to
    check it with: `reason`), or `unavailable` (the chain's RPC could not be
    asked: `reason`).
    """

    name: str
    type: str
    status: Status
    tree_size: int | None = None
    statement: str | None = None
    time: datetime | None = None
    authority: str | None = None
    checks: tuple[str, ...] = ()
    error: VerificationError | None = None
    reason: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AnchorReport:
    """The results of every anchor in a bundle, in bundle order."""

    results: tuple[AnchorResult, ...]

    def by_status(self, status: Status) -> tuple[AnchorResult, ...]:
        return tuple(r for r in self.results if r.status == status)

    @property
    def verified(self) -> tuple[AnchorResult, ...]:
        return self.by_status("verified")

    @property
    def failed(self) -> tuple[AnchorResult, ...]:
        return self.by_status("failed")

    def raise_for_failure(self) -> AnchorReport:
        """Raise the first failed anchor's `VerificationError`; else return self."""
        for result in self.results:
            if result.error is not None:
                raise result.error
        return self
