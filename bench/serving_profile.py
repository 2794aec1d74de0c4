"""The serving process's CPU per upload by component, from a py-spy profile of all its threads.

Capture (while `bench/load.py` drives the service; PID is the serving process, e.g. the
`--pid` of the py-spy that `bench/load.py --profile` starts):

    py-spy record --pid PID --duration 12 --rate 200 --threads --format raw --nonblocking -o all.txt

and the CPU ticks of each of its threads before and after (`/proc/PID/task/*/stat`, fields 14
and 15), which give the event loop's share of the process's CPU. Then:

    python -m bench.serving_profile all.txt --serving-ms 6.8 --loop-share 0.92

Each busy sample goes to the component of its deepest frame that names one (the table
below, first match from the leaf up). py-spy counts a thread that is ready to run but not
running as busy, so the samples of the pool exchange's send (where the serving thread wakes
its worker, which then takes the core) and of the hops to the store's threads are mostly
waiting, not CPU: with `--serving-ms`, those two get the CPU measured for them alone
(`bench/serving_steps.py`: ~0.1 ms an exchange, two an upload; ~0.1 ms a thread hop, one
per group commit of ~2 uploads) and the rest of the loop's CPU is shared out by samples.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

COMPONENTS = [
    ("thread hops", ("concurrent/futures", "threading.py", "run_in_executor",
                     "asyncio/threads.py", "call_soon_threadsafe", "_write_to_self")),
    ("pool exchange", ("matching/pool.py",)),
    ("logging", ("logging/", "shotstamp_service/logs.py")),
    ("metrics", ("prometheus_client", "shotstamp_service/metrics.py")),
    ("multipart", ("aiohttp/multipart.py", "read_upload", "_read_multipart", "_read_capped",
                   "_disposition_name", "http/limits.py")),
    ("store (SQLite)", ("shotstamp_service/store/", "sqlite3")),
    ("sealer", ("shotstamp_service/log/",)),
    ("stage 1 (engine, index)", ("shotstamp_service/matching/",)),
    ("registry", ("shotstamp_service/registry.py",)),
    ("auth", ("http/auth.py", "http/access.py")),
    ("JSON", ("json/",)),
    ("HTTP (aiohttp, middlewares, handlers)", ("aiohttp/", "shotstamp_service/http/")),
    ("asyncio loop", ("asyncio/", "selectors.py")),
]
# Leaf frames of a thread that waits (for the selector, a queue, a lock): not busy.
IDLE = ("select (selectors.py", "_worker (concurrent/futures/thread.py", "wait (threading.py",
        "_recv_frame (shotstamp_service/matching/pool.py")
# CPU ms per upload measured alone for the components whose samples are mostly waiting.
MEASURED_ALONE = {"pool exchange": 0.20, "thread hops": 0.05}


def component(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, marks in COMPONENTS:
            if any(mark in frame for mark in marks):
                return name
    return "other"


def thread_of(head: str) -> str:
    if "MainThread" in head:
        return "event loop"
    return re.sub(r"_\d+$", "", re.sub(r"thread \(\d+\): ", "", head))


def tally(paths: list[Path]) -> Counter[tuple[str, str]]:
    counts: Counter[tuple[str, str]] = Counter()
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            frames = stack.split(";")
            if any(idle in frames[-1] for idle in IDLE):
                continue
            counts[(thread_of(frames[0]), component(frames[1:]))] += int(n)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw", type=Path, nargs="+", help="py-spy --format raw files")
    parser.add_argument("--serving-ms", type=float, help="the serving process's CPU ms per "
                        "upload in the same run (bench/load.py's `main` column)")
    parser.add_argument("--loop-share", type=float, default=1.0,
                        help="the event loop thread's share of the process's CPU (/proc)")
    args = parser.parse_args()
    counts = tally(args.raw)
    total = sum(counts.values())
    loop = {c: n for (t, c), n in counts.items() if t == "event loop"}
    loop_total = sum(loop.values())
    print(f"{total} busy samples, {loop_total} of the event loop")
    print("| thread | component | share of busy samples | share of the loop's |"
          + (" ms per upload |" if args.serving_ms else ""))
    print("|---|---|---|---|" + ("---|" if args.serving_ms else ""))
    rest = sum(n for c, n in loop.items() if c not in MEASURED_ALONE)
    loop_ms = (args.serving_ms or 0.0) * args.loop_share
    left = loop_ms - sum(MEASURED_ALONE.values())
    for (thread, name), n in counts.most_common():
        row = f"| {thread} | {name} | {n / total:.1%} |"
        row += f" {n / loop_total:.1%} |" if thread == "event loop" else " |"
        if args.serving_ms:
            if thread != "event loop":
                ms = args.serving_ms * (1 - args.loop_share) * n / max(1, total - loop_total)
                row += f" {ms:.2f} |"
            elif name in MEASURED_ALONE:
                row += f" {MEASURED_ALONE[name]:.2f} (measured alone) |"
            else:
                row += f" {left * n / rest:.2f} |"
        print(row)


if __name__ == "__main__":
    main()
