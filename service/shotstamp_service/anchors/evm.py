"""The public-chain anchor: the checkpoint root in a transaction on an EVM chain.

Each anchored checkpoint becomes one zero-value transaction from the
anchor's key to `to` (default: itself) whose data is
`shotstamp.anchors.evm_payload(tree_size, root)`: `b"shotstamp/1"`, the tree
size as 8 big-endian bytes, the 32-byte root. About 21,700 gas.

Durable in two steps, so a crash or a restart never pays twice:

1. Sign (nonce from the node's pending count, EIP-1559 fees when the chain
   has a base fee) and return the signed transaction as progress; the runner
   stores it before anything is sent.
2. Every later attempt looks for the transaction's receipt; without one it
   (re)sends the stored bytes (a node that already has them says so, which is
   fine). Once mined with `confirmations` blocks on top, the evidence is the
   chain id, transaction hash, block number, hash and time.

A stored transaction that can never be mined (its nonce taken by another
transaction from the same key, or reverted) is dropped and the checkpoint
signed again. The key file holds the hex private key, mode 0600 like the
log's signing key; it is created if missing, and its address must then be
funded (`shotstamp-service anchors evm-address` prints it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# web3 (through py_ecc) raises the interpreter's recursion limit to 100,000 when
# imported. Deep recursion then overflows the C stack and kills the process
# instead of raising RecursionError: one deeply nested JSON body would crash the
# service. None of the code used here needs it, so the limit is put back.
_RECURSION_LIMIT = sys.getrecursionlimit()

from eth_account import Account  # noqa: E402
from eth_account.signers.local import LocalAccount  # noqa: E402
from eth_typing import HexStr  # noqa: E402
from web3 import AsyncHTTPProvider, AsyncWeb3  # noqa: E402
from web3.exceptions import TransactionNotFound, Web3RPCError  # noqa: E402
from web3.types import Wei  # noqa: E402

from shotstamp._evm import evm_payload  # noqa: E402

sys.setrecursionlimit(_RECURSION_LIMIT)

from shotstamp_service.anchors.base import Anchor, Anchored, AnchorError, AnchorStep, InProgress  # noqa: E402
from shotstamp_service.records import CheckpointRecord  # noqa: E402

__all__ = ["EvmAnchor", "load_or_create_evm_key"]

log = logging.getLogger(__name__)

# Node answers to a re-sent transaction that mean "I have it", not "it is wrong".
_ALREADY_KNOWN = ("already known", "known transaction", "already imported", "alreadyknown")
_NONCE_USED = ("nonce too low", "invalid transaction nonce", "nonce has already been used")


def load_or_create_evm_key(path: Path) -> LocalAccount:
    """The anchor's account from a hex key file (mode 0600), created if it does not exist."""
    if not path.exists():
        account: LocalAccount = Account.create()
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # O_EXCL: two replicas starting at once must not write two different keys.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("0x" + bytes(account.key).hex() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        log.warning(
            "created the EVM anchor key %s; fund its address %s to anchor on chain",
            path,
            account.address,
        )
        return account
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(f"EVM key {path} is readable by others (mode {mode:o}); chmod 600 it")
    text = path.read_text().strip()
    try:
        loaded: LocalAccount = Account.from_key(text)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"EVM key {path} is not a hex secp256k1 private key") from exc
    return loaded


