"""Offline proof that one signed checkpoint's log extends another's.

A log is append-only only if every checkpoint it signs extends every earlier
one: the tree of the earlier size is a prefix of the later tree.  RFC 9162
consistency proofs show it with O(log n) hashes.  The service serves them at
`GET /v1/proofs/consistency?from=N&to=M` as `{"from": N, "to": M, "path":
["hex", ...]}`; the same object may ride in a proof bundle's `consistency`
list so the check needs no network.

Usage:

    result = verify_consistency_between(old_note, new_note, answer, keys=vkeys)
    print(f"{result.new_size} extends {result.old_size}")
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shotstamp._checkpoint import (
    Checkpoint,
    NoteVerifier,
    SignedCheckpoint,
    open_checkpoint,
    verifiers_from,
)
from shotstamp._exceptions import MalformedProofError, VerificationError
from shotstamp._merkle import EMPTY_ROOT, HASH_SIZE, verify_consistency

__all__ = ["ConsistencyProof", "VerifiedConsistency", "verify_consistency_between"]

# Every check `verify_consistency_between` runs, in order.
CONSISTENCY_CHECKS = (
    "old-checkpoint-signature",
    "old-checkpoint-body",
    "new-checkpoint-signature",
    "new-checkpoint-body",
    "origin",
    "consistency",
)

_HEX_HASH = re.compile(r"[0-9a-f]{64}")


def _malformed(reason: str) -> MalformedProofError:
    return MalformedProofError(f"malformed consistency proof: {reason}", field="consistency")


def _is_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True)
class ConsistencyProof:
    """`{"from", "to", "path"}`: the tree of `second` leaves extends the tree of `first`.

    `path` holds raw 32-byte hashes (lowercase hex on the wire).
    """

    first: int
    second: int
    path: tuple[bytes, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", tuple(self.path))
        if not _is_size(self.first) or not _is_size(self.second):
            raise _malformed("'from' and 'to' must be non-negative integers")
        if self.first > self.second:
            raise _malformed(f"'from' ({self.first}) is larger than 'to' ({self.second})")
        for position, element in enumerate(self.path):
            if not isinstance(element, bytes) or len(element) != HASH_SIZE:
                raise _malformed(f"path element {position} is not a 32-byte hash")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ConsistencyProof:
        """Parse the decoded API answer (or bundle element); `MalformedProofError` if malformed."""
        if not isinstance(data, Mapping):
            raise _malformed("not a JSON object")
        for name in ("from", "to", "path"):
            if name not in data:
                raise _malformed(f"field {name!r} is missing")
        path = data["path"]
        if not isinstance(path, list):
            raise _malformed("'path' must be a list of hex hashes")
        for position, element in enumerate(path):
            if not isinstance(element, str) or not _HEX_HASH.fullmatch(element):
                raise _malformed(f"path element {position} is not 64 lowercase hex digits")
        return cls(data["from"], data["to"], tuple(bytes.fromhex(h) for h in path))

    def to_dict(self) -> dict[str, Any]:
        return {"from": self.first, "to": self.second, "path": [h.hex() for h in self.path]}


@dataclass(frozen=True)
class VerifiedConsistency:
    """Two checkpoints of one log, the later extending the earlier."""

    origin: str
    old_size: int
    new_size: int
    old_root: bytes
    new_root: bytes
    old_time: datetime | None
    new_time: datetime | None
    checks: tuple[str, ...]


def proof_path(
    proof: ConsistencyProof | Mapping[str, Any] | Sequence[bytes | str],
    old_size: int,
    new_size: int,
) -> tuple[bytes, ...]:
    """The hashes of a consistency proof from `old_size` to `new_size`.

    `proof` is the API answer (decoded or `ConsistencyProof`), whose sizes
    must be these, or a bare path of hex strings or bytes.  Raises
    `VerificationError` (check `consistency`) if it is malformed or for other
    sizes.
    """
    try:
        if isinstance(proof, Mapping):
            proof = ConsistencyProof.from_json(proof)
        if isinstance(proof, ConsistencyProof):
            if (proof.first, proof.second) != (old_size, new_size):
                raise VerificationError(
                    f"the proof is from size {proof.first} to {proof.second}, "
                    f"the checkpoints are of sizes {old_size} and {new_size}",
                    check="consistency",
                )
            return proof.path
        hashes = []
        for position, element in enumerate(proof):
            if isinstance(element, str):
                if not _HEX_HASH.fullmatch(element):
                    raise _malformed(f"path element {position} is not 64 lowercase hex digits")
                element = bytes.fromhex(element)
            hashes.append(element)
        return tuple(hashes)
    except MalformedProofError as exc:
        raise VerificationError(str(exc), check="consistency") from exc


def check_tree_extends(
    old_size: int, old_root: bytes, new_size: int, new_root: bytes, path: Sequence[bytes]
) -> None:
    """Check that the tree of `new_size` leaves with `new_root` extends the older one.

    The trees are two of one log whose roots the caller trusts (signed
    checkpoints). Raises `VerificationError` (check `consistency`) on a
    rollback (`new_size` is smaller), a fork (equal sizes, different roots,
    or a proof that does not lead from one root to the other) or a malformed
    proof. The empty tree is a prefix of every tree, without proof.
    """
    check = "consistency"
    if new_size < old_size:
        raise VerificationError(
            f"rollback: the log shrank: the new checkpoint's tree has {new_size} leaves, "
            f"the trusted one already {old_size}",
            check=check,
        )
    if old_size == new_size or old_size == 0:
        if path:
            raise VerificationError(
                f"wrong proof size {len(path)}, want 0 from size {old_size} to {new_size}",
                check=check,
            )
        if old_size == 0 and old_root != EMPTY_ROOT:
            raise VerificationError(
                "fork: a checkpoint of the empty tree with a root other than the empty root",
                check=check,
            )
        if old_size == new_size and old_root != new_root:
            raise VerificationError(
                f"fork: two different trees of size {new_size} "
                f"(roots {old_root.hex()} and {new_root.hex()})",
                check=check,
            )
        return
    try:
        verify_consistency(old_size, new_size, path, old_root, new_root)
    except VerificationError as exc:
        raise VerificationError(
            f"fork: the tree of size {new_size} does not extend the tree of size "
            f"{old_size}: {exc}",
            check=check,
        ) from exc


def check_extends(old: Checkpoint, new: Checkpoint, path: Sequence[bytes]) -> None:
    """`check_tree_extends` for two checkpoints of one log whose signatures were verified."""
    check_tree_extends(old.size, old.root_hash, new.size, new.root_hash, path)


def verify_consistency_between(
    old: str | bytes | SignedCheckpoint,
    new: str | bytes | SignedCheckpoint,
    proof: ConsistencyProof | Mapping[str, Any] | Sequence[bytes | str],
    *,
    keys: str | NoteVerifier | Iterable[str | NoteVerifier],
) -> VerifiedConsistency:
    """Verify offline that the log signed `new` as an extension of `old`.

    **Parameters:**

    * **old**, **new** - signed checkpoint notes (text), or already opened
      `SignedCheckpoint`s; `new` must not be smaller than `old`.
    * **proof** - the `/v1/proofs/consistency` answer (decoded JSON or
      `ConsistencyProof`) from `old`'s size to `new`'s, or its bare path
      (hex strings or bytes).
    * **keys** - the log's verifier keys, retired ones included: the two
      checkpoints may be signed by different keys across a rotation.

    Raises `VerificationError` whose `.check` is one of `CONSISTENCY_CHECKS`.

    Usage:

        verify_consistency_between(trusted_note, latest_note, answer, keys=vkeys)
    """
    verifiers = verifiers_from(keys)
    checks: list[str] = []

    # Verification plan:
    # (1) old-checkpoint-signature, old-checkpoint-body: `old` is signed by a
    #     trusted key named for its origin and parses as a checkpoint.
    # (2) new-checkpoint-signature, new-checkpoint-body: likewise `new`.
    # (3) origin: both are checkpoints of the same log.
    # (4) consistency: the proof leads from old's root to new's root.

    # (1), (2): Both checkpoints, each under its own check names.
    opened = []
    for which, note in (("old-checkpoint", old), ("new-checkpoint", new)):
        if isinstance(note, SignedCheckpoint):
            # Opened by the caller; its signature is checked again all the same.
            note = note.note
        opened.append(open_checkpoint(note, verifiers, which=which))
        checks += [f"{which}-signature", f"{which}-body"]
    older, newer = opened

    # (3): One log.
    if older.origin != newer.origin:
        raise VerificationError(
            f"the checkpoints are of different logs: {older.origin!r} and {newer.origin!r}",
            check="origin",
        )
    checks.append("origin")

    # (4): The newer tree extends the older (a rollback fails before the proof is read).
    path = () if newer.size < older.size else proof_path(proof, older.size, newer.size)
    check_extends(older.checkpoint, newer.checkpoint, path)
    checks.append("consistency")

    return VerifiedConsistency(
        origin=older.origin,
        old_size=older.size,
        new_size=newer.size,
        old_root=older.root_hash,
        new_root=newer.root_hash,
        old_time=older.timestamp,
        new_time=newer.timestamp,
        checks=tuple(checks),
    )
