"""What this host charges per operation when both its cores are busy: a control for goal 2.

    PYTHONPATH=sdk:service:. python -m bench.host_cores [--seconds 10] [--rounds 3]

Runs `bench/load.py`'s naive loop (`imagehash.phash(Image.open(f))` on the same product
shots) in one process pinned to core 0 while core 1 idles, then in two processes pinned to
cores 0 and 1 at once, alternating, and prints each one's CPU ms per image. The work per
image is the same in both, so any rise with two is the host's (shared caches, memory
bandwidth, clock, or vCPUs that share a physical core), not shotstamp's: the same rise
lowers `bench/load.py --processes 1,2`'s ratio of two serving processes to one.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics

from bench.load import naive_loop
from bench.productshots import product_shots


def _pinned(core: int, seconds: float, out: multiprocessing.SimpleQueue) -> None:
    os.sched_setaffinity(0, {core})
    out.put(naive_loop(product_shots(200), seconds))


def run(cores: list[int], seconds: float) -> list[tuple[float, float]]:
    """The naive loop on each of `cores` at once: [(images/s, CPU ms per image)]."""
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.SimpleQueue = ctx.SimpleQueue()
    procs = [ctx.Process(target=_pinned, args=(core, seconds, out)) for core in cores]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    return [out.get() for _ in procs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    product_shots(200)  # made (or read from bench/out) once, before any timing
    alone: list[float] = []
    both: list[float] = []
    for round_ in range(1, args.rounds + 1):
        one = run([0], args.seconds)
        two = run([0, 1], args.seconds)
        alone.append(one[0][1])
        both.extend(cpu for _, cpu in two)
        print(f"round {round_}: one core {one[0][1]:.2f} ms/image ({one[0][0]:.1f}/s); "
              f"two cores " + ", ".join(f"{cpu:.2f} ms ({rate:.1f}/s)" for rate, cpu in two),
              flush=True)
    a, b = statistics.median(alone), statistics.median(both)
    print(f"CPU ms per image, medians: one core busy {a:.2f}, both busy {b:.2f} ({b / a:.3f}×)")


if __name__ == "__main__":
    main()
