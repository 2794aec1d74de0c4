"""`shotstamp.witness`, kept for compatibility: the old module path (docs/sdk-api.md)."""

from shotstamp._witness import WITNESS_FORMAT, CheckpointWitness

__all__ = ["WITNESS_FORMAT", "CheckpointWitness"]
