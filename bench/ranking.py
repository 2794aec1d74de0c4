"""CPU cost per upload of the shortlist between stage 1 and stage 2 (`engine.shortlist`).

    PYTHONPATH=sdk:service:. python -m bench.ranking [--photos DIR] [--rounds 20]

At a million registrations and more every upload that stage 1 does not decide hands over a full
shortlist (SHORTLIST word candidates, the word index's limit). Measured per upload, CPU time of
this thread (`time.thread_time`), medians over `--rounds` queries:

- reading SHORTLIST feature blobs from SQLite (the store's query, a 20,000-row table of real
  blobs) against MAX_CANDIDATES before the shortlist;
- parsing them, the query's word tables (`ranking.QueryWords`) and `ranking.consistency`;
- the full verification (`verification.verify_pair`) of one candidate, for comparison: the
  shortlist verifies MAX_CANDIDATES at most, and none below MIN_CONSISTENT, where the ranking
  before it verified MAX_CANDIDATES whatever they were.

The stored images are corpus photos (`SHOTSTAMP_PHOTOS`) or, without a corpus, generated
ones; the queries are 80 % crops of some of them, so each shortlist holds its original.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from shotstamp_service.matching.engine import (
    MAX_CANDIDATES,
    SHORTLIST,
    consistent_keypoints,
    shortlist,
)
from shotstamp_service.matching.features import LocalFeatures
from shotstamp_service.matching.fingerprint import fingerprint
from shotstamp_service.matching.ranking import QueryWords
from shotstamp_service.matching.verification import verify_pair
from tests.kit import imagegen
from tests.kit.corpus import corpus_dir, load_photos, original_bytes

TABLE_ROWS = 20_000
T = TypeVar("T")


def _images(root: Path | None, n: int) -> list[tuple[bytes, bytes]]:
    """(registered bytes, the bytes of its 80 % crop) for `n` images."""
    out = []
    if root is not None and (root / "manifest.tsv").exists():
        photos = [p for p in load_photos(root) if min(p.width, p.height) >= 256]
        random.Random(7).shuffle(photos)
        for p in photos[:n]:
            data, image = original_bytes(root / p.file)
            w, h = image.size
            crop = image.crop((w // 10, h // 10, w - w // 10, h - h // 10))
            out.append((data, imagegen.encode(crop)))
        return out
    for seed in range(n):
        image = imagegen.detailed_photo(seed)
        w, h = image.size
        out.append((imagegen.encode(image),
                    imagegen.encode(image.crop((w // 10, h // 10, w - w // 10, h - h // 10)))))
    return out


def _cpu(fn: Callable[..., T], *args: Any) -> tuple[float, T]:
    """(CPU ms of this thread, result) of fn(*args)."""
    t = time.thread_time()
    result = fn(*args)
    return (time.thread_time() - t) * 1000, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    root = args.photos or corpus_dir()
    pairs = _images(root, SHORTLIST + args.rounds)
    stored = [fingerprint(data).features for data, _ in pairs]
    blobs = [b for b in stored if b is not None]
    queries = [fingerprint(crop).features for _, crop in pairs[: args.rounds]]

    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE registrations (seq INTEGER PRIMARY KEY, features BLOB)")
    db.executemany("INSERT INTO registrations VALUES (?, ?)",
                   ((i, blobs[i % len(blobs)]) for i in range(TABLE_ROWS)))
    rng = random.Random(1)

    def read(k: int) -> None:
        wanted = sorted(rng.sample(range(TABLE_ROWS), k))
        marks = ",".join("?" * k)
        for row in db.execute(f"SELECT seq, features FROM registrations WHERE seq IN ({marks})",
                              wanted):
            bytes(row[1])

    figures: dict[str, list[float]] = {k: [] for k in (
        f"read {MAX_CANDIDATES} blobs (before)", f"read {SHORTLIST} blobs", "parse them",
        "query word tables", f"consistency of {SHORTLIST}", "shortlist in all",
        "verify_pair, one candidate")}
    names = list(figures)
    for r, query_blob in enumerate(queries):
        if query_blob is None:
            continue
        query = LocalFeatures.from_bytes(query_blob)
        # its original first, then the others: the shortlist's size at scale
        chosen = [blobs[r], *[b for i, b in enumerate(blobs) if i != r][: SHORTLIST - 1]]
        ms = [_cpu(read, MAX_CANDIDATES)[0], _cpu(read, SHORTLIST)[0]]
        t, parsed = _cpu(lambda blobs: [LocalFeatures.from_bytes(b) for b in blobs], chosen)
        ms.append(t)
        t, prepared = _cpu(QueryWords, query)
        ms += [t, _cpu(consistent_keypoints, prepared, parsed)[0]]
        t, picked = _cpu(shortlist, query, list(enumerate(parsed)))
        assert 0 in picked, "the original is not in the shortlist"
        ms += [t, _cpu(verify_pair, query, parsed[1])[0]]
        for name, value in zip(names, ms, strict=True):
            figures[name].append(value)
    print(f"# Shortlist cost per upload, {len(figures[names[0]])} queries, CPU ms (median)")
    print()
    print("| step | ms |")
    print("|---|---|")
    for name, values in figures.items():
        print(f"| {name} | {statistics.median(values):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
