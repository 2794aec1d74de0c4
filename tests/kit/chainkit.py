"""A real EVM chain for the tests: eth-tester on py-evm, spoken to over JSON-RPC on HTTP.

web3's `EthereumTesterProvider` runs the chain in this process; `ChainServer`
puts it behind an HTTP JSON-RPC endpoint on 127.0.0.1, in a thread with its own
event loop, so the service (in-process or a real `shotstamp-service`
process) and the SDK's verifier reach it exactly as they reach a public
node: by URL, in wire format (hex quantities, camelCase fields). The
translation uses web3's own eth-tester formatters; only integers are turned
back into hex quantities here. Nothing is mocked: transactions are signed,
executed by py-evm and mined into blocks with real hashes and timestamps.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web


def _wire(value: Any, key: str = "") -> Any:
    """eth-tester's Python values as JSON-RPC wire values."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if key == "logsBloom":
            return "0x" + value.to_bytes(256, "big").hex()
        return hex(value)
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, dict):
        return {k: _wire(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_wire(v) for v in value]
    return value


@dataclass
class ChainServer:
    """An eth-tester chain served at `url` (JSON-RPC over HTTP)."""

    url: str
    w3: Any  # web3.Web3 over EthereumTesterProvider; use under `lock`
    lock: threading.Lock
    chain_id: int
    requests: list[str]  # every method called over HTTP, in order (for tests)

    def call(self, method: str, *params: Any) -> Any:
        """One JSON-RPC call straight to the chain (the test's own view)."""
        with self.lock:
            return self.w3.provider.make_request(method, list(params)).get("result")

    def fund(self, address: str, ether: int = 10) -> None:
        with self.lock:
            tx = self.w3.eth.send_transaction(
                {"from": self.w3.eth.accounts[0], "to": address, "value": ether * 10**18}
            )
            self.w3.eth.wait_for_transaction_receipt(tx)

    def mine(self, blocks: int = 1) -> None:
        with self.lock:
            self.w3.provider.make_request("evm_mine", [blocks])

    def block_number(self) -> int:
        with self.lock:
            return int(self.w3.eth.block_number)

    def send_raw(self, raw: bytes) -> bytes:
        with self.lock:
            tx = self.w3.eth.send_raw_transaction(raw)
            self.w3.eth.wait_for_transaction_receipt(tx)
            return bytes(tx)


def _handle(w3: Any, lock: threading.Lock, seen: list[str], call: dict[str, Any]) -> dict[str, Any]:
    from web3.providers.eth_tester.middleware import request_formatters, result_formatters

    method, params = call.get("method", ""), call.get("params", [])
    seen.append(method)
    answer: dict[str, Any] = {"jsonrpc": "2.0", "id": call.get("id")}
    try:
        if method in request_formatters:
            params = request_formatters[method](params)
        with lock:
            response = w3.provider.make_request(method, params)
    except Exception as exc:  # eth-tester raises what a node answers as an error
        answer["error"] = {"code": -32000, "message": f"{type(exc).__name__}: {exc}"}
        return answer
    if "error" in response:
        answer["error"] = response["error"]
        return answer
    result = response.get("result")
    if result_formatters is not None and method in result_formatters:
        result = result_formatters[method](result)
    answer["result"] = _wire(result)
    return answer


@contextmanager
def chain_server() -> Iterator[ChainServer]:
    """Start a fresh chain and its HTTP endpoint; stop both on exit."""
    limit = sys.getrecursionlimit()
    from web3 import EthereumTesterProvider, Web3

    w3 = Web3(EthereumTesterProvider())
    # py-evm and py_ecc raise the recursion limit to 100,000 at import; in the test
    # process that turns other tests' RecursionError checks into C stack overflows.
    # The anchors' plain transfers need no deep recursion.
    sys.setrecursionlimit(limit)
    lock = threading.Lock()
    seen: list[str] = []

    async def rpc(request: web.Request) -> web.Response:
        body = await request.json()
        if isinstance(body, list):
            return web.json_response([_handle(w3, lock, seen, call) for call in body])
        return web.json_response(_handle(w3, lock, seen, body))

    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Any] = {}

    def serve() -> None:
        asyncio.set_event_loop(loop)
        app = web.Application()
        app.router.add_post("/", rpc)
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        holder["port"] = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        holder["runner"] = runner
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, name="chain-rpc", daemon=True)
    thread.start()
    started.wait(30)
    server = ChainServer(
        url=f"http://127.0.0.1:{holder['port']}/",
        w3=w3,
        lock=lock,
        chain_id=int(w3.eth.chain_id),
        requests=seen,
    )
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)


def write_key(path: Path, private_key: bytes) -> None:
    """An EVM key file as the service reads it: hex, mode 0600."""
    path.write_text("0x" + private_key.hex() + "\n")
    path.chmod(0o600)


def rpc_json(url: str, method: str, *params: Any) -> Any:
    """A blocking JSON-RPC call over HTTP (for tests outside an event loop)."""
    import urllib.request

    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
    request = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())
