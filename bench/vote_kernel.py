"""The word vote's scoring, numpy (main 0707bd2) against the compiled kernel, on the 1 M index.

    PYTHONPATH=sdk:service:. python -m bench.vote_kernel compare DIR/data [--queries 150]
    PYTHONPATH=sdk:service:. python -m bench.vote_kernel ranks DIR/data --family combination
        [--budgets 200000,300000,400000] [--max-dfs 0.02,0.05] [--every 1]
    PYTHONPATH=sdk:service:. python -m bench.vote_kernel probes DIR/data --family combination
        [--probe-budgets 0,2000,20000,50000,100000]
    PYTHONPATH=sdk:service:. python -m bench.vote_kernel startup
    PYTHONPATH=sdk:service:. python -m bench.vote_kernel small --against OTHER/index.py
    PYTHONPATH=sdk:service:. python -m bench.vote_kernel small-vote

DIR/data is `bench/fullscale.py build`'s data directory; its persisted segments are mapped
into a `Matcher` (as a service start does, without the store's tail) and queried with the real
query fingerprints `bench/fullscale.py` cached (bench/out/cache/fullscale-*-every3.pkl: the
edits of every third query photo).

`compare`: per query, `Matcher.word_scores` (limit SHORTLIST) with `WordIndex._votes` as it was
(numpy, main 2bd7b28: tests/unit/matching/near_2bd7b28.py, verbatim) and as it is (the
compiled `kernels.near_votes`), alternating which goes first, in CPU time of the thread; then
the postings read alone on the same words, both ways (the old one with the concatenation its
`_score` made). Every answer (refs, float scores, votes, order) and every vote array is
asserted equal. Prints medians per vote and per read. (Until 2bd7b28 it compared `_score`,
numpy 0707bd2 against its kernel: bench/RESULTS.md, "The word vote's scoring as a compiled
kernel".)

`ranks`: where the original ranks in the vote (as /tmp/why.py: in the shortlist, absent) for
one edit family at each postings budget (and each `max_df`, `--max-dfs 0.02,0.05`), and the
CPU per vote at each (this checkout's code): with limit 100,000 (the ranks) and with the
service's limit SHORTLIST.

`small`: `_score` alone on small synthetic parts (an empty service's look, a `look_again`
scratch index, a few thousand registrations), this checkout's against the `WordIndex._score`
of another commit's `index.py` (`git show main:service/shotstamp_service/matching/index.py`),
alternating, answers asserted equal.

`small-vote`: the whole word lookup on small in-memory indexes (8 to 20,000 registrations: an
empty service's, a `look_again` scratch index's), the numpy `_votes` of 2bd7b28 against
`near_votes`, alternating, answers asserted equal.

`startup`: the kernel's first call in fresh processes: with an empty numba cache (compiles),
then with the cache it wrote, and the import of numba alone.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shotstamp_service.matching import engine  # noqa: E402
from shotstamp_service.matching.engine import SHORTLIST, Matcher  # noqa: E402
from shotstamp_service.matching.index import WordIndex  # noqa: E402
from shotstamp_service.matching.segments import SegmentDir  # noqa: E402
from tests.unit.matching import near_2bd7b28 as before_near  # noqa: E402

AFTER = WordIndex.__dict__["_score"]
VOTES = WordIndex._votes
SEARCH = WordIndex.search_query


def load_fullscale(data: Path) -> tuple[Matcher, list, int]:
    """The 1 M segments mapped into a Matcher, the cached query edits, the segments' last seq."""
    caches = sorted((ROOT / "bench" / "out" / "cache").glob("fullscale-*-every3.pkl"))
    if not caches:
        sys.exit("no bench/out/cache/fullscale-*-every3.pkl: copy /work/main/bench/out/cache")
    items = pickle.loads(caches[-1].read_bytes())
    segments = SegmentDir(data / "index").open()
    matcher = Matcher(background=False)
    for segment in segments:
        matcher.attach(segment)
    return matcher, items, segments[-1].through


def _as_tuples(scores: list) -> list[tuple[int, float, int]]:
    return [(s.ref, s.score, s.votes) for s in scores]


def _timed(fn, *args, **kwargs):
    t = time.thread_time()
    out = fn(*args, **kwargs)
    return out, time.thread_time() - t


