"""The serving processes' CPU per request of two services side by side: A and B.

`bench/load.py` runs one service at a time, and on the shared host its serving column
moves by ±1 ms between runs, more than many changes are worth. Here two services run at
once, differing only in the environment given to each (`--a`, `--b`), and short bursts
of the same kind of request go to each in turn, round after round, so a noisy minute
hits both alike; the serving processes' CPU (not their fingerprint workers') is read
around each burst from every thread's schedstat.

Kinds of request, each from the lean client (bench/rawhttp.py) with `--clients`
concurrent connections:

- `upload`: a registration of a distinct 1000×1000 product shot (the whole path:
  HTTP, multipart, the fingerprint job's exchange, matching, the commit);
- `refused`: an upload of a text file, answered 415 after the body is read (HTTP,
  authentication, multipart and the error answer, nothing else);
- `checkpoint`: GET /v1/checkpoints/latest (HTTP and a small JSON answer).

    # a setting, one process and its worker on core 0
    PYTHONPATH=sdk:service:. python -m bench.serving_ab --cpus \
        --a SHOTSTAMP_THUMBNAILS=on --b SHOTSTAMP_THUMBNAILS=off
    # a setting, two processes under gunicorn (e9bedb7's event loop, bench/RESULTS.md)
    PYTHONPATH=sdk:service:. python -m bench.serving_ab --processes 2 \
        --a SHOTSTAMP_EVENT_LOOP=asyncio --b SHOTSTAMP_EVENT_LOOP=uvloop

With `--cpus` (one process only) both services and their fingerprint workers run on
core 0 and this client on core 1, as `bench/load.py --cpus` does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from load import LocalService, _proc_stats
from productshots import product_shots
from rawhttp import RawClient

SIDES = ("A", "B")
KINDS = ("upload", "refused", "checkpoint")


def serving_cpu(service: LocalService) -> float:
    """CPU seconds so far of the service's serving processes (not its fingerprint workers),
    in nanoseconds from each thread's schedstat: /proc's stat counts 10 ms ticks."""
    serving, _ = service._family(_proc_stats())
    total = 0
    for pid in serving:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, IndexError, ValueError):
                continue
    return total / 1e9


async def burst(
    client: RawClient, url: str, key: str, kind: str, shots: list[bytes], n: int, clients: int
) -> tuple[int, int]:
    """`n` requests of `kind`, `clients` at a time; (answered as expected, other answers)."""
    expected = {"upload": 201, "refused": 415, "checkpoint": 200}[kind]
    todo = iter(range(n))
    good = bad = 0

    async def one_client() -> None:
        nonlocal good, bad
        for _ in todo:
            if kind == "upload":
                status, _ = await client.post_image(
                    url, "/v1/registrations", key, shots.pop(), "image/jpeg"
                )
            elif kind == "refused":
                status, _ = await client.post_image(
                    url, "/v1/registrations", key, b"not an image " * 300, "text/plain"
                )
            else:
                status, _ = await client.get(url, "/v1/checkpoints/latest")
            if status == expected:
                good += 1
            else:
                bad += 1

    await asyncio.gather(*(one_client() for _ in range(clients)))
    return good, bad


async def run(args: argparse.Namespace) -> None:
    kinds = args.kinds.split(",")
    uploads = args.rounds * args.burst * ("upload" in kinds) + args.burst
    print(f"preparing {uploads * len(SIDES)} product shots…", file=sys.stderr)
    shots = [p.read_bytes() for p in product_shots(uploads * len(SIDES))]
    per_side = {side: shots[i * uploads:(i + 1) * uploads] for i, side in enumerate(SIDES)}
    env = {
        "SHOTSTAMP_SEAL_INTERVAL": "1.0",
        "SHOTSTAMP_FINGERPRINT_WORKERS": str(args.workers),
        "SHOTSTAMP_PROCESSES": str(args.processes),
        "SHOTSTAMP_UPLOAD_RATE": "0",
        "SHOTSTAMP_MAX_UPLOADS_PER_KEY": "0",
        "SHOTSTAMP_READ_RATE": "0",
        "SHOTSTAMP_LOG_FORMAT": "text",
    }
    cpus = {0} if args.cpus else None
    sides = {"A": dict(v.split("=", 1) for v in args.a),
             "B": dict(v.split("=", 1) for v in args.b)}
    services = {side: LocalService({**env, **sides[side]}, cpus) for side in SIDES}
    client = RawClient()
    try:
        keys, urls = {}, {}
        for side, service in services.items():
            keys[side] = service.admin("keys", "create", "--seller", "bench")
            urls[side] = service.start()
            if args.processes > 1:
                service.wait_for_workers(args.processes)
        if args.cpus:
            os.sched_setaffinity(0, {(os.cpu_count() or 1) - 1})
        # Warm-up: connections, first-call caches, the pools' first jobs.
        for side in SIDES:
            for kind in kinds:
                await burst(client, urls[side], keys[side], kind, per_side[side],
                            args.burst // 5 or 1, args.clients)
        ms: dict[tuple[str, str], list[float]] = {}
        other = 0
        for n in range(args.rounds):
            order = SIDES if n % 2 == 0 else SIDES[::-1]
            for kind in kinds:
                for side in order:
                    before = serving_cpu(services[side])
                    # The cheap kinds in longer bursts, for about as much CPU as the uploads.
                    size = args.burst * (1 if kind == "upload" else 4)
                    good, bad = await burst(client, urls[side], keys[side], kind,
                                            per_side[side], size, args.clients)
                    # The serving processes' own threads settle (the writer's commit).
                    await asyncio.sleep(0.3)
                    used = serving_cpu(services[side]) - before
                    ms.setdefault((kind, side), []).append(used * 1000 / max(1, good + bad))
                    other += bad
        print(f"serving processes' CPU ms per request ({args.processes} process(es), "
              f"{args.clients} clients, {args.rounds} rounds of {args.burst}, medians; "
              f"each round's figures in brackets)")
        print(f"A: {' '.join(args.a) or 'as set'}\nB: {' '.join(args.b) or 'as set'}")
        print(f"{'request':>10} {'A':>8} {'B':>8} {'A - B':>7} {'B / A':>6}")
        for kind in kinds:
            a = statistics.median(ms[(kind, "A")])
            b = statistics.median(ms[(kind, "B")])
            print(f"{kind:>10} {a:8.3f} {b:8.3f} {a - b:7.3f} {b / a:6.2f}"
                  f"   A [{', '.join(f'{v:.2f}' for v in ms[(kind, 'A')])}]"
                  f" B [{', '.join(f'{v:.2f}' for v in ms[(kind, 'B')])}]")
        print(f"unexpected answers: {other}")
    finally:
        await client.close()
        for service in services.values():
            service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--burst", type=int, default=150, help="requests per burst")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--processes", type=int, default=1, help="SHOTSTAMP_PROCESSES")
    parser.add_argument("--workers", type=int, default=1, help="fingerprint workers each")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--a", action="append", default=[], metavar="NAME=VALUE",
                        help="environment of service A (repeatable)")
    parser.add_argument("--b", action="append", default=[], metavar="NAME=VALUE",
                        help="environment of service B (repeatable)")
    parser.add_argument("--cpus", action="store_true",
                        help="services and workers on core 0, this client on the last core")
    args = parser.parse_args()
    if args.cpus and args.processes > 1:
        parser.error("--cpus pins one serving process per service")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
