"""RFC 3161 anchors: a timestamp token over the anchored root, checked offline.

Needs the `shotstamp[tsa]` extra (rfc3161-client); imported only when used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from os import PathLike
from typing import TYPE_CHECKING, Any

from shotstamp._anchor_bundle import AnchorEntry, AnchorResult
from shotstamp._checkpoint import SignedCheckpoint
from shotstamp._exceptions import MalformedProofError, VerificationError

if TYPE_CHECKING:
    from cryptography import x509

__all__: list[str] = []

_SHA256_OID = "2.16.840.1.101.3.4.2.1"
_TSA_EXTRA = "RFC 3161 anchors need the 'tsa' extra: pip install 'shotstamp[tsa]'"


@dataclass(frozen=True)
class TimestampFacts:
    """What a verified RFC 3161 token says: who dated what, when."""

    gen_time: datetime
    accuracy: timedelta | None
    tsa_name: str
    serial_number: int
    policy: str
    message_imprint: bytes


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


def verify_rfc3161(
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
