"""An upload's stage-1 look at 1 M, this checkout against another commit's code, on real queries.

    PYTHONPATH=sdk:service:. python -m bench.full_path compare DIR/data --before SRC [--queries 200]

DIR/data is `bench/fullscale.py build`'s data directory; its persisted segments are mapped into
one `Matcher` (as a service start does, without the store's tail) and queried with the real
query fingerprints `bench/fullscale.py` cached (bench/out/cache/fullscale-*-every3.pkl: the
edits of every third query photo). SRC is an export of the other commit (`git archive main |
tar -x -C SRC`): its `index.py` is loaded beside this checkout's, calling its own `kernels.py`
(`export_index`), and its `WordIndex` and `HammingIndex` methods stand in for this checkout's
while its looks run (the same mapped segments, the same `Matcher`).

Per query, `Matcher.look(fp, stop_at_copy=False)` (what an upload's first look does when no
stage-1 copy stops it: the PDQ probe, the gated probes and the word vote) both ways,
alternating which goes first, in CPU time of the thread, with the parts timed inside it: the
PDQ searches (`HammingIndex.search`), the postings read (`WordIndex._votes`), the scoring
(`WordIndex._best`, of which the kernel `best_bins`). Every answer is asserted equal: stage-1
matches, and every candidate (ref, PDQ distance and pair, gate, word score to the bit, votes)
in order.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.vote_kernel import load_fullscale  # noqa: E402
from shotstamp_service.matching import engine, kernels  # noqa: E402
from shotstamp_service.matching import index as index_module  # noqa: E402

# What an export stands in for while its looks run: (class, method) of this checkout's index.
SWAPPED = [(index_module.WordIndex, "search_query"), (index_module.WordIndex, "_votes"),
           (index_module.WordIndex, "_best"), (index_module.WordIndex, "_frequencies"),
           (index_module.WordIndex, "_readable"), (index_module.HammingIndex, "search")]


def _module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def export_index(src: Path) -> ModuleType:
    """The export's `index.py` as module `before_index`, calling the export's `kernels.py`
    (`before_kernels`) where it imports this checkout's."""
    base = src / "service/shotstamp_service/matching"
    _module("before_kernels", base / "kernels.py")
    text = (base / "index.py").read_text().replace(
        "from shotstamp_service.matching import kernels", "import before_kernels as kernels")
    module = ModuleType("before_index")
    module.__file__ = str(base / "index.py")
    sys.modules["before_index"] = module  # dataclasses resolve their module by name
    exec(compile(text, module.__file__, "exec"), module.__dict__)
    return module


def export_masks(module: ModuleType, tables: Any, max_radius: int) -> list[Any]:
    """The probe masks `module` (an index.py, this checkout's or an export's) gives a table of
    `tables`' layout: before branch look every chunk ⌊max_radius/m⌋ bits out, since then
    `_Layout.masks` (per chunk). Segments are mapped by this checkout's `segments.py`, whose
    tables carry its masks: an export's looks must read the tables with its own."""
    layout = module._layout(max(tables.layout.widths), max_radius)
    assert tuple(layout.widths) == tuple(tables.layout.widths)
    if hasattr(layout, "masks"):
        return list(layout.masks)
    return [module._flip_masks(w, layout.flips) for w in layout.widths]


def with_masks(parts: list[Any], module: ModuleType, max_radius: int) -> list[Any]:
    """Persisted PDQ parts with their tables probed as `module` probes them (same arrays)."""
    return [p if not p.tables.size else replace(p, tables=replace(
        p.tables, masks=export_masks(module, p.tables, max_radius))) for p in parts]


class Version:
    """One version's kernels module and index methods, put in place by `using`."""

    def __init__(self, name: str, kernels_module: ModuleType, methods: dict[Any, Any]) -> None:
        self.name, self.kernels, self.methods = name, kernels_module, methods

    @classmethod
    def this(cls) -> Version:
        return cls("after", kernels, {(c, m): c.__dict__[m] for c, m in SWAPPED})

    @classmethod
    def export(cls, src: Path) -> Version:
        old_index = export_index(src)
        methods = {(c, m): getattr(old_index, c.__name__).__dict__[m] for c, m in SWAPPED}
        return cls("before", sys.modules["before_kernels"], methods)

    @contextmanager
    def using(self) -> Iterator[None]:
        saved = {(c, m): c.__dict__[m] for c, m in SWAPPED}
        for (c, m), f in self.methods.items():
            setattr(c, m, f)
        try:
            yield
        finally:
            for (c, m), f in saved.items():
                setattr(c, m, f)


