"""Stage 2 through the fingerprint pool: CPU per job in the serving process and in the
worker, two builds alternated.

    PYTHONPATH=sdk:service:. python -m bench.pool_exchange --against DIR [--rounds 4]

Sends `bench/stage2.py`'s product-shot calls (what `bench/load.py`'s uploads hand the pool: a
query and 64 candidates' feature blobs, ~390 KB) one at a time through a real
`FingerprintPool` with one worker, in a fresh process per round and build. Prints CPU ms per
job of the serving process's thread (the job's pickling, the sends, the reply's read and
unpickling: `time.thread_time`) and of the worker process (`/proc/PID/stat`: the job's
unpickling, `verify_many`, the reply), medians over rounds. `bench/stage2.py` times
`verify_many` alone; the difference is the exchange.

`--uploads N` also sends N product shots (`bench/load.py`'s) through `FingerprintPool.analyse`
(the fingerprint and a 256 px desk thumbnail, as the service asks) and prints the same two
columns per upload. `--check` first compares every answer through the pool with the same
function run in the process (each upload's fingerprint and thumbnail, each stage-2 call's
evidence) and stops if one differs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "bench" / "out" / "cache" / "stage2-run-product-shots-timed.pkl"


def _cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _upload_files(count: int) -> list[bytes]:
    sys.path.insert(0, str(ROOT / "bench"))
    from productshots import product_shots

    return [p.read_bytes() for p in product_shots(count)]


async def _measure(repeat: int, uploads: int, check: bool) -> dict[str, float]:
    import pickle

    from shotstamp_service.matching.engine import verify_many
    from shotstamp_service.matching.fingerprint import DecodeLimits
    from shotstamp_service.matching.pool import FingerprintPool
    from shotstamp_service.matching.thumbnail import fingerprint_and_thumbnail

    with open(CASES, "rb") as f:
        calls, blobs = pickle.load(f)
    jobs = [(query, [(ref, blobs[ref], pair, by_words) for ref, pair, by_words in listed])
            for query, listed in calls]
    files = _upload_files(uploads) if uploads else []
    pool = FingerprintPool(1, DecodeLimits(), thumbnail_size=256)
    await pool.start()
    out: dict[str, float] = {}
    try:
        (pid,) = pool.worker_pids()
        if check:
            for data in files:
                if await pool.analyse(data) != fingerprint_and_thumbnail(data, DecodeLimits(),
                                                                         256):
                    raise SystemExit("an upload's answer through the pool differs")
            for query, stored in jobs:
                if await pool.verify(query, stored) != verify_many(query, stored):
                    raise SystemExit("a stage-2 call's answer through the pool differs")
            out["checked"] = len(files) + len(jobs)
        for query, stored in jobs[:20]:
            await pool.verify(query, stored)
        worker, serving = _cpu_seconds(pid), time.thread_time()
        for _ in range(repeat):
            for query, stored in jobs:
                await pool.verify(query, stored)
        n = repeat * len(jobs)
        out |= {"serving": (time.thread_time() - serving) / n * 1000,
                "worker": (_cpu_seconds(pid) - worker) / n * 1000}
        if files:
            for data in files[:10]:
                await pool.analyse(data)
            worker, serving = _cpu_seconds(pid), time.thread_time()
            for _ in range(repeat):
                for data in files:
                    await pool.analyse(data)
            n = repeat * len(files)
            out |= {"upload serving": (time.thread_time() - serving) / n * 1000,
                    "upload worker": (_cpu_seconds(pid) - worker) / n * 1000}
        return out
    finally:
        pool.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", type=Path, help="another source tree to alternate with")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="passes over the calls a round")
    parser.add_argument("--uploads", type=int, default=0,
                        help="product shots sent through analyse a pass (0: none)")
    parser.add_argument("--check", action="store_true",
                        help="first compare every answer through the pool with in-process")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(asyncio.run(_measure(args.repeat, args.uploads, args.check))))
        return 0
    builds = {"this tree": ROOT} | ({"against": args.against} if args.against else {})
    got: dict[str, list[dict[str, float]]] = {b: [] for b in builds}
    for r in range(args.rounds):
        for b, tree in (builds.items() if r % 2 == 0 else reversed(builds.items())):
            env = dict(os.environ, PYTHONPATH=f"{tree}/sdk:{tree}/service:{ROOT}")
            check = ["--check"] if args.check and r < 2 else []  # each build once
            out = subprocess.run([sys.executable, "-m", "bench.pool_exchange", "--child",
                                  "--repeat", str(args.repeat), "--uploads", str(args.uploads),
                                  *check], env=env, cwd=ROOT, check=True,
                                 capture_output=True, text=True).stdout
            got[b].append(json.loads(out.strip().splitlines()[-1]))
            print(f"round {r + 1} {b:9s} " + "  ".join(f"{k} {v:.3f}"
                                                      for k, v in got[b][-1].items()),
                  flush=True)
    for what, prefix in (("stage-2 job", ""), ("upload", "upload ")):
        if what == "upload" and not args.uploads:
            break
        print(f"\nCPU ms per {what} through the pool (product shots), medians of "
              f"{args.rounds} rounds:")
        print("| build | serving process | worker | both |")
        print("|---|---|---|---|")
        for b, rounds in got.items():
            serving = statistics.median(x[prefix + "serving"] for x in rounds)
            worker = statistics.median(x[prefix + "worker"] for x in rounds)
            both = statistics.median(x[prefix + "serving"] + x[prefix + "worker"]
                                     for x in rounds)
            print(f"| {b} | {serving:.3f} | {worker:.3f} | {both:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
