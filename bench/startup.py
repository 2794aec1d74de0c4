"""Start-up and shared memory of the persisted index (matching/segments.py), at 10 M.

    PYTHONPATH=sdk:service python -m bench.startup build DIR [--registrations 10000000]
    PYTHONPATH=sdk:service python -m bench.startup measure DIR [--queries 200]
    PYTHONPATH=sdk:service python -m bench.startup store DIR [--registrations 30000]
    PYTHONPATH=sdk:service python -m bench.startup compare DIR --before SRC [--queries 200]
        [--before-directory DIR0] [--touch-first]
    PYTHONPATH=sdk:service python -m bench.startup repack DIR --into DST

`build` writes synthetic registrations as `bench/index.py` makes them (1.5 uniform PDQ codes
per registration, 128 keypoints with ≈ 120 distinct real-shaped words (`bench.index.draw_words`)
each with a random 32-bit signature) straight
into a segment directory, `CHUNK` registrations per segment, through `SegmentDir.add_arrays`
(so the tiered merge runs as in service). `measure` launches two processes one after the
other; each maps the segments into a `Matcher`, bulk-loads `TAIL` registrations (just under
a segment's worth, what a start reads from the store after the last segment), answers a
lookup, and reports the time from its launch to that first answer (wall, and the
process's CPU time: the host is shared), then times in CPU time `--queries` lookups as
the engine does them (three PDQ codes within radius 31, and a word vote
of 300 words with WORD_PROBES probed). The parent reads /proc/PID/smaps_rollup of both (Rss,
Pss, private pages) once both have answered all their queries. Before timing, each fills
the tails to their fullest (the PDQ brute-force tail one code short of a table rebuild, the
word tail one registration short of a freeze).

`compare` times two versions of `matching/index.py` side by side on the same mapped
segments in one process: this checkout's and the one under SRC (an export of another
commit, `git archive main | tar -x -C SRC`), loaded as a second module. Each gets the same
persisted parts (its own classes over the same arrays) and the same tails, filled to their
fullest as `measure` fills them; the lookups alternate between the two query by query (which
goes first alternating too), PDQ and word vote timed separately in CPU time of the thread,
with the page faults of each (`getrusage`); every answer is asserted equal. With
`--before-directory`, the other version maps that directory instead (another build of the
same registrations, e.g. in the other version's layout; both are then in the page cache).

`repack` writes DST as the format /5 form of the format /4 segments in DIR: the registration
map's and the word parts' refs as int32 and sellers as uint16 (`segments._narrow_refs`,
`_narrow_sellers`), every other file hard-linked (the same inode: one page cache); the same
registrations and index in fewer bytes, without the hour of a rebuild.

`store` fills a SQLite store with registrations whose rows are real (fingerprints, feature blobs
and thumbnails of corpus photos, cycled, each with its own id and digest), then times the
registry's index load three ways in one run: without segments (the release before them), the
first start with an index directory (writing its segments), and a later start.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.index import draw_words, registration_words
from shotstamp_service.matching import index as index_module
from shotstamp_service.matching.engine import (
    MAX_CANDIDATES,
    MIN_VOTES,
    PDQ_CANDIDATE,
    SIGNATURE_DISTANCE,
    SIGNATURE_SIGMA,
    WORD_POSTINGS_BUDGET,
    WORD_PROBE_POSTINGS,
    WORD_PROBE_POSTINGS_AT_SCALE,
    WORD_PROBES,
    Matcher,
)
from shotstamp_service.matching.index import SEGMENT_POSTINGS, TAIL_LIMIT
from shotstamp_service.matching.segments import (
    FORMAT,
    MANIFEST,
    SegmentDir,
    _crc,
    _narrow_refs,
    _narrow_sellers,
)
from shotstamp_service.registry import SEGMENT_ROWS

WORDS = 128
CHUNK = 625_000  # registrations a segment: ≈ 6 GB of scratch to build one at 10 M real-shaped
TAIL = SEGMENT_ROWS - 1  # registrations in memory, just under a segment's worth
# PDQ codes of a segment's worth of uploads (1.5 a registration): the most a process that
# picks up segments (Registry.refresh) keeps in the brute-force tail.
BOUNDED_TAIL = SEGMENT_ROWS * 3 // 2 - 1
QUERY_WORDS = 300


def _words(rng: np.random.Generator, ranks: np.ndarray, k: int) -> np.ndarray:
    return draw_words(rng, ranks, k)


def _signatures(rng: np.random.Generator, k: int) -> np.ndarray:
    return rng.integers(0, 1 << 32, k, dtype=np.uint64).astype(np.uint32)


def _chunk(rng: np.random.Generator, ranks: np.ndarray, start: int, stop: int,
           ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray],
                      tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    n = stop - start
    refs = np.arange(start + 1, stop + 1, dtype=np.int64)  # seqs start at 1
    code_refs = np.concatenate([refs, refs[::2]])
    codes = rng.integers(0, 256, (len(code_refs), 32), dtype=np.uint8)
    tags = np.concatenate([np.zeros(n, np.uint8), np.ones(len(code_refs) - n, np.uint8)])
    k = n * WORDS
    words = (refs, np.full(n, WORDS, np.int64), registration_words(rng, ranks, n, WORDS),
             rng.integers(0, 16, k, dtype=np.uint8), _signatures(rng, k))
    return refs, (code_refs, codes, tags), words


def build(directory: Path, registrations: int) -> None:
    rng = np.random.default_rng(2024)
    ranks = rng.permutation(1 << 20).astype(np.uint32)
    (directory / "ranks.npy").parent.mkdir(parents=True, exist_ok=True)
    np.save(directory.parent / f"{directory.name}.ranks.npy", ranks)
    segments = SegmentDir(directory)
    empty = (np.zeros(0, np.int64), np.zeros((0, 32), np.uint8), np.zeros(0, np.uint8))
    for start in range(segments.through, registrations, CHUNK):
        stop = min(registrations, start + CHUNK)
        t = time.perf_counter()
        refs, pdq, words = _chunk(rng, ranks, start, stop)
        sellers = [f"seller-{r % 1000}" for r in refs.tolist()]
        segments.add_arrays(refs, sellers, pdq, empty, words, [], start, stop)
        print(f"segment through {stop:,}: {time.perf_counter() - t:.1f} s", flush=True)


def _serve(directory: Path, launched: float, queries: int) -> None:
    """The child: map, fill the tail, answer, time lookups, then wait for the parent."""
    segments = SegmentDir(directory).open()
    matcher = Matcher(background=False)
    for seg in segments:
        matcher.attach(seg)
    through = segments[-1].through
    rng = np.random.default_rng(7)
    ranks = np.load(directory.parent / f"{directory.name}.ranks.npy")
    # What a start reads from the store after the last segment: at most a segment's worth,
    # bulk-loaded (parsing those rows' feature blobs is not counted here: ~95 µs each).
    refs, pdq, words = _chunk(rng, ranks, through, through + TAIL)
    matcher._refs.add_many(refs)
    matcher._pdq.add_many(pdq[0], pdq[1], pdq[2])
    matcher._words.add_many(*words)
    stored = segments[-1].pdq.codes

    def lookup() -> tuple[float, float]:
        base = stored[int(rng.integers(0, len(stored)))]
        flip = np.zeros(256, np.uint8)
        flip[rng.choice(256, 10, replace=False)] = 1
        q = [(base ^ np.packbits(flip)).tobytes()] + [
            rng.integers(0, 256, 32, dtype=np.uint8).tobytes() for _ in range(2)]
        qw = _words(rng, ranks, QUERY_WORDS)
        t0 = time.process_time()  # CPU time: the host is shared, wall time is not ours
        matcher._pdq.search(q, PDQ_CANDIDATE)
        matcher._pdq_low.search(q, PDQ_CANDIDATE)
        t1 = time.process_time()
        matcher._words.search(qw, rng.integers(0, 16, QUERY_WORDS, dtype=np.uint8),
                              _signatures(rng, QUERY_WORDS), limit=MAX_CANDIDATES,
                              min_votes=MIN_VOTES, max_distance=SIGNATURE_DISTANCE,
                              sigma=SIGNATURE_SIGMA, max_postings=WORD_POSTINGS_BUDGET,
                              probe=np.arange(WORD_PROBES), max_probe_postings=WORD_PROBE_POSTINGS,
                              scale_probe_postings=WORD_PROBE_POSTINGS_AT_SCALE)
        return t1 - t0, time.process_time() - t1

    lookup()
    first = time.time() - launched
    first_cpu = time.process_time()
    # The tail at its fullest: the PDQ index's brute-force tail one code short of a rebuild,
    # the word index's one registration short of a freeze, added one at a time as uploads.
    # First at BOUNDED_TAIL codes, the most a process that picks up segments holds there
    # (a segment's worth of uploads), timed; then at TAIL_LIMIT - 1 (before pickup, a tail
    # only a table rebuild emptied), timed again in the same process.
    top = through + TAIL
    for k in range(SEGMENT_POSTINGS // WORDS - 1):
        matcher._words.add(top + 1 + k, _words(rng, ranks, WORDS),
                           rng.integers(0, 16, WORDS, dtype=np.uint8), _signatures(rng, WORDS))

    def stats(values: list[float]) -> dict[str, float]:
        return {"median": float(np.median(values)), "p99": float(np.percentile(values, 99))}

    def timed() -> tuple[list[float], list[float], list[float]]:
        pdq, words, total = [], [], []
        for _ in range(queries):
            a, b = lookup()
            pdq.append(a * 1000)
            words.append(b * 1000)
            total.append((a + b) * 1000)
        return pdq, words, total

    bounded: dict[str, object] = {}
    added = 0
    for goal in (BOUNDED_TAIL, TAIL_LIMIT - 1):
        for k in range(added, goal):
            matcher._pdq.add(top + 1 + k, [rng.integers(0, 256, 32, dtype=np.uint8).tobytes()],
                             [0])
        added = goal
        pdq, words, total = timed()
        if goal == BOUNDED_TAIL:
            bounded = {"tail_codes": goal, "pdq_ms": stats(pdq), "lookup_ms": stats(total)}

    print(json.dumps({"first_answer_s": first, "first_answer_cpu_s": first_cpu,
                      "registrations": len(matcher),
                      "segments": len(segments), "pdq_ms": stats(pdq), "words_ms": stats(words),
                      "lookup_ms": stats(total), "index_bytes": matcher.nbytes,
                      "bounded": bounded}), flush=True)
    sys.stdin.readline()  # hold the mappings until the parent has read /proc


def _rollup(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        out[key] = int(value.split()[0]) * 1024
    return out


def _file_sizes(directory: Path) -> dict[str, int]:
    """Bytes of the listed segments' files by kind: what the machine holds once they are hot
    in the page cache, shared by every process that maps them."""
    kinds = {"word postings": 0, "word signatures": 0, "word refs and offsets": 0, "PDQ": 0,
             "registration map": 0}
    for entry in SegmentDir(directory).manifest():
        for name, (size, _) in entry["files"].items():
            if name.startswith("words"):
                kind = ("word postings" if ".postings" in name else "word signatures"
                        if ".signatures" in name else "word refs and offsets")
            elif name.startswith(("pdq.", "low.")):
                kind = "PDQ"
            else:
                kind = "registration map"
            kinds[kind] += size
    return kinds


def measure(directory: Path, queries: int) -> None:
    children, reports = [], []
    for _ in range(2):
        child = subprocess.Popen(
            [sys.executable, "-m", "bench.startup", "_serve", str(directory), str(time.time()),
             str(queries)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        reports.append(json.loads(child.stdout.readline()))
        children.append(child)
    rollups = [_rollup(c.pid) for c in children]
    for child in children:
        assert child.stdin is not None
        child.stdin.write("\n")
        child.stdin.flush()
        child.wait()
    index_bytes = reports[0]["index_bytes"]
    print("| process | first answer after launch (CPU) | lookup median | p99 | PDQ median | words "
          "median | Rss | Pss | private (USS) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k, (r, m) in enumerate(zip(reports, rollups, strict=True)):
        uss = m["Private_Clean"] + m["Private_Dirty"]
        print(f"| {k + 1} | {r['first_answer_s']:.1f} s ({r['first_answer_cpu_s']:.1f} s) | "
              f"{r['lookup_ms']['median']:.2f} ms | "
              f"{r['lookup_ms']['p99']:.2f} ms | {r['pdq_ms']['median']:.2f} ms | "
              f"{r['words_ms']['median']:.2f} ms | {m['Rss'] / 1e9:.2f} GB | "
              f"{m['Pss'] / 1e9:.2f} GB | {uss / 1e9:.2f} GB |")
    for k, r in enumerate(reports):
        b = r["bounded"]
        print(f"process {k + 1}, PDQ brute-force tail of {b['tail_codes']:,} codes (the bound "
              f"with pickup): lookup median {b['lookup_ms']['median']:.2f} ms, p99 "
              f"{b['lookup_ms']['p99']:.2f} ms, PDQ median {b['pdq_ms']['median']:.2f} ms; "
              f"at {TAIL_LIMIT - 1:,} codes: {r['lookup_ms']['median']:.2f} / "
              f"{r['lookup_ms']['p99']:.2f} / {r['pdq_ms']['median']:.2f} ms")
    second_uss = rollups[1]["Private_Clean"] + rollups[1]["Private_Dirty"]
    print(f"\n{reports[0]['registrations']:,} registrations in {reports[0]['segments']} "
          f"segment(s); index {index_bytes / 1e9:.2f} GB; the second process's private pages "
          f"are {100 * second_uss / index_bytes:.1f} % of it")
    sizes = _file_sizes(directory)
    files = sum(sizes.values())
    print(f"segment files (shared by every process, once in the page cache): "
          f"{files / 1e9:.2f} GB = " + ", ".join(f"{k} {v / 1e9:.2f} GB" for k, v in
                                                sizes.items()))
    print(f"for the machine with both processes: {files / 1e9:.2f} GB + private "
          + " + ".join(f"{(m['Private_Clean'] + m['Private_Dirty']) / 1e9:.2f}"
                       for m in rollups) + " GB")


def _port(obj: object, module: object) -> object:
    """`obj` (a dataclass of index.py, or lists and tuples of them) rebuilt from `module`'s
    classes of the same names over the same arrays; fields `module`'s class lacks dropped."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        cls = getattr(module, type(obj).__name__)
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {f.name: _port(getattr(obj, f.name), module)
                  for f in dataclasses.fields(obj) if f.name in names}
        if type(obj).__name__ == "_Tables" and getattr(obj, "size", 0):
            from bench.full_path import export_masks

            fields["masks"] = export_masks(module, obj, PDQ_CANDIDATE)  # its own probes
        return cls(**fields)
    if isinstance(obj, list):
        return [_port(x, module) for x in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_port(x, module) for x in obj)
    return obj


