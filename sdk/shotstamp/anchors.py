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
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from os import PathLike
from typing import TYPE_CHECKING, Any, Literal

import aiohttp

from shotstamp.checkpoint import NoteVerifier, SignedCheckpoint, open_checkpoint, verifiers_from
from shotstamp.consistency import check_extends
from shotstamp.errors import MalformedProofError, VerificationError

if TYPE_CHECKING:
    from cryptography import x509

    from shotstamp.verify import ProofBundle

__all__ = [
    "ANCHOR_CHECKS",
    "ANCHOR_TYPES",
    "EVM_PAYLOAD_PREFIX",
    "AnchorEntry",
    "AnchorReport",
    "AnchorResult",
    "TimestampFacts",
    "averify_anchors",
    "check_timestamp_response",
    "evm_payload",
    "load_tsa_certificates",
    "verify_anchors",
]

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
# What the EVM anchor writes as a transaction's data, before tree size and root.
EVM_PAYLOAD_PREFIX = b"shotstamp/1"
_SHA256_OID = "2.16.840.1.101.3.4.2.1"
_HEX_TX = re.compile(r"0x[0-9a-f]{64}")
_TSA_EXTRA = "RFC 3161 anchors need the 'tsa' extra: pip install 'shotstamp[tsa]'"

Status = Literal["verified", "failed", "skipped", "unavailable"]


def evm_payload(tree_size: int, root_hash: bytes) -> bytes:
    """The transaction data that anchors the tree of `tree_size` leaves with `root_hash`."""
    if len(root_hash) != 32 or not 0 < tree_size < 2**64:
        raise ValueError("want a 32-byte root and a tree size in 1..2^64-1")
    return EVM_PAYLOAD_PREFIX + tree_size.to_bytes(8, "big") + root_hash


def _malformed(reason: str) -> MalformedProofError:
    return MalformedProofError(f"malformed anchor: {reason}", field="anchors")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True)
class AnchorEntry:
    """One element of a bundle's `anchors` list (wire format in docs/DESIGN.md).

    `evidence` holds the type's own fields, as received.
    """

    name: str
    type: str
    tree_size: int
    checkpoint: str
    evidence: Mapping[str, Any]
    anchored_at: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> AnchorEntry:
        """Parse a decoded element; `MalformedProofError` naming what is wrong."""
        if not isinstance(data, Mapping):
            raise _malformed("not a JSON object")
        for name in ("name", "type", "tree_size", "checkpoint", "evidence"):
            if name not in data:
                raise _malformed(f"field {name!r} is missing")
        if not isinstance(data["name"], str) or not data["name"]:
            raise _malformed("'name' must be a non-empty string")
        if not isinstance(data["type"], str) or not data["type"]:
            raise _malformed("'type' must be a non-empty string")
        if not _is_count(data["tree_size"]) or data["tree_size"] == 0:
            raise _malformed("'tree_size' must be a positive integer")
        if not isinstance(data["checkpoint"], str) or not data["checkpoint"]:
            raise _malformed("'checkpoint' must be the signed note's text")
        if not isinstance(data["evidence"], Mapping):
            raise _malformed("'evidence' must be an object")
        anchored_at = data.get("anchored_at")
        if anchored_at is not None and not isinstance(anchored_at, str):
            raise _malformed("'anchored_at' must be a string")
        return cls(
            name=data["name"],
            type=data["type"],
            tree_size=data["tree_size"],
            checkpoint=data["checkpoint"],
            evidence=dict(data["evidence"]),
            anchored_at=anchored_at,
        )

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "tree_size": self.tree_size,
            "checkpoint": self.checkpoint,
        }
        if self.anchored_at is not None:
            result["anchored_at"] = self.anchored_at
        result["evidence"] = dict(self.evidence)
        return result


@dataclass(frozen=True)
class AnchorResult:
    """What one anchor proves, or why it could not be checked.

    `status`: `verified` (then `statement`, `time` and `authority` say what
    it proves), `failed` (`error` names the check), `skipped` (nothing to
    check it with: `reason`), or `unavailable` (the chain's RPC could not be
    asked: `reason`).
    """

    name: str
    type: str
    status: Status
    tree_size: int | None = None
    statement: str | None = None
    time: datetime | None = None
    authority: str | None = None
    checks: tuple[str, ...] = ()
    error: VerificationError | None = None
    reason: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AnchorReport:
    """The results of every anchor in a bundle, in bundle order."""

    results: tuple[AnchorResult, ...]

    def by_status(self, status: Status) -> tuple[AnchorResult, ...]:
        return tuple(r for r in self.results if r.status == status)

    @property
    def verified(self) -> tuple[AnchorResult, ...]:
        return self.by_status("verified")

    @property
    def failed(self) -> tuple[AnchorResult, ...]:
        return self.by_status("failed")

    def raise_for_failure(self) -> AnchorReport:
        """Raise the first failed anchor's `VerificationError`; else return self."""
        for result in self.results:
            if result.error is not None:
                raise result.error
        return self


