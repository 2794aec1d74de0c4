"""The few Ethereum JSON-RPC calls the EVM anchor check needs (plain HTTP, aiohttp)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import aiohttp

__all__: list[str] = []


class RpcUnavailable(Exception):
    """The JSON-RPC endpoint could not be asked (network, HTTP error, RPC error)."""


class JsonRpc:
    """The few Ethereum JSON-RPC calls the check needs, over one aiohttp session."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session
        self._chain_id: int | None = None
        self._next_id = 0

    async def call(self, method: str, *params: Any) -> Any:
        self._next_id += 1
        body = {"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": list(params)}
        try:
            async with self.session.post(self.url, json=body) as answer:
                if answer.status != 200:
                    raise RpcUnavailable(f"{self.url} answered HTTP {answer.status} to {method}")
                decoded = await answer.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise RpcUnavailable(f"cannot ask {self.url} ({method}): {exc}") from exc
        if not isinstance(decoded, Mapping):
            raise RpcUnavailable(f"{self.url} answered {method} with something not JSON-RPC")
        if decoded.get("error") is not None:
            raise RpcUnavailable(f"{self.url} refused {method}: {decoded['error']}")
        return decoded.get("result")

    async def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = quantity(await self.call("eth_chainId"), "eth_chainId")
        return self._chain_id


def quantity(value: Any, what: str) -> int:
    if not isinstance(value, str) or not re.fullmatch(r"0x[0-9a-fA-F]+", value):
        raise RpcUnavailable(f"the RPC answered {what} with {value!r}, not a quantity")
    return int(value, 16)
