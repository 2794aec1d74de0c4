"""What the table-driven rule costs: CPU per `decide` call (and per explanation) over the
recorded stage-2 cases of tests/testdata/matching-decisions.json.

    PYTHONPATH=sdk:service python -m bench.rule [--against OLD_ENGINE_PY] [--rounds 5]

`--against` loads another engine.py (e.g. `git show ef181f6:service/shotstamp_service/matching/
engine.py > /tmp/old_engine.py`) and times its `decide` on the same cases in the same run, and
checks both give the same verdict on every case. CPU time from resource.getrusage.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shotstamp_service.matching import engine, rule
from shotstamp_service.matching.verification import Evidence

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "testdata" / "matching-decisions.json"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cases(module: Any) -> list[tuple[Any, Evidence]]:
    sys.path.insert(0, str(FIXTURE.parents[2]))  # for tests.kit
    from tests.kit.decisions import synthetic_cases

    recorded = json.loads(FIXTURE.read_text())["real"]
    out = []
    for c, e in [(c, e) for c, e, _ in recorded] + synthetic_cases():
        pair = tuple(c["pdq_pair"]) if c["pdq_pair"] else None
        out.append((module.Candidate(**dict(c, pdq_pair=pair)), Evidence(**e)))
    return out


def _time(decide: Callable[[Any, Evidence], Any], cases: list[tuple[Any, Evidence]],
          rounds: int) -> tuple[float, list[str]]:
    best = float("inf")
    verdicts: list[str] = []
    for _ in range(rounds):
        start = _cpu()
        verdicts = [(m.verdict if (m := decide(c, e)) else "-") for c, e in cases]
        best = min(best, (_cpu() - start) / len(cases))
    return best, verdicts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, help="another engine.py to time beside it")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    cases = _cases(engine)
    print(f"{len(cases):,} recorded cases (real and synthetic), best of {args.rounds} rounds")
    print("| decide | µs CPU per call | same verdicts |")
    print("|---|---|---|")
    new, verdicts = _time(engine.decide, cases, args.rounds)
    if args.against:
        spec = importlib.util.spec_from_file_location("old_engine", args.against)
        assert spec is not None and spec.loader is not None
        old = importlib.util.module_from_spec(spec)
        sys.modules["old_engine"] = old  # dataclasses look their module up
        spec.loader.exec_module(old)
        old_cases = [(old.Candidate(**vars(c)), e) for c, e in cases]
        took, old_verdicts = _time(old.decide, old_cases, args.rounds)
        print(f"| {args.against.name} | {took * 1e6:.2f} | — |")
    print(f"| table (matching/rule.py) | {new * 1e6:.2f} | "
          f"{'yes' if not args.against else verdicts == old_verdicts} |")
    matches = [(rule.clause_named(m.clause), m.distances) for c, e in cases
               if (m := engine.decide(c, e)) is not None]
    start = _cpu()
    for clause, distances in matches:
        rule.explain(clause, distances)
    print(f"explain: {(_cpu() - start) / len(matches) * 1e6:.2f} µs CPU per match "
          f"({len(matches):,} matches; made only for matches shown, not in decide's figure)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
