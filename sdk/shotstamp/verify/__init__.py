"""`shotstamp.verify`, kept for compatibility: the old module path (docs/sdk-api.md).

A package rather than a module file so that merges see the rename of
verify.py to _verify.py (other branches edit it).
"""

from shotstamp._verify import (
    CHECKS,
    FORMAT,
    LEAF_FIELDS,
    TRUSTED_CHECKS,
    ProofBundle,
    VerifiedProof,
    verify_proof,
)

__all__ = [
    "CHECKS",
    "FORMAT",
    "LEAF_FIELDS",
    "TRUSTED_CHECKS",
    "ProofBundle",
    "VerifiedProof",
    "verify_proof",
]