def compare(directory: Path, before: Path, queries: int,
            before_directory: Path | None = None, touch_first: bool = False) -> None:
    from bench.full_path import export_index

    old = export_index(before)  # its index.py with its own kernels.py
    segments = SegmentDir(directory).open()
    mapped = {old: SegmentDir(before_directory).open() if before_directory else segments,
              index_module: segments}
    assert mapped[old][-1].through == segments[-1].through  # the same registrations
    through = segments[-1].through
    ranks = np.load(directory.parent / f"{directory.name}.ranks.npy")
    rng = np.random.default_rng(7)
    _, pdq, words = _chunk(rng, ranks, through, through + TAIL)
    top = through + TAIL
    word_tail = [(top + 1 + k, _words(rng, ranks, WORDS),
                  rng.integers(0, 16, WORDS, dtype=np.uint8), _signatures(rng, WORDS))
                 for k in range(SEGMENT_POSTINGS // WORDS - 1)]
    pdq_tail = rng.integers(0, 256, (TAIL_LIMIT - 1, 32), dtype=np.uint8)
    indexes = []
    t0 = time.process_time()
    for module in (old, index_module):
        good = module.HammingIndex(max_radius=PDQ_CANDIDATE, background=False)
        low = module.HammingIndex(max_radius=PDQ_CANDIDATE, background=False)
        vote = module.WordIndex(background=False)
        for seg in mapped[module]:
            good.attach(_port(seg.pdq, module))
            low.attach(_port(seg.pdq_low, module))
            for part in seg.words:
                vote.attach(_port(part, module))
        good.add_many(*pdq)
        vote.add_many(*words)
        for k, code in enumerate(pdq_tail):
            good.add(top + 1 + k, [code.tobytes()], [0])
        for args in word_tail:
            vote.add(*args)
        indexes.append((good, low, vote))
        print(f"{module.__name__}: mapped and filled, {time.process_time() - t0:.1f} s CPU",
              flush=True)
        t0 = time.process_time()
    stored = segments[-1].pdq.codes

    def query() -> tuple[list[bytes], tuple[np.ndarray, np.ndarray, np.ndarray]]:
        base = stored[int(rng.integers(0, len(stored)))]
        flip = np.zeros(256, np.uint8)
        flip[rng.choice(256, 10, replace=False)] = 1
        codes = [(base ^ np.packbits(flip)).tobytes()] + [
            rng.integers(0, 256, 32, dtype=np.uint8).tobytes() for _ in range(2)]
        return codes, (_words(rng, ranks, QUERY_WORDS),
                       rng.integers(0, 16, QUERY_WORDS, dtype=np.uint8),
                       _signatures(rng, QUERY_WORDS))

    def faults() -> int:
        return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt

    def lookup(index: tuple[object, ...], codes: list[bytes],
               vote: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[float, ...]:
        good, low, words_index = index
        # the probe words' own postings at scale, where a version has them (branch rank)
        extra = ({"scale_probe_postings": WORD_PROBE_POSTINGS_AT_SCALE}
                 if "scale_probe_postings" in inspect.signature(words_index.search).parameters
                 else {})
        f0, t0 = faults(), time.thread_time()
        answer_pdq = (good.search(codes, PDQ_CANDIDATE),  # type: ignore[attr-defined]
                      low.search(codes, PDQ_CANDIDATE))  # type: ignore[attr-defined]
        f1, t1 = faults(), time.thread_time()
        answer_words = words_index.search(  # type: ignore[attr-defined]
            *vote, limit=MAX_CANDIDATES, min_votes=MIN_VOTES, max_distance=SIGNATURE_DISTANCE,
            sigma=SIGNATURE_SIGMA, max_postings=WORD_POSTINGS_BUDGET,
            probe=np.arange(WORD_PROBES), max_probe_postings=WORD_PROBE_POSTINGS, **extra)
        t2, f2 = time.thread_time(), faults()
        answers.append((answer_pdq, [dataclasses.astuple(w) for w in answer_words]))
        return (t1 - t0) * 1e3, (t2 - t1) * 1e3, f1 - f0, f2 - f1

    answers: list[object] = []
    for _ in range(20):  # warm-up: first touches of the pages
        codes, vote = query()
        for index in indexes:
            lookup(index, codes, vote)
    times: list[list[tuple[float, ...]]] = [[], []]
    found = different = 0
    differ = len({"scale_probe_postings" in inspect.signature(i[2].search).parameters
                  for i in indexes}) > 1
    for k in range(queries):
        codes, vote = query()
        if touch_first:  # the pages the query reads, from the disk once, untimed
            lookup(indexes[1], codes, vote)
        answers.clear()
        for j in ((0, 1) if k % 2 else (1, 0)):
            times[j].append(lookup(indexes[j], codes, vote))
        if differ:  # the versions read different postings: their answers are counted
            different += answers[0] != answers[1]
        else:
            assert answers[0] == answers[1], f"query {k}: the two versions answer differently"
        found += bool(answers[0][0][0])  # type: ignore[index]
    equal = (f"word answers different for {different}" if differ else "answers equal")
    print(f"{queries} lookups after 20 of warm-up, {equal} ({found} with a PDQ hit); "
          f"{len(segments)} segment(s), word parts: "
          f"{' before, '.join(str(sum(len(s.words) for s in m)) for m in mapped.values())} "
          "after; "
          f"tails: {TAIL_LIMIT - 1:,} PDQ codes, {len(word_tail)} word registrations")
    print("| version | lookup median | p99 | PDQ median | p99 | words median | p99 | "
          "page faults a lookup (median) |\n|---|---|---|---|---|---|---|---|")
    for label, t in (("before", times[0]), ("after", times[1])):
        a = np.array(t)
        total = a[:, 0] + a[:, 1]
        print(f"| {label} | {np.median(total):.2f} ms | {np.percentile(total, 99):.2f} ms | "
              f"{np.median(a[:, 0]):.2f} ms | {np.percentile(a[:, 0], 99):.2f} ms | "
              f"{np.median(a[:, 1]):.2f} ms | {np.percentile(a[:, 1], 99):.2f} ms | "
              f"{np.median(a[:, 2] + a[:, 3]):.0f} |")


def repack(src: Path, dst: Path) -> None:
    manifest = json.loads((src / MANIFEST).read_text())
    dst.mkdir(parents=True, exist_ok=True)
    ranks = src.parent / f"{src.name}.ranks.npy"
    if ranks.exists() and not (dst.parent / f"{dst.name}.ranks.npy").exists():
        os.link(ranks, dst.parent / f"{dst.name}.ranks.npy")
    entries = []
    for entry in manifest["segments"]:
        root, out = src / entry["name"], dst / entry["name"]
        out.mkdir(exist_ok=True)
        files = dict(entry["files"])
        names = len(np.load(root / "names.npy"))
        narrowed = [name for name in files if name in ("refs.npy", "sellers.npy")
                    or (name.startswith("words") and name.endswith(".refs.npy"))]
        for name in files:
            target = out / name
            target.unlink(missing_ok=True)  # never write through a hard link into SRC
            if name not in narrowed:
                os.link(root / name, target)
                continue
            array = np.load(root / name)
            array = (_narrow_sellers(array, names) if name == "sellers.npy"
                     else _narrow_refs(array))
            np.save(target, array, allow_pickle=False)
            files[name] = [target.stat().st_size, _crc(target)]
        entries.append({**entry, "files": files})
        print(f"{entry['name']}: {len(narrowed)} files narrowed", flush=True)
    (dst / MANIFEST).write_text(json.dumps({"format": FORMAT, "segments": entries}, indent=1))


def store_startup(directory: Path, registrations: int) -> None:
    import asyncio
    import hashlib
    import resource

    from bench.corpus import corpus_dir, original_bytes
    from shotstamp_service.matching.fingerprint import DecodeLimits
    from shotstamp_service.matching.thumbnail import fingerprint_and_thumbnail
    from shotstamp_service.records import NewRegistration, format_time, utc_now
    from shotstamp_service.registry import Registry
    from shotstamp_service.store.sqlite import SQLiteStore

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    async def run() -> None:
        directory.mkdir(parents=True, exist_ok=True)
        store = SQLiteStore(directory / "shotstamp.db")
        await store.open()
        have = len([x async for x in store.iter_fingerprints()]) if (
            directory / "filled").exists() else 0
        if have < registrations:
            files = sorted(p for p in corpus_dir().rglob("*")
                           if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:40]
            rows = []
            for path in files:
                fp, thumb = fingerprint_and_thumbnail(original_bytes(path)[0], DecodeLimits(),
                                                      256)
                rows.append((fp, thumb))
            for start in range(0, registrations, 512):
                batch = []
                for k in range(start, min(registrations, start + 512)):
                    fp, thumb = rows[k % len(rows)]
                    perceptual, features = fp.to_store()
                    batch.append(store.add_registration(NewRegistration(
                        id=f"reg-{k:09d}", seller=f"seller-{k % 97}",
                        sha256=hashlib.sha256(b"%d" % k).hexdigest(), perceptual=perceptual,
                        received_at=format_time(utc_now()), width=fp.width, height=fp.height,
                        features=features, thumbnail=thumb)))
                await asyncio.gather(*batch)
            (directory / "filled").touch()
        print("| start | registrations indexed | wall | CPU |")
        print("|---|---|---|---|")
        for label, index in (("without segments (today)", None),
                             ("first start with segments (upgrade)", directory / "index"),
                             ("later start", directory / "index")):
            if label.startswith("first"):
                import shutil

                shutil.rmtree(directory / "index", ignore_errors=True)
            t, c = time.perf_counter(), cpu()
            registry = Registry(store, Matcher(), None,  # type: ignore[arg-type]
                                segments=None if index is None else SegmentDir(index))
            count = await registry.load_index()
            print(f"| {label} | {count:,} | {time.perf_counter() - t:.2f} s | "
                  f"{cpu() - c:.2f} s |", flush=True)
            del registry
        await store.close()

    asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_serve":
        _serve(Path(argv[1]), float(argv[2]), int(argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["build", "measure", "store", "compare", "repack"])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--registrations", type=int, default=10_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--before", type=Path, help="compare: an export of the other commit")
    parser.add_argument("--into", type=Path, help="repack: the directory to write")
    parser.add_argument("--touch-first", action="store_true",
                        help="compare: each query looked up once untimed first, so that "
                        "neither version pays alone for pages the OS had not cached")
    parser.add_argument("--before-directory", type=Path,
                        help="compare: the segments the other version maps (default DIRECTORY)")
    args = parser.parse_args(argv)
    if args.command == "build":
        build(args.directory, args.registrations)
    elif args.command == "store":
        store_startup(args.directory, args.registrations)
    elif args.command == "compare":
        if args.before is None:
            parser.error("compare needs --before SRC")
        compare(args.directory, args.before, args.queries, args.before_directory,
                args.touch_first)
    elif args.command == "repack":
        if args.into is None:
            parser.error("repack needs --into DST")
        repack(args.directory, args.into)
    else:
        measure(args.directory, args.queries)
    return 0


if __name__ == "__main__":
    sys.exit(main())
