"""The PDQ probe at 1 M on real queries: what it reads, and this checkout's probe masks against
another commit's, on the same mapped tables, answers asserted equal.

    PYTHONPATH=sdk:service:. python -m bench.pdq_probe DIR/data --before SRC [--queries 300]

DIR/data is `bench/fullscale.py build`'s data directory (its segments are mapped into one
`Matcher`, as `bench/full_path.py` does); the queries are its cached real query fingerprints.
SRC is an export of the other commit (`git archive main | tar -x -C SRC`): its `index.py`
(`bench.full_path.export_index`) says which values each chunk's table is probed with
(`bench.full_path.export_masks`); the tables and the compiled probe are this checkout's, so
what differs is the probe set alone. Per query, `Matcher.look(fp, stop_at_copy=False)`
both ways, alternating which goes first, each after 64 MB of other memory is written (as an
upload's look meets the caches in a busy service: the fingerprint, stage 2 and the other
uploads ran between two looks) and, `--warm`, once more right after (caches holding the
look's lines). Times are CPU of the thread; every answer is asserted equal (stage-1 matches,
every candidate, in order) and the PDQ searches' raw answers too (each ref's closest pair:
distance, query code, tag). Printed: probes and candidates a query code per part, and the
medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.full_path import answer, export_index, with_masks  # noqa: E402
from bench.vote_kernel import load_fullscale  # noqa: E402
from shotstamp_service.matching import engine, kernels  # noqa: E402
from shotstamp_service.matching import index as index_module  # noqa: E402


def probe_counts(part: index_module.Frozen, code: np.ndarray) -> tuple[int, int]:
    """(probes, candidates) of one query code in one part's tables."""
    t = part.tables
    values = t.layout.values(code[None, :])
    probes = candidates = 0
    for c, masks in enumerate(t.masks):
        v = (values[c][0] ^ masks).astype(np.int64)
        if isinstance(t.offsets, index_module.PackedOffsets):
            n = t.offsets.at(c, v + 1) - t.offsets.at(c, v)
        else:
            n = t.offsets[c][v + 1] - t.offsets[c][v]
        probes += len(v)
        candidates += int(n.sum())
    return probes, candidates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--warm", action="store_true", help="also time a second, warm look")
    args = parser.parse_args()
    kernels.warm()
    old = export_index(args.before)
    matcher, items, _ = load_fullscale(args.data)
    chosen = [it for it in items if it.fp.local is not None and len(it.fp.local)]
    chosen = chosen[:: max(1, len(chosen) // args.queries)][: args.queries]
    radius = engine.PDQ_CANDIDATE
    parts = {"after": (matcher._pdq._frozen, matcher._pdq_low._frozen),
             "before": (with_masks(matcher._pdq._frozen, old, radius),
                        with_masks(matcher._pdq_low._frozen, old, radius))}
    sizes = [(len(p.codes), p.tables.layout.widths) for p in matcher._pdq._frozen]
    print(f"{len(matcher):,} registrations mapped; PDQ parts (codes, chunk widths): {sizes}; "
          f"{len(chosen)} queries", flush=True)
    junk = np.zeros(64 << 20, np.uint8)
    counts: dict[str, dict[str, list[int]]] = {n: defaultdict(list) for n in parts}
    spent: dict[str, dict[str, list[float]]] = {n: defaultdict(list) for n in parts}

    def look(name: str, fp: Any, label: str) -> tuple[Any, Any]:
        matcher._pdq._frozen, matcher._pdq_low._frozen = parts[name]
        matcher._near = None
        t = time.thread_time()
        near = matcher._near_hits(fp)
        t1 = time.thread_time()
        stage1 = matcher.look(fp, stop_at_copy=False)
        t2 = time.thread_time()
        spent[name][f"{label} PDQ probe (good codes)"].append(t1 - t)
        spent[name][f"{label} look"].append(t2 - t1 + (t1 - t))
        return answer(stage1), sorted(near.items())

    for k, it in enumerate(chosen):
        got = {}
        for name in (("before", "after") if k % 2 else ("after", "before")):
            junk += 1  # the caches as a busy service leaves them between two looks
            got[name] = look(name, it.fp, "cold")
            if args.warm:
                look(name, it.fp, "warm")
        assert got["before"] == got["after"], f"query {k} ({it.photo}): the answers differ"
        good, _ = engine._split_codes(it.fp, query=True)
        for name, (pdq, _) in parts.items():
            for code in (np.frombuffer(c, np.uint8) for _, c in good):
                for p, part in enumerate(pdq):
                    if part.tables.size:
                        probes, cands = probe_counts(part, code)
                        counts[name][f"part {p} probes"].append(probes)
                        counts[name][f"part {p} candidates"].append(cands)
    print("every answer equal (stage 1's, and the PDQ searches' raw hits)")
    print("| a query code, median (mean) | before | after |")
    print("|---|---|---|")
    for label in counts["after"]:
        b, a = counts["before"][label], counts["after"][label]
        print(f"| {label} | {statistics.median(b):.0f} ({statistics.mean(b):.0f}) | "
              f"{statistics.median(a):.0f} ({statistics.mean(a):.0f}) |")
    print("| CPU ms (thread), median | before | after | saved | ratio (median of per-look) |")
    print("|---|---|---|---|---|")
    for label in spent["after"]:
        b, a = spent["before"][label], spent["after"][label]
        ratios = [x / y for x, y in zip(b, a, strict=True) if y > 0]
        print(f"| {label} | {statistics.median(b) * 1e3:.3f} | {statistics.median(a) * 1e3:.3f} "
              f"| {(statistics.median(b) - statistics.median(a)) * 1e3:.3f} | "
              f"{statistics.median(ratios):.2f}× |")


if __name__ == "__main__":
    main()
