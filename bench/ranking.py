"""CPU cost per upload of the shortlist between stage 1 and stage 2 (`engine.shortlist`).

    PYTHONPATH=sdk:service:. python -m bench.ranking [--photos DIR] [--rounds 20]
        [--sizes 32,48,64] [--against OLD/service/shotstamp_service/matching/ranking.py]

At a million registrations and more every upload that stage 1 does not decide hands over a full
shortlist (SHORTLIST word candidates, the word index's limit). Measured per upload, CPU time of
this thread (`time.thread_time`), medians over `--rounds` queries, with the heap kept as the
pool's workers keep it (`forkserver_init`: glibc's mallopt, so large arrays are not mapped and
page-faulted afresh on every call):

- reading the feature blobs from SQLite (the store's query, a 20,000-row table of real blobs)
  for MAX_CANDIDATES (before the shortlist) and for each shortlist size, and pickling them
  into the pool task and back (`pool.verify` sends every candidate's blob to the worker);
- the steps of the shortlist: the candidates' keypoints read from their blobs
  (`ranking.StoredKeypoints`), the query's words (`ranking.QueryWords`), the consistency vote
  (`ranking.consistency`), and all of `engine.shortlist` (what the pool task pays);
- the word sampler (`features.word_ids`) at the upload's size and the shortlist's (and, with
  `--against`, the byte tables the older ranking had beside it);
- the full verification (`verification.verify_pair`) of one candidate, for comparison.

`--against` loads the ranking module of an older tree (e.g. `git archive main`) and runs its
shortlist on the same blobs, alternating with today's in each round: its steps, and a check
that both give every candidate the same consistency.

The stored images are corpus photos (`SHOTSTAMP_PHOTOS`) or, without a corpus, generated
ones; the queries are 80 % crops of some of them, so each shortlist holds its original.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.util
import pickle
import random
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import numpy as np

from shotstamp_service.matching.engine import (
    INDEX_CENTRE,
    INDEX_KEYPOINTS,
    MAX_CANDIDATES,
    SHORTLIST,
    index_keypoints,
    shortlist,
)
from shotstamp_service.matching.features import LocalFeatures, word_ids
from shotstamp_service.matching.fingerprint import fingerprint
from shotstamp_service.matching.ranking import QueryWords, StoredKeypoints, consistency
from shotstamp_service.matching.verification import verify_pair
from tests.kit import imagegen
from tests.kit.corpus import corpus_dir, load_photos, original_bytes

TABLE_ROWS = 20_000
T = TypeVar("T")


def _keep_heap() -> None:
    """The pool workers' heap settings (matching/forkserver_init.py), in this process."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: its defaults stay
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 16 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 64 << 20)  # M_TRIM_THRESHOLD


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


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("ranking_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _old_shortlist(old: ModuleType, query: LocalFeatures, blobs: list[bytes]
                   ) -> tuple[list[float], np.ndarray]:
    """The steps of the older shortlist: parse every blob, its word tables, its consistency."""
    t_parse, parsed = _cpu(lambda: [LocalFeatures.from_bytes(b) for b in blobs])
    t_words, words = _cpu(old.QueryWords, query)
    t_vote, scores = _cpu(lambda: old.consistency(words, parsed,
                                                  [index_keypoints(p) for p in parsed]))
    return [t_parse, t_words, t_vote, t_parse + t_words + t_vote], scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--sizes", default=str(SHORTLIST),
                        help="shortlist sizes to measure, comma-separated")
    parser.add_argument("--against", type=Path, default=None,
                        help="an older matching/ranking.py to run side by side")
    args = parser.parse_args(argv)
    _keep_heap()
    sizes = [int(s) for s in args.sizes.split(",")]
    root = args.photos or corpus_dir()
    pairs = _images(root, max(sizes) + args.rounds)
    stored = [fingerprint(data).to_store()[1] for data, _ in pairs]
    blobs = [b for b in stored if b is not None]
    queries = [fingerprint(crop).features for _, crop in pairs[: args.rounds]]
    old = _load(args.against) if args.against else None

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

    figures: dict[str, list[float]] = {f"read {MAX_CANDIDATES} blobs (before the shortlist)": []}
    same = 0
    for r, query_blob in enumerate(queries):
        if query_blob is None:
            continue
        query = LocalFeatures.from_bytes(query_blob)
        figures[f"read {MAX_CANDIDATES} blobs (before the shortlist)"].append(
            _cpu(read, MAX_CANDIDATES)[0])
        for size in sizes:
            # its original first, then the others: the shortlist's size at scale
            chosen = [blobs[r], *[b for i, b in enumerate(blobs) if i != r][: size - 1]]
            ms = {f"read {size} blobs": _cpu(read, size)[0]}
            items = [(i, b, None, True) for i, b in enumerate(chosen)]
            ms[f"pickle the pool task's items and back, {size}"] = _cpu(
                lambda items: pickle.loads(pickle.dumps(items, pickle.HIGHEST_PROTOCOL)),
                items)[0]
            if old is not None:
                steps, old_scores = _old_shortlist(old, query, chosen)
                for name, value in zip(("parse them (before)", "query word tables (before)",
                                        "consistency (before)", "shortlist in all (before)"),
                                       steps, strict=True):
                    ms[f"{name}, {size}"] = value
            t, keypoints = _cpu(StoredKeypoints.from_blobs, chosen, INDEX_KEYPOINTS,
                                INDEX_CENTRE)
            ms[f"their keypoints (StoredKeypoints), {size}"] = t
            t, words = _cpu(QueryWords, query)
            ms[f"query words (QueryWords), {size}"] = t
            t, scores = _cpu(consistency, words, keypoints)
            ms[f"consistency, {size}"] = t
            if size == sizes[0]:  # the word sampler at the upload's size and at the shortlist's
                for name, fn in (("features.word_ids", word_ids),
                                 *((("the byte tables (before)", old.word_ids),) if old else ())):
                    ms[f"{name}, the upload's descriptors"] = _cpu(fn, query.descriptors)[0]
                    ms[f"{name}, the shortlist's {len(keypoints.owner) // 1000}k descriptors"] = \
                        _cpu(fn, keypoints.descriptors)[0]
            t, picked = _cpu(shortlist, query, list(enumerate(chosen)))
            ms[f"shortlist in all, {size}"] = t
            assert 0 in picked, "the original is not in the shortlist"
            if old is not None:
                assert np.array_equal(scores, old_scores), "the rankings differ"
                same += 1
            for name, value in ms.items():
                figures.setdefault(name, []).append(value)
        figures.setdefault("verify_pair, one candidate", []).append(
            _cpu(verify_pair, query, LocalFeatures.from_bytes(blobs[1]))[0])
    rounds = len(figures["verify_pair, one candidate"])
    print(f"# Shortlist cost per upload, {rounds} queries, CPU ms (median)")
    if old is not None:
        print(f"# against {args.against}: the same consistency for every candidate in all "
              f"{same} shortlists")
    print()
    print("| step | ms |")
    print("|---|---|")
    for name, values in figures.items():
        print(f"| {name} | {statistics.median(values):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