def compare(data: Path, queries: int) -> None:
    from shotstamp_service.matching import kernels

    kernels.warm()
    matcher, items, _ = load_fullscale(data)
    chosen = [it for it in items if it.fp.local is not None and len(it.fp.local)]
    chosen = chosen[:: max(1, len(chosen) // queries)][:queries]
    print(f"{len(matcher):,} registrations mapped; {len(chosen)} queries", flush=True)
    index = matcher._words
    captured: list = []

    def capture(self, *args):
        captured.append(args)
        return VOTES(self, *args)

    def read_before(*args):
        # main's `_votes` and the concatenation its `_score` made of the parts
        parts = [p for p in before_near.votes(index, *args) if len(p[1])]
        return (np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]),
                np.concatenate([p[3] for p in parts])) if parts else None

    vote = {"before": [], "after": []}
    read = {"before": [], "after": []}
    postings: list[int] = []
    passed: list[int] = []
    for i, item in enumerate(chosen):
        captured.clear()
        WordIndex._votes = capture
        matcher.word_scores(item.fp, limit=SHORTLIST)
        WordIndex._votes = VOTES
        (args,) = captured
        w64 = args[0].astype(np.int64)
        postings.append(sum(int((s.offsets[w64 + 1] - s.offsets[w64]).sum()) if r is None
                            else int((r[1] - r[0]).sum())
                            for s, r in zip([*index._segments, None], args[-1], strict=True)))
        answers = {}
        for name in (("before", "after") if i % 2 else ("after", "before")):
            WordIndex.search_query = before_near.search_query if name == "before" else SEARCH
            answers[name], dt = _timed(matcher.word_scores, item.fp, limit=SHORTLIST)
            vote[name].append(dt)
        WordIndex.search_query = SEARCH
        assert _as_tuples(answers["before"]) == _as_tuples(answers["after"]), item.photo
        got = {}
        for name in (("before", "after") if i % 2 else ("after", "before")):
            if name == "before":
                got[name], dt = _timed(read_before, *args)
            else:
                got[name], dt = _timed(index._votes, *args)
            read[name].append(dt)
        _, local, dangle, weight, _ = got["after"]
        passed.append(len(local))
        if got["before"] is None:
            assert not len(local), item.photo
        else:
            for x, y in zip(got["before"], (local, dangle, weight), strict=True):
                assert np.array_equal(x, y), item.photo  # floats too: the same multiply
    ms = lambda xs: statistics.median(xs) * 1e3  # noqa: E731
    print(f"postings read: median {statistics.median(postings):,.0f}; passing the filter: "
          f"median {statistics.median(passed):,.0f} "
          f"({statistics.median(np.array(passed) / np.maximum(postings, 1)):.0%}); "
          "every answer and every vote equal")
    print("| CPU ms (thread), median | numpy `_votes` (2bd7b28) | kernel | saved | ratio |")
    print("|---|---|---|---|---|")
    for label, d in (("word vote (`word_scores`)", vote),
                     ("postings read and filtered (`_votes`, + the concatenation)", read)):
        b, a = ms(d["before"]), ms(d["after"])
        ratios = [x / y for x, y in zip(d["before"], d["after"], strict=True) if y > 0]
        print(f"| {label} | {b:.2f} | {a:.2f} | {b - a:.2f} | {statistics.median(ratios):.1f}× |")


def _family(data: Path, family: str) -> tuple[Matcher, list]:
    """The 1 M segments in a warm `Matcher`, and each query of `family` with its original's
    seq (the queries whose original the segments hold)."""
    from bench.fullscale import QUERY_SELLER
    from shotstamp_service.matching import kernels

    kernels.warm()
    matcher, items, through = load_fullscale(data)
    db = sqlite3.connect(f"file:{data}/shotstamp.db?mode=ro", uri=True)
    seq_of = dict(db.execute("select sha256, seq from registrations where seller=?",
                             (QUERY_SELLER,)))
    orig = {it.photo: seq_of.get(it.fp.sha256) for it in items if it.edit == "original"}
    rows = [(it, orig.get(it.photo)) for it in items if it.edit == family]
    return matcher, [(it, ref) for it, ref in rows if ref is not None and ref <= through]


