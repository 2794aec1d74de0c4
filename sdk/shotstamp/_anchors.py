"""Verification of a proof bundle's anchors: dates that do not rest on the operator.

A signed checkpoint says when the operator claims it sealed the log. An
anchor is evidence from someone else that the log's root existed no later
than some time. A bundle's `anchors` list carries, for each anchor, the
anchored checkpoint (a later one than the proof's, or the same) and the
evidence; its `consistency` list carries the proof that the anchored tree
extends the proof's tree, so the registration is in what was anchored.

- `rfc3161`: a timestamp token from a timestamp authority (RFC 3161) whose
  message is the anchored tree's 32-byte root hash (its imprint:
  SHA-256(root)). Checked **offline** against the TSA certificates the caller
  trusts; needs the `shotstamp[tsa]` extra (rfc3161-client).
- `evm`: a transaction on an EVM chain whose data is
  `b"shotstamp/1" || tree size (8 bytes, big-endian) || root`. The payload is
  computed offline; that the chain holds it, and the block's number and time,
  are asked **online** of a JSON-RPC endpoint the caller chooses (plain HTTP
  with aiohttp; no extra needed). Trust that endpoint as you trust the chain.

Checks, in order, each a `VerificationError.check` (see `ANCHOR_CHECKS`):
`anchor-format`; `anchor-checkpoint-signature`, `anchor-checkpoint-body`
(signed by a log key you pass); `anchor-origin`, `anchor-tree-size`;
`anchor-consistency` (the anchored tree extends the proof's); then
`tsa-token` (signed by a certificate chaining to the TSA roots you trust,
id-kp-timeStamping, granted) and `tsa-imprint` (over this root), or
`chain-id`, `chain-transaction`, `chain-data`, `chain-block`.

Usage:

    report = verify_anchors(bundle, keys=vkeys, tsa_certs=["tsa-root.pem"],
                            chain_rpcs=["https://rpc.example"])
    for result in report.results:
        print(result.name, result.status, result.statement)
    report.raise_for_failure()
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from os import PathLike
from typing import TYPE_CHECKING, Any

import aiohttp

from shotstamp._anchor_bundle import AnchorEntry, AnchorReport, AnchorResult
from shotstamp._checkpoint import NoteVerifier, SignedCheckpoint, open_checkpoint, verifiers_from
from shotstamp._consistency import check_extends
from shotstamp._evm import verify_evm
from shotstamp._exceptions import MalformedProofError, VerificationError
from shotstamp._jsonrpc import JsonRpc, RpcUnavailable
from shotstamp._rfc3161 import load_tsa_certificates, verify_rfc3161

if TYPE_CHECKING:
    from cryptography import x509

    from shotstamp._verify import ProofBundle

__all__ = ["averify_anchors", "verify_anchors"]

ANCHOR_TYPES = ("rfc3161", "evm")
# Every check an anchor can fail, in the order they run.
ANCHOR_CHECKS = (
    "anchor-format",
    "anchor-checkpoint-signature",
    "anchor-checkpoint-body",
    "anchor-origin",
    "anchor-tree-size",
    "anchor-consistency",
    "tsa-token",
    "tsa-imprint",
    "chain-id",
    "chain-transaction",
    "chain-data",
    "chain-block",
)


async def averify_anchors(
    bundle: ProofBundle | str | bytes | Mapping[str, Any],
    *,
    keys: str | NoteVerifier | Iterable[str | NoteVerifier],
    tsa_certs: Iterable[x509.Certificate | str | bytes | PathLike[str]] | None = None,
    chain_rpcs: Iterable[str] = (),
    session: aiohttp.ClientSession | None = None,
    timeout: float = 30.0,
) -> AnchorReport:
    """Check every anchor of a proof bundle; one result per anchor, in bundle order.

    **Parameters:**

    * **bundle** - the proof bundle (run `verify_proof` on it as well: this
      checks only what the anchors add, and that the bundle's own checkpoint
      is signed).
    * **keys** - the log's verifier keys, retired ones included.
    * **tsa_certs** - the TSA root (and intermediate) certificates you trust,
      as `x509.Certificate`s, PEM/DER bytes or file paths. Without them
      RFC 3161 anchors are `skipped`.
    * **chain_rpcs** - Ethereum JSON-RPC URLs you trust, any chains; each
      EVM anchor is asked of the one serving its chain. Without them EVM
      anchors are `skipped`.

    A bundle whose own checkpoint does not verify raises `VerificationError`
    as `verify_proof` would; an anchor that does not verify is a `failed`
    result (its `error.check` one of `ANCHOR_CHECKS`). Raises `ImportError`
    when RFC 3161 anchors are to be checked without `shotstamp[tsa]`.
    """
    from cryptography import x509

    from shotstamp._verify import ProofBundle

    if not isinstance(bundle, ProofBundle):
        bundle = ProofBundle.from_json(bundle)
    verifiers = verifiers_from(keys)
    proof_checkpoint = open_checkpoint(bundle.checkpoint, verifiers)
    if proof_checkpoint.size != bundle.tree_size:
        raise VerificationError(
            f"checkpoint is for tree size {proof_checkpoint.size}, bundle says {bundle.tree_size}",
            check="tree-size",
        )
    certificates: list[x509.Certificate] | None = None
    if tsa_certs is not None:
        given = list(tsa_certs)
        loaded = [c for c in given if isinstance(c, x509.Certificate)]
        certificates = loaded + load_tsa_certificates(
            [c for c in given if not isinstance(c, x509.Certificate)]
        )
        if not certificates:
            certificates = None
    urls = list(chain_rpcs)
    own_session = session is None and bool(urls)
    if own_session:
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))
    rpcs = [JsonRpc(url, session) for url in urls] if session is not None else []
    try:
        results = []
        for raw in bundle.anchors:
            results.append(
                await _verify_one(bundle, proof_checkpoint, raw, verifiers, certificates, rpcs)
            )
    finally:
        if own_session and session is not None:
            await session.close()
    return AnchorReport(tuple(results))


def verify_anchors(
    bundle: ProofBundle | str | bytes | Mapping[str, Any],
    *,
    keys: str | NoteVerifier | Iterable[str | NoteVerifier],
    tsa_certs: Iterable[x509.Certificate | str | bytes | PathLike[str]] | None = None,
    chain_rpcs: Iterable[str] = (),
    timeout: float = 30.0,
) -> AnchorReport:
    """`averify_anchors` for code without an event loop (see there)."""
    return asyncio.run(
        averify_anchors(
            bundle, keys=keys, tsa_certs=tsa_certs, chain_rpcs=chain_rpcs, timeout=timeout
        )
    )


async def _verify_one(
    bundle: ProofBundle,
    proof_checkpoint: SignedCheckpoint,
    raw: Mapping[str, Any],
    verifiers: Sequence[NoteVerifier],
    certificates: Sequence[x509.Certificate] | None,
    rpcs: Sequence[JsonRpc],
) -> AnchorResult:
    name = str(raw.get("name", "?")) if isinstance(raw, Mapping) else "?"
    kind = str(raw.get("type", "?")) if isinstance(raw, Mapping) else "?"
    checks: list[str] = []
    try:
        # Verification plan (each step raises VerificationError naming its check):
        # (1) anchor-format: the element parses.
        # (2) anchor-checkpoint-signature, -body: the anchored checkpoint is signed
        #     by a log key; anchor-origin, anchor-tree-size: of this log, the stated size.
        # (3) anchor-consistency: the anchored tree extends the proof's tree, so the
        #     registration is in what was anchored.
        # (4) the type's own checks: tsa-* offline, chain-* online.

        # (1):
        try:
            entry = AnchorEntry.from_json(raw)
        except MalformedProofError as exc:
            raise VerificationError(f"anchor {name!r}: {exc}", check="anchor-format") from exc
        checks.append("anchor-format")
        if entry.type not in ANCHOR_TYPES:
            return AnchorResult(
                name,
                kind,
                "skipped",
                entry.tree_size,
                checks=tuple(checks),
                reason=f"unknown anchor type {entry.type!r}: this version cannot check it",
            )
        if entry.type == "rfc3161" and not certificates:
            return AnchorResult(
                name,
                kind,
                "skipped",
                entry.tree_size,
                checks=tuple(checks),
                reason="give the TSA's root certificate (--tsa-cert FILE) to check it offline",
            )
        if entry.type == "evm" and not rpcs:
            return AnchorResult(
                name,
                kind,
                "skipped",
                entry.tree_size,
                checks=tuple(checks),
                reason=f"online check: give an RPC URL for chain "
                f"{entry.evidence.get('chain_id')} (--chain-rpc URL)",
            )

        # (2):
        try:
            anchored = open_checkpoint(entry.checkpoint, verifiers, which="anchor-checkpoint")
        except VerificationError as exc:
            raise VerificationError(f"anchor {name!r}: {exc}", check=exc.check) from exc
        checks += ["anchor-checkpoint-signature", "anchor-checkpoint-body"]
        if anchored.origin != proof_checkpoint.origin:
            raise VerificationError(
                f"anchor {name!r}: the anchored checkpoint is of log {anchored.origin!r}, "
                f"the proof of {proof_checkpoint.origin!r}",
                check="anchor-origin",
            )
        checks.append("anchor-origin")
        if anchored.size != entry.tree_size or entry.tree_size < bundle.tree_size:
            raise VerificationError(
                f"anchor {name!r}: anchors tree size {entry.tree_size} with a checkpoint of "
                f"size {anchored.size}; the proof's tree has {bundle.tree_size} leaves",
                check="anchor-tree-size",
            )
        checks.append("anchor-tree-size")

        # (3):
        path = bundle.consistency_path(bundle.tree_size, anchored.size)
        if path is None and anchored.size != bundle.tree_size:
            raise VerificationError(
                f"anchor {name!r}: the bundle carries no consistency proof from size "
                f"{bundle.tree_size} to {anchored.size}",
                check="anchor-consistency",
            )
        try:
            check_extends(proof_checkpoint.checkpoint, anchored.checkpoint, path or ())
        except VerificationError as exc:
            raise VerificationError(
                f"anchor {name!r}: the anchored tree does not extend the proof's: {exc}",
                check="anchor-consistency",
            ) from exc
        checks.append("anchor-consistency")

        # (4):
        if entry.type == "rfc3161":
            assert certificates
            return verify_rfc3161(entry, anchored, certificates, checks)
        try:
            return await verify_evm(entry, anchored, rpcs, checks)
        except RpcUnavailable as exc:
            return AnchorResult(
                name,
                kind,
                "unavailable",
                entry.tree_size,
                checks=tuple(checks),
                reason=str(exc),
            )
    except VerificationError as exc:
        return AnchorResult(
            name,
            kind,
            "failed",
            raw.get("tree_size") if isinstance(raw, Mapping) else None,
            checks=tuple(checks),
            error=exc,
        )
