"""CPU of following another process: what one registration committed elsewhere costs this one.

Two `SQLiteStore`s on one database file, in one process: the "other" store commits
registrations (real product shots, fingerprinted beforehand), and a `Registry` on the
second follows it (`load_index`, as `register` and the follow tick call it). Timed with
`time.thread_time` on the event loop (a few rows are read there, without a hop), per
registration followed:

- `follow`: the whole `load_index` that reads and indexes one row committed elsewhere,
  and the parts inside it: the row's parse (`Rows.fingerprint`), `Fingerprint.from_store`
  and `Matcher.add` (its index entry: the words of its keypoints, its PDQ codes);
- `own row read back`: a `load_index` that finds one row the other committed and, after it,
  one of this registry's own (committed by its store, indexed already): what a gap in the
  seqs makes it read again;
- `empty`: a `load_index` that finds nothing new (every upload's, and every follow tick's);
- `screened first` / `followed first`: the guard under the commit lock (the batch's
  `Registry.screen` and its `check`) for one upload against the one row committed elsewhere
  since its look, and `load_index` of that row, in either order (both happen): what one
  foreign row costs in all.

    PYTHONPATH=sdk:service:. .venv/bin/python bench/follow_path.py --rows 200 --rounds 3

Run it from two checkouts (PYTHONPATH=<build>/sdk:<build>/service:.) to compare builds.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.productshots import product_shots
from shotstamp_service import registry as registry_module
from shotstamp_service.http.auth import Principal
from shotstamp_service.matching.engine import Matcher
from shotstamp_service.matching.fingerprint import Fingerprint, fingerprint
from shotstamp_service.records import NewRegistration, format_time, new_registration_id, utc_now
from shotstamp_service.registry import Registry
from shotstamp_service.store import rows as rows_module
from shotstamp_service.store.sqlite import SQLiteStore

SPENT: Counter[str] = Counter()


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.thread_time_ns()
        try:
            return fn(*args, **kwargs)
        finally:
            SPENT[name] += time.thread_time_ns() - start
    return timed


def instrument() -> None:
    rows_module.Rows.fingerprint = _timed(  # type: ignore[method-assign]
        "row parse (Rows.fingerprint)", rows_module.Rows.fingerprint)
    registry_module.Fingerprint.from_store = classmethod(  # type: ignore[method-assign]
        _timed("Fingerprint.from_store", registry_module.Fingerprint.from_store.__func__))
    Matcher.add = _timed("Matcher.add", Matcher.add)  # type: ignore[method-assign]


def _new(fp: Fingerprint, seller: str) -> NewRegistration:
    perceptual, features = fp.to_store()
    return NewRegistration(id=new_registration_id(), seller=seller, sha256=fp.sha256,
                           perceptual=perceptual, received_at=format_time(utc_now()),
                           width=fp.width, height=fp.height, features=features)


async def one_round(fps: list[Fingerprint]) -> dict[str, float]:
    """µs of thread CPU per registration of each measured step."""
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        other, here = (SQLiteStore(Path(tmp) / "db.sqlite") for _ in range(2))
        await other.open()
        await here.open()

        async def no_fingerprint(data: bytes) -> Fingerprint:
            raise AssertionError("not used")

        registry = Registry(here, Matcher(), no_fingerprint)
        await registry.load_index()
        half = len(fps) // 2
        # Rows committed elsewhere, each followed on its own.
        SPENT.clear()
        total = 0
        for fp in fps[:half]:
            await other.add_registration(_new(fp, "other"))
            start = time.thread_time_ns()
            await registry.load_index()
            total += time.thread_time_ns() - start
        out["follow: load_index of one row"] = total / half / 1000
        for name, ns in SPENT.items():
            out[f"  of it, {name}"] = ns / half / 1000
        # Nothing new.
        start = time.thread_time_ns()
        for _ in range(half):
            await registry.load_index()
        out["empty: load_index finding nothing"] = (time.thread_time_ns() - start) / half / 1000
        # One row elsewhere, then one of this registry's own past it (a gap in the seqs).
        who = Principal("here", "seller", "k")
        rest = fps[half:]
        pairs = len(rest) // 2
        total = 0
        for i in range(pairs):
            await other.add_registration(_new(rest[2 * i], "other"))
            mine = rest[2 * i + 1]
            registration = await here.add_registration(_new(mine, who.seller))
            registry.matcher.add(registration.seq, mine)  # as `_store_new` indexes its own
            registry.owners.set(registration.seq, who.seller)
            start = time.thread_time_ns()
            await registry.load_index()
            total += time.thread_time_ns() - start
        out["own row read back: load_index of one foreign + one own row"] = total / pairs / 1000
        await other.close()
        await here.close()
    # The screen under the lock for one upload and one foreign row: the row screened first
    # and then followed, or followed first and then screened (both orders happen).
    with tempfile.TemporaryDirectory() as tmp:
        other, here = (SQLiteStore(Path(tmp) / "db.sqlite") for _ in range(2))
        await other.open()
        await here.open()
        registry = Registry(here, Matcher(), no_fingerprint)
        await registry.load_index()
        spent: Counter[str] = Counter()
        counts: Counter[str] = Counter()
        for n, (query, row_fp) in enumerate(zip(fps[::2], fps[1::2], strict=False)):
            through = registry.indexed_through
            registry.matcher.look(query)  # the decision's look (not timed)
            new = _new(query, "here")
            registry._pending[new.id] = registry_module._Pending(query, set(), None,
                                                                 through=through)
            await other.add_registration(_new(row_fp, "other"))
            rows = await here._fingerprint_page(through, 10)
            order = "screened first" if n % 2 == 0 else "followed first"
            for step in (("screen", "follow") if n % 2 == 0 else ("follow", "screen")):
                start = time.thread_time_ns()
                if step == "screen":
                    screen = registry.screen([new])
                    assert screen is not None
                    screen.check(rows)
                else:
                    await registry.load_index()
                spent[f"{order}: {step}"] += time.thread_time_ns() - start
            counts[order] += 1
            del registry._pending[new.id]
        for name, ns in spent.items():
            out[name] = ns / counts[name.split(":")[0]] / 1000
        await other.close()
        await here.close()
    return out


async def main_async(args: argparse.Namespace) -> None:
    instrument()
    shots = [p.read_bytes() for p in product_shots(args.rows)][: args.rows]
    fps = [fingerprint(data) for data in shots]
    runs: list[dict[str, float]] = []
    for r in range(args.rounds):
        runs.append(await one_round(fps))
        print(f"round {r + 1}: " + ", ".join(f"{v:.0f}" for v in runs[-1].values()), flush=True)
    print(f"µs of thread CPU per registration, median of {args.rounds} rounds "
          f"({args.rows} product shots)")
    for name in runs[0]:
        print(f"  {name:<62} {statistics.median(r[name] for r in runs):8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
