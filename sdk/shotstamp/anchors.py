"""`shotstamp.anchors`, kept for compatibility: the old module path (docs/sdk-api.md)."""

from shotstamp._anchor_bundle import AnchorEntry, AnchorReport, AnchorResult
from shotstamp._anchors import ANCHOR_CHECKS, ANCHOR_TYPES, averify_anchors, verify_anchors
from shotstamp._evm import EVM_PAYLOAD_PREFIX, evm_payload
from shotstamp._rfc3161 import TimestampFacts, check_timestamp_response, load_tsa_certificates

__all__ = [
    "ANCHOR_CHECKS",
    "ANCHOR_TYPES",
    "EVM_PAYLOAD_PREFIX",
    "AnchorEntry",
    "AnchorReport",
    "AnchorResult",
    "TimestampFacts",
    "averify_anchors",
    "check_timestamp_response",
    "evm_payload",
    "load_tsa_certificates",
    "verify_anchors",
]
