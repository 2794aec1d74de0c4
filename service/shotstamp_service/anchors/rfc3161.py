"""The RFC 3161 anchor: a timestamp token from a timestamp authority (TSA).

What is timestamped: the anchored checkpoint's 32-byte root hash. The
request's message imprint is SHA-256(root) (rfc3161-client hashes the data
it is given). The root rather than the signed note, because:

- the root alone commits to every entry, and the bundle's consistency proof
  links the registration's tree to it with Merkle hashing only, so the
  token's date holds without trusting the operator's signing key (a leaked or
  lost key cannot move an old token onto a new history);
- the same 32 bytes go on chain, so both anchors state one fact;
- anyone can check the token with stock tools: `openssl ts -verify -data
  root.bin -in token.tsr -CAfile tsa-root.pem`.

The request asks for a nonce and for the TSA's certificate inside the token
(so it verifies offline with only the TSA's root). The answer is checked
before it is stored: granted, the imprint ours, the nonce ours, and, when
`SHOTSTAMP_TSA_CA_FILE` names the TSA's roots, the signature and its chain.
The evidence is the TSA's whole DER TimeStampResp, base64, as it answered.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import aiohttp
from cryptography import x509
from rfc3161_client import HashAlgorithm, TimestampRequestBuilder

from shotstamp._exceptions import VerificationError
from shotstamp._rfc3161 import check_timestamp_response
from shotstamp_service import __version__
from shotstamp_service.anchors.base import Anchor, Anchored, AnchorError, AnchorStep
from shotstamp_service.records import CheckpointRecord

__all__ = ["Rfc3161Anchor"]

_MAX_RESPONSE = 1 << 20  # a token with a certificate chain is a few KB


class Rfc3161Anchor(Anchor):
    kind = "rfc3161"

    def __init__(
        self,
        name: str,
        *,
        url: str,
        interval: float,
        timeout: float,
        certificates: list[x509.Certificate] | None = None,
    ) -> None:
        super().__init__(name, interval=interval, timeout=timeout)
        self.url = url
        self.certificates = certificates or None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"User-Agent": f"shotstamp-anchor/{__version__}"},
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def attempt(
        self, checkpoint: CheckpointRecord, progress: Mapping[str, Any] | None
    ) -> AnchorStep:
        assert self._session is not None, "start() first"
        request = (
            TimestampRequestBuilder()
            .data(checkpoint.root_hash)
            .hash_algorithm(HashAlgorithm.SHA256)
            .nonce(nonce=True)
            .cert_request(cert_request=True)
            .build()
        )
        async with self._session.post(
            self.url,
            data=request.as_bytes(),
            headers={
                "Content-Type": "application/timestamp-query",
                "Accept": "application/timestamp-reply",
            },
        ) as answer:
            body = await answer.content.read(_MAX_RESPONSE + 1)
            if answer.status != 200:
                raise AnchorError(
                    f"TSA {self.url} answered HTTP {answer.status}: "
                    f"{body[:200].decode('utf-8', 'replace')}"
                )
        if len(body) > _MAX_RESPONSE:
            raise AnchorError(f"TSA {self.url} answered more than {_MAX_RESPONSE} bytes")
        try:
            facts = check_timestamp_response(
                body, checkpoint.root_hash, self.certificates, nonce=request.nonce
            )
        except VerificationError as exc:
            raise AnchorError(f"TSA {self.url} answered a token that does not hold: {exc}") from exc
        return Anchored(
            {
                "tsa_url": self.url,
                "response": base64.b64encode(body).decode("ascii"),
                # Informational: the verifier reads both from the token itself.
                "gen_time": facts.gen_time.isoformat().replace("+00:00", "Z"),
                "tsa_name": facts.tsa_name,
            }
        )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "url": self.url}
