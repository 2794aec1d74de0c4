"""Benchmark: webhook deliveries under a hostile seller (issue 19, item 7).

    .venv/bin/python bench/webhooks.py                  # both parts
    .venv/bin/python bench/webhooks.py --part claim --backlog 1000 10000
    .venv/bin/python bench/webhooks.py --part delay --rounds 3

`claim`: CPU time of one outbox claim (SQLite) while one seller has a backlog
of N due deliveries over its 10 webhooks and another seller has one: the
claim before issue 19 (oldest 32 first: cheap, but the other seller's
delivery waits behind the whole backlog), and today's claim of 64 with no
per-seller cap, with a cap of 4, and with the backlogged seller at its cap
(left out). It runs on the SQLite writer thread after every finished
delivery, so it must not grow with a backlog.

`delay`: a real service (in process, SQLite) where the hostile seller has 10
webhooks on a TCP listener that accepts and never answers, and an honest
seller one webhook on a normal receiver. Each round a thief copies one photo
of each, hostile first; printed is how long after its 409 the honest seller's
delivery arrives (wall time: this is a latency), and how many connections the
black hole holds (at most the per-seller cap).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.kit

from shotstamp_service.records import WebhookDelivery, WebhookRecord
from shotstamp_service.store.sqlite import SQLiteStore


def _hook(n: int, seller: str) -> WebhookRecord:
    return WebhookRecord(
        id=f"wh{n}",
        seller=seller,
        url=f"https://h{n}.example/",
        secret="whsec_x",
        events=("registration.conflict",),
        created_at="2026-01-01T00:00:00Z",
    )


async def claim_costs(backlog: int, repeats: int, idle: int = 0) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "db.sqlite")
        await store.open()
        try:
            for n in range(10):
                await store.add_webhook(_hook(n, "hostile"))
            await store.add_webhook(_hook(10, "honest"))
            for n in range(idle):  # other sellers' webhooks, with nothing due
                await store.add_webhook(_hook(100 + n, f"idle{n // 10}"))
            payload = b'{"id":"evt"}' * 20
            deliveries = [
                WebhookDelivery(f"d{k}", f"wh{k % 10}", f"e{k}", "t", payload, "t",
                                next_attempt_at=float(k))
                for k in range(backlog)
            ]  # fmt: skip
            deliveries.append(
                WebhookDelivery("dh", "wh10", "eh", "t", payload, "t", next_attempt_at=1e9)
            )
            for start in range(0, len(deliveries), 10_000):
                await store.enqueue_deliveries(deliveries[start : start + 10_000])
            now = 2e9
            ways: dict[str, dict[str, Any]] = {
                "no cap": {},
                "cap 4": {"per_seller": 4},
                "cap 4, hostile busy": {"per_seller": 4, "exclude_sellers": ["hostile"]},
            }
            costs = {"before": await _old_claim_cost(store, now, repeats)}
            for name, options in ways.items():
                samples = []
                for _ in range(repeats):
                    started = time.process_time()
                    # lease_until=0 leaves every row due, so each claim sees the same backlog.
                    got = await store.claim_deliveries(now, 0.0, 64, **options)
                    samples.append(time.process_time() - started)
                    assert got
                costs[name] = statistics.median(samples) * 1000
            return costs
        finally:
            await store.close()


async def _old_claim_cost(store: SQLiteStore, now: float, repeats: int) -> float:
    """The claim's query before issue 19 (without its lease update)."""

    def run(conn: Any) -> int:
        return len(
            conn.execute(
                "SELECT d.*, w.url, w.secret FROM webhook_deliveries d"
                " JOIN webhooks w ON w.id = d.webhook_id"
                " WHERE d.status = 'pending' AND d.next_attempt_at <= ?"
                " ORDER BY d.next_attempt_at, d.seq LIMIT 32",
                (now,),
            ).fetchall()
        )

    samples = []
    for _ in range(repeats):
        started = time.process_time()
        assert await store._write(run) == 32
        samples.append(time.process_time() - started)
    return statistics.median(samples) * 1000


async def delivery_delays(rounds: int) -> list[dict[str, float]]:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from shotstamp_service.http.app import create_app
    from tests.kit import imagegen
    from tests.kit.servicekit import Service, service_settings

    accepted = 0
    writers: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        writers.append(writer)
        while await reader.read(65536):
            pass

    hits: list[float] = []

    async def receive(request: web.Request) -> web.Response:
        await request.read()
        hits.append(time.monotonic())
        return web.Response(text="ok")

    hole = await asyncio.start_server(swallow, "127.0.0.1", 0)
    hole_port = hole.sockets[0].getsockname()[1]
    receiver_app = web.Application()
    receiver_app.router.add_post("/hook", receive)
    receiver = TestServer(receiver_app)
    await receiver.start_server()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        config = service_settings(Path(tmp), webhook_allow_private=True)
        client = TestClient(TestServer(create_app(config)))
        await client.start_server()
        service = Service(client=client, app=client.app)
        try:
            hostile, honest, thief = [await service.key(s) for s in ("hostile", "honest", "thief")]
            for n in range(10):
                resp = await client.post(
                    "/v1/webhooks",
                    json={"url": f"http://127.0.0.1:{hole_port}/{n}"},
                    headers=service.auth(hostile),
                )
                assert resp.status == 201
            resp = await client.post(
                "/v1/webhooks",
                json={"url": str(receiver.make_url("/hook"))},
                headers=service.auth(honest),
            )
            assert resp.status == 201
            for r in range(rounds):
                mine, theirs = imagegen.jpeg(9100 + r), imagegen.jpeg(9200 + r)
                assert (await service.upload(hostile, mine)).status == 201
                assert (await service.upload(honest, theirs)).status == 201
                assert (await service.upload(thief, mine)).status == 409
                await asyncio.sleep(0.3)  # the hostile deliveries are hanging by now
                before = len(hits)
                assert (await service.upload(thief, theirs)).status == 409
                refused_at = time.monotonic()
                while len(hits) == before:
                    if time.monotonic() - refused_at > 60:
                        raise RuntimeError("the honest delivery did not arrive in 60 s")
                    await asyncio.sleep(0.005)
                results.append(
                    {"delay_s": hits[before] - refused_at, "black_hole_connections": accepted}
                )
        finally:
            for writer in writers:
                writer.close()
            await client.close()
            await receiver.close()
            hole.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["claim", "delay", "both"], default="both")
    parser.add_argument("--backlog", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--idle-webhooks", type=int, default=0, help="other sellers' webhooks")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.part in ("claim", "both"):
        print(
            f"claim CPU ms (median of {args.repeats}), one seller's backlog of N due + 1 other,"
            f" {args.idle_webhooks} idle webhooks"
        )
        print(f"{'N':>8}  {'before':>7}  {'no cap':>7}  {'cap 4':>7}  {'cap 4, busy':>11}")
        for n in args.backlog:
            costs = asyncio.run(claim_costs(n, args.repeats, args.idle_webhooks))
            before, plain, capped, busy = costs.values()
            print(f"{n:>8,}  {before:>7.2f}  {plain:>7.2f}  {capped:>7.2f}  {busy:>11.2f}")
    if args.part in ("delay", "both"):
        print("honest seller's delivery after its 409, hostile seller: 10 black-hole webhooks")
        for n, row in enumerate(asyncio.run(delivery_delays(args.rounds)), 1):
            print(
                f"  round {n}: {row['delay_s'] * 1000:7.1f} ms"
                f"   black-hole connections so far: {row['black_hole_connections']}"
            )


if __name__ == "__main__":
    main()
