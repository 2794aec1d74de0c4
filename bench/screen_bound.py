"""How often the commit lock's screen must search: `engine.could_match` on product shots.

The screen (`registry._ForeignScreen.check`) looks an upload up in a scratch matcher of
the rows another process committed since its look only when `could_match` says some row
could match. Each pair here is (an upload, another process's row), two distinct product
shots of `bench/productshots.py` as `bench/load.py` uploads them. For every pair this
prints what the bound says, before (fewer than MIN_VOTES distinct shared words: no,
commit 91d8293) and now (also each vote's signature test and its angle bin pair, as
the word vote counts them), what a scratch look finds, and the bound's thread CPU; it
fails if the bound says no where the look reports the row (the bound must be exact).

    python -m bench.screen_bound --shots 240
"""

from __future__ import annotations

import argparse
import statistics
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from bench.productshots import product_shots
from shotstamp_service.matching.engine import (
    MIN_VOTES,
    PDQ_CANDIDATE,
    IndexEntry,
    Matcher,
    could_match,
    index_entry,
    word_query,
)
from shotstamp_service.matching.fingerprint import Fingerprint, fingerprint
from shotstamp_service.matching.index import WordQuery


def _shots(path: Path) -> tuple[Fingerprint, Fingerprint]:
    """The upload's fingerprint, and the same as another process's row reaches the screen."""
    fp = fingerprint(path.read_bytes())
    perceptual, features = fp.to_store()
    return fp, Fingerprint.from_store(fp.sha256, perceptual, features, fp.width, fp.height)


def shared_words_bound(fp: Fingerprint, query: WordQuery | None, stored: Fingerprint,
                       entry: IndexEntry) -> bool:
    """`could_match` as of 91d8293: a near PDQ code, or MIN_VOTES distinct shared words."""
    codes = [int.from_bytes(code, "big") for _, code in entry.good + entry.low]
    for _, code, _ in fp.pdq_codes(query=True):
        mine = int.from_bytes(code, "big")
        if any((mine ^ theirs).bit_count() <= PDQ_CANDIDATE + 1 for theirs in codes):
            return True
    if query is None or entry.words is None:
        return False
    indexed = np.asarray(entry.words[0], np.uint32)
    shared = np.zeros(len(indexed), np.bool_)
    for part in (query.words[: query.exact], query.words[query.exact:]):
        if len(part):
            at = np.minimum(np.searchsorted(part, indexed), len(part) - 1)
            shared |= part[at] == indexed
    return len(set(indexed[shared].tolist())) >= MIN_VOTES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shots", type=int, default=240, help="half uploads, half rows")
    args = parser.parse_args()
    with Pool(2) as pool:
        pairs = pool.map(_shots, product_shots(args.shots), chunksize=8)
    half = args.shots // 2
    uploads = [fp for fp, _ in pairs[:half]]
    rows = [(row, index_entry(row)) for _, row in pairs[half:]]
    before = now = reported = 0
    cost_before: list[int] = []
    cost_now: list[int] = []
    for fp in uploads:
        query = word_query(fp)
        for ref, (row, entry) in enumerate(rows, 1):
            t = time.thread_time_ns()
            old = shared_words_bound(fp, query, row, entry)
            cost_before.append(time.thread_time_ns() - t)
            t = time.thread_time_ns()
            new = could_match(fp, query, row, entry)
            cost_now.append(time.thread_time_ns() - t)
            scratch = Matcher(background=False)
            scratch.add(ref, row, entry)
            seen = scratch.look(fp, stop_at_copy=False)
            found = bool(seen.found or seen.candidates)
            if found and not new:
                raise SystemExit(f"could_match says no where a look reports row {ref}")
            before += old
            now += new
            reported += found
    total = len(uploads) * len(rows)
    print(f"{total} pairs of distinct product shots (an upload, another process's row)")
    print("| | pairs | share | bound's CPU, median |")
    print("|---|---|---|---|")
    print(f"| bound before (shared words) says yes | {before} | {before / total:.1%} "
          f"| {statistics.median(cost_before) / 1e3:.1f} µs |")
    print(f"| bound now (signatures, angle bins) says yes | {now} | {now / total:.1%} "
          f"| {statistics.median(cost_now) / 1e3:.1f} µs |")
    print(f"| a scratch look reports the row (a candidate) | {reported} "
          f"| {reported / total:.1%} | |")


if __name__ == "__main__":
    main()
