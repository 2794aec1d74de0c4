"""Anchors: the log's checkpoints dated by parties outside the operator's control.

- `base.py` — the `Anchor` interface and the outcome of one attempt.
- `runner.py` — `AnchorRunner`: batching, leases, retries, stored evidence.
- `rfc3161.py` — a timestamp authority's RFC 3161 token over the root
  (needs `shotstamp[tsa]`).
- `evm.py` — the root in a transaction on an EVM chain (needs `shotstamp[chain]`).

`make_anchors(config)` builds the configured ones; each extra is imported only
when its anchor is configured, so a service without anchors needs neither.
"""

from __future__ import annotations

from shotstamp_service.anchors.base import Anchor, Anchored, AnchorError, AnchorStep, InProgress
from shotstamp_service.anchors.runner import AnchorRunner
from shotstamp_service.config import Config

__all__ = [
    "Anchor",
    "AnchorError",
    "AnchorRunner",
    "AnchorStep",
    "Anchored",
    "InProgress",
    "make_anchors",
]

# The configured anchors' names, as they appear in proof bundles.
TSA_ANCHOR = "tsa"
EVM_ANCHOR = "chain"


def _needs(extra: str, what: str, exc: ImportError) -> RuntimeError:
    return RuntimeError(
        f"{what} needs the '{extra}' extra: pip install 'shotstamp[{extra}]' ({exc})"
    )


def make_anchors(config: Config) -> list[Anchor]:
    """The anchors `config` asks for (possibly none)."""
    anchors: list[Anchor] = []
    if config.tsa_url:
        try:
            from shotstamp_service.anchors.rfc3161 import Rfc3161Anchor
        except ImportError as exc:
            raise _needs("tsa", "SHOTSTAMP_TSA_URL", exc) from exc
        from shotstamp._rfc3161 import load_tsa_certificates

        anchors.append(
            Rfc3161Anchor(
                TSA_ANCHOR,
                url=config.tsa_url,
                interval=config.tsa_interval,
                timeout=config.tsa_timeout,
                certificates=(
                    load_tsa_certificates([config.tsa_ca_file]) if config.tsa_ca_file else None
                ),
            )
        )
    if config.evm_rpc_url:
        try:
            from shotstamp_service.anchors.evm import EvmAnchor, load_or_create_evm_key
        except ImportError as exc:
            raise _needs("chain", "SHOTSTAMP_EVM_RPC_URL", exc) from exc
        anchors.append(
            EvmAnchor(
                EVM_ANCHOR,
                rpc_url=config.evm_rpc_url,
                account=load_or_create_evm_key(config.evm_key_path),
                interval=config.evm_interval,
                timeout=config.evm_timeout,
                chain_id=config.evm_chain_id,
                confirmations=config.evm_confirmations,
                to=config.evm_to,
            )
        )
    return anchors
