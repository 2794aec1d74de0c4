"""shotstamp: register product photos in a signed Merkle log and prove it offline.

The public API is what `__all__` lists (map: docs/sdk-api.md). Each name is
defined in a private module and listed in that module's `__all__`; this file
star-imports them, and `__all__` below is their sorted union (a test checks
it). Everything else is internal, including the older `shotstamp.merkle`-style
module paths, which are kept only so that existing imports keep working.

Usage:

    with shotstamp.Client(api_key="ss_...") as client:
        registration = client.register("kettle.jpg", wait=True)
"""

# The star imports take each module's `__all__`; the test pins the result.
# ruff: noqa: F403, F405
from shotstamp._anchor_bundle import *
from shotstamp._anchors import *
from shotstamp._client import *
from shotstamp._consistency import *
from shotstamp._exceptions import *
from shotstamp._models import *
from shotstamp._verify import *
from shotstamp._webhooks import *
from shotstamp._witness import *

__all__ = [
    "APIError",
    "AnchorReport",
    "AnchorResult",
    "AsyncClient",
    "AuthError",
    "Check",
    "CheckpointInfo",
    "CheckpointWitness",
    "Client",
    "ConflictError",
    "ConsistencyProof",
    "LogKey",
    "LogKeys",
    "MalformedProofError",
    "Match",
    "NotFoundError",
    "NotSealedError",
    "ProofBundle",
    "RateLimited",
    "RegisterResult",
    "Registration",
    "RetryPolicy",
    "RootMismatchError",
    "ServerError",
    "ShotstampError",
    "TransportError",
    "ValidationError",
    "VerificationError",
    "VerifiedConsistency",
    "VerifiedProof",
    "Webhook",
    "WebhookEvent",
    "WebhookVerificationError",
    "averify_anchors",
    "verify_anchors",
    "verify_consistency_between",
    "verify_proof",
    "verify_webhook",
]
