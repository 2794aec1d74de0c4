"""Remember the last verified checkpoint and refuse any that does not extend it.

A log that shows different histories to different clients, or rewrites an
old entry, must sign a checkpoint that is not consistent with one a client
already saw.  `CheckpointWitness` is that client's memory: it holds the last
checkpoint it verified (optionally in a small JSON file, so it survives
restarts) and accepts a new one only with a consistency proof from it.

Usage (what an HTTP client does whenever it fetches a checkpoint):

    witness = CheckpointWitness(keys=vkeys, state_file="~/.shotstamp/checkpoint.json")
    latest = get("/v1/checkpoints/latest")
    wanted = witness.proof_range(latest["tree_size"])
    path = get(f"/v1/proofs/consistency?from={wanted[0]}&to={wanted[1]}")["path"] if wanted else []
    witness.update(latest["note"], path)   # raises VerificationError(check="consistency")
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from shotstamp._checkpoint import NoteVerifier, SignedCheckpoint, open_checkpoint, verifiers_from
from shotstamp._consistency import ConsistencyProof, check_extends, proof_path
from shotstamp._exceptions import MalformedProofError, VerificationError

__all__ = ["CheckpointWitness"]

WITNESS_FORMAT = "shotstamp-witness/1"


class CheckpointWitness:
    """The last verified checkpoint of one log, and the rule that the log only grows.

    **Parameters:**

    * **keys** - the log's verifier keys (vkey strings or `NoteVerifier`s),
      retired ones included, so checkpoints from either side of a key
      rotation verify.
    * **origin** - the log's origin, if known in advance; otherwise the first
      accepted checkpoint pins it.
    * **state_file** - optional JSON file holding the last checkpoint; read
      (and its signature checked again) at start, rewritten atomically on
      each update.

    The first checkpoint is trusted on first use unless `state_file` already
    holds one; pin a known checkpoint with `update(note)` on a fresh witness.
    """

    def __init__(
        self,
        keys: str | NoteVerifier | Iterable[str | NoteVerifier],
        *,
        origin: str | None = None,
        state_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self._verifiers = verifiers_from(keys)
        self._origin = origin
        self._state_file = None if state_file is None else Path(state_file).expanduser()
        self._latest: SignedCheckpoint | None = None
        if self._state_file is not None and self._state_file.exists():
            self._latest = self._load(self._state_file)

    @property
    def latest(self) -> SignedCheckpoint | None:
        """The last checkpoint accepted, or None before the first."""
        return self._latest

    @property
    def tree_size(self) -> int:
        """The size of the last accepted tree (0 before the first)."""
        return 0 if self._latest is None else self._latest.size

    def proof_range(self, new_size: int) -> tuple[int, int] | None:
        """`(from, to)` of the consistency proof `update` needs for a tree of `new_size`.

        None when no proof is needed: nothing is trusted yet, or the size is
        unchanged (the roots are compared instead).  A smaller `new_size` is a
        rollback, which `update` refuses whatever the proof.
        """
        if self._latest is None or self._latest.size == 0 or new_size <= self._latest.size:
            return None
        return (self._latest.size, new_size)

    def update(
        self,
        note: str | bytes,
        consistency: ConsistencyProof | Mapping[str, Any] | Sequence[bytes | str] = (),
    ) -> SignedCheckpoint:
        """Accept `note` if it extends the last accepted checkpoint; return it.

        `consistency` is the proof from the held size to the note's (the
        `/v1/proofs/consistency` answer or its path); see `proof_range`.
        Raises `VerificationError` naming its check and keeps the held state:
        `checkpoint-signature` / `checkpoint-body` for a note not signed by
        the log, `origin` for another log's checkpoint, `consistency` for a
        fork (a different tree of the held size, or one the proof does not
        connect to it) or a rollback (a smaller tree).
        """
        new = open_checkpoint(note, self._verifiers)
        origin = self._origin if self._latest is None else self._latest.origin
        if origin is not None and new.origin != origin:
            raise VerificationError(
                f"checkpoint of log {new.origin!r}, this witness follows {origin!r}",
                check="origin",
            )
        held = self._latest
        if held is not None:
            if new.size < held.size:
                path: tuple[bytes, ...] = ()  # check_extends reports the rollback
            else:
                path = proof_path(consistency, held.size, new.size)
            check_extends(held.checkpoint, new.checkpoint, path)
            if new.size == held.size:
                return held  # the same tree: keep the checkpoint first seen
        self._latest = new
        if self._state_file is not None:
            self._save(self._state_file, new)
        return new

    # -- the state file -------------------------------------------------------
    def _load(self, path: Path) -> SignedCheckpoint:
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise MalformedProofError(
                f"witness state {path} cannot be read: {exc}", field="state"
            ) from exc
        if (
            not isinstance(state, dict)
            or state.get("format") != WITNESS_FORMAT
            or not isinstance(state.get("note"), str)
        ):
            raise MalformedProofError(
                f"witness state {path} is not a {WITNESS_FORMAT} document", field="state"
            )
        # The file is this client's own trust anchor, but check it all the same:
        # a key list that no longer covers it is a configuration error to see.
        held = open_checkpoint(state["note"], self._verifiers, which="state-checkpoint")
        if self._origin is not None and held.origin != self._origin:
            raise VerificationError(
                f"witness state {path} follows log {held.origin!r}, not {self._origin!r}",
                check="origin",
            )
        return held

    @staticmethod
    def _save(path: Path, checkpoint: SignedCheckpoint) -> None:
        state = {
            "format": WITNESS_FORMAT,
            "origin": checkpoint.origin,
            "tree_size": checkpoint.size,
            "note": checkpoint.note,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write aside and rename: a crash leaves the old state or the new, never half.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(state, handle, indent=2)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