class EvmAnchor(Anchor):
    kind = "evm"

    def __init__(
        self,
        name: str,
        *,
        rpc_url: str,
        account: LocalAccount,
        interval: float,
        timeout: float,
        chain_id: int | None = None,
        confirmations: int = 3,
        to: str | None = None,
        poll: float = 2.0,
    ) -> None:
        super().__init__(name, interval=interval, timeout=timeout)
        self.rpc_url = rpc_url
        self.account = account
        self.expected_chain_id = chain_id
        self.confirmations = confirmations
        self.to = AsyncWeb3.to_checksum_address(to) if to else account.address
        self.poll = poll
        self._w3: AsyncWeb3[Any] | None = None

    async def start(self) -> None:
        self._w3 = AsyncWeb3(
            AsyncHTTPProvider(self.rpc_url, request_kwargs={"timeout": self.timeout})
        )

    async def close(self) -> None:
        if self._w3 is not None:
            await self._w3.provider.disconnect()
            self._w3 = None

    async def _chain_id(self) -> int:
        assert self._w3 is not None
        chain_id = int(await self._w3.eth.chain_id)
        if self.expected_chain_id is not None and chain_id != self.expected_chain_id:
            raise AnchorError(
                f"the RPC {self.rpc_url} serves chain {chain_id}, configured for "
                f"{self.expected_chain_id}: refusing to anchor there"
            )
        return chain_id

    async def attempt(
        self, checkpoint: CheckpointRecord, progress: Mapping[str, Any] | None
    ) -> AnchorStep:
        if not progress:
            return await self._sign(checkpoint)
        return await self._follow(checkpoint, progress)

    async def _sign(self, checkpoint: CheckpointRecord) -> AnchorStep:
        # (1): a signed transaction, kept before it is sent.
        assert self._w3 is not None
        eth = self._w3.eth
        chain_id = await self._chain_id()
        data = evm_payload(checkpoint.tree_size, checkpoint.root_hash)
        tx: dict[str, Any] = {
            "chainId": chain_id,
            "nonce": await eth.get_transaction_count(self.account.address, "pending"),
            "to": self.to,
            "value": 0,
            "data": data,
        }
        tx["gas"] = await eth.estimate_gas(
            {"from": self.account.address, "to": self.to, "value": Wei(0), "data": data}
        )
        latest = await eth.get_block("latest")
        base_fee = latest.get("baseFeePerGas")
        if base_fee is not None:
            tip = await eth.max_priority_fee
            tx.update(maxFeePerGas=2 * base_fee + tip, maxPriorityFeePerGas=tip, type=2)
        else:
            tx["gasPrice"] = await eth.gas_price
        # Signing is pure-Python elliptic-curve work: keep it off the event loop.
        signed = await asyncio.to_thread(self.account.sign_transaction, tx)
        return InProgress(
            {
                "chain_id": chain_id,
                "transaction": "0x" + bytes(signed.hash).hex(),
                "raw": "0x" + bytes(signed.raw_transaction).hex(),
                "nonce": tx["nonce"],
            },
            retry_after=0.0,
        )

    async def _follow(
        self, checkpoint: CheckpointRecord, progress: Mapping[str, Any]
    ) -> AnchorStep:
        # (2): send (again) until mined, then wait for the confirmations.
        assert self._w3 is not None
        eth = self._w3.eth
        tx_hash = str(progress["transaction"])
        receipt = await self._receipt(tx_hash)
        if receipt is None:
            try:
                await eth.send_raw_transaction(HexStr(str(progress["raw"])))
            except Web3RPCError as exc:
                reason = str(exc).lower()
                if any(word in reason for word in _NONCE_USED):
                    if await self._receipt(tx_hash) is not None:
                        return InProgress(dict(progress), retry_after=0.0)  # mined meanwhile
                    log.warning(
                        "anchor %s: transaction %s lost its nonce to another; signing again",
                        self.name,
                        tx_hash,
                    )
                    return InProgress({}, retry_after=0.0)
                if not any(word in reason for word in _ALREADY_KNOWN):
                    raise AnchorError(f"the node refused transaction {tx_hash}: {exc}") from exc
            return InProgress(dict(progress), retry_after=self.poll)
        if receipt["status"] != 1:
            log.warning("anchor %s: transaction %s failed; signing again", self.name, tx_hash)
            return InProgress({}, retry_after=self.poll)
        mined_in = int(receipt["blockNumber"])
        if int(await eth.block_number) - mined_in < self.confirmations:
            return InProgress(dict(progress), retry_after=self.poll)
        block = await eth.get_block(mined_in)
        if bytes(block["hash"]) != bytes(receipt["blockHash"]):
            # Reorganised between the two reads: look again next time.
            return InProgress(dict(progress), retry_after=self.poll)
        block_time = datetime.fromtimestamp(int(block["timestamp"]), UTC)
        return Anchored(
            {
                "chain_id": int(progress["chain_id"]),
                "transaction": tx_hash,
                "block_number": mined_in,
                "block_hash": "0x" + bytes(block["hash"]).hex(),
                "block_time": block_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "from": self.account.address,
            }
        )

    async def _receipt(self, tx_hash: str) -> Any:
        assert self._w3 is not None
        try:
            return await self._w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        except TransactionNotFound:
            return None

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "chain_id": self.expected_chain_id,
            "address": self.account.address,
            "confirmations": self.confirmations,
        }
