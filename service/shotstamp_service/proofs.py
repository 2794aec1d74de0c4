"""Proof bundles: a registration, its inclusion path and the first checkpoint that holds it."""

from __future__ import annotations

from typing import Any

from shotstamp.merkle import leaf_hash

from .records import Registration
from .store import Store
from .tree import inclusion_proof

__all__ = ["PROOF_FORMAT", "proof_bundle"]

PROOF_FORMAT = "shotstamp-proof/1"


async def proof_bundle(store: Store, registration: Registration) -> dict[str, Any]:
    """The self-contained proof for a sealed registration (wire format in docs/DESIGN.md)."""
    if registration.leaf_index is None:
        raise ValueError(f"registration {registration.id} is not sealed yet")
    # The first checkpoint containing the leaf gives the tightest "no later than".
    checkpoint = await store.first_checkpoint_covering(registration.leaf_index)
    if checkpoint is None:
        raise LookupError(f"no checkpoint covers leaf {registration.leaf_index}")
    path = await inclusion_proof(store, registration.leaf_index, checkpoint.tree_size)
    return {
        "format": PROOF_FORMAT,
        "leaf": registration.leaf_record(),
        "leaf_hash": leaf_hash(registration.leaf_bytes()).hex(),
        "leaf_index": registration.leaf_index,
        "tree_size": checkpoint.tree_size,
        "inclusion_path": [h.hex() for h in path],
        "checkpoint": checkpoint.note,
    }
