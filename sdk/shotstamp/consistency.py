"""`shotstamp.consistency`, kept for compatibility: the old module path (docs/sdk-api.md)."""

from shotstamp._consistency import (
    CONSISTENCY_CHECKS,
    ConsistencyProof,
    VerifiedConsistency,
    check_extends,
    check_tree_extends,
    proof_path,
    verify_consistency_between,
)

__all__ = [
    "CONSISTENCY_CHECKS",
    "ConsistencyProof",
    "VerifiedConsistency",
    "check_extends",
    "check_tree_extends",
    "proof_path",
    "verify_consistency_between",
]
