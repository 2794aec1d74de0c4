"""`shotstamp.canonical`, kept for compatibility: the old module path (docs/sdk-api.md).

A package rather than a module file so that merges see the rename of
canonical.py to _canonical.py (other branches edit it).
"""

from shotstamp._canonical import MAX_SAFE_INTEGER, canonical_json

__all__ = ["MAX_SAFE_INTEGER", "canonical_json"]
