"""Index benchmark: lookup latency and memory at 1 M and 10 M synthetic registrations.

    PYTHONPATH=sdk:service python -m bench.index [--sizes 1000000,10000000] [--queries 200]

For each size it builds, from synthetic fingerprints:

- the PDQ `HammingIndex` (1.5 codes per registration: every registration has a whole-image
  code, half also a content-box code), and times a lookup as the engine does one: three query
  codes (whole, box, mirror) within radius 31. Beside it: a plain numpy scan (popcount over
  the (4, n) transposed uint64 array, one popcount per 64-bit column) and faiss
  `IndexBinaryFlat.range_search` (one thread; faiss excludes the radius itself, so it is
  given 32). Half the queries are perturbed copies of stored codes (hits), half fresh codes
  (misses). Uniform random codes are the easy case for multi-index hashing; a clustered set
  (codes scattered 20 % around 1,000 centres, as real PDQ codes bunch up) is measured at the
  smaller size too, and so is the worst case between two rebuilds of the tables: the last
  TAIL_LIMIT - 1 codes added one registration at a time, all in the brute-force tail.
- the `WordIndex` (128 words per registration from a skewed word distribution, as real ORB
  words are, each with a random 32-bit signature), and times a word vote with 300 query words,
  10 % of them from one stored registration with their signatures moved by a few bits (a
  copy's keypoints: 3 of 32 bits at the median on the corpus), the rest with random ones
  (reported: how often that registration is among the candidates); the first WORD_PROBES
  query words are also probed one bit away within the budgets, as the engine does. Random
  signatures are the
  easy case for the Hamming-embedding filter: on the corpus, keypoints of different photos
  that share a word sit at a median of 10 bits, not 16 (ORB bits are correlated).

Every lookup result is checked against the brute-force answer on a sample of queries.
Prints medians and p99 in ms, build time and memory, and writes bench/out/index.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from shotstamp_service.matching.engine import (
    INDEX_KEYPOINTS,
    MAX_CANDIDATES,
    MIN_VOTES,
    SIGNATURE_DISTANCE,
    SIGNATURE_SIGMA,
    WORD_POSTINGS_BUDGET,
    WORD_PROBE_POSTINGS,
    WORD_PROBES,
)
from shotstamp_service.matching.index import (
    TAIL_LIMIT,
    HammingIndex,
    WordIndex,
    pack_postings,
    packed_view,
)

OUT = Path(__file__).resolve().parent / "out"
RADIUS = 31
WORDS_PER_REGISTRATION = INDEX_KEYPOINTS
CHUNK = 500_000  # registrations generated and bulk-loaded at a time (bounds scratch memory)
QUERY_WORDS = 300
# Words are drawn with P(rank r) ∝ r^-WORD_EXPONENT over the 2**20 words: skewed as real ORB
# words are (the commonest in ≈ 13 % of registrations, as on the corpus) yet ≈ 120 of a
# registration's 128 keypoints have distinct words, as corpus photos keep (the Zipf(1.3) draw
# used before kept ≈ 56–60: half the postings of a real index).
WORD_EXPONENT = 0.59
DISTINCT_WORDS = 120


def draw_words(rng: np.random.Generator, ranks: np.ndarray, k: int) -> np.ndarray:
    """`k` independent words: power-law ranks (inverse CDF of the bounded continuous law)
    mapped to word values through the permutation `ranks`."""
    a = 1 - WORD_EXPONENT
    n = len(ranks)
    r = np.floor(((n**a - 1) * rng.random(k) + 1) ** (1 / a)).astype(np.int64) - 1
    return ranks[np.minimum(r, n - 1)]


def registration_words(rng: np.random.Generator, ranks: np.ndarray, n: int,
                       per: int = WORDS_PER_REGISTRATION) -> np.ndarray:
    """(n * per,) words of `n` registrations of `per` keypoints: `DISTINCT_WORDS` drawn, the
    rest repeats of the registration's own (a photo's repeated textures)."""
    distinct = min(per, DISTINCT_WORDS)
    words = np.empty((n, per), np.uint32)
    words[:, :distinct] = draw_words(rng, ranks, n * distinct).reshape(n, distinct)
    if per > distinct:
        pick = rng.integers(0, distinct, (n, per - distinct))
        words[:, distinct:] = np.take_along_axis(words[:, :distinct], pick, axis=1)
    return words.ravel()


def rss_mb() -> float:
    """Current resident set size (Linux /proc), in MB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 1e6


