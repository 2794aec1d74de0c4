"""The word vote's scoring, numpy (main 0707bd2) against the compiled kernel, on the 1 M index.

    PYTHONPATH=sdk:service:. python -m bench.vote_kernel compare DIR/data [--queries 150]
    PYTHONPATH=sdk:service:. python -m bench.vote_kernel ranks DIR/data --family combination
        [--budgets 200000,300000,400000] [--every 1]
    PYTHONPATH=sdk:service:. python -m bench.vote_kernel startup
    PYTHONPATH=sdk:service:. python -m bench.vote_kernel small --against OTHER/index.py

DIR/data is `bench/fullscale.py build`'s data directory; its persisted segments are mapped
into a `Matcher` (as a service start does, without the store's tail) and queried with the real
query fingerprints `bench/fullscale.py` cached (bench/out/cache/fullscale-*-every3.pkl: the
edits of every third query photo).

`compare`: per query, `Matcher.word_scores` (limit SHORTLIST) with `WordIndex._score` as it was
(tests/unit/matching/score_0707bd2.py, verbatim) and as it is, alternating which goes first,
in CPU time of the thread; then `_score` alone on the same votes, both ways. Every answer is
asserted equal (refs, float scores, votes, order). Prints medians per vote and per `_score`.

`ranks`: where the original ranks in the vote (as /tmp/why.py: in the shortlist, absent) for
one edit family at each postings budget, and the CPU per vote at each (this checkout's code).

`small`: `_score` alone on small synthetic parts (an empty service's look, a `look_again`
scratch index, a few thousand registrations), this checkout's against the `WordIndex._score`
of another commit's `index.py` (`git show main:service/shotstamp_service/matching/index.py`),
alternating, answers asserted equal.

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
from tests.unit.matching import score_0707bd2 as before  # noqa: E402

AFTER = WordIndex.__dict__["_score"]


def _load(data: Path) -> tuple[Matcher, list, int]:
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
    matcher, items, _ = _load(data)
    chosen = [it for it in items if it.fp.local is not None and len(it.fp.local)]
    chosen = chosen[:: max(1, len(chosen) // queries)][:queries]
    print(f"{len(matcher):,} registrations mapped; {len(chosen)} queries", flush=True)
    captured: list = []

    def capture(parts, min_votes, keep):
        captured.append((parts, min_votes, keep))
        return AFTER.__func__(parts, min_votes, keep)

    vote = {"before": [], "after": []}
    score = {"before": [], "after": []}
    votes_in: list[int] = []
    for i, item in enumerate(chosen):
        captured.clear()
        WordIndex._score = staticmethod(capture)
        matcher.word_scores(item.fp, limit=SHORTLIST)
        (parts, min_votes, keep), = captured
        votes_in.append(sum(len(p[1]) for p in parts))
        answers = {}
        for name in (("before", "after") if i % 2 else ("after", "before")):
            WordIndex._score = staticmethod(before.score) if name == "before" else AFTER
            answers[name], dt = _timed(matcher.word_scores, item.fp, limit=SHORTLIST)
            vote[name].append(dt)
        assert _as_tuples(answers["before"]) == _as_tuples(answers["after"]), item.photo
        for name in (("before", "after") if i % 2 else ("after", "before")):
            fn = before.score if name == "before" else AFTER.__func__
            answers[name], dt = _timed(fn, parts, min_votes, keep)
            score[name].append(dt)
        assert _as_tuples(answers["before"]) == _as_tuples(answers["after"]), item.photo
    WordIndex._score = AFTER
    ms = lambda xs: statistics.median(xs) * 1e3  # noqa: E731
    print(f"votes into _score: median {statistics.median(votes_in):,.0f}, "
          f"p90 {np.percentile(votes_in, 90):,.0f}; every answer equal")
    print("| CPU ms (thread), median | numpy (0707bd2) | kernel | saved | ratio |")
    print("|---|---|---|---|---|")
    for label, d in (("word vote (`word_scores`)", vote), ("`_score` alone", score)):
        b, a = ms(d["before"]), ms(d["after"])
        ratios = [x / y for x, y in zip(d["before"], d["after"], strict=True) if y > 0]
        print(f"| {label} | {b:.2f} | {a:.2f} | {b - a:.2f} | {statistics.median(ratios):.1f}× |")


def ranks(data: Path, family: str, budgets: list[int | None], every: int) -> None:
    from bench.fullscale import QUERY_SELLER
    from shotstamp_service.matching import kernels

    kernels.warm()
    matcher, items, through = _load(data)
    db = sqlite3.connect(f"file:{data}/shotstamp.db?mode=ro", uri=True)
    seq_of = dict(db.execute("select sha256, seq from registrations where seller=?",
                             (QUERY_SELLER,)))
    orig = {it.photo: seq_of.get(it.fp.sha256) for it in items if it.edit == "original"}
    rows = [(it, orig.get(it.photo)) for it in items if it.edit == family]
    rows = [(it, ref) for it, ref in rows if ref is not None and ref <= through][::every]
    print(f"{family}: {len(rows)} queries, {len(matcher):,} registrations mapped", flush=True)
    print("| family | budget | in shortlist | absent | of | CPU ms/vote median | p90 |")
    print("|---|---|---|---|---|---|---|")
    for budget in budgets:
        inside = absent = 0
        cpu = []
        for it, ref in rows:
            scores, dt = _timed(matcher.word_scores, it.fp, limit=100_000, max_postings=budget)
            cpu.append(dt)
            refs = [s.ref for s in scores]
            rank = refs.index(ref) if ref in refs else None
            absent += rank is None
            inside += rank is not None and rank < SHORTLIST
        name = "none" if budget is None else f"{budget:,}"
        print(f"| {family} | {name} | {inside} | {absent} | {len(rows)} | "
              f"{statistics.median(cpu) * 1e3:.1f} | {np.percentile(cpu, 90) * 1e3:.1f} |",
              flush=True)


_FIRST_CALL = """
import time, resource
t = time.process_time(); w = time.perf_counter()
import numba
imported = time.process_time() - t
from shotstamp_service.matching import kernels
kernels.warm()
s = kernels._best_bins.stats
print(imported, time.process_time() - t, time.perf_counter() - w, sum(s.cache_hits.values()))
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
                assert out[3] == ("0" if label.startswith("empty") else "1"), out
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["compare", "ranks", "startup", "small"])
    parser.add_argument("data", type=Path, nargs="?")
    parser.add_argument("--queries", type=int, default=150)
    parser.add_argument("--family", default="combination")
    parser.add_argument("--budgets", default=f"{engine.WORD_POSTINGS_BUDGET},300000,400000")
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--against", type=Path, help="small: another commit's index.py")
    args = parser.parse_args()
    if args.command == "startup":
        startup(args.rounds)
    elif args.command == "small":
        if args.against is None:
            parser.error("small needs --against OTHER/index.py")
        small(args.against)
    elif args.data is None:
        parser.error(f"{args.command} needs the data directory")
    elif args.command == "compare":
        compare(args.data, args.queries)
    else:
        budgets = [None if b == "none" else int(b) for b in args.budgets.split(",")]
        ranks(args.data, args.family, budgets, args.every)


if __name__ == "__main__":
    main()
