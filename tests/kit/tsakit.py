"""A real RFC 3161 timestamp authority for the tests: `openssl ts -reply` behind HTTP.

`make_tsa_pki` makes a test CA and a TSA certificate signed by it (critical
extended key usage id-kp-timeStamping, as RFC 3161 §2.3 requires) with
`cryptography`; `tsa_server` answers `application/timestamp-query` POSTs by
running Debian's `openssl ts -reply` on each query, in a thread with its own
event loop on 127.0.0.1. Its knobs make it misbehave the way real TSAs can,
for the retry tests: answer 503 a number of times, or stall.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TSA_NAME = "shotstamp test TSA"


@dataclass(frozen=True)
class TsaPki:
    """Files of one test PKI: a CA and a TSA certificate it issued."""

    directory: Path
    ca_cert: Path  # PEM, what a verifier trusts (`--tsa-cert`)
    tsa_cert: Path
    tsa_key: Path
    config: Path  # openssl's [tsa] section


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "shotstamp tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def make_tsa_pki(directory: Path, *, ca_name: str = "shotstamp test CA") -> TsaPki:
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name(ca_name))
        .issuer_name(_name(ca_name))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    tsa_key = ec.generate_private_key(ec.SECP256R1())
    tsa = (
        x509.CertificateBuilder()
        .subject_name(_name(TSA_NAME))
        .issuer_name(ca.subject)
        .public_key(tsa_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki = TsaPki(
        directory=directory,
        ca_cert=directory / "ca.pem",
        tsa_cert=directory / "tsa.pem",
        tsa_key=directory / "tsa.key",
        config=directory / "tsa.cnf",
    )
    pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.tsa_cert.write_bytes(tsa.public_bytes(serialization.Encoding.PEM))
    pki.tsa_key.write_bytes(
        tsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (directory / "serial").write_text("01\n")
    pki.config.write_text(
        f"""
[ tsa ]
default_tsa = tsa_config

[ tsa_config ]
dir = {directory}
serial = $dir/serial
signer_cert = {pki.tsa_cert}
signer_key = {pki.tsa_key}
signer_digest = sha256
default_policy = 1.3.6.1.4.1.57264.2.1
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = yes
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""
    )
    return pki


@dataclass
class TsaServer:
    """A running test TSA at `url`; set `fail_next` or `stall` to make it misbehave."""

    url: str
    pki: TsaPki
    queries: list[bytes] = field(default_factory=list)  # every query it answered
    fail_next: int = 0  # answer this many requests 503 first
    stall: float = 0.0  # wait this long before answering
    requests: int = 0


def openssl_reply(pki: TsaPki, query: bytes) -> bytes:
    """What `openssl ts -reply` answers to a DER TimeStampReq.

    Only the TSA's own certificate rides in the token (the query asks for it):
    with `-chain` openssl writes the certificate SET unsorted, which strict
    DER readers such as rfc3161-client refuse.
    """
    with tempfile.TemporaryDirectory() as work:
        query_file, reply_file = Path(work, "q.tsq"), Path(work, "r.tsr")
        query_file.write_bytes(query)
        subprocess.run(
            [
                "openssl",
                "ts",
                "-reply",
                "-config",
                str(pki.config),
                "-queryfile",
                str(query_file),
                "-out",
                str(reply_file),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return reply_file.read_bytes()


@contextmanager
def tsa_server(pki: TsaPki) -> Iterator[TsaServer]:
    server = TsaServer(url="", pki=pki)

    async def answer(request: web.Request) -> web.Response:
        server.requests += 1
        if server.stall:
            await asyncio.sleep(server.stall)
        if server.fail_next > 0:
            server.fail_next -= 1
            return web.Response(status=503, text="try later")
        if request.content_type != "application/timestamp-query":
            return web.Response(status=415, text="want application/timestamp-query")
        query = await request.read()
        try:
            reply = await asyncio.to_thread(openssl_reply, pki, query)
        except subprocess.CalledProcessError as exc:
            return web.Response(status=400, text=exc.stderr.decode(errors="replace"))
        server.queries.append(query)
        return web.Response(body=reply, content_type="application/timestamp-reply")

    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Any] = {}

    def serve() -> None:
        asyncio.set_event_loop(loop)
        app = web.Application()
        app.router.add_post("/", answer)
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        holder["port"] = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, name="test-tsa", daemon=True)
    thread.start()
    started.wait(30)
    server.url = f"http://127.0.0.1:{holder['port']}/"
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
