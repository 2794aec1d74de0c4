"""The PDQ probe, numpy (main 2bd7b28) against the compiled kernel, at 1 M and on small indexes.

    PYTHONPATH=sdk:service:. python -m bench.pdq_kernel compare DIR/data [--queries 300]
    PYTHONPATH=sdk:service:. python -m bench.pdq_kernel small

DIR/data is `bench/fullscale.py build`'s data directory; its persisted segments are mapped
into a `Matcher` (as a service start does, without the store's tail) and queried with the real
query fingerprints `bench/fullscale.py` cached (bench/out/cache/fullscale-*-every3.pkl: the
edits of every third query photo).

`compare`: per query, the PDQ searches a lookup makes (`Matcher._near_hits`: the good codes in
the good table; `candidates`: good and low codes in the low table, the low codes in the good
table), with `HammingIndex.search` as it was (tests/unit/matching/pdq_search_2bd7b28.py,
verbatim) and as it is, alternating which goes first, in CPU time of the thread. Every answer
is asserted equal, in order (the dicts' items). Prints medians and p90 per lookup (the three
searches together) and per search of the good table, with the hits' sizes.

`small`: the same on in-memory indexes as an empty service holds them: a `look_again`
scratch index (a few codes, all in the brute-force tail), the empty service's index after a
few hundred uploads (tables and a tail), and one of 60,000 codes (tables of 16-bit chunks and
a full tail).
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shotstamp_service.matching import kernels  # noqa: E402
from shotstamp_service.matching.engine import Matcher, _split_codes  # noqa: E402
from shotstamp_service.matching.index import HammingIndex  # noqa: E402
from shotstamp_service.matching.rule import PDQ_CANDIDATE  # noqa: E402
from shotstamp_service.matching.segments import SegmentDir  # noqa: E402
from tests.unit.matching import pdq_search_2bd7b28 as before  # noqa: E402

Search = Callable[[HammingIndex, list[bytes], int], dict]


def _after(index: HammingIndex, codes: list[bytes], radius: int) -> dict:
    return index.search(codes, radius)


WAYS: dict[str, Search] = {"numpy (2bd7b28)": before.search, "kernel": _after}


def _lookup(searches: list[tuple[HammingIndex, list[bytes]]], way: Search,
            ) -> tuple[list[list[tuple[int, object]]], float, float]:
    """Every search of one lookup: answers, CPU of all, CPU of the first (the good table)."""
    out = []
    t0 = time.thread_time()
    first = 0.0
    for k, (index, codes) in enumerate(searches):
        out.append(list(way(index, codes, PDQ_CANDIDATE).items()) if codes else [])
        if k == 0:
            first = time.thread_time() - t0
    return out, time.thread_time() - t0, first


def _run(cases: list[list[tuple[HammingIndex, list[bytes]]]], rounds: int = 1) -> None:
    times: dict[str, list[float]] = {name: [] for name in WAYS}
    firsts: dict[str, list[float]] = {name: [] for name in WAYS}
    hits = []
    for rep in range(rounds):
        for i, searches in enumerate(cases):
            answers = {}
            names = list(WAYS) if (i + rep) % 2 else list(WAYS)[::-1]
            for name in names:
                answers[name], dt, first = _lookup(searches, WAYS[name])
                times[name].append(dt)
                firsts[name].append(first)
            assert answers[names[0]] == answers[names[1]], f"lookup {i}: the answers differ"
            if rep == 0:
                hits.append(sum(len(a) for a in answers[names[0]]))
    print(f"{len(cases)} lookups × {rounds}, every answer equal (refs, hits, order); refs "
          f"found a lookup: median {statistics.median(hits):.0f}, max {max(hits)}")
    print("| CPU (thread) | numpy (2bd7b28) | kernel | ratio (median of per-lookup ratios) |")
    print("|---|---|---|---|")
    for label, d in (("PDQ lookup (all its searches), median", times),
                     ("PDQ lookup, p90", times),
                     ("the good table's search, median", firsts)):
        a, b = (d[name] for name in WAYS)
        if "p90" in label:
            x, y = np.percentile(a, 90), np.percentile(b, 90)
        else:
            x, y = statistics.median(a), statistics.median(b)
        ratios = [p / q for p, q in zip(a, b, strict=True) if q > 0]
        unit, scale = ("ms", 1e3) if x > 1e-3 else ("µs", 1e6)
        print(f"| {label} | {x * scale:.2f} {unit} | {y * scale:.2f} {unit} | "
              f"{statistics.median(ratios):.1f}× |")


def compare(data: Path, queries: int) -> None:
    kernels.warm()
    caches = sorted((ROOT / "bench" / "out" / "cache").glob("fullscale-*-every3.pkl"))
    if not caches:
        sys.exit("no bench/out/cache/fullscale-*-every3.pkl: copy /work/main/bench/out/cache")
    items = pickle.loads(caches[-1].read_bytes())
    matcher = Matcher(background=False)
    for segment in SegmentDir(data / "index").open():
        matcher.attach(segment)
    chosen = items[:: max(1, len(items) // queries)][:queries]
    cases = []
    for item in chosen:
        good, low = _split_codes(item.fp, query=True)
        g, lo = [c for _, c in good], [c for _, c in low]
        # as the engine searches: _near_hits, then candidates' gated searches
        cases.append([(matcher._pdq, g), (matcher._pdq_low, g + lo), (matcher._pdq, lo)])
    codes = [len(c[1][1]) for c in cases]
    print(f"{len(matcher):,} registrations mapped; {len(cases)} queries "
          f"({statistics.median(codes):.0f} codes each, median); 20 of warm-up", flush=True)
    _run(cases[:20])
    _run(cases)


def small() -> None:
    kernels.warm()
    rng = np.random.default_rng(5)

    def index_of(n: int, tail: int) -> HammingIndex:
        index = HammingIndex(max_radius=PDQ_CANDIDATE, background=False)
        base = rng.integers(0, 256, (n + tail, 32), dtype=np.uint8)
        if n:
            index.add_many(np.arange(n), base[:n])
        for k in range(tail):
            index.add(n + k, [base[n + k].tobytes()])
        return index

    def queries(index: HammingIndex) -> list[bytes]:
        stored = index._codes[: max(1, index._n)]
        out = [stored[int(rng.integers(0, len(stored)))].copy() for _ in range(3)]
        out[0][:4] ^= 0x11  # 4 bits off a stored code: a hit
        return [c.tobytes() for c in out] + [
            rng.integers(0, 256, 32, dtype=np.uint8).tobytes() for _ in range(5)]

    shapes = {"a look_again scratch index (3 codes, tail only)": (0, 3),
              "an empty service after 600 uploads (512 in tables, 88 in the tail)": (512, 88),
              "60,000 codes (tables) + 4,000 in the tail": (60_000, 4_000)}
    for label, (n, tail) in shapes.items():
        print(f"\n{label}")
        index = index_of(n, tail)
        cases = [[(index, queries(index)), (index, queries(index)[:5])] for _ in range(200)]
        _run(cases, rounds=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["compare", "small"])
    parser.add_argument("data", type=Path, nargs="?")
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    if args.command == "small":
        small()
    elif args.data is None:
        parser.error("compare needs the data directory")
    else:
        compare(args.data, args.queries)


if __name__ == "__main__":
    main()