def ranks(data: Path, family: str, budgets: list[int | None], every: int,
          max_dfs: list[float]) -> None:
    matcher, rows = _family(data, family)
    rows = rows[::every]
    print(f"{family}: {len(rows)} queries, {len(matcher):,} registrations mapped", flush=True)
    print("| family | max_df | budget | in shortlist | absent | of | CPU ms/vote median | p90 "
          "| at limit SHORTLIST: median | p90 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for max_df, budget in ((d, b) for d in max_dfs for b in budgets):
        inside = absent = 0
        cpu = []
        served = []  # the vote as the service makes it (limit SHORTLIST)

        def search(self, query, **kw):
            return SEARCH(self, query, **{**kw, "max_df": max_df})  # noqa: B023

        WordIndex.search_query = search
        for it, ref in rows:
            scores, dt = _timed(matcher.word_scores, it.fp, limit=100_000, max_postings=budget)
            cpu.append(dt)
            served.append(_timed(matcher.word_scores, it.fp, limit=SHORTLIST,
                                 max_postings=budget)[1])
            refs = [s.ref for s in scores]
            rank = refs.index(ref) if ref in refs else None
            absent += rank is None
            inside += rank is not None and rank < SHORTLIST
        WordIndex.search_query = SEARCH
        name = "none" if budget is None else f"{budget:,}"
        print(f"| {family} | {max_df:g} | {name} | {inside} | {absent} | {len(rows)} | "
              f"{statistics.median(cpu) * 1e3:.1f} | {np.percentile(cpu, 90) * 1e3:.1f} | "
              f"{statistics.median(served) * 1e3:.1f} | {np.percentile(served, 90) * 1e3:.1f} |",
              flush=True)


def probes(data: Path, family: str, probe_budgets: list[int]) -> None:
    """Where the original ranks when the probe words (one bit from the query's, `WordQuery`)
    get a budget of their own beside WORD_POSTINGS_BUDGET's exact words, instead of what those
    leave of it (which at 1 M is almost always nothing): in the shortlist, CPU per vote."""
    matcher, rows = _family(data, family)
    readable = WordIndex.__dict__["_readable"].__func__
    print(f"{family}: {len(rows)} queries, {len(matcher):,} registrations mapped", flush=True)
    print("| family | exact budget | probe budget | in shortlist | of | CPU ms/vote median | p90 |")
    print("|---|---|---|---|---|---|---|")
    rows_out = [("shared (today)", None)] + [(f"own {p:,}", p) for p in probe_budgets]
    for name, own in rows_out:
        calls = [0]

        def read(df, total, max_df, budget, own=own, calls=calls):
            calls[0] += 1  # search_query's second call is the probe words'
            return readable(df, total, max_df, own if own is not None and calls[0] == 2
                            else budget)

        WordIndex._readable = staticmethod(read)  # type: ignore[method-assign]
        inside, cpu = 0, []
        for it, ref in rows:
            calls[0] = 0
            scores, dt = _timed(matcher.word_scores, it.fp, limit=SHORTLIST)
            cpu.append(dt)
            inside += ref in [s.ref for s in scores]
        WordIndex._readable = staticmethod(readable)  # type: ignore[method-assign]
        print(f"| {family} | {engine.WORD_POSTINGS_BUDGET:,} | {name} | {inside} | {len(rows)} "
              f"| {statistics.median(cpu) * 1e3:.1f} | {np.percentile(cpu, 90) * 1e3:.1f} |",
              flush=True)


_FIRST_CALL = """
import time, resource
t = time.process_time(); w = time.perf_counter()
import numba
imported = time.process_time() - t
from shotstamp_service.matching import kernels
kernels.warm()
hits = sum(sum(k.stats.cache_hits.values()) for k in (kernels._best_bins, kernels._near_votes))
print(imported, time.process_time() - t, time.perf_counter() - w, hits)
"""


def startup(rounds: int) -> None:
    print("| numba cache | import numba CPU s | import + first call CPU s | wall s | runs |")
    print("|---|---|---|---|---|")
    got: dict[str, list[list[float]]] = {"empty (compiles)": [], "written by the first": []}
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "NUMBA_CACHE_DIR": cache}
            for label in got:
                out = subprocess.run([sys.executable, "-c", _FIRST_CALL], env=env, check=True,
                                     capture_output=True, text=True).stdout.split()
                # best_bins' one version and near_votes' (kernels._warm_parts)
                assert out[3] == ("0" if label.startswith("empty") else "6"), out
                got[label].append([float(x) for x in out[:3]])
    for label, runs in got.items():
        med = np.median(np.array(runs), axis=0)
        print(f"| {label} | {med[0]:.2f} | {med[1]:.2f} | {med[2]:.2f} | {len(runs)} |")


