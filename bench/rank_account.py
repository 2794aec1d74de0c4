"""Where a heavily edited copy's original is lost at 1 M: an account, stage by stage.

    PYTHONPATH=sdk:service:. python -m bench.rank_account DIR/data [--families combination,crop_80]
        [--every 1] [--budget 200000]

DIR/data is `bench/fullscale.py build`'s data directory, opened read-only: its persisted
segments mapped into one `Matcher` (as `bench/vote_kernel.py` does, without the store's tail),
the feature blobs read from its SQLite file (`mode=ro`), and queried with the cached real query
edits (bench/out/cache/fullscale-*-every3.pkl). Per query of each family, the first of:

- `stage 1`: a stage-1 copy names the original (`Matcher.search`);
- `PDQ, verified`: the original is a PDQ candidate (verified in full) and stage 2 calls it a copy;
- `no posting read (budget)`: no word candidate with WORD_POSTINGS_BUDGET, one without it;
- `no word candidate`: fewer than MIN_VOTES consistent words even with every posting read;
- `below the shortlist`: a word candidate ranked past SHORTLIST;
- `outranked by consistency`: in the shortlist, not picked by `engine.shortlist`;
- `verified, refused`: picked and verified, no copy verdict;
- `word, verified`: found.

`caught` is `Matcher.match` naming the original as a copy (asserted equal to the account's
found rows). CPU per vote (`time.thread_time`) is the service's vote (limit SHORTLIST).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.vote_kernel import _family  # noqa: E402
from shotstamp_service.matching import engine  # noqa: E402

STAGES = ["stage 1", "PDQ, verified", "no posting read (budget)", "no word candidate",
          "below the shortlist", "outranked by consistency", "verified, refused",
          "word, verified"]
FOUND = {"stage 1", "PDQ, verified", "word, verified"}


def blobs_of(data: Path):
    db = sqlite3.connect(f"file:{data}/shotstamp.db?mode=ro", uri=True)
    query = ("SELECT seq, features FROM registrations"
             " WHERE seq IN (SELECT value FROM json_each(?)) AND features IS NOT NULL")

    def read(seqs: list[int]) -> dict[int, bytes]:
        return {s: bytes(b) for s, b in db.execute(query, (json.dumps(seqs),))}
    return read


def account_one(matcher: engine.Matcher, read, fp, ref: int, budget: int | None,
                ) -> tuple[str, int | None, float]:
    """(stage, word rank or None, CPU s of the service's vote)."""
    t = time.thread_time()
    matcher.word_scores(fp, limit=engine.SHORTLIST, max_postings=budget)
    cpu = time.thread_time() - t
    if any(m.ref == ref and m.verdict == "copy" for m in matcher.search(fp)):
        return "stage 1", None, cpu
    candidates = matcher.candidates(fp, limit=engine.SHORTLIST)
    by_ref = {c.ref: c for c in candidates}
    query = fp.local
    c = by_ref.get(ref)
    if c is not None and not c.by_words:
        blob = read([ref]).get(ref)
        ev = engine.verify(query, blob, c.global_pair) if blob else None
        m = engine.decide(c, ev)
        if m is not None and m.verdict == "copy":
            return "PDQ, verified", None, cpu
    scores = matcher.word_scores(fp, limit=100_000, max_postings=budget)
    refs = [s.ref for s in scores]
    rank = refs.index(ref) if ref in refs else None
    if rank is None:
        unbudgeted = [s.ref for s in matcher.word_scores(fp, limit=100_000, max_postings=None)]
        return ("no posting read (budget)" if ref in unbudgeted else "no word candidate",
                None, cpu)
    if c is None or not c.by_words:
        return "below the shortlist", rank, cpu
    words = [x for x in candidates if x.by_words]
    blobs = read([x.ref for x in words])
    chosen = engine.shortlist(query, [(x.ref, blobs[x.ref]) for x in words if x.ref in blobs])
    if ref not in chosen:
        return "outranked by consistency", rank, cpu
    m = engine.decide(c, engine.verify(query, blobs[ref], c.global_pair))
    if m is None or m.verdict != "copy":
        return "verified, refused", rank, cpu
    return "word, verified", rank, cpu


def grid(data: Path, families: list[str], configs: list[tuple[int, int, int]]) -> None:
    """Per (WORD_POSTINGS_BUDGET, WORD_PROBE_RESERVE): the originals in the shortlist, those
    with no word candidate, CPU per vote (limit SHORTLIST); every config on each query in
    turn, the order rotating query by query."""
    print("| family | budget | probe postings at scale | probed keypoints | in shortlist "
          "| no candidate | of | CPU ms/vote median | p90 | postings read median |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    from shotstamp_service.matching import kernels
    for family in families:
        matcher, rows = _family(data, family)
        inside: Counter[int] = Counter()
        absent: Counter[int] = Counter()
        cpu: dict[int, list[float]] = {k: [] for k in range(len(configs))}
        read: dict[int, list[int]] = {k: [] for k in range(len(configs))}
        counted = [0]

        def counting(parts, *a, near=kernels.near_votes, counted=counted, **kw):
            counted[0] += sum(int((p.ends - p.starts).sum()) for p in parts)
            return near(parts, *a, **kw)
        near = kernels.near_votes
        for q, (it, ref) in enumerate(rows):
            order = list(range(len(configs)))
            order = order[q % len(order):] + order[:q % len(order)]
            for k in order:
                budget, at_scale, probes = configs[k]
                t = time.thread_time()
                matcher.word_scores(it.fp, limit=engine.SHORTLIST, max_postings=budget,
                                    probe_postings_at_scale=at_scale, probes=probes)
                cpu[k].append(time.thread_time() - t)
                kernels.near_votes = counting
                counted[0] = 0
                refs = [s.ref for s in matcher.word_scores(it.fp, limit=100_000,
                                                           max_postings=budget,
                                                           probe_postings_at_scale=at_scale,
                                                           probes=probes)]
                kernels.near_votes = near
                read[k].append(counted[0])
                inside[k] += ref in refs[:engine.SHORTLIST]
                absent[k] += ref not in refs
        for k, (budget, at_scale, probes) in enumerate(configs):
            print(f"| {family} | {budget:,} | {at_scale:,} | {probes} | {inside[k]} "
                  f"| {absent[k]} "
                  f"| {len(rows)} | {statistics.median(cpu[k]) * 1e3:.2f} "
                  f"| {sorted(cpu[k])[int(0.9 * (len(rows) - 1))] * 1e3:.2f} "
                  f"| {statistics.median(read[k]):,.0f} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("data", type=Path)
    p.add_argument("--families", default="combination,crop_80,crop_offcentre,rotate")
    p.add_argument("--every", type=int, default=1)
    p.add_argument("--configs",
                   default=f"{engine.WORD_POSTINGS_BUDGET}:{engine.WORD_PROBE_POSTINGS_AT_SCALE}",
                   help="WORD_POSTINGS_BUDGET:WORD_PROBE_POSTINGS_AT_SCALE,...: each query "
                        "under each in turn")
    p.add_argument("--no-match", action="store_true", help="skip the Matcher.match cross-check")
    p.add_argument("--grid", default="",
                   help="budget:at_scale[:probes],... (200000:0,200000:20000): the vote alone")
    args = p.parse_args()
    if args.grid:
        grid(args.data, args.families.split(","),
             [(int(c[0]), int(c[1]), int(c[2]) if len(c) > 2 else engine.WORD_PROBES)
              for c in (x.split(":") for x in args.grid.split(","))])
        return
    read = blobs_of(args.data)
    print("| family | budget | probe postings at scale | n | " + " | ".join(STAGES)
          + " | found | caught (match) | other refs named copy | CPU ms/vote median | p90 |")
    print("|---|---|---|---|" + "---|" * len(STAGES) + "---|---|---|---|---|")
    configs = [(int(c[0]), int(c[1])) for c in (x.split(":") for x in args.configs.split(","))]
    defaults = engine.Matcher.word_scores.__kwdefaults__
    for family in args.families.split(","):
        matcher, rows = _family(args.data, family)
        rows = rows[::args.every]
        counts: dict[tuple[int, int], Counter[str]] = {r: Counter() for r in configs}
        cpu: dict[tuple[int, int], list[float]] = {r: [] for r in configs}
        caught: Counter[tuple[int, int]] = Counter()
        others: Counter[tuple[int, int]] = Counter()  # copy verdicts naming another ref
        lost: dict[tuple[int, int], list] = {r: [] for r in configs}
        for q, (it, ref) in enumerate(rows):
            for reserve in configs[q % len(configs):] + configs[:q % len(configs)]:
                # the budgets every look of `Matcher` takes by default (the service's)
                defaults["max_postings"], engine.WORD_PROBE_POSTINGS_AT_SCALE = reserve
                stage, rank, dt = account_one(matcher, read, it.fp, ref, reserve[0])
                counts[reserve][stage] += 1
                cpu[reserve].append(dt)
                if stage not in FOUND:
                    lost[reserve].append((it.photo, stage, rank))
                if not args.no_match:
                    got = matcher.match(it.fp, lambda r: read([r]).get(r))
                    hit = any(m.ref == ref and m.verdict == "copy" for m in got)
                    caught[reserve] += hit
                    others[reserve] += sum(m.ref != ref and m.verdict == "copy" for m in got)
                    if hit != (stage in FOUND):
                        print(f"  mismatch {it.photo}: account {stage}, match {hit}",
                              flush=True)
        for reserve in configs:
            c = counts[reserve]
            found = sum(c[s] for s in FOUND)
            print(f"| {family} | {reserve[0]:,} | {reserve[1]:,} | {len(rows)} | "
                  + " | ".join(str(c[s]) for s in STAGES)
                  + f" | {found} | {caught[reserve] if not args.no_match else '-'} "
                  f"| {others[reserve] if not args.no_match else '-'} "
                  f"| {statistics.median(cpu[reserve]) * 1e3:.1f} "
                  f"| {sorted(cpu[reserve])[int(0.9 * (len(rows) - 1))] * 1e3:.1f} |",
                  flush=True)
            for photo, stage, rank in lost[reserve]:
                print(f"  lost {family} {reserve} {photo}: {stage}"
                      + (f" (word rank {rank})" if rank is not None else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
