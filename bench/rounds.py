"""The registry's stage-2 rounds: answers of two builds compared, and pool jobs per upload.

    PYTHONPATH=sdk:service:. .venv/bin/python -m bench.rounds --against /tmp/rounds-before
        [--uploads 400] [--every 10] [--families 40] [--clients 1,8]

`Registry.register` with a real fingerprint pool (one worker, stage 2 through it as in the
service) on a fresh SQLite store, fingerprints made beforehand, in a fresh process per build
(this tree, and `--against DIR`, e.g. `git archive main`), for:

- **product shots** (`bench/blob_cache.uploads`): `--uploads` distinct shots by 8 sellers and,
  after every `--every`-th, two edits of an earlier one (quality 80, a 90 % crop) by another
  seller, each a 409 or a new registration by the engine's verdict;
- **copy families** (`bench/matching.py`'s corpus, cached fingerprints): `--families`
  originals, then every edit and known copy of them by another seller.

Each outcome is reduced to the upload's position: its kind, and for each match the position
of the upload that created the matched registration, its verdict, clause, distances (stage
2's evidence among them) and geometry. With one client the order is fixed and both builds'
outcomes must be equal; with several (`--clients 1,8`) the decisions' rounds happen (uploads
reserved while another's stage 2 is in the pool) and the jobs per upload are the figure (the
outcomes are compared and counted, not asserted: which of an original and its edit, in
flight together, is first differs from run to run in either build). Every stage 2 this tree
makes on the event loop is made again through the pool afterwards and asserted equal
(evidence and geometry). Printed per build and client count: stage-2 pool jobs per upload,
stage-2 calls made on the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _uploads(args: argparse.Namespace) -> list[tuple[str, bytes | None, Any]]:
    """(seller, upload bytes or None, its fingerprint) in upload order."""
    from bench.blob_cache import uploads
    from bench.matching import fingerprint_corpus
    from shotstamp_service.matching.fingerprint import fingerprint
    from tests.kit.corpus import corpus_dir

    out: list[tuple[str, bytes | None, Any]] = [
        (seller, data, fingerprint(data)) for seller, data in uploads(args.uploads, args.every)]
    if args.families:
        items = fingerprint_corpus(corpus_dir(), 1)
        originals = [i for i in items if i.edit == "original"][:args.families]
        chosen = {i.photo for i in originals}
        out += [("owner", None, i.fp) for i in originals]
        out += [("copier", None, i.fp) for i in items if i.photo in chosen and i.edit != "original"]
    return out


async def _run(uploads: list[tuple[str, bytes | None, Any]], clients: int) -> dict[str, Any]:
    import shotstamp_service.registry as registry_module
    from shotstamp_service.http.auth import Principal
    from shotstamp_service.matching.engine import Matcher
    from shotstamp_service.matching.fingerprint import DecodeLimits
    from shotstamp_service.matching.pool import FingerprintPool
    from shotstamp_service.registry import Registry
    from shotstamp_service.store.sqlite import SQLiteStore

    counts = {"jobs": 0, "here": 0}
    here = registry_module.verify_many
    on_loop: list[tuple[Any, Any, Any]] = []  # (query, items, evidence) of each call here

    def counted_here(query: Any, items: Any) -> Any:
        counts["here"] += 1
        found = here(query, items)
        on_loop.append((query, list(items), found))
        return found

    registry_module.verify_many = counted_here  # type: ignore[assignment]
    pool = FingerprintPool(1, DecodeLimits())
    await pool.start()

    async def verify(query: bytes, items: Any) -> Any:
        counts["jobs"] += 1
        return await pool.verify(query, items)

    fps = {id(fp): fp for _, _, fp in uploads}
    keys = {id(fp): n for n, (_, _, fp) in enumerate(uploads)}

    async def fingerprint_of(token: bytes) -> Any:
        return fps[int(token)]

    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "db.sqlite")
        await store.open()
        registry = Registry(store, Matcher(), fingerprint_of, verify=verify)
        await registry.load_index()
        created: dict[int, int] = {}  # seq → position of the upload that created it
        raw: dict[int, Any] = {}
        queue = list(reversed(range(len(uploads))))

        async def client() -> None:
            while queue:
                n = queue.pop()
                seller, _, fp = uploads[n]
                outcome = await registry.register(Principal(seller, "seller", seller),
                                                  str(id(fp)).encode())
                if outcome.kind == "created" and outcome.registration is not None:
                    created[outcome.registration.seq] = keys[id(fp)]
                raw[n] = outcome

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        seconds = time.perf_counter() - start
        await store.close()
    # Every stage 2 made on the loop, made again through the pool: the same evidence, geometry
    # included (`Evidence`'s equality leaves the geometries out, so they are compared apart).
    for query, items, found in on_loop:
        pooled = await pool.verify(query, items)
        assert [(ref, e, e.geometry, e.global_geometry) for ref, e in found] == [
            (ref, e, e.geometry, e.global_geometry) for ref, e in pooled], "loop != pool"
    pool.close()
    outcomes = []
    for n in range(len(uploads)):
        o = raw[n]
        outcomes.append((o.kind, tuple(
            (created.get(m.registration.seq, -1), m.verdict, m.clause,
             sorted(m.distances.items()), m.geometry) for m in o.matches)))
    return {"outcomes": outcomes, "jobs": counts["jobs"], "here": counts["here"],
            "here_checked": len(on_loop),
            "uploads": len(uploads), "seconds": seconds}


def child(args: argparse.Namespace) -> None:
    uploads = _uploads(args)
    out = {c: asyncio.run(_run(uploads, c)) for c in args.clients}
    with open(args.out, "wb") as f:
        pickle.dump(out, f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", type=Path, required=True, help="the other source tree")
    parser.add_argument("--uploads", type=int, default=400)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--families", type=int, default=40)
    parser.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 8])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, tree in (("this tree", ROOT), ("against", args.against.resolve())):
            out = Path(tmp) / f"{len(results)}.pkl"
            env = dict(os.environ, PYTHONPATH=f"{tree}/sdk:{tree}/service:{ROOT}")
            subprocess.run([sys.executable, "-m", "bench.rounds", "--child", "--out", str(out),
                            "--against", str(args.against), "--uploads", str(args.uploads),
                            "--every", str(args.every), "--families", str(args.families),
                            "--clients", ",".join(map(str, args.clients))],
                           env=env, cwd=ROOT, check=True)
            with open(out, "rb") as f:
                results[name] = pickle.load(f)
    mine, theirs = results["this tree"], results["against"]
    for clients in args.clients:
        a, b = mine[clients], theirs[clients]
        kinds = {k: sum(o[0] == k for o in a["outcomes"]) for k in
                 ("created", "existing", "conflict")}
        differ = [n for n, (x, y) in enumerate(zip(a["outcomes"], b["outcomes"], strict=True))
                  if x != y]
        print(json.dumps({"clients": clients, "uploads": a["uploads"], "kinds": kinds,
                          "outcomes_differ": len(differ), "first_differ": differ[:5]}))
        for name, r in (("this tree", a), ("against", b)):
            print(f"  {name}: stage-2 pool jobs per upload {r['jobs'] / r['uploads']:.3f}, "
                  f"stage-2 calls on the loop per upload {r['here'] / r['uploads']:.3f}, "
                  f"{r['here_checked']} of them asserted equal to the pool's "
                  f"({r['seconds']:.1f} s)")
        if clients == 1:
            assert not differ, f"one client: outcomes differ at {differ[:5]}"


if __name__ == "__main__":
    main()
