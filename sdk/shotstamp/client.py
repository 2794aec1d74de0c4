"""`shotstamp.client`, kept for compatibility: the old module path (docs/sdk-api.md)."""

from shotstamp._client import AsyncClient, Client, RetryPolicy

__all__ = ["AsyncClient", "Client", "RetryPolicy"]
