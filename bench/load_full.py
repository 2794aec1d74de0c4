"""Uploads against a service holding ≥ 1 M registrations beside an empty one, in the same run.

    PYTHONPATH=sdk:service:. python -m bench.load_full DIR/data [--clients 4,8] [--duration 15]
        [--repeat 2] [--workers 2]

DIR/data is a data directory `bench/fullscale.py build` made. Each round starts a fresh empty
service (a temporary data directory) and the loaded one (its launch → healthy time is
printed: the persisted index of docs/index.md), each with the production settings of
`bench/load.py`, and drives both with the same closed-loop clients in turn (interleaved,
so a noisy minute on the shared machine hits both alike), then offers each half of its own
peak open-loop. It prints uploads/s, latency and CPU ms per upload by component (service
process, fingerprint workers, this load generator) read from /proc, and the loaded figure
as a share of the empty one (issue 21 goal 5: ≥ 80 %, p99 < 100 ms at half of peak).

Uploads are new product shots (bench/productshots.py's generator; `--uploads photo`:
tests/kit/imagegen.py's detailed photos, which no distractor is made from) from seeds no
earlier run used, so every run on the loaded directory uploads images it has not seen; an answer is
counted whether 201 (registered) or 409 (refused as a near-copy of a registration): both
ran the whole pipeline. The loaded directory keeps what a run registers (a few thousand
rows among a million).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench.load import (  # noqa: E402
    CLIENTS,
    LocalService,
    RunResult,
    cpu_per_upload,
    drive,
    make_client,
    pct,
)
from bench.productshots import product_shot  # noqa: E402

ENV = {  # bench/load.py's production settings over the test processes' quick ones
    "SHOTSTAMP_SEAL_INTERVAL": "1.0",
    "SHOTSTAMP_WAIT_TIMEOUT": "30",
    "SHOTSTAMP_PROCESSES": "1",
    "SHOTSTAMP_UPLOAD_RATE": "0",
    "SHOTSTAMP_MAX_UPLOADS_PER_KEY": "0",
    "SHOTSTAMP_READ_RATE": "0",
    "SHOTSTAMP_LOG_FORMAT": "text",
}


def shots(count: int, base: int, generator: str = "product") -> list[bytes]:
    """New 1000 px JPEGs: product shots (bench/productshots.py, the generator ≈ 62 % of the
    distractors come from), or detailed photos (tests/kit/imagegen.py, none of them)."""
    from tests.kit import imagegen

    out = []
    for k in range(count):
        buf = io.BytesIO()
        image = (product_shot(base + k) if generator == "product"
                 else imagegen.detailed_photo(base + k, (1000, 750)))
        image.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def answered(result: RunResult) -> int:
    return result.outcomes["201"] + result.outcomes["409"]


async def level(service: LocalService, files: list[bytes], clients: int, duration: float,
                pace: float | None = None) -> RunResult:
    keys = [service.admin("keys", "create", "--seller", f"fullscale-load-{n}")
            for n in range(2)]
    url = service.process.url if service.process else ""
    client = make_client(CLIENTS[0])  # bench/load.py's default, the lean client (branch uv)
    try:
        before = service.cpu_seconds()
        client_before = time.process_time()
        result = await drive(client, [url], keys, files, clients, duration, 0.0, [0], pace)
        result.cpu_client = time.process_time() - client_before
        after = service.cpu_seconds()
        result.cpu_main, result.cpu_workers = after[0] - before[0], after[1] - before[1]
    finally:
        await client.close()
    result.good_latencies = [v for v in result.latencies]
    return result


def line(label: str, r: RunResult) -> str:
    main, workers, client = cpu_per_upload(r)
    lat = r.latencies
    return (f"| {label} | {r.clients or '-'} | {answered(r) / r.duration:.1f} | "
            f"{pct(lat, 50) * 1000:.0f} | {pct(lat, 95) * 1000:.0f} | {pct(lat, 99) * 1000:.0f} | "
            f"{main:.1f} | {workers:.1f} | {client:.1f} | {main + workers + client:.1f} | "
            f"{', '.join(f'{k}={v}' for k, v in sorted(r.outcomes.items()))} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path, help="the loaded data directory (fullscale build)")
    parser.add_argument("--clients", default="4,8")
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="SHOTSTAMP_FINGERPRINT_WORKERS")
    parser.add_argument("--max-rate", type=float, default=25.0,
                        help="upper bound on uploads/s, to size the image set")
    parser.add_argument("--no-half-peak", dest="half_peak", action="store_false")
    parser.add_argument("--uploads", choices=["product", "photo"], default="product",
                        help="what is uploaded: bench/productshots.py shots (the load "
                             "benchmark's) or tests/kit/imagegen.py detailed photos")
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    per_run = int(args.max_rate * args.duration)
    runs = args.repeat * (len(levels) + (1 if args.half_peak else 0))
    # Seeds past any earlier invocation's: the loaded directory keeps what each run registered.
    base = 10_000_000 + int(time.time()) % 100_000 * 1000
    print(f"generating {per_run * runs} {args.uploads} images from seed {base}…", file=sys.stderr,
          flush=True)
    files = shots(per_run * runs, base, args.uploads)
    env = {**ENV, "SHOTSTAMP_FINGERPRINT_WORKERS": str(args.workers)}
    print("| service | clients | answers/s | p50 ms | p95 ms | p99 ms | CPU ms/upload service "
          "| workers | client | total | outcomes |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    results: dict[tuple[str, int], list[RunResult]] = {}
    used = 0

    def start(kind: str) -> LocalService:
        service = LocalService(env)
        if kind == "loaded":
            service.data = args.data
        t = time.perf_counter()
        service.start()
        if kind == "loaded":
            print(f"<!-- loaded service healthy {time.perf_counter() - t:.1f} s after launch -->",
                  flush=True)
        return service

    async def run(kind: str, clients: int, pace: float | None = None) -> RunResult:
        nonlocal used
        service = start(kind)
        try:
            mine = files[used:used + per_run] if kind == "loaded" else files[:per_run]
            result = await level(service, mine, clients, args.duration, pace)
        finally:
            service.stop()
        if kind == "loaded":
            used += per_run
        return result

    for _ in range(args.repeat):
        for clients in levels:
            for kind in ("empty", "loaded"):
                r = asyncio.run(run(kind, clients))
                results.setdefault((kind, clients), []).append(r)
                print(line(kind, r), flush=True)
    peaks = {}
    for kind in ("empty", "loaded"):
        mine = {c: rs for (k, c), rs in results.items() if k == kind}
        peaks[kind] = max(statistics.median(answered(r) / r.duration for r in rs)
                          for rs in mine.values())
    print(f"\npeak answers/s: empty {peaks['empty']:.1f}, loaded {peaks['loaded']:.1f} = "
          f"{peaks['loaded'] / peaks['empty']:.1%} of empty")
    for clients in levels:
        cpu = {kind: statistics.median(sum(cpu_per_upload(r)) for r in results[(kind, clients)])
               for kind in ("empty", "loaded")}
        print(f"{clients} clients: CPU ms per upload (all components, median) empty "
              f"{cpu['empty']:.1f}, loaded {cpu['loaded']:.1f} "
              f"({cpu['loaded'] / cpu['empty']:.2f}×)")
    if args.half_peak:
        for _ in range(args.repeat):
            for kind in ("empty", "loaded"):
                # Arrivals are scheduled ahead of the uploads that take files: keep a margin.
                r = asyncio.run(run(kind, 0, min(peaks[kind] / 2, per_run / args.duration / 1.5)))
                results.setdefault((kind, -1), []).append(r)
                print(line(f"{kind}, half of its peak ({peaks[kind] / 2:.1f}/s offered)", r),
                      flush=True)
        for kind in ("empty", "loaded"):
            lat = [v for r in results[(kind, -1)] for v in r.latencies]
            print(f"{kind} at half of peak: p50 {pct(lat, 50) * 1000:.0f} ms, "
                  f"p99 {pct(lat, 99) * 1000:.0f} ms over {len(lat)} uploads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