@dataclass(frozen=True)
class TimestampFacts:
    """What a verified RFC 3161 token says: who dated what, when."""

    gen_time: datetime
    accuracy: timedelta | None
    tsa_name: str
    serial_number: int
    policy: str
    message_imprint: bytes


# -- RFC 3161 ------------------------------------------------------------------------
def load_tsa_certificates(
    sources: Iterable[str | bytes | PathLike[str]],
) -> list[x509.Certificate]:
    """Certificates from PEM (or DER) files or bytes: the TSA roots and intermediates
    the caller trusts. Raises `MalformedProofError` if one holds none."""
    from cryptography import x509

    certificates: list[x509.Certificate] = []
    for source in sources:
        if isinstance(source, bytes):
            data, label = source, "certificate bytes"
        else:
            label = str(source)
            try:
                with open(source, "rb") as handle:
                    data = handle.read()
            except OSError as exc:
                raise MalformedProofError(
                    f"cannot read TSA certificate file {label}: {exc.strerror}"
                ) from exc
        try:
            if b"-----BEGIN" in data:
                loaded = x509.load_pem_x509_certificates(data)
            else:
                loaded = [x509.load_der_x509_certificate(data)]
        except ValueError as exc:
            raise MalformedProofError(f"{label} holds no readable certificate: {exc}") from exc
        certificates.extend(loaded)
    return certificates


