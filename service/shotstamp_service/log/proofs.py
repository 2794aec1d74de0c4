"""Proofs the service hands out: registration bundles and consistency between tree sizes."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Protocol

from shotstamp._merkle import leaf_hash
from shotstamp_service.log.tree import consistency_proof, inclusion_proof
from shotstamp_service.records import Registration
from shotstamp_service.store import AnchorStore, LogStore

__all__ = [
    "PROOF_FORMAT",
    "PROOF_FORMAT_V1",
    "ProofRange",
    "ProofRangeError",
    "ProofStore",
    "consistency_json",
    "proof_bundle",
]

# Version 2: the leaf commits to the seller with a salt only the bundle carries
# (docs/security.md, "Who registered a photo"); registrations logged before keep version 1.
PROOF_FORMAT = "shotstamp-proof/2"
PROOF_FORMAT_V1 = "shotstamp-proof/1"


class ProofStore(LogStore, AnchorStore, Protocol):
    """What proofs read: the log, and the anchors of its checkpoints."""


class ProofRange(StrEnum):
    """Why no consistency proof can be given between two tree sizes."""

    FROM_BELOW_ONE = "from_below_one"  # every tree extends the empty one, without proof
    FROM_AFTER_TO = "from_after_to"
    NOT_YET = "not_yet"  # the log has no tree of that size yet


class ProofRangeError(ValueError):
    """Tree sizes no consistency proof can be given for, and why (`reason`)."""

    def __init__(self, reason: ProofRange, message: str) -> None:
        super().__init__(message)
        self.reason = reason


async def consistency_json(store: LogStore, first: int, second: int) -> dict[str, Any]:
    """`{"from", "to", "path"}`: the RFC 9162 proof that the tree of `second` leaves
    extends the tree of `first` leaves, both sizes of this log's trees.

    The same object is the API answer, an element of a bundle's `consistency`
    list, and what `shotstamp.verify_consistency_between` takes. Requires
    1 <= first <= second <= the latest checkpoint's size (`ProofRangeError`
    otherwise): every tree extends the empty one, and RFC 9162 has no proof
    for it.
    """
    if first < 1:
        raise ProofRangeError(
            ProofRange.FROM_BELOW_ONE,
            "'from' must be at least 1: every tree extends the empty one, without proof",
        )
    if first > second:
        raise ProofRangeError(
            ProofRange.FROM_AFTER_TO, f"'from' ({first}) is larger than 'to' ({second})"
        )
    size = await store.tree_size()
    if second > size:
        raise ProofRangeError(
            ProofRange.NOT_YET, f"the log has no tree of size {second} yet (it has {size})"
        )
    path = await consistency_proof(store, first, second)
    return {"from": first, "to": second, "path": [h.hex() for h in path]}


async def proof_bundle(
    store: ProofStore, registration: Registration, *, consistency_with: int | None = None
) -> dict[str, Any]:
    """The self-contained proof for a sealed registration (wire format in docs/DESIGN.md).

    With `consistency_with`, the bundle also carries the consistency proof
    between its checkpoint and the tree of that size (whichever is smaller
    first), so a holder who trusts that checkpoint verifies it offline.

    Once anchors have dated a checkpoint at least as large as the proof's,
    the bundle carries, per anchor, the earliest such (`anchors`: the
    anchored checkpoint's note and the anchor's evidence) and the
    consistency proof from the proof's tree to it (in `consistency`), so the
    anchor's date covers this registration without trusting the service.
    """
    if registration.leaf_index is None:
        raise ValueError(f"registration {registration.id} is not sealed yet")
    # The first checkpoint containing the leaf gives the tightest "no later than".
    checkpoint = await store.first_checkpoint_covering(registration.leaf_index)
    if checkpoint is None:
        raise LookupError(f"no checkpoint covers leaf {registration.leaf_index}")
    path = await inclusion_proof(store, registration.leaf_index, checkpoint.tree_size)
    salted = registration.seller_salt is not None
    bundle: dict[str, Any] = {
        "format": PROOF_FORMAT if salted else PROOF_FORMAT_V1,
        "leaf": registration.leaf_record(),
        "leaf_hash": leaf_hash(registration.leaf_bytes()).hex(),
        "leaf_index": registration.leaf_index,
        "tree_size": checkpoint.tree_size,
        "inclusion_path": [h.hex() for h in path],
        "checkpoint": checkpoint.note,
    }
    if registration.seller_salt is not None:
        bundle["seller"] = registration.seller
        bundle["seller_salt"] = registration.seller_salt.hex()
    spans: list[tuple[int, int]] = []
    if consistency_with is not None:
        low, high = sorted((consistency_with, checkpoint.tree_size))
        spans.append((low, high))
    anchors = []
    for job in await store.anchors_covering(checkpoint.tree_size):
        assert job.checkpoint is not None and job.evidence is not None
        anchors.append(
            {
                "name": job.anchor,
                "type": job.kind,
                "tree_size": job.tree_size,
                "checkpoint": job.checkpoint.note,
                "anchored_at": job.anchored_at,
                "evidence": job.evidence,
            }
        )
        if job.tree_size > checkpoint.tree_size:
            spans.append((checkpoint.tree_size, job.tree_size))
    if spans:
        bundle["consistency"] = [
            await consistency_json(store, low, high) for low, high in dict.fromkeys(spans)
        ]
    if anchors:
        bundle["anchors"] = anchors
    return bundle
