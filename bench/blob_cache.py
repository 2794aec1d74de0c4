"""Stage 2's feature blobs from the store's memory (`SQLiteStore`'s blob cache) or from SQLite.

`Registry.register` of product shots and edited copies of some of them (re-encoded at
quality 80, cropped to 90 % off-centre; uploaded by another seller, so each is a 409 or
a new registration by the engine's verdict), on a real SQLite store, fingerprints made
beforehand, stage 2 on a thread of its own:

- `--check`: one client, so the order is fixed, once with the cache and once without
  (`features_cached_bytes=0`, the store's reads as before it); every stage-2 call's
  inputs (refs, the blobs' SHA-256, the PDQ pairs) and evidence, and every outcome (kind,
  matched seqs, verdicts, clauses, distances), must be equal.
- timing rounds (`--rounds`), `--clients` at a time, alternating cache on and off: the
  event loop's CPU per upload (`time.thread_time`), and the blobs read from SQLite per
  upload.

    PYTHONPATH=sdk:service:. .venv/bin/python -m bench.blob_cache --check --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

from bench.productshots import product_shots
from shotstamp_service.http.auth import Principal
from shotstamp_service.matching.engine import Matcher, verify_many
from shotstamp_service.matching.fingerprint import Fingerprint, fingerprint
from shotstamp_service.registry import Registry
from shotstamp_service.store.sqlite import FEATURES_CACHED_BYTES, SQLiteStore


def _edits(data: bytes) -> list[bytes]:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = image.size
    out = []
    for edit in (image, image.crop((w // 10, h // 20, w, h * 19 // 20))):
        buffer = io.BytesIO()
        edit.save(buffer, "JPEG", quality=80)
        out.append(buffer.getvalue())
    return out


def uploads(count: int, every: int) -> list[tuple[str, bytes]]:
    """`count` distinct shots by 8 sellers; after every `every`-th, its two edits by 'copier'."""
    shots = [p.read_bytes() for p in product_shots(count)][:count]
    out: list[tuple[str, bytes]] = []
    for n, data in enumerate(shots):
        out.append((f"seller{n % 8}", data))
        if n % every == every - 1:
            out += [("copier", edit) for edit in _edits(shots[n - every // 2])]
    return out


async def one_round(items: list[tuple[str, bytes]], fps: dict[bytes, Fingerprint],
                    clients: int, cached: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "db.sqlite",
                            features_cached_bytes=FEATURES_CACHED_BYTES if cached else 0)
        await store.open()
        calls: list[tuple[Any, ...]] = []
        read = [0]
        from_db = store._features_from_db

        async def counted(wanted: list[int]) -> dict[int, bytes]:
            read[0] += len(wanted)
            return await from_db(wanted)

        store._features_from_db = counted  # type: ignore[method-assign]

        async def fingerprint_of(data: bytes) -> Fingerprint:
            return fps[data]

        async def verify(query: bytes, stage2: list) -> list:  # type: ignore[type-arg]
            evidence = await asyncio.to_thread(verify_many, query, stage2)
            calls.append((tuple((i[0], hashlib.sha256(i[1]).hexdigest(), i[2], i[3:])
                                for i in stage2),
                          tuple((ref, e.as_dict()) for ref, e in evidence)))
            return evidence

        registry = Registry(store, Matcher(), fingerprint_of, verify=verify)
        await registry.load_index()
        queue = list(reversed(items))
        outcomes: list[tuple[Any, ...]] = []

        async def client() -> None:
            while queue:
                seller, data = queue.pop()
                outcome = await registry.register(Principal(seller, "seller", seller), data)
                outcomes.append((
                    outcome.kind,
                    outcome.registration.seq if outcome.registration else None,
                    tuple((m.registration.seq, m.verdict, m.clause, sorted(m.distances.items()))
                          for m in outcome.matches)))

        start = time.thread_time()
        await asyncio.gather(*(client() for _ in range(clients)))
        loop_ms = (time.thread_time() - start) * 1000 / len(items)
        await store.close()
        return {"loop_ms": loop_ms, "read": read[0] / len(items), "calls": calls,
                "outcomes": outcomes}


async def main_async(args: argparse.Namespace) -> None:
    items = uploads(args.uploads, args.every)
    fps = {data: fingerprint(data) for _, data in items}
    print(f"{len(items)} uploads ({args.uploads} shots, "
          f"{len(items) - args.uploads} edited copies)", flush=True)
    if args.check:
        on = await one_round(items, fps, 1, cached=True)
        off = await one_round(items, fps, 1, cached=False)
        kinds = {kind: sum(o[0] == kind for o in on["outcomes"]) for kind in
                 ("created", "existing", "conflict")}
        assert on["outcomes"] == off["outcomes"], "outcomes differ"
        assert on["calls"] == off["calls"], "stage-2 inputs or evidence differ"
        print(f"check: equal outcomes ({kinds}) and {len(on['calls'])} equal stage-2 calls "
              f"({sum(len(c[0]) for c in on['calls'])} blobs); blobs read from SQLite per "
              f"upload {on['read']:.1f} with the cache, {off['read']:.1f} without", flush=True)
    runs: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for n in range(args.rounds):
        for cached in ((True, False) if n % 2 == 0 else (False, True)):
            run = await one_round(items, fps, args.clients, cached)
            runs[cached].append(run)
            print(f"  round {n + 1} cache {'on ' if cached else 'off'}: loop "
                  f"{run['loop_ms']:.3f} ms per upload, {run['read']:.1f} blobs read",
                  flush=True)
    for cached, done in runs.items():
        if done:
            print(f"cache {'on ' if cached else 'off'}: median loop "
                  f"{statistics.median(r['loop_ms'] for r in done):.3f} ms per upload, "
                  f"{statistics.median(r['read'] for r in done):.1f} blobs read", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=400, help="distinct product shots")
    parser.add_argument("--every", type=int, default=10,
                        help="after every this many shots, two edits of an earlier one")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--check", action="store_true")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
