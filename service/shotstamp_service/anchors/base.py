"""What an anchor is: something outside the operator's control that dates a checkpoint.

An anchor takes a signed checkpoint and returns evidence, checkable by anyone
without trusting the service, that the checkpoint's root hash existed no
later than some time: an RFC 3161 timestamp token, a transaction on a public
chain. The `AnchorRunner` (runner.py) decides when, retries, and stores the
evidence; an anchor only does one attempt at a time.

An attempt either finishes (`Anchored`, with the evidence) or has made
durable headway that must survive a restart (`InProgress`, with the state to
resume from and when to look again: the EVM anchor's signed transaction,
waiting for its block). A failed attempt raises `AnchorError` (or anything
else); the runner retries it later with backoff.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shotstamp_service.records import CheckpointRecord

__all__ = ["Anchor", "AnchorError", "AnchorStep", "Anchored", "InProgress"]


class AnchorError(Exception):
    """An attempt failed (the anchor's service refused, timed out, answered nonsense)."""


@dataclass(frozen=True)
class Anchored:
    """The attempt finished: `evidence` goes into proof bundles as this anchor's section."""

    evidence: dict[str, Any]


@dataclass(frozen=True)
class InProgress:
    """The attempt made headway: keep `progress` (JSON) and try again after `retry_after` s."""

    progress: dict[str, Any]
    retry_after: float


AnchorStep = Anchored | InProgress


class Anchor(abc.ABC):
    """One configured anchor. `name` is unique among them; `kind` is its evidence type."""

    kind: str

    def __init__(self, name: str, *, interval: float, timeout: float) -> None:
        self.name = name
        self.interval = interval  # seconds between anchored checkpoints (the batch)
        self.timeout = timeout  # longest one attempt may take

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open connections, load keys; called once before the first attempt."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what `start` opened."""

    @abc.abstractmethod
    async def attempt(
        self, checkpoint: CheckpointRecord, progress: Mapping[str, Any] | None
    ) -> AnchorStep:
        """Anchor `checkpoint` (tree size >= 1), resuming from `progress` if given.

        The evidence holds only this anchor's own fields; the runner adds the
        common ones (`type`, `name`, `tree_size`) and the bundle the
        checkpoint note.
        """

    def describe(self) -> dict[str, Any]:
        """What the service may tell anyone about this anchor (no secrets)."""
        return {"name": self.name, "type": self.kind, "interval": self.interval}