def small(against: Path) -> None:
    import importlib.util

    from shotstamp_service.matching import kernels

    spec = importlib.util.spec_from_file_location("other_index", against)
    assert spec is not None and spec.loader is not None
    other = importlib.util.module_from_spec(spec)
    sys.modules["other_index"] = other
    spec.loader.exec_module(other)
    kernels.warm()
    rng = np.random.default_rng(1)

    def parts_of(sizes: list[int], n: int) -> list:
        out = []
        for size in sizes:
            hot = np.where(rng.random(n) < 0.3, rng.integers(0, 5, n), rng.integers(0, size, n))
            out.append((np.arange(size, dtype=np.int64), hot.astype(np.int64),
                        rng.integers(0, 16, n).astype(np.int64), rng.random(n)))
        return out

    cases = {"an empty service's look (3 parts of ≤ 512, 1,500 votes)": ([512, 512, 300], 500),
             "a look_again scratch index (8 registrations, 40 votes)": ([8], 40),
             "2,139 registrations (5 parts, 6,000 votes)": ([512, 512, 512, 512, 91], 1200)}
    print("| `_score` CPU (thread), median | other | this checkout |")
    print("|---|---|---|")
    for name, (sizes, n) in cases.items():
        samples = [parts_of(sizes, n) for _ in range(50)]
        times: dict[str, list[float]] = {"other": [], "this": []}
        for rep in range(20):
            for i, parts in enumerate(samples):
                got = {}
                for who in (("other", "this") if (i + rep) % 2 else ("this", "other")):
                    fn = other.WordIndex._score if who == "other" else AFTER.__func__
                    got[who], dt = _timed(fn, parts, 2, 64)
                    times[who].append(dt)
                assert _as_tuples(got["other"]) == _as_tuples(got["this"])
        print(f"| {name} | {statistics.median(times['other']) * 1e6:.0f} µs | "
              f"{statistics.median(times['this']) * 1e6:.0f} µs |")


def small_vote() -> None:
    """The whole word lookup (`search_query`) on small in-memory indexes, the numpy `_votes`
    (2bd7b28) against `near_votes`, alternating, answers asserted equal."""
    from shotstamp_service.matching import kernels
    from shotstamp_service.matching.index import WordQuery

    kernels.warm()
    rng = np.random.default_rng(2)
    print("| `search_query` CPU (thread), median | numpy `_votes` (2bd7b28) | kernel |")
    print("|---|---|---|")
    for n in (8, 500, 2_000, 20_000):
        k = 120
        words = (np.minimum(rng.zipf(1.2, n * k), 1 << 20) - 1).astype(np.uint32)
        angles = rng.integers(0, 16, n * k).astype(np.uint8)
        signatures = rng.integers(0, 1 << 32, n * k, dtype=np.uint64).astype(np.uint32)
        index = WordIndex(background=False)  # segments of SEGMENT_POSTINGS and a tail
        for i in range(n):
            index.add(i, *(a[i * k:(i + 1) * k] for a in (words, angles, signatures)))
        queries = []
        for i in rng.choice(n, 50).tolist():
            own = slice(i * k, (i + 1) * k)
            queries.append(WordQuery.of(words[own], (angles[own] + 2) % 16,
                                        signatures[own] ^ np.uint32(5)))
        times: dict[str, list[float]] = {"before": [], "after": []}
        for rep in range(10):
            for j, query in enumerate(queries):
                got = {}
                for who in (("before", "after") if (j + rep) % 2 else ("after", "before")):
                    fn = before_near.search_query if who == "before" else SEARCH
                    got[who], dt = _timed(fn, index, query, limit=64, min_votes=2,
                                          max_distance=10, sigma=6.0, max_postings=200_000)
                    times[who].append(dt)
                assert _as_tuples(got["before"]) == _as_tuples(got["after"])
        print(f"| {n:,} registrations ({len(index._segments)} segments, tail "
              f"{len(index._tail):,} postings) | {statistics.median(times['before']) * 1e6:.0f} µs "
              f"| {statistics.median(times['after']) * 1e6:.0f} µs |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command",
                        choices=["compare", "ranks", "probes", "startup", "small",
                                 "small-vote"])
    parser.add_argument("data", type=Path, nargs="?")
    parser.add_argument("--queries", type=int, default=150)
    parser.add_argument("--family", default="combination")
    parser.add_argument("--budgets", default=f"{engine.WORD_POSTINGS_BUDGET},300000,400000")
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--max-dfs", default="0.02", help="ranks: WordIndex.search's max_df")
    parser.add_argument("--probe-budgets", default="2000,20000,50000,100000",
                        help="probes: the probe words' own postings budgets")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--against", type=Path, help="small: another commit's index.py")
    args = parser.parse_args()
    if args.command == "startup":
        startup(args.rounds)
    elif args.command == "small-vote":
        small_vote()
    elif args.command == "small":
        if args.against is None:
            parser.error("small needs --against OTHER/index.py")
        small(args.against)
    elif args.data is None:
        parser.error(f"{args.command} needs the data directory")
    elif args.command == "compare":
        compare(args.data, args.queries)
    elif args.command == "probes":
        probes(args.data, args.family, [int(x) for x in args.probe_budgets.split(",")])
    else:
        budgets = [None if b == "none" else int(b) for b in args.budgets.split(",")]
        ranks(args.data, args.family, budgets, args.every,
              [float(x) for x in args.max_dfs.split(",")])


if __name__ == "__main__":
    main()
