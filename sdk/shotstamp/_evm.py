"""EVM anchors: a transaction whose data is the anchored tree size and root, asked online."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from shotstamp._anchor_bundle import AnchorEntry, AnchorResult, is_count
from shotstamp._checkpoint import SignedCheckpoint
from shotstamp._exceptions import VerificationError
from shotstamp._jsonrpc import JsonRpc, quantity

__all__: list[str] = []

# What the EVM anchor writes as a transaction's data, before tree size and root.
EVM_PAYLOAD_PREFIX = b"shotstamp/1"
_HEX_TX = re.compile(r"0x[0-9a-f]{64}")


def evm_payload(tree_size: int, root_hash: bytes) -> bytes:
    """The transaction data that anchors the tree of `tree_size` leaves with `root_hash`."""
    if len(root_hash) != 32 or not 0 < tree_size < 2**64:
        raise ValueError("want a 32-byte root and a tree size in 1..2^64-1")
    return EVM_PAYLOAD_PREFIX + tree_size.to_bytes(8, "big") + root_hash


def _chain_failure(entry: AnchorEntry, check: str, reason: str) -> VerificationError:
    return VerificationError(f"anchor {entry.name!r}: {reason}", check=check)


async def verify_evm(
    entry: AnchorEntry,
    anchored: SignedCheckpoint,
    rpcs: Sequence[JsonRpc],
    checks: list[str],
) -> AnchorResult:
    evidence = entry.evidence
    chain_id, tx_hash = evidence.get("chain_id"), evidence.get("transaction")
    block_number = evidence.get("block_number")
    if not is_count(chain_id) or not is_count(block_number):
        raise _chain_failure(
            entry, "anchor-format", "evidence needs integer chain_id and block_number"
        )
    if not isinstance(tx_hash, str) or not _HEX_TX.fullmatch(tx_hash):
        raise _chain_failure(
            entry, "anchor-format", "evidence 'transaction' must be a 0x-prefixed 32-byte hash"
        )

    # (1) chain-id: an endpoint for the chain the evidence names.
    served: dict[int, JsonRpc] = {}
    for candidate in rpcs:
        served[await candidate.chain_id()] = candidate
    if chain_id not in served:
        raise _chain_failure(
            entry,
            "chain-id",
            f"the evidence names chain {chain_id}; the RPC endpoints given serve "
            f"{', '.join(str(c) for c in sorted(served))}",
        )
    rpc = served[chain_id]
    checks.append("chain-id")

    # (2) chain-transaction: mined, in the stated block.
    tx = await rpc.call("eth_getTransactionByHash", tx_hash)
    if not isinstance(tx, Mapping):
        raise _chain_failure(
            entry, "chain-transaction", f"chain {chain_id} has no transaction {tx_hash}"
        )
    if tx.get("blockNumber") is None:
        raise _chain_failure(
            entry, "chain-transaction", f"transaction {tx_hash} is not in a block yet"
        )
    mined_in = quantity(tx.get("blockNumber"), "the transaction's blockNumber")
    if mined_in != block_number:
        raise _chain_failure(
            entry,
            "chain-transaction",
            f"transaction {tx_hash} is in block {mined_in}, the evidence says {block_number}",
        )
    checks.append("chain-transaction")

    # (3) chain-data: it carries the anchored root and tree size.
    want = "0x" + evm_payload(anchored.size, anchored.root_hash).hex()
    data = tx.get("input", tx.get("data"))
    if not isinstance(data, str) or data.lower() != want:
        raise _chain_failure(
            entry,
            "chain-data",
            f"transaction {tx_hash} carries data {str(data)[:120]}, want {want} "
            f"(tree size {anchored.size}, root {anchored.root_hash.hex()})",
        )
    checks.append("chain-data")

    # (4) chain-block: the block holds the transaction; its time and depth.
    block = await rpc.call("eth_getBlockByNumber", hex(block_number), False)
    if not isinstance(block, Mapping):
        raise _chain_failure(entry, "chain-block", f"chain {chain_id} has no block {block_number}")
    if str(block.get("hash", "")).lower() != str(tx.get("blockHash", "")).lower():
        raise _chain_failure(
            entry,
            "chain-block",
            f"block {block_number} is {block.get('hash')}, the transaction names "
            f"{tx.get('blockHash')} (a reorganisation?)",
        )
    listed = [str(h).lower() for h in block.get("transactions", []) if isinstance(h, str)]
    if tx_hash.lower() not in listed:
        raise _chain_failure(
            entry, "chain-block", f"block {block_number} does not list transaction {tx_hash}"
        )
    block_time = datetime.fromtimestamp(quantity(block.get("timestamp"), "the block time"), UTC)
    latest = quantity(await rpc.call("eth_blockNumber"), "eth_blockNumber")
    checks.append("chain-block")
    return AnchorResult(
        name=entry.name,
        type=entry.type,
        status="verified",
        tree_size=entry.tree_size,
        statement=(
            f"no later than block {block_number} at {block_time.isoformat()} on chain {chain_id}"
        ),
        time=block_time,
        authority=f"chain {chain_id}",
        checks=tuple(checks),
        details={
            "transaction": tx_hash,
            "block_hash": block.get("hash"),
            "confirmations": latest - block_number + 1,
            "sender": tx.get("from"),
            "rpc": rpc.url,
        },
    )
