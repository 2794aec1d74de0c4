"""Fan-out and merge cost of a sharded lookup, simulated in one process (docs/scale-out.md).

    PYTHONPATH=sdk:service python -m bench.shards [--registrations 400000] [--shards 1,2,4,8]

The same synthetic registrations as `bench/index.py` (1.5 uniform PDQ codes and 128
Zipf-distributed words with random signatures each) are split by ref over N shards, each a
`HammingIndex` and a `WordIndex` of its own, as each shard server of a cluster would hold them.
A lookup asks every shard (three PDQ codes within radius 31, a 300-word vote with the engine's
budgets) and merges: PDQ hits by ref, the word candidates' top MAX_CANDIDATES by score. Reported
in CPU time per lookup: the slowest shard (what a parallel fan-out waits for), the sum over
shards (the cluster's CPU cost), and the merge. Each shard scores with its own statistics
(idf from its local document frequency, which for registrations split at random by ref
estimates the global one: Elasticsearch's default query_then_fetch) and reads 1/N of the
engine's postings budget, so the cluster reads what one index would.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from shotstamp_service.matching.engine import (
    MAX_CANDIDATES,
    MIN_VOTES,
    SIGNATURE_DISTANCE,
    SIGNATURE_SIGMA,
    WORD_POSTINGS_BUDGET,
    WORD_PROBE_POSTINGS,
    WORD_PROBES,
)
from shotstamp_service.matching.index import HammingIndex, WordIndex

WORDS = 128
QUERY_WORDS = 300


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--registrations", type=int, default=400_000)
    parser.add_argument("--shards", default="1,2,4,8")
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args(argv)
    n = args.registrations
    rng = np.random.default_rng(5)
    ranks = rng.permutation(1 << 20).astype(np.uint32)
    refs = np.arange(n, dtype=np.int64)
    code_refs = np.concatenate([refs, refs[::2]])
    codes = rng.integers(0, 256, (len(code_refs), 32), dtype=np.uint8)
    words = ranks[np.minimum(rng.zipf(1.3, n * WORDS), 1 << 20) - 1]
    angles = rng.integers(0, 16, n * WORDS, dtype=np.uint8)
    sigs = rng.integers(0, 1 << 32, n * WORDS, dtype=np.uint64).astype(np.uint32)
    queries = []
    for _ in range(args.queries):
        target = int(rng.integers(0, n))
        pick = target * WORDS + rng.choice(WORDS, QUERY_WORDS // 10, replace=False)
        rest = QUERY_WORDS - len(pick)
        qw = np.concatenate([words[pick],
                             ranks[np.minimum(rng.zipf(1.3, rest), 1 << 20) - 1]])
        qa = np.concatenate([angles[pick], rng.integers(0, 16, rest, dtype=np.uint8)])
        qs = np.concatenate([sigs[pick], rng.integers(0, 1 << 32, rest,
                                                      dtype=np.uint64).astype(np.uint32)])
        flip = np.zeros(256, np.uint8)
        flip[rng.choice(256, 10, replace=False)] = 1
        q = [(codes[target] ^ np.packbits(flip)).tobytes()] + [
            rng.integers(0, 256, 32, dtype=np.uint8).tobytes() for _ in range(2)]
        queries.append((target, q, qw, qa, qs))
    print("| shards | registrations per shard | slowest shard (median) | all shards (median) | "
          "merge (median) | fan-out p99 (slowest + merge) | planted copy found |")
    print("|---|---|---|---|---|---|---|")
    for count in [int(s) for s in args.shards.split(",")]:
        shards = []
        for s in range(count):
            mine = refs % count == s
            mine_codes = code_refs % count == s
            ham = HammingIndex(max_radius=31, background=False)
            ham.add_many(code_refs[mine_codes], codes[mine_codes])
            widx = WordIndex(background=False)
            posting = np.repeat(mine, WORDS)
            widx.add_many(refs[mine], np.full(int(mine.sum()), WORDS), words[posting],
                          angles[posting], sigs[posting])
            shards.append((ham, widx))
        slowest, total, merge, fanout, found = [], [], [], [], 0
        for target, q, qw, qa, qs in queries:
            per_shard, answers = [], []
            for ham, widx in shards:
                t = time.process_time()
                hits = ham.search(q, 31)
                top = widx.search(qw, qa, qs, limit=MAX_CANDIDATES, min_votes=MIN_VOTES,
                                  max_distance=SIGNATURE_DISTANCE, sigma=SIGNATURE_SIGMA,
                                  max_postings=WORD_POSTINGS_BUDGET // count,
                                  probe=np.arange(WORD_PROBES),
                                  max_probe_postings=WORD_PROBE_POSTINGS // count)
                per_shard.append(time.process_time() - t)
                answers.append((hits, top))
            t = time.process_time()
            pdq: dict[int, int] = {}
            for hits, _ in answers:
                for ref, hit in hits.items():
                    pdq[ref] = min(pdq.get(ref, 257), hit.distance)
            merged = sorted((w for _, top in answers for w in top),
                            key=lambda w: (-w.score, w.ref))[:MAX_CANDIDATES]
            m = time.process_time() - t
            slowest.append(max(per_shard) * 1000)
            total.append(sum(per_shard) * 1000)
            merge.append(m * 1000)
            fanout.append((max(per_shard) + m) * 1000)
            found += target in pdq and any(w.ref == target for w in merged)
        print(f"| {count} | {n // count:,} | {np.median(slowest):.2f} ms | "
              f"{np.median(total):.2f} ms | {np.median(merge):.3f} ms | "
              f"{np.percentile(fanout, 99):.2f} ms | {found}/{len(queries)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
