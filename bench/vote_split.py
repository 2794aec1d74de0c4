"""The word vote's time by step, two versions of `index.py` interleaved over the same segments.

    PYTHONPATH=sdk:service:. python -m bench.vote_split DIR --before SRC [--queries 150]

DIR is a segment directory made by `bench/startup.py build` (its `.ranks.npy` beside it);
SRC another source tree (e.g. `git archive main | tar -x -C SRC`). Both versions map the same
segments and get the same in-memory rows and tail as `bench/startup.py compare` makes them,
then answer the same word lookups (as `compare` calls `WordIndex.search`), alternating query
by query; each `WordIndex` method named below is timed in thread CPU and reported in ms per
lookup. `compare` asserts the answers equal; this only splits the time.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from bench import startup as st
from shotstamp_service.matching import index as index_module
from shotstamp_service.matching.engine import (
    MAX_CANDIDATES,
    MIN_VOTES,
    SIGNATURE_DISTANCE,
    SIGNATURE_SIGMA,
    WORD_POSTINGS_BUDGET,
    WORD_PROBE_POSTINGS,
    WORD_PROBES,
)
from shotstamp_service.matching.segments import SegmentDir

STEPS = ("_frequencies", "_readable", "_votes", "_score", "_best")  # _best: from 30a7822


def _timed(module: ModuleType, acc: dict[str, float]) -> None:
    """Wrap `module.WordIndex`'s steps so that each adds its thread CPU to `acc`."""
    cls = module.WordIndex
    for name in STEPS:
        if name not in cls.__dict__:
            continue
        held = cls.__dict__[name]
        static = isinstance(held, staticmethod)
        fn: Callable[..., Any] = held.__func__ if static else held

        def wrapped(*args: Any, _fn: Callable[..., Any] = fn, _name: str = name,
                    **kwargs: Any) -> Any:
            t = time.thread_time()
            out = _fn(*args, **kwargs)
            if _name == "_votes" and not isinstance(out, tuple):
                out = list(out)  # a generator (until 2bd7b28): its work happens when read
            acc[_name] += time.thread_time() - t
            return out

        setattr(cls, name, staticmethod(wrapped) if static else wrapped)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--queries", type=int, default=150)
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location(
        "before_index", args.before / "service/shotstamp_service/matching/index.py")
    assert spec is not None and spec.loader is not None
    old = importlib.util.module_from_spec(spec)
    sys.modules["before_index"] = old  # dataclasses resolve their module by name
    spec.loader.exec_module(old)
    segments = SegmentDir(args.directory).open()
    through = segments[-1].through
    ranks = np.load(args.directory.parent / f"{args.directory.name}.ranks.npy")
    rng = np.random.default_rng(7)
    _, _, words = st._chunk(rng, ranks, through, through + st.TAIL)
    top = through + st.TAIL
    tail = [(top + 1 + k, st._words(rng, ranks, st.WORDS),
             rng.integers(0, 16, st.WORDS, dtype=np.uint8), st._signatures(rng, st.WORDS))
            for k in range(st.SEGMENT_POSTINGS // st.WORDS - 1)]
    versions = (("before", old), ("after", index_module))
    acc: dict[str, collections.defaultdict[str, float]] = {}
    indexes = {}
    for label, module in versions:
        vote = module.WordIndex(background=False)
        for seg in segments:
            for part in seg.words:
                vote.attach(st._port(part, module))
        vote.add_many(*words)
        for row in tail:
            vote.add(*row)
        indexes[label] = vote
        acc[label] = collections.defaultdict(float)
        _timed(module, acc[label])
    total = dict.fromkeys(indexes, 0.0)
    for k in range(args.queries + 20):  # 20 of warm-up
        if k == 20:
            total = dict.fromkeys(indexes, 0.0)
            for a in acc.values():
                a.clear()
        query = (st._words(rng, ranks, st.QUERY_WORDS),
                 rng.integers(0, 16, st.QUERY_WORDS, dtype=np.uint8),
                 st._signatures(rng, st.QUERY_WORDS))
        for label, _ in (versions if k % 2 else versions[::-1]):
            t = time.thread_time()
            indexes[label].search(
                *query, limit=MAX_CANDIDATES, min_votes=MIN_VOTES,
                max_distance=SIGNATURE_DISTANCE, sigma=SIGNATURE_SIGMA,
                max_postings=WORD_POSTINGS_BUDGET, probe=np.arange(WORD_PROBES),
                max_probe_postings=WORD_PROBE_POSTINGS)
            total[label] += time.thread_time() - t
    n = args.queries
    print(f"{n} word lookups after 20 of warm-up, ms of thread CPU per lookup (means)")
    print("| version | word vote | " + " | ".join(STEPS) + " |")
    print("|---|---|" + "---|" * len(STEPS))
    for label, _ in versions:
        cells = [f"{1e3 * acc[label][s] / n:.2f}" if s in acc[label] else "—" for s in STEPS]
        print(f"| {label} | {1e3 * total[label] / n:.2f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