class Timers:
    """Thread CPU spent inside wrapped callables, by label (outermost call only per label)."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = defaultdict(float)

    def wrap(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent[label] += time.thread_time() - t
        return timed


@contextmanager
def timed_parts(version: Version, timers: Timers) -> Iterator[None]:
    """`version`'s parts wrapped by `timers` (inside `version.using()`)."""
    wrapped = [(index_module.HammingIndex, "search", "PDQ searches"),
               (index_module.WordIndex, "_votes", "postings read"),
               (index_module.WordIndex, "_best", "scoring")]
    saved = [(c, m, c.__dict__[m]) for c, m, _ in wrapped]
    kernel = version.kernels.best_bins
    for c, m, label in wrapped:
        raw = c.__dict__[m]
        fn = raw.__func__ if isinstance(raw, staticmethod) else raw
        w = timers.wrap(label, fn)
        setattr(c, m, staticmethod(w) if isinstance(raw, staticmethod) else w)
    version.kernels.best_bins = timers.wrap("of which best_bins", kernel)
    try:
        yield
    finally:
        for c, m, f in saved:
            setattr(c, m, f)
        version.kernels.best_bins = kernel


def answer(stage1: engine.Stage1) -> tuple[Any, ...]:
    found = [(m.ref, sorted(m.distances.items()), m.verdict, m.clause, m.pdq_pair)
             for m in stage1.found]
    cands = None if stage1.candidates is None else [
        (c.ref, c.pdq, c.pdq_pair, c.gated, c.words, c.votes) for c in stage1.candidates]
    return found, cands


def compare(data: Path, before: Path, queries: int) -> None:
    kernels.warm()
    versions = [Version.export(before), Version.this()]
    with versions[0].using():
        versions[0].kernels.warm()
    matcher, items, _ = load_fullscale(data)
    chosen = [it for it in items if it.fp.local is not None and len(it.fp.local)]
    chosen = chosen[:: max(1, len(chosen) // queries)][:queries]
    print(f"{len(matcher):,} registrations mapped; {len(chosen)} queries (+20 of warm-up)",
          flush=True)

    # each version's probes of the same mapped PDQ tables (`export_masks`)
    before_index = sys.modules["before_index"]
    parts = {"after": (matcher._pdq._frozen, matcher._pdq_low._frozen),
             "before": (with_masks(matcher._pdq._frozen, before_index, engine.PDQ_CANDIDATE),
                        with_masks(matcher._pdq_low._frozen, before_index,
                                   engine.PDQ_CANDIDATE))}

    def look(version: Version, fp: Any, timers: Timers) -> tuple[Any, float]:
        matcher._pdq._frozen, matcher._pdq_low._frozen = parts[version.name]
        matcher._near = None  # no answer kept from the other version's look
        with version.using(), timed_parts(version, timers):
            t = time.thread_time()
            stage1 = matcher.look(fp, stop_at_copy=False)
            return answer(stage1), time.thread_time() - t

    for it in chosen[:20]:
        for v in versions:
            look(v, it.fp, Timers())
    spent: dict[str, dict[str, list[float]]] = {v.name: defaultdict(list) for v in versions}
    words = 0
    for k, it in enumerate(chosen):
        got = {}
        for v in (versions if k % 2 else versions[::-1]):
            timers = Timers()
            got[v.name], total = look(v, it.fp, timers)
            spent[v.name]["look"].append(total)
            for label, s in timers.spent.items():
                spent[v.name][label].append(s)
        assert got["before"] == got["after"], f"query {k} ({it.photo}): the answers differ"
        words += sum(1 for c in got["after"][1] or [] if c[4])
    print(f"every answer equal ({words / len(chosen):.1f} word candidates a look)")
    labels = ["look", "PDQ searches", "postings read", "scoring", "of which best_bins"]
    for name in ("before", "after"):
        xs = sorted(spent[name]["look"])
        print(f"{name}: look p99 {xs[int(0.99 * (len(xs) - 1))] * 1e3:.3f} ms, "
              f"max {xs[-1] * 1e3:.3f} ms")
    print("| CPU ms (thread), median | before | after | saved | ratio (median of per-look) |")
    print("|---|---|---|---|---|")
    for label in labels:
        b, a = spent["before"][label], spent["after"][label]
        ratios = [x / y for x, y in zip(b, a, strict=True) if y > 0]
        print(f"| {label} | {statistics.median(b) * 1e3:.3f} | {statistics.median(a) * 1e3:.3f} "
              f"| {(statistics.median(b) - statistics.median(a)) * 1e3:.3f} | "
              f"{statistics.median(ratios):.2f}× |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cmp = sub.add_parser("compare")
    cmp.add_argument("data", type=Path)
    cmp.add_argument("--before", type=Path, required=True)
    cmp.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    if args.command == "compare":
        compare(args.data, args.before, args.queries)


if __name__ == "__main__":
    main()
