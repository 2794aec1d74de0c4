"""`shotstamp.models`, kept for compatibility: the old module path (docs/sdk-api.md).

A package rather than a module file so that merges see the rename of
models.py to _models.py (other branches edit it).
"""

from shotstamp._models import (
    Check,
    CheckpointInfo,
    LogKey,
    LogKeys,
    Match,
    RegisterResult,
    Registration,
    Webhook,
)

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
