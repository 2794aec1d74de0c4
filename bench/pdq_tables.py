"""PDQ tables' run starts, int32 (formats /1–/3) against packed (format /4), on a built index.

`repack SRC DST` writes DST as the format /4 form of the segments in SRC (a `bench/startup.py
build`): every file hard-linked except `{pdq,low}.offsets.npy`, whose int32 run starts are
packed (`index.PackedOffsets`) into `{prefix}.{base,step,wide_blocks,wide}.npy`, and
`{pdq,low}.order.npy`, packed to 3 bytes a position (`index.pack_order`); the same codes and
words, the same order and run starts in another form.

`compare SRC DST` maps both, times the PDQ lookups as `bench/startup.py measure` does them
(three codes within radius 31: one near a stored code, two random), alternating between the
two forms query by query in one process (CPU time of this thread), asserts equal answers and
checks a few against brute force over every code; prints sizes by part and the lookup times.

    PYTHONPATH=sdk:service:. nice -n 10 .venv/bin/python -m bench.pdq_tables repack \\
        /work/bigdata/index10m/10m /work/bigdata/pdqoff/10m
    PYTHONPATH=sdk:service:. nice -n 10 .venv/bin/python -m bench.pdq_tables compare \\
        /work/bigdata/index10m/10m /work/bigdata/pdqoff/10m --queries 400
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path

import numpy as np

from shotstamp_service.matching.engine import PDQ_CANDIDATE
from shotstamp_service.matching.index import HammingIndex, PackedOffsets, _Layout, pack_order
from shotstamp_service.matching.segments import MANIFEST, SegmentDir, _crc

# What `repack` writes: /4 (packed PDQ tables; refs stay int64, which /5 narrows).
REPACKED_FORMAT = "shotstamp-index/4"


def repack(src: Path, dst: Path) -> None:
    manifest = json.loads((src / MANIFEST).read_text())
    dst.mkdir(parents=True, exist_ok=True)
    entries = []
    for entry in manifest["segments"]:
        root, out = src / entry["name"], dst / entry["name"]
        out.mkdir(exist_ok=True)
        files = dict(entry["files"])
        for name in files:
            keep = name.startswith("words") or not name.endswith((".offsets.npy", ".order.npy"))
            if keep and not (out / name).exists():  # the same inode: shared page cache
                os.link(root / name, out / name)
        for prefix in ("pdq", "low"):
            flat = np.load(root / f"{prefix}.offsets.npy", mmap_mode="r")
            size = len(np.load(root / f"{prefix}.codes.npy", mmap_mode="r"))
            del files[f"{prefix}.offsets.npy"]
            order = np.load(root / f"{prefix}.order.npy", mmap_mode="r")
            t0 = time.process_time()
            if size:
                layout = _Layout.for_size(size, PDQ_CANDIDATE, int(entry["chunk_bits"][prefix]))
                starts = np.cumsum([0] + [(1 << w) + 1 for w in layout.widths])
                packed = PackedOffsets.pack(
                    [np.asarray(flat[a:b]) for a, b in itertools.pairwise(starts)],
                    size)
                arrays = {"order": pack_order(np.asarray(order)),
                          "base": packed.base, "step": packed.step,
                          "wide_blocks": packed.wide_blocks, "wide": packed.wide}
            else:
                arrays = {"order": np.asarray(order), "base": np.zeros(0, np.int64),
                          "step": np.zeros(0, np.uint8),
                          "wide_blocks": np.zeros(0, np.int64),
                          "wide": np.zeros((0, 64), np.int32)}
            for key, array in arrays.items():
                path = out / f"{prefix}.{key}.npy"
                path.unlink(missing_ok=True)  # never write through a hard link into SRC
                np.save(path, array, allow_pickle=False)
                files[path.name] = [path.stat().st_size, _crc(path)]
            print(f"{entry['name']} {prefix}: order and {len(flat):,} run starts, "
                  f"{(flat.nbytes + order.nbytes) / 1e6:.1f} MB"
                  f" → {sum(a.nbytes for a in arrays.values()) / 1e6:.1f} MB "
                  f"({len(arrays['wide_blocks']):,} wide blocks), "
                  f"{time.process_time() - t0:.1f} s CPU", flush=True)
        entries.append({**entry, "files": files})
    manifest = {"format": REPACKED_FORMAT, "segments": entries}
    (dst / MANIFEST).write_text(json.dumps(manifest, indent=1))


def _sizes(directory: Path) -> dict[str, int]:
    manifest = json.loads((directory / MANIFEST).read_text())
    kinds = {"word postings": 0, "word signatures": 0, "word refs and offsets": 0,
             "PDQ codes, refs, tags": 0, "PDQ order": 0, "PDQ run starts": 0,
             "registration map": 0}
    for entry in manifest["segments"]:
        for name, (size, _) in entry["files"].items():
            part = name.split(".")[1]
            if name.startswith("words"):
                kind = {"postings": "word postings", "signatures": "word signatures"}.get(
                    part, "word refs and offsets")
            elif name.startswith(("pdq.", "low.")):
                kind = ("PDQ order" if part == "order" else "PDQ codes, refs, tags"
                        if part in ("codes", "refs", "tags") else "PDQ run starts")
            else:
                kind = "registration map"
            kinds[kind] += size
    return kinds


def compare(src: Path, dst: Path, queries: int, brute: int) -> None:
    indexes = []
    for directory in (src, dst):
        index = HammingIndex(max_radius=PDQ_CANDIDATE, background=False)
        for seg in SegmentDir(directory).open():
            index.attach(seg.pdq)
            index.attach(seg.pdq_low)
        indexes.append(index)
    stored = [seg.pdq.codes for seg in SegmentDir(dst).open()]
    rng = np.random.default_rng(2112)

    def query() -> list[bytes]:
        codes = stored[int(rng.integers(0, len(stored)))]
        base = codes[int(rng.integers(0, len(codes)))]
        flip = np.zeros(256, np.uint8)
        flip[rng.choice(256, 10, replace=False)] = 1
        return [(base ^ np.packbits(flip)).tobytes()] + [
            rng.integers(0, 256, 32, dtype=np.uint8).tobytes() for _ in range(2)]

    for _ in range(20):  # warm-up: first touches of both forms' pages
        q = query()
        for index in indexes:
            index.search(q, PDQ_CANDIDATE)
    times: list[list[float]] = [[], []]
    for k in range(queries):
        q = query()
        answers = []
        for j in ((0, 1) if k % 2 else (1, 0)):  # alternate which form goes first
            t0 = time.thread_time()
            answers.append(indexes[j].search(q, PDQ_CANDIDATE))
            times[j].append(time.thread_time() - t0)
        assert answers[0] == answers[1], "packed run starts changed an answer"
    all_codes = np.concatenate([np.asarray(c) for c in stored]).view(">u8").reshape(-1, 4)
    refs = np.concatenate([np.asarray(seg.pdq.refs) for seg in SegmentDir(dst).open()])
    for _ in range(brute):  # exact: every stored code within the radius, none beyond
        q = query()
        qw = np.frombuffer(q[0], ">u8")
        d = np.bitwise_count(all_codes ^ qw).sum(axis=1)
        want = set(refs[d <= PDQ_CANDIDATE].tolist())
        got = {r for r, h in indexes[1].search(q[:1], PDQ_CANDIDATE).items() if h.query == 0}
        assert got == want, "packed tables miss or add a code against brute force"
    print(f"{queries} lookups, answers equal; {brute} checked against brute force over "
          f"{len(all_codes):,} codes")
    print("| part | " + " | ".join(("before (/3)", "after (/4)")) + " |\n|---|---|---|")
    before, after = _sizes(src), _sizes(dst)
    for kind in before:
        print(f"| {kind} | {before[kind] / 1e9:.3f} GB | {after[kind] / 1e9:.3f} GB |")
    tb, ta = sum(before.values()), sum(after.values())
    print(f"| **total** | **{tb / 1e9:.2f} GB ({tb / 2**30:.2f} GiB)** | "
          f"**{ta / 1e9:.2f} GB ({ta / 2**30:.2f} GiB)** |")
    print("\n| PDQ lookup (3 codes, CPU) | median | p99 |\n|---|---|---|")
    for label, t in (("int32 run starts (/3)", times[0]), ("packed (/4)", times[1])):
        print(f"| {label} | {np.median(t) * 1e3:.2f} ms | {np.percentile(t, 99) * 1e3:.2f} ms |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("repack")
    r.add_argument("src", type=Path)
    r.add_argument("dst", type=Path)
    c = sub.add_parser("compare")
    c.add_argument("src", type=Path)
    c.add_argument("dst", type=Path)
    c.add_argument("--queries", type=int, default=400)
    c.add_argument("--brute", type=int, default=5)
    args = parser.parse_args()
    if args.command == "repack":
        repack(args.src, args.dst)
    else:
        compare(args.src, args.dst, args.queries, args.brute)


if __name__ == "__main__":
    main()
