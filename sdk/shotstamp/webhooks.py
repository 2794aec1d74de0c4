"""`shotstamp.webhooks`, kept for compatibility: the old module path (docs/sdk-api.md)."""

from shotstamp._webhooks import (
    DEFAULT_TOLERANCE,
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    SIGNATURE_SCHEME,
    WebhookEvent,
    sign_webhook,
    verify_webhook,
)

__all__ = [
    "DEFAULT_TOLERANCE",
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "SIGNATURE_SCHEME",
    "WebhookEvent",
    "sign_webhook",
    "verify_webhook",
]
