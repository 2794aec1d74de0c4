"""Benchmark: do anchors slow the one-second seal?

    .venv/bin/python bench/anchors.py                 # 30 s per configuration
    .venv/bin/python bench/anchors.py --seconds 10

Runs the real `Sealer` on its one-second beat over a SQLite store while a
producer adds `--rate` registrations a second, for `--seconds`, three times:

* `none`: no anchors;
* `anchors`: an RFC 3161 anchor (a real TSA: openssl behind HTTP, as in the
  tests) and an EVM anchor (a real py-evm chain behind JSON-RPC) both
  anchoring every second (`interval` 1 s, far more often than a deployment
  would), through the real `AnchorRunner` on the same event loop;
* `stalled`: the same anchors, but the TSA holds every request 5 s and the
  chain's RPC is a local port that never answers (each attempt times out
  after 3 s).

For each it prints the seal's duration (median, p99, max), how late each
beat started relative to the one-second grid (max), and the anchors'
outcome. The chain runs in a thread of this process (its JSON-RPC endpoint
shares the GIL with the sealer), so the `anchors` row is pessimistic: a
deployment's chain node is elsewhere.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.kit

from shotstamp._rfc3161 import load_tsa_certificates
from shotstamp_service.anchors import AnchorRunner
from shotstamp_service.anchors.evm import EvmAnchor, load_or_create_evm_key
from shotstamp_service.anchors.rfc3161 import Rfc3161Anchor
from shotstamp_service.log.sealer import Sealer
from shotstamp_service.log.signer import LogSigner
from shotstamp_service.records import (
    NewRegistration,
    format_time,
    new_registration_id,
    utc_now,
)
from shotstamp_service.store.sqlite import SQLiteStore
from tests.kit.chainkit import chain_server, write_key
from tests.kit.tsakit import make_tsa_pki, tsa_server


def _registration(n: int) -> NewRegistration:
    return NewRegistration(
        id=new_registration_id(),
        seller="bench",
        sha256=f"{n:064x}",
        perceptual={"phash": f"{n:016x}"},
        received_at=format_time(utc_now()),
        width=10,
        height=10,
    )


class TimedSealer(Sealer):
    """The real sealer, noting when each seal started and how long it took."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.starts: list[float] = []
        self.durations: list[float] = []

    async def seal_once(self) -> Any:
        started = time.perf_counter()
        self.starts.append(started)
        try:
            return await super().seal_once()
        finally:
            self.durations.append(time.perf_counter() - started)


async def _configuration(
    name: str, anchors: list[Any], seconds: float, rate: int, directory: Path
) -> dict[str, Any]:
    store = SQLiteStore(directory / f"{name}.sqlite")
    await store.open()
    sealer = TimedSealer(store, LogSigner("bench.example/log", Ed25519PrivateKey.generate()))
    await sealer.load()
    runner = AnchorRunner(store, anchors, retry_base=1.0, retry_max=2.0)
    await runner.start()
    stop = asyncio.Event()

    async def produce() -> None:
        n = 0
        while not stop.is_set():
            for _ in range(rate // 10):
                n += 1
                await store.add_registration(_registration(n))
            await asyncio.sleep(0.1)

    producer = asyncio.create_task(produce())
    sealing = asyncio.create_task(sealer.run())
    await asyncio.sleep(seconds)
    stop.set()
    sealing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sealing
    await producer
    await runner.stop()
    jobs = await store.list_anchor_jobs(limit=10_000)
    await store.close()

    durations = sorted(sealer.durations[1:])  # the first seal publishes the log's start
    first = sealer.starts[0]
    lateness = [
        (start - first) - round(start - first) for start in sealer.starts[1:]
    ]
    return {
        "name": name,
        "seals": len(sealer.durations),
        "median_ms": statistics.median(durations) * 1000,
        "p99_ms": durations[int(0.99 * (len(durations) - 1))] * 1000,
        "max_ms": durations[-1] * 1000,
        "late_ms": max(abs(x) for x in lateness) * 1000,
        "anchored": sum(j.status == "anchored" for j in jobs),
        "pending": sum(j.status == "pending" for j in jobs),
        "failed_attempts": runner.failed_attempts,
    }


async def _main(args: argparse.Namespace) -> None:
    from eth_account import Account

    directory = Path(tempfile.mkdtemp(prefix="bench-anchors-"))
    pki = make_tsa_pki(directory / "pki")
    results = [await _configuration("none", [], args.seconds, args.rate, directory)]
    with tsa_server(pki) as tsa, chain_server() as chain:
        account = Account.create()
        chain.fund(account.address)
        write_key(directory / "evm.key", bytes(account.key))

        def anchors(tsa_url: str, rpc_url: str, timeout: float) -> list[Any]:
            return [
                Rfc3161Anchor(
                    "tsa",
                    url=tsa_url,
                    interval=1.0,
                    timeout=timeout,
                    certificates=load_tsa_certificates([pki.ca_cert]),
                ),
                EvmAnchor(
                    "chain",
                    rpc_url=rpc_url,
                    account=load_or_create_evm_key(directory / "evm.key"),
                    interval=1.0,
                    timeout=timeout,
                    confirmations=0,
                    poll=0.5,
                ),
            ]

        results.append(
            await _configuration(
                "anchors", anchors(tsa.url, chain.url, 10), args.seconds, args.rate, directory
            )
        )
        tsa.stall = 5.0
        # A local port that takes connections into its backlog and never answers.
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(64)
            port = silent.getsockname()[1]
            results.append(
                await _configuration(
                    "stalled",
                    anchors(tsa.url, f"http://127.0.0.1:{port}/", 3),
                    args.seconds,
                    args.rate,
                    directory,
                )
            )
    print(
        f"{'anchors':<8} {'seals':>5} {'median':>8} {'p99':>8} {'max':>8} {'late':>8} "
        f"{'anchored':>8} {'pending':>7} {'failed':>6}"
    )
    for r in results:
        print(
            f"{r['name']:<8} {r['seals']:>5} {r['median_ms']:>6.1f}ms {r['p99_ms']:>6.1f}ms "
            f"{r['max_ms']:>6.1f}ms {r['late_ms']:>6.1f}ms {r['anchored']:>8} "
            f"{r['pending']:>7} {r['failed_attempts']:>6}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=int, default=200, help="registrations per second")
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