def _tsa_name(response: Any) -> str:
    """The signing certificate's common name (else its whole subject)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    signer = next(iter(response.signed_data.signer_infos))
    for der in response.signed_data.certificates:
        certificate = x509.load_der_x509_certificate(der)
        if (certificate.issuer, certificate.serial_number) == (
            signer.issuer,
            signer.serial_number,
        ):
            names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            return str(names[0].value) if names else certificate.subject.rfc4514_string()
    return "an unnamed TSA"


def check_timestamp_response(
    response: bytes,
    message: bytes,
    certificates: Sequence[x509.Certificate] | None,
    *,
    nonce: int | None = None,
) -> TimestampFacts:
    """Check an RFC 3161 TimeStampResp (DER) over `message` and return what it says.

    With `certificates` (the TSA roots, and intermediates, the caller
    trusts), the token's signature must verify under a certificate that
    chains to them, valid at the token's time, with the critical
    id-kp-timeStamping usage (check `tsa-token`); without, only its shape,
    status and imprint are checked (the service does that when it has no
    TSA roots configured). The imprint must be SHA-256(`message`) (check
    `tsa-imprint`), and the nonce, if given, the request's (`tsa-token`).
    Needs rfc3161-client (`shotstamp[tsa]`); raises `ImportError` without it.
    """
    try:
        import rfc3161_client
    except ImportError as exc:
        raise ImportError(_TSA_EXTRA) from exc

    # (1) tsa-token: the response parses and grants a token.
    try:
        decoded = rfc3161_client.decode_timestamp_response(response)
    except ValueError as exc:
        raise VerificationError(
            f"the timestamp response does not parse: {exc}", check="tsa-token"
        ) from exc
    if decoded.status not in (
        rfc3161_client.PKIStatus.GRANTED,
        rfc3161_client.PKIStatus.GRANTED_WITH_MODS,
    ):
        raise VerificationError(
            f"the TSA did not grant a token (status {decoded.status})", check="tsa-token"
        )
    info = decoded.tst_info
    imprint = info.message_imprint

    # (2) tsa-token: signed by a TSA the caller trusts, at the token's time.
    if certificates:
        roots = [c for c in certificates if c.issuer == c.subject]
        if not roots:
            raise ValueError("the TSA certificates include no root (self-signed) certificate")
        builder = rfc3161_client.VerifierBuilder()
        for certificate in roots:
            builder = builder.add_root_certificate(certificate)
        for certificate in certificates:
            if certificate.issuer != certificate.subject:
                builder = builder.add_intermediate_certificate(certificate)
        try:
            # The imprint is checked below, under its own name: pass the token's own.
            builder.build().verify(decoded, imprint.message)
        except (rfc3161_client.VerificationError, ValueError) as exc:
            raise VerificationError(
                f"the timestamp token's signature does not verify under the TSA "
                f"certificates given: {exc}",
                check="tsa-token",
            ) from exc
    if nonce is not None and info.nonce != nonce:
        raise VerificationError(
            f"the token's nonce is {info.nonce}, the request's {nonce}", check="tsa-token"
        )

    # (3) tsa-imprint: over this message.
    if imprint.hash_algorithm.dotted_string != _SHA256_OID:
        raise VerificationError(
            f"the token's imprint uses {imprint.hash_algorithm.dotted_string}, want SHA-256",
            check="tsa-imprint",
        )
    want = hashlib.sha256(message).digest()
    if imprint.message != want:
        raise VerificationError(
            f"the token dates imprint {imprint.message.hex()}, want SHA-256 of the anchored "
            f"root {want.hex()}: it is a token for something else",
            check="tsa-imprint",
        )

    accuracy = None
    if info.accuracy is not None:
        accuracy = timedelta(
            seconds=info.accuracy.seconds or 0,
            milliseconds=info.accuracy.millis or 0,
            microseconds=info.accuracy.micros or 0,
        )
    return TimestampFacts(
        gen_time=info.gen_time.astimezone(UTC),
        accuracy=accuracy,
        tsa_name=_tsa_name(decoded),
        serial_number=info.serial_number,
        policy=info.policy.dotted_string,
        message_imprint=imprint.message,
    )


def _verify_rfc3161(
    entry: AnchorEntry,
    anchored: SignedCheckpoint,
    certificates: Sequence[x509.Certificate],
    checks: list[str],
) -> AnchorResult:
    import base64
    import binascii

    raw = entry.evidence.get("response")
    try:
        if not isinstance(raw, str):
            raise ValueError("missing")
        response = base64.b64decode(raw, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise VerificationError(
            f"anchor {entry.name!r}: evidence 'response' is not base64 of a timestamp "
            f"response: {exc}",
            check="tsa-token",
        ) from exc
    try:
        facts = check_timestamp_response(response, anchored.root_hash, certificates)
    except VerificationError as exc:
        raise VerificationError(f"anchor {entry.name!r}: {exc}", check=exc.check) from exc
    checks += ["tsa-token", "tsa-imprint"]
    when = facts.gen_time.isoformat()
    statement = f"registered no later than {when} per {facts.tsa_name}"
    if facts.accuracy:
        statement += f" (accuracy ±{facts.accuracy.total_seconds():g} s)"
    return AnchorResult(
        name=entry.name,
        type=entry.type,
        status="verified",
        tree_size=entry.tree_size,
        statement=statement,
        time=facts.gen_time,
        authority=facts.tsa_name,
        checks=tuple(checks),
        details={
            "serial_number": facts.serial_number,
            "policy": facts.policy,
            "accuracy_seconds": facts.accuracy.total_seconds() if facts.accuracy else None,
            "tsa_url": entry.evidence.get("tsa_url"),
        },
    )


# -- EVM ----------------------------------------------------------------------------
class _RpcUnavailable(Exception):
    """The JSON-RPC endpoint could not be asked (network, HTTP error, RPC error)."""


class _JsonRpc:
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
                    raise _RpcUnavailable(f"{self.url} answered HTTP {answer.status} to {method}")
                decoded = await answer.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise _RpcUnavailable(f"cannot ask {self.url} ({method}): {exc}") from exc
        if not isinstance(decoded, Mapping):
            raise _RpcUnavailable(f"{self.url} answered {method} with something not JSON-RPC")
        if decoded.get("error") is not None:
            raise _RpcUnavailable(f"{self.url} refused {method}: {decoded['error']}")
        return decoded.get("result")

    async def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = _quantity(await self.call("eth_chainId"), "eth_chainId")
        return self._chain_id


def _quantity(value: Any, what: str) -> int:
    if not isinstance(value, str) or not re.fullmatch(r"0x[0-9a-fA-F]+", value):
        raise _RpcUnavailable(f"the RPC answered {what} with {value!r}, not a quantity")
    return int(value, 16)


def _chain_failure(entry: AnchorEntry, check: str, reason: str) -> VerificationError:
    return VerificationError(f"anchor {entry.name!r}: {reason}", check=check)


async def _verify_evm(
    entry: AnchorEntry,
    anchored: SignedCheckpoint,
    rpcs: Sequence[_JsonRpc],
    checks: list[str],
) -> AnchorResult:
    evidence = entry.evidence
    chain_id, tx_hash = evidence.get("chain_id"), evidence.get("transaction")
    block_number = evidence.get("block_number")
    if not _is_count(chain_id) or not _is_count(block_number):
        raise _chain_failure(
            entry, "anchor-format", "evidence needs integer chain_id and block_number"
        )
    if not isinstance(tx_hash, str) or not _HEX_TX.fullmatch(tx_hash):
        raise _chain_failure(
            entry, "anchor-format", "evidence 'transaction' must be a 0x-prefixed 32-byte hash"
        )

    # (1) chain-id: an endpoint for the chain the evidence names.
    served: dict[int, _JsonRpc] = {}
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
    mined_in = _quantity(tx.get("blockNumber"), "the transaction's blockNumber")
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
    block_time = datetime.fromtimestamp(_quantity(block.get("timestamp"), "the block time"), UTC)
    latest = _quantity(await rpc.call("eth_blockNumber"), "eth_blockNumber")
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


# -- the whole section -----------------------------------------------------------------
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

    from shotstamp.verify import ProofBundle

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
    rpcs = [_JsonRpc(url, session) for url in urls] if session is not None else []
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
    rpcs: Sequence[_JsonRpc],
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
            return _verify_rfc3161(entry, anchored, certificates, checks)
        try:
            return await _verify_evm(entry, anchored, rpcs, checks)
        except _RpcUnavailable as exc:
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