def synthetic_codes(n: int, rng: np.random.Generator, *, clustered: bool) -> np.ndarray:
    if not clustered:
        return rng.integers(0, 256, (n, 32), dtype=np.uint8)
    centres = rng.integers(0, 256, (1000, 32), dtype=np.uint8)
    codes = centres[rng.integers(0, 1000, n)]
    flips = np.packbits(rng.random((n, 256)) < 0.2, axis=1)
    return codes ^ flips


def perturb(code: np.ndarray, bits: int, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros(256, np.uint8)
    mask[rng.choice(256, bits, replace=False)] = 1
    return code ^ np.packbits(mask)


def numpy_scan(columns: np.ndarray, queries: list[np.ndarray], radius: int) -> dict[int, int]:
    """The plain scan: popcount of every stored code against each query.

    `columns` is the (4, n) uint64 transpose of the codes (the fastest numpy layout here:
    one contiguous popcount per 64-bit word column, MEASUREMENTS.md).
    """
    best: dict[int, int] = {}
    for q in queries:
        qw = q.view(np.uint64)
        d = np.bitwise_count(columns[0] ^ qw[0]).astype(np.uint16)
        for k in range(1, 4):
            d += np.bitwise_count(columns[k] ^ qw[k])
        for i in np.flatnonzero(d <= radius).tolist():
            best[i] = min(best.get(i, 257), int(d[i]))
    return best


def timings(values: list[float]) -> dict[str, float]:
    arr = np.array(values) * 1000
    return {"median": float(np.median(arr)), "p99": float(np.percentile(arr, 99))}


def bench_hamming(n: int, queries: int, rng: np.random.Generator, *, clustered: bool,
                  faiss_too: bool, full_tail: bool = False) -> dict[str, object]:
    gc.collect()
    before = rss_mb()
    n_codes = n + n // 2
    codes = synthetic_codes(n_codes, rng, clustered=clustered)
    # codes[i] belongs to registration refs[i]: the first n are whole-image codes, the rest
    # content-box codes of every other registration.
    refs = np.concatenate([np.arange(n), np.arange(0, n, 2)[: n_codes - n]]).astype(np.int64)
    t = time.perf_counter()
    index = HammingIndex(max_radius=RADIUS, background=False)
    # With `full_tail`, the last TAIL_LIMIT - 1 codes arrive one registration at a time, as
    # uploads add them, and stay in the brute-force tail (one more would start a rebuild).
    bulk = n_codes - (TAIL_LIMIT - 1 if full_tail else 0)
    index.add_many(refs[:bulk], codes[:bulk])
    for pos in range(bulk, n_codes):
        index.add(int(refs[pos]), [codes[pos].tobytes()])
    build = time.perf_counter() - t
    memory = index.nbytes
    rss = rss_mb() - before
    qsets = []
    for k in range(queries):
        if k % 2 == 0:  # a copy: a stored code moved by 4–20 bits, plus two unrelated codes
            base = codes[rng.integers(0, n_codes)]
            q = [perturb(base, int(rng.integers(4, 21)), rng)]
        else:
            q = [rng.integers(0, 256, 32, dtype=np.uint8)]
        q += [rng.integers(0, 256, 32, dtype=np.uint8) for _ in range(2)]
        qsets.append(q)
    ours, scan, fa = [], [], []
    checked = 0
    columns = np.ascontiguousarray(codes.view(np.uint64).reshape(-1, 4).T)
    for k, q in enumerate(qsets):
        blobs = [x.tobytes() for x in q]
        t = time.perf_counter()
        got = {ref: hit.distance for ref, hit in index.search(blobs, RADIUS).items()}
        ours.append(time.perf_counter() - t)
        if k < 20:  # correctness against brute force, on a sample (the scan is slow)
            t = time.perf_counter()
            want_pos = numpy_scan(columns, q, RADIUS)
            scan.append(time.perf_counter() - t)
            want: dict[int, int] = {}
            for pos, d in want_pos.items():
                r = int(refs[pos])
                want[r] = min(want.get(r, 257), d)
            if got != want:
                raise AssertionError(f"index and scan disagree at query {k}: {got} vs {want}")
            checked += 1
    result: dict[str, object] = {
        "registrations": n, "codes": n_codes, "clustered": clustered, "full_tail": full_tail,
        "build_s": build, "index_mb": memory / 1e6, "rss_delta_mb": rss,
        "lookup_ms": timings(ours), "numpy_scan_ms": timings(scan), "checked": checked,
    }
    if faiss_too:
        import faiss

        faiss.omp_set_num_threads(1)
        flat = faiss.IndexBinaryFlat(256)
        flat.add(codes)
        for q in qsets[:20]:
            t = time.perf_counter()
            flat.range_search(np.stack(q), RADIUS + 1)  # faiss: distance < radius
            fa.append(time.perf_counter() - t)
        result["faiss_flat_ms"] = timings(fa)
        del flat
    del index, codes
    gc.collect()
    return result


def bench_words(n: int, queries: int, rng: np.random.Generator) -> dict[str, object]:
    gc.collect()
    before = rss_mb()
    # Real ORB words are skewed (`draw_words`, `registration_words`).
    ranks = rng.permutation(1 << 20).astype(np.uint32)

    def draw(k: int) -> np.ndarray:
        return draw_words(rng, ranks, k)

    index = WordIndex(background=False)
    build = 0.0
    kept: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def signatures(k: int) -> np.ndarray:
        return rng.integers(0, 1 << 32, k, dtype=np.uint64).astype(np.uint32)

    def moved(stored: np.ndarray) -> np.ndarray:
        """Each signature with a few bits flipped (binomial, 3 of 32 at the median)."""
        bits = rng.random((len(stored), 32)) < 3.5 / 32
        return stored ^ (bits * (1 << np.arange(32, dtype=np.uint64))).sum(
            axis=1, dtype=np.uint64).astype(np.uint32)

    targets = set(rng.choice(n, queries, replace=False).tolist())
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        words = registration_words(rng, ranks, stop - start)
        angles = rng.integers(0, 16, len(words), dtype=np.uint8)
        sigs = signatures(len(words))
        for t in [t for t in targets if start <= t < stop]:
            k = (t - start) * WORDS_PER_REGISTRATION
            kept[t] = (words[k : k + WORDS_PER_REGISTRATION].copy(),
                       angles[k : k + WORDS_PER_REGISTRATION].copy(),
                       sigs[k : k + WORDS_PER_REGISTRATION].copy())
        t0 = time.perf_counter()
        index.add_many(np.arange(start, stop, dtype=np.int64),
                       np.full(stop - start, WORDS_PER_REGISTRATION), words, angles, sigs)
        build += time.perf_counter() - t0
        del words, angles, sigs
    memory = index.nbytes
    rss = rss_mb() - before
    # The same postings as persisted segments store them (3 bytes, `pack_postings`): timed
    # side by side with the unpacked ones, query by query, in CPU time; answers must be equal.
    packed = WordIndex(background=False)
    for seg in index._segments:
        packed.attach(dataclasses.replace(
            seg, postings=packed_view(pack_postings(seg.postings)), persisted=True,
            packed=True))
    cpu: dict[str, list[float]] = {"uint32": [], "packed": []}
    lat = []
    found = 0
    for target, (own, own_angles, own_signatures) in kept.items():
        k = QUERY_WORDS // 10
        pick = rng.choice(WORDS_PER_REGISTRATION, k, replace=False)
        qw = np.concatenate([own[pick], draw(QUERY_WORDS - k)])
        qa = np.concatenate([(own_angles[pick] + 3) % 16,  # the copy is turned by 3 bins
                             rng.integers(0, 16, QUERY_WORDS - k, dtype=np.uint8)])
        qs = np.concatenate([moved(own_signatures[pick]), signatures(QUERY_WORDS - k)])
        t = time.perf_counter()
        # As the engine: the words of WORD_PROBES keypoints are probed one bit away too, within
        # what the budget leaves (here the first ones, which hold the planted keypoints).
        top = index.search(qw, qa, qs, limit=MAX_CANDIDATES, min_votes=MIN_VOTES,
                           max_distance=SIGNATURE_DISTANCE, sigma=SIGNATURE_SIGMA,
                           max_postings=WORD_POSTINGS_BUDGET,
                           probe=np.arange(min(len(qw), WORD_PROBES)),
                           max_probe_postings=WORD_PROBE_POSTINGS)
        lat.append(time.perf_counter() - t)
        found += any(x.ref == target for x in top)
        for name, which in (("uint32", index), ("packed", packed)):
            c = time.thread_time()
            again = which.search(qw, qa, qs, limit=MAX_CANDIDATES, min_votes=MIN_VOTES,
                                 max_distance=SIGNATURE_DISTANCE, sigma=SIGNATURE_SIGMA,
                                 max_postings=WORD_POSTINGS_BUDGET,
                                 probe=np.arange(min(len(qw), WORD_PROBES)),
                                 max_probe_postings=WORD_PROBE_POSTINGS)
            cpu[name].append(time.thread_time() - c)
            assert again == top, "packed postings changed an answer"
    stored = sum(len(seg.postings) for seg in index._segments)
    result = {"registrations": n, "postings": stored, "build_s": build,
              "index_mb": memory / 1e6, "rss_delta_mb": rss, "lookup_ms": timings(lat),
              "planted_found": found / len(kept), "packed_mb": packed.nbytes / 1e6,
              "cpu_ms": {k: timings(v) for k, v in cpu.items()}}
    del index, packed
    gc.collect()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--no-faiss", action="store_true")
    args = parser.parse_args(argv)
    try:
        import faiss  # noqa: F401
        have_faiss = not args.no_faiss
    except ImportError:
        have_faiss = False
    rng = np.random.default_rng(2024)
    sizes = [int(s) for s in args.sizes.split(",")]
    report: dict[str, object] = {"hamming": [], "words": []}
    print("| index | registrations | build | index memory | RSS growth | lookup median | "
          "lookup p99 | numpy scan median | faiss flat median |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        # (clustered, full_tail): the variants at the smallest size only
        cases = [(False, False), (True, False), (False, True)] if n == sizes[0] else [
            (False, False)]
        for clustered, full_tail in cases:
            r = bench_hamming(n, args.queries, rng, clustered=clustered, faiss_too=have_faiss,
                              full_tail=full_tail)
            report["hamming"].append(r)  # type: ignore[union-attr]
            lk, sc = r["lookup_ms"], r["numpy_scan_ms"]
            fa = r.get("faiss_flat_ms")
            label = (" (clustered)" if clustered else "") + (
                f" ({TAIL_LIMIT - 1:,} of them in the unindexed tail)" if full_tail else "")
            print(f"| PDQ Hamming{label} | {n:,} | "
                  f"{r['build_s']:.1f} s | {r['index_mb']:.0f} MB | {r['rss_delta_mb']:.0f} MB | "
                  f"{lk['median']:.2f} ms | {lk['p99']:.2f} ms | {sc['median']:.1f} ms | "  # type: ignore[index]
                  + (f"{fa['median']:.1f} ms |" if fa else "- |"), flush=True)  # type: ignore[index]
        w = bench_words(n, args.queries, rng)
        report["words"].append(w)  # type: ignore[union-attr]
        print(f"| ORB words ({w['postings'] / n:.0f} per registration) | {n:,} | "
              f"{w['build_s']:.1f} s | {w['index_mb']:.0f} MB | "
              f"{w['rss_delta_mb']:.0f} MB | {w['lookup_ms']['median']:.2f} ms | "  # type: ignore[index]
              f"{w['lookup_ms']['p99']:.2f} ms | - | - |", flush=True)  # type: ignore[index]
        cm = w["cpu_ms"]
        print(f"|   packed postings (persisted segments) | {n:,} | | {w['packed_mb']:.0f} MB "
              f"| | CPU median {cm['packed']['median']:.2f} ms vs {cm['uint32']['median']:.2f}"  # type: ignore[index]
              f" ms unpacked | p99 {cm['packed']['p99']:.2f} vs {cm['uint32']['p99']:.2f} ms |"  # type: ignore[index]
              " | |", flush=True)
    largest = max(sizes)
    ham = [r for r in report["hamming"] if r["registrations"] == largest]  # type: ignore[union-attr,index]
    wd = [r for r in report["words"] if r["registrations"] == largest]  # type: ignore[union-attr,index]
    if largest >= 10_000_000 and ham and wd:
        report["at_10m_ms"] = {"pdq": ham[0]["lookup_ms"]["median"],
                               "words": wd[0]["lookup_ms"]["median"]}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "index.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
