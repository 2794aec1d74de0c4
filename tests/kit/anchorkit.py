"""Helpers of the anchor tests (a module of its own, so no test imports a conftest)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.kit.servicekit import Service


async def proof_with_anchors(
    service: Service, key: str, registration_id: str, names: set[str], timeout: float = 30
) -> dict[str, Any]:
    """Fetch the proof until it carries an anchor of each name."""
    deadline = time.monotonic() + timeout
    while True:
        answer = await service.client.get(
            f"/v1/registrations/{registration_id}/proof?wait=true", headers=service.auth(key)
        )
        assert answer.status == 200, await answer.text()
        bundle: dict[str, Any] = await answer.json()
        if names <= {a["name"] for a in bundle.get("anchors", [])}:
            return bundle
        if time.monotonic() > deadline:
            raise AssertionError(f"no anchors {names} after {timeout} s: {bundle.get('anchors')}")
        await asyncio.sleep(0.1)


async def vkeys(service: Service) -> list[str]:
    answer = await service.client.get("/v1/keys")
    return [key["vkey"] for key in (await answer.json())["keys"]]
