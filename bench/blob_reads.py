"""Stage 2's feature-blob reads at 1 M: where an upload's `get_features` milliseconds go.

    PYTHONPATH=sdk:service:. python -m bench.blob_reads shortlists DIR/data [--shots 200]
    PYTHONPATH=sdk:service:. python -m bench.blob_reads measure DIR/data [--rounds 3]
        [--settings default,mmap,cache64,mmap+cache64] [--parse]
    PYTHONPATH=sdk:service:. python -m bench.blob_reads syscalls DIR/data --setting default
    PYTHONPATH=sdk:service:. python -m bench.blob_reads loop DIR/data [--cold 40] [--rounds 3]
    PYTHONPATH=sdk:service:. python -m bench.blob_reads check DIR/data [--cold 200]
    PYTHONPATH=sdk:service:. python -m bench.blob_reads gil DIR/data [--cold 30] [--rounds 2]

DIR/data is `bench/fullscale.py build`'s data directory (SQLite, opened read-only here: nothing
is written to it). `shortlists` asks the engine which seqs stage 2 reads: its persisted
segments are mapped into a `Matcher` (as `bench/vote_kernel.py` does) and `Matcher.look` is
run for the product shots `bench/load.py` uploads (`bench/out/productshots/`, fingerprinted
here) and for the real query edits `bench/fullscale.py` cached
(`bench/out/cache/fullscale-*-every3.pkl`); each look's candidate refs are one shortlist, as
`Registry._stage2` passes them to `get_features`. Saved to bench/out/cache/blob-shortlists.json.

`measure` reads every shortlist through the store's own statement (`sqlite._FEATURES_BY_SEQ`)
on a connection opened as the store opens its readers (`sqlite.connect`, then each setting's
PRAGMAs), settings alternating shortlist by shortlist in one process, each on its own
connection. Per shortlist: CPU of the thread (`time.thread_time`), page faults of the thread
(`getrusage(RUSAGE_THREAD)`) and read syscalls (`/proc/thread-self/io` `syscr`). `--parse`
adds what the serving process does with the blobs next (pickling the stage-2 job for the
pool) and what the pool worker does (`StoredKeypoints.from_blobs`, the shortlist's parse,
and `LocalFeatures.from_bytes` of each). `syscalls` runs one setting under `strace -c -f`.
`check` asserts the store's one-row read (`_FEATURES_BY_SEQ_ONE_ROW`) equal, blob for blob and in
order, to main's row-by-row statement on every cached shortlist and on random ones. `gil`
reads cold shortlists on a reader thread while the main thread runs Python, row by row (main)
against one row (now): a thread that releases the GIL around each row's `sqlite3_step` waits
for it back after each.

`loop` opens the data directory with the store itself (`SQLiteStore`, as a serving process:
it writes nothing) and has 8 tasks call `get_features` on cold random shortlists while a 1 ms
ticker measures how long the event loop was held (its lateness summed), with stage 2's reads
routed as on main (always on the loop: the disk-page limit set to infinity) and as now
(`_DiskPages`), alternating block by block; CPU of the whole process per shortlist.

The OS page cache is what it is when the run starts (the first round warms what it reads);
rounds after the first show the steady state of a serving process that has been up a while.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pickle
import resource
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shotstamp_service.store import sqlite as store_sqlite  # noqa: E402

CACHE = ROOT / "bench" / "out" / "cache" / "blob-shortlists.json"

# Each setting: the PRAGMAs a reader connection runs after `sqlite.connect`.
SETTINGS: dict[str, list[str]] = {
    "default": [],
    "mmap": ["PRAGMA mmap_size=2147418112"],
    "cache64": ["PRAGMA cache_size=-65536"],
    "mmap+cache64": ["PRAGMA mmap_size=2147418112", "PRAGMA cache_size=-65536"],
    "cache16": ["PRAGMA cache_size=-16384"],
    "cache256": ["PRAGMA cache_size=-262144"],
}


def shortlists(data: Path, shots: int, queries: int) -> None:
    import pickle as _pickle

    from shotstamp_service.matching import kernels
    from shotstamp_service.matching.engine import Matcher
    from shotstamp_service.matching.fingerprint import fingerprint
    from shotstamp_service.matching.segments import SegmentDir

    kernels.warm()
    segments = SegmentDir(data / "index").open()
    matcher = Matcher(background=False)
    for segment in segments:
        matcher.attach(segment)
    print(f"{len(matcher):,} registrations mapped", flush=True)
    out: dict[str, list[list[int]]] = {"productshots": [], "queries": []}
    files = sorted((ROOT / "bench" / "out" / "productshots").glob("*.jpg"))
    for path in files[:: max(1, len(files) // shots)][:shots]:
        seen = matcher.look(fingerprint(path.read_bytes()))
        if seen.candidates:
            out["productshots"].append(sorted(c.ref for c in seen.candidates))
    caches = sorted((ROOT / "bench" / "out" / "cache").glob("fullscale-*-every3.pkl"))
    items = _pickle.loads(caches[-1].read_bytes()) if caches else []
    chosen = [it for it in items if it.fp.local is not None]
    for item in chosen[:: max(1, len(chosen) // queries)][:queries]:
        seen = matcher.look(item.fp)
        if seen.candidates:
            out["queries"].append(sorted(c.ref for c in seen.candidates))
    for kind, lists in out.items():
        sizes = [len(s) for s in lists]
        if sizes:
            print(f"{kind}: {len(lists)} shortlists, {statistics.mean(sizes):.1f} seqs on "
                  f"average (median {statistics.median(sizes)}, max {max(sizes)})")
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    CACHE.write_text(json.dumps(out))
    print(f"saved {CACHE}")


def _open(data: Path, setting: str) -> sqlite3.Connection:
    # As the store's loop connection, but read-only: the shared directory is not written.
    conn = sqlite3.connect(f"file:{data / 'shotstamp.db'}?mode=ro", uri=True,
                           isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout=0")
    for pragma in SETTINGS[setting]:
        conn.execute(pragma)
    return conn


def _syscr() -> int:
    for line in Path("/proc/thread-self/io").read_text().splitlines():
        if line.startswith("syscr:"):
            return int(line.split()[1])
    return 0


def _read(conn: sqlite3.Connection, seqs: list[int]) -> dict[int, bytes]:
    """As the store reads on the loop (row by row, main's statement)."""
    return store_sqlite._read_features(conn, json.dumps(seqs))


def _read_one_row(conn: sqlite3.Connection, seqs: list[int]) -> dict[int, bytes]:
    """As the store reads on its reader thread."""
    return store_sqlite._read_features_one_row(conn, json.dumps(seqs))


# main's statement (2bd7b28): one row a blob; `check` asserts the one-row read equal to it.
_ROWS_BY_SEQ = (
    "SELECT seq, features FROM registrations"
    " WHERE seq IN (SELECT value FROM json_each(?)) AND features IS NOT NULL"
)


def gil(data: Path, cold: int, rounds: int) -> None:
    """A reader thread reading cold shortlists while the main thread runs Python (a busy
    loop): main's row-by-row statement against the store's one-row read, alternating."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    conn = _open(data, "default")
    pool = _cold_lists(data, cold * rounds * 2, 64, int(time.time()))
    reads = {
        "row by row (main)": lambda seqs: {
            seq: bytes(blob)
            for seq, blob in conn.execute(_ROWS_BY_SEQ, (json.dumps(seqs),))},
        "one row (now)": lambda seqs: _read_one_row(conn, seqs),
    }
    stop = False

    def spin() -> None:
        x = 0
        while not stop:
            for i in range(1000):
                x += i

    spinner = threading.Thread(target=spin)
    spinner.start()
    got: dict[str, list[tuple[float, float]]] = {name: [] for name in reads}
    with ThreadPoolExecutor(1) as reader:
        at = 0
        for r in range(rounds):
            for name in (list(reads) if r % 2 == 0 else list(reads)[::-1]):
                for seqs in pool[at:at + cold]:
                    def job(seqs: list[int] = seqs, fn=reads[name]) -> tuple[float, float]:
                        c, w = time.thread_time(), time.perf_counter()
                        fn(seqs)
                        return time.thread_time() - c, time.perf_counter() - w
                    got[name].append(reader.submit(job).result())
                at += cold
    stop = True
    spinner.join()
    print("| read on a reader thread, the main thread busy | reader CPU ms per shortlist "
          "(median) | wall ms (median) | p90 wall |")
    print("|---|---|---|---|")
    for name, rows in got.items():
        walls = sorted(w for _, w in rows)
        print(f"| {name} | {statistics.median(c for c, _ in rows) * 1e3:.2f} | "
              f"{statistics.median(walls) * 1e3:.1f} | {walls[int(0.9 * len(walls))] * 1e3:.1f} |")


def check(data: Path, cold: int) -> None:
    conn = _open(data, "default")
    lists = [s for kind in json.loads(CACHE.read_text()).values() for s in kind]
    lists += _cold_lists(data, cold, 64, 7)
    blobs = 0
    for seqs in lists:
        new = _read_one_row(conn, seqs)
        old = {seq: bytes(blob) for seq, blob in conn.execute(_ROWS_BY_SEQ, (json.dumps(seqs),))}
        assert new == old and list(new) == list(old), seqs
        blobs += len(new)
    print(f"{len(lists)} shortlists, {blobs} blobs: the one-row read equals main's row by row")


Sample = tuple[float, int, int, int, float]


def _measure_one(conn: sqlite3.Connection, seqs: list[int]) -> Sample:
    r0 = resource.getrusage(resource.RUSAGE_THREAD)
    s0 = _syscr()
    w0 = time.perf_counter()
    t0 = time.thread_time()
    blobs = _read(conn, seqs)
    dt = time.thread_time() - t0
    wall = time.perf_counter() - w0
    s1 = _syscr()
    r1 = resource.getrusage(resource.RUSAGE_THREAD)
    assert len(blobs) == len(seqs), (len(blobs), len(seqs))
    return dt, r1.ru_minflt - r0.ru_minflt, r1.ru_majflt - r0.ru_majflt, s1 - s0 - 1, wall


def _parse_costs(blobs: dict[int, bytes]) -> tuple[float, float, float]:
    from shotstamp_service.matching.engine import INDEX_CENTRE, INDEX_KEYPOINTS, verify_many
    from shotstamp_service.matching.features import LocalFeatures
    from shotstamp_service.matching.ranking import StoredKeypoints

    items = [(ref, blob, None, True) for ref, blob in blobs.items()]
    t0 = time.thread_time()
    pickle.dumps(functools.partial(verify_many, b"", items), protocol=pickle.HIGHEST_PROTOCOL)
    t1 = time.thread_time()
    StoredKeypoints.from_blobs(list(blobs.values()), INDEX_KEYPOINTS, INDEX_CENTRE)
    t2 = time.thread_time()
    for blob in blobs.values():
        LocalFeatures.from_bytes(blob)
    t3 = time.thread_time()
    return t1 - t0, t2 - t1, t3 - t2


def _cold_lists(data: Path, count: int, size: int, seed: int,
                top: int | None = None) -> list[list[int]]:
    """Random shortlists of the stored seqs, each read once: rows the OS has likely not cached
    (a 12.7 GB file on a host whose page cache holds a few GB of it)."""
    import random

    with sqlite3.connect(f"file:{data / 'shotstamp.db'}?mode=ro", uri=True) as db:
        top = top or db.execute("SELECT max(seq) FROM registrations").fetchone()[0]
    rng = random.Random(seed)
    return [sorted(rng.sample(range(1, top + 1), size)) for _ in range(count)]


def measure(data: Path, settings: list[str], rounds: int, kind: str, parse: bool,
            limit: int | None, cold: int, max_seq: int | None = None) -> None:
    conns = {name: _open(data, name) for name in settings}
    if cold:
        # Every setting reads its own never-read rows: settings x rounds x `cold` lists.
        pool = _cold_lists(data, cold * rounds * len(settings), 64, int(time.time()), max_seq)
        lists = pool[:cold]
    else:
        lists = json.loads(CACHE.read_text())[kind][:limit]
    per: dict[str, list[list[Sample]]] = {s: [] for s in settings}
    blobs_n = sum(len(s) for s in lists)
    print(f"{'cold random' if cold else kind}: {len(lists)} shortlists, "
          f"{blobs_n / len(lists):.1f} blobs each; settings {', '.join(settings)}", flush=True)
    for r in range(rounds):
        got: dict[str, list[Sample]] = {s: [] for s in settings}
        for i in range(len(lists)):
            order = settings if (i + r) % 2 == 0 else settings[::-1]
            for name in order:
                if cold:
                    seqs = pool[((r * len(settings) + settings.index(name)) * cold) + i]
                else:
                    seqs = lists[i]
                got[name].append(_measure_one(conns[name], seqs))
        for name in settings:
            per[name].append(got[name])
        print(f"round {r + 1}: " + ", ".join(
            f"{n} {statistics.median(x[0] for x in got[n]) * 1e3:.3f} ms"
            for n in settings), flush=True)
    print()
    print("| setting | round | CPU ms per shortlist, median | mean | p90 | "
          "wall ms median | wall mean | minor faults | major faults | read syscalls | "
          "CPU µs per blob |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in settings:
        for r, got in enumerate(per[name]):
            cpu = sorted(x[0] for x in got)
            wall = [x[4] for x in got]
            print(f"| {name} | {r + 1} | {statistics.median(cpu) * 1e3:.3f} | "
                  f"{statistics.mean(cpu) * 1e3:.3f} | {cpu[int(0.9 * len(cpu))] * 1e3:.3f} | "
                  f"{statistics.median(wall) * 1e3:.2f} | {statistics.mean(wall) * 1e3:.2f} | "
                  f"{statistics.mean(x[1] for x in got):.1f} | "
                  f"{statistics.mean(x[2] for x in got):.2f} | "
                  f"{statistics.mean(x[3] for x in got):.1f} | "
                  f"{sum(cpu) / blobs_n * 1e6:.1f} |")
    if parse:
        conn = conns[settings[0]]
        costs = [_parse_costs(_read(conn, seqs)) for seqs in lists]
        print()
        print("| after the read (CPU ms per shortlist, median) | where | ms |")
        print("|---|---|---|")
        for label, where, i in (("pickling the stage-2 job", "serving process", 0),
                                ("`StoredKeypoints.from_blobs` (the shortlist's keypoints)",
                                 "pool worker", 1),
                                ("`LocalFeatures.from_bytes` of every blob", "pool worker", 2)):
            print(f"| {label} | {where} | "
                  f"{statistics.median(c[i] for c in costs) * 1e3:.3f} |")


def loop(data: Path, cold: int, rounds: int) -> None:
    import asyncio
    import math

    from shotstamp_service.store.sqlite import SQLiteStore

    modes = {"on the loop (main)": math.inf,
             "routed (_DiskPages)": store_sqlite._FEATURES_DISK_PAGES}
    pool = _cold_lists(data, cold * rounds * len(modes), 64, int(time.time()))
    got: dict[str, list[tuple[float, float, float]]] = {m: [] for m in modes}

    async def block(store: SQLiteStore, lists: list[list[int]]) -> tuple[float, float, float]:
        lag = 0.0
        done = False

        async def ticker() -> None:
            nonlocal lag
            while not done:
                t = time.perf_counter()
                await asyncio.sleep(0.001)
                lag += max(0.0, time.perf_counter() - t - 0.001)

        queue = list(lists)

        async def reader() -> None:
            while queue:
                seqs = queue.pop()
                assert len(await store.get_features(seqs)) == len(seqs)

        tick = asyncio.create_task(ticker())
        c0, w0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(reader() for _ in range(8)))
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        done = True
        await tick
        return cpu / len(lists), wall / len(lists), lag / len(lists)

    async def run() -> None:
        store = SQLiteStore(data / "shotstamp.db")
        await store.open()
        try:
            at = 0
            for r in range(rounds):
                for name in (modes if r % 2 == 0 else reversed(list(modes))):
                    store_sqlite._FEATURES_DISK_PAGES = modes[name]
                    store._blob_disk.per_blob = 0.0
                    got[name].append(await block(store, pool[at:at + cold]))
                    at += cold
                    cpu, wall, lag = got[name][-1]
                    print(f"round {r + 1} {name}: CPU {cpu * 1e3:.2f} ms, wall {wall * 1e3:.2f}"
                          f" ms, loop held {lag * 1e3:.2f} ms per shortlist", flush=True)
        finally:
            store_sqlite._FEATURES_DISK_PAGES = modes["routed (_DiskPages)"]
            await store.close()

    asyncio.run(run())
    print()
    print("| stage 2's reads | CPU ms per shortlist (process), median of rounds | wall ms | "
          "event loop held ms |")
    print("|---|---|---|---|")
    for name, rows in got.items():
        print(f"| {name} | " + " | ".join(
            f"{statistics.median(x[i] for x in rows) * 1e3:.2f}" for i in range(3)) + " |")


def syscalls(data: Path, setting: str, kind: str, limit: int | None) -> None:
    code = (f"import sys; sys.path[:0] = {sys.path[:3]!r}\n"
            "from bench import blob_reads as b\n"
            "from pathlib import Path\n"
            "import json\n"
            f"lists = json.loads(b.CACHE.read_text())[{kind!r}][:{limit!r}]\n"
            f"conn = b._open(Path({str(data)!r}), {setting!r})\n"
            "for seqs in lists: b._read(conn, seqs)\n")
    out = subprocess.run(["strace", "-c", "-f", sys.executable, "-c", code],
                         capture_output=True, text=True, check=True)
    print(out.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command",
                        choices=["shortlists", "measure", "syscalls", "loop", "check", "gil"])
    parser.add_argument("data", type=Path)
    parser.add_argument("--shots", type=int, default=200)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settings", default="default,mmap,cache64,mmap+cache64")
    parser.add_argument("--setting", default="default")
    parser.add_argument("--kind", default="productshots", choices=["productshots", "queries"])
    parser.add_argument("--limit", type=int)
    parser.add_argument("--parse", action="store_true")
    parser.add_argument("--max-seq", type=int, help="cold lists: seqs up to this one only")
    parser.add_argument("--cold", type=int, default=0,
                        help="random shortlists never read before, this many per setting and round")
    args = parser.parse_args()
    if args.command == "shortlists":
        shortlists(args.data, args.shots, args.queries)
    elif args.command == "measure":
        measure(args.data, args.settings.split(","), args.rounds, args.kind, args.parse,
                args.limit, args.cold, args.max_seq)
    elif args.command == "gil":
        gil(args.data, args.cold or 30, args.rounds)
    elif args.command == "check":
        check(args.data, args.cold or 200)
    elif args.command == "loop":
        loop(args.data, args.cold or 40, args.rounds)
    else:
        syscalls(args.data, args.setting, args.kind, args.limit)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
