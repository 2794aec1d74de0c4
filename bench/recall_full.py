"""Recall per edit family and false matches through the HTTP API of a service holding ≥ 1 M.

    PYTHONPATH=sdk:service:. python -m bench.recall_full DIR/data [--every 3] [--edits a,b]
    PYTHONPATH=sdk:service:. python -m bench.recall_full DIR/data --estimate [--every 3]
    PYTHONPATH=sdk:service:. python -m bench.recall_full DIR/data --validate DIR/seeds.pkl

DIR/data is a data directory `bench/fullscale.py build` made: the corpus's query originals
(every non-held-out photo, as `bench/matching.py` registers them) registered by one seller
among the distractors. This starts that service and, through POST /v1/registrations:

- uploads every edited copy (tests/kit/edits, the fixed seeds `bench/matching.py` uses) of
  every `--every`-th query photo, one seller per edit family (so a copy that got through
  in one family does not make another family's upload "already yours"): a refusal (409)
  that lists the photo's original among its matches is a hit; a 409 listing a registration
  that is neither that original, a registration of the same picture (tests.kit.corpus
  SAME_PICTURE) nor an earlier benchmark copy of the same photo is a false match;
- uploads the unseen held-out photos (never registered, never a distractor source) and
  three edits of each, from one more seller: any refusal among those is a false match.

With `--checks` the same images go to POST /v1/checks instead (nothing is registered); a
`copy` verdict there is what an upload would be refused for.

Each run's sellers carry a fresh tag, so the benchmark can run again on the same directory
(what an earlier run registered is then another seller's copy of the same photo).
A staff key reads back every registration a refusal names (seller and title).

`--estimate` prints `bench/matching.py`'s estimates for the same photos instead (its
fingerprint cache, its `estimate_in`): for this directory's population (the corpus's
registrations and 3,107 seeds each registered ≈ 322 times), to set beside the measured
figures, and for a 10 M catalogue with 0, 10 or 100 look-alikes per photo; beside them the
linear estimate it replaced (`estimate_at_scale`). `--validate SEEDS_PKL` registers the
corpus and the seeds once each in process and sets the engine's verdicts beside the
estimate's, and measures how often a seed's look-alikes outrank its copies' original
(`matching.LOOKALIKE_SHARE`). docs/benchmarks-at-scale.md, *The estimate at scale*.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import pickle
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fullscale import QUERY_SELLER, split_corpus  # noqa: E402
from bench.load import LocalService  # noqa: E402
from bench.load_full import ENV  # noqa: E402

UNSEEN_EDITS = ("crop_80", "rotate", "combination")


def _jobs(root: Path, every: int, edits: list[str]) -> tuple[list[tuple[str, str, bytes]],
                                                               list[tuple[str, str, bytes]]]:
    from tests.kit.corpus import original_bytes
    from tests.kit.edits import EDITS, apply_edit

    by_name = {e.name: e for e in EDITS}
    queries, _, unseen = split_corpus(root)
    copies = []
    for photo in queries[::every]:
        _, shot = original_bytes(root / photo)
        copies += [(photo, e, apply_edit(by_name[e], shot, photo=photo)) for e in edits]
    others = []
    for photo in unseen:
        data, shot = original_bytes(root / photo)
        others.append((photo, "original", data))
        others += [(photo, e, apply_edit(by_name[e], shot, photo=photo)) for e in UNSEEN_EDITS]
    return copies, others


async def measure(service: LocalService, copies: list[tuple[str, str, bytes]],
                  others: list[tuple[str, str, bytes]], clients: int, checks: bool) -> None:
    from tests.kit.corpus import same_picture
    from tests.kit.edits import EDITS

    tag = time.strftime("%H%M%S", time.gmtime())
    families = sorted({e for _, e, _ in copies})
    keys = {e: service.admin("keys", "create", "--seller", f"fullscale-copier-{tag}-{e}")
            for e in families}
    keys["unseen"] = service.admin("keys", "create", "--seller", f"fullscale-unseen-{tag}")
    staff = service.admin("keys", "create", "--seller", "fullscale-staff", "--role", "staff")
    url = service.process.url if service.process else ""
    partners = same_picture()
    names: dict[str, tuple[str, str]] = {}  # registration id → (seller, title)
    outcome: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    false_matches: list[str] = []
    latencies: list[float] = []

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=300)) as session:

        async def name(reg_id: str) -> tuple[str, str]:
            if reg_id not in names:
                async with session.get(f"{url}/v1/registrations/{reg_id}",
                                       headers={"Authorization": f"Bearer {staff}"}) as r:
                    body = await r.json()
                names[reg_id] = (body.get("seller", "?"), body.get("title") or "")
            return names[reg_id]

        async def upload(photo: str, edit: str, data: bytes, key: str, family: str) -> None:
            form = aiohttp.FormData()
            form.add_field("image", data, filename="copy.jpg", content_type="image/jpeg")
            form.add_field("title", f"{photo}|{edit}")
            t = time.monotonic()
            async with session.post(f"{url}/v1/{'checks' if checks else 'registrations'}",
                                    data=form, headers={"Authorization": f"Bearer {key}"}) as r:
                status, body = r.status, await r.json()
            latencies.append(time.monotonic() - t)
            if checks:  # what an upload would be refused for: another seller's copy verdict
                body["matches"] = [m for m in body.get("matches", []) if m["verdict"] == "copy"]
                status = 409 if body["matches"] else 201
            if status != 409:
                outcome[family]["miss" if family != "unseen" else "accepted"] += 1
                return
            hit, wrong = False, []
            for m in body.get("matches", []):
                seller, title = await name(m["registration_id"])
                source = title.split("|")[0]
                if seller == QUERY_SELLER and source == photo and family != "unseen":
                    hit = True
                elif source == photo and seller.startswith("fullscale-"):
                    continue  # an earlier benchmark copy of the same photo
                elif source in partners.get(photo, ()):
                    continue  # the same picture under another name
                else:
                    wrong.append(f"{seller}:{title or m['registration_id']} "
                                 f"({m.get('clause')}, {m.get('stage')})")
            if wrong:
                false_matches.append(f"{photo} [{edit}] → {'; '.join(wrong)}")
                outcome[family]["false match"] += 1
            if family == "unseen":
                if not wrong:
                    outcome[family]["refused, own photo"] += 1
            else:
                outcome[family]["hit" if hit else "refused, not naming the original"] += 1

        queue: asyncio.Queue[tuple[str, str, bytes, str, str]] = asyncio.Queue()
        # The hardest families first: a copy another family let through is a registration,
        # and a later upload of the same photo may be refused naming it instead.
        rank = {e.name: k for k, e in enumerate(EDITS)}
        for photo, edit, data in sorted(copies, key=lambda c: -rank[c[1]]):
            queue.put_nowait((photo, edit, data, keys[edit], edit))
        for photo, edit, data in others:
            queue.put_nowait((photo, edit, data, keys["unseen"], "unseen"))
        total, started = queue.qsize(), time.monotonic()

        async def worker() -> None:
            while not queue.empty():
                job = queue.get_nowait()
                await upload(*job)
                done = total - queue.qsize()
                if done % 250 == 0:
                    print(f"<!-- {done}/{total} uploads, {time.monotonic() - started:.0f} s -->",
                          flush=True)

        await asyncio.gather(*(worker() for _ in range(clients)))

    print("| edit | goal | n | refused naming the original | refused otherwise | accepted "
          "(missed) | false matches |")
    print("|---|---|---|---|---|---|---|")
    hits = n_all = 0
    for e in EDITS:
        c = outcome.get(e.name)
        if not c:
            continue
        n = c["hit"] + c["refused, not naming the original"] + c["miss"]
        hits += c["hit"]
        n_all += n
        print(f"| {e.name} | {e.goal:.0%} | {n} | {c['hit'] / n:.1%} | "
              f"{c['refused, not naming the original']} | {c['miss']} | {c['false match']} |")
    print(f"| **all edits** | | {n_all} | **{hits / max(1, n_all):.1%}** | | | |")
    u = outcome["unseen"]
    print(f"\nunseen different photos and their edits: {sum(u.values())} uploads, "
          f"{u['accepted']} accepted, {u['false match']} refused naming another photo, "
          f"{u['refused, own photo']} refused naming an earlier upload of the same photo")
    print(f"false matches: {len(false_matches)}")
    for f in false_matches[:30]:
        print(f"- {f}")
    lat = sorted(latencies)
    print(f"upload latency p50 {lat[len(lat) // 2] * 1000:.0f} ms, "
          f"p99 {lat[int(len(lat) * 0.99)] * 1000:.0f} ms ({clients} clients)")
    print(json.dumps({k: dict(v) for k, v in outcome.items()}))


def _engine_run(every: int, workers: int) -> tuple[dict[str, int], set[str], list, object,
                                                   object, dict[str, set[int]]]:
    """bench/matching.py's engine over the registered originals and the edits of every
    `every`-th query photo: (registered, sample, items, results, unrelated, related)."""
    from bench import matching as mb
    from tests.kit.corpus import corpus_dir, held_out, load_photos, same_picture

    root = corpus_dir()
    photos = load_photos(root)
    holdout = held_out(photos, root)
    order = [p.file for p in photos]
    registered = {f: i for i, f in enumerate(order) if f not in holdout}
    queries, _, _ = split_corpus(root)
    sample = set(queries[::every])
    # The registered originals and the sampled photos' edits only (bench/matching.py
    # fingerprints the whole corpus, and its cache serves when it has run): cached beside
    # its cache, under the same code digest.
    path = mb.OUT / "cache" / f"fullscale-{mb.fingerprints_digest()}-every{every}.pkl"
    # A sample of every d-th photo holds every (k·d)-th photo's edits too.
    cached = [path.with_name(path.name.replace(f"every{every}", f"every{d}"))
              for d in range(1, every + 1) if every % d == 0]
    cached.append(mb.OUT / "cache" / f"fingerprints-{mb.fingerprints_digest()}.pkl")
    found = [c for c in cached if c.exists()]
    if found:
        items = [i for i in pickle.loads(found[0].read_bytes())
                 if i.photo in registered and (i.edit == "original" or i.photo in sample)
                 and not i.edit.startswith("known:")]
    else:
        jobs = [(str(root), f, f in sample) for f in registered]
        with ProcessPoolExecutor(max_workers=workers) as pool:
            items = [i for batch in pool.map(mb._fingerprint_photo, jobs, chunksize=4)
                     for i in batch]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(items))
    digest = mb._digest([*mb.FINGERPRINT_CODE, mb.SERVICE / "verification.py"])
    cache = mb.EvidenceCache(mb.OUT / "cache" / f"evidence-{digest}.pkl")
    related = {f: {registered[g] for g in others if g in registered}
               for f, others in same_picture().items()}
    _, results, unrelated = mb.run_queries(items, registered, related, cache,
                                           lookalikes=mb.corpus_lookalikes(photos, registered,
                                                                           root))
    cache.save()
    return registered, sample, items, results, unrelated, related


def _families(results: list, sample: set[str]) -> list[tuple[str, list]]:
    from tests.kit.edits import EDITS

    rows = [(e.name, [r for r in results if r.genuine_ref is not None and r.item.edit == e.name
                      and r.item.photo in sample]) for e in EDITS]
    rows = [(name, rs) for name, rs in rows if rs]
    return [*rows, ("**all edits**", [r for _, rs in rows for r in rs])]


def estimate(every: int, registrations: int, workers: int) -> None:
    """bench/matching.py's at-scale estimates for the same query photos: at `registrations`
    as the fullscale directory holds them (its distractors: SEEDS real images, each
    registered `registrations` / SEEDS times), the linear estimate at the same size, and a
    catalogue of 10 M independent photos with 0, 10 or 100 look-alikes each."""
    import numpy as np

    from bench import matching as mb

    registered, sample, _, results, unrelated, _ = _engine_run(every, workers)
    copies = max(1, round((registrations - len(registered)) / SEEDS))
    fullscale = mb.Population(((len(registered) - 1, 1), (SEEDS, copies)))
    columns: list[tuple[str, object]] = [
        (f"linear est. at {registrations:,} (old)", registrations),
        (f"est., {registrations:,} independent, look-alikes as measured",
         mb.Population(((registrations - 1, 1),))),
        (f"est. for this directory ({SEEDS:,} seeds × {copies})", fullscale),
        ("linear est. at 10 M (old)", mb.TEN_MILLION),
        *((f"est. at 10 M, {k} look-alikes", mb.catalogue(mb.TEN_MILLION, k))
          for k in mb.LOOKALIKE_SIZES)]

    def at(r: mb.QueryResult, how: object) -> float:
        if isinstance(how, int):
            return mb.estimate_at_scale(r, unrelated, how)
        assert isinstance(how, mb.Population)
        return mb.estimate_in(r, unrelated, how)

    print(f"| edit | n | recall at {len(registered)} | " + " | ".join(c for c, _ in columns)
          + " |")
    print("|---|---|---|" + "---|" * len(columns))
    for name, rs in _families(results, sample):
        print(f"| {name} | {len(rs)} | "
              f"{np.mean([r.verdict.startswith('copy') for r in rs]):.1%} | "
              + " | ".join(f"{np.mean([at(r, how) for r in rs]):.1%}" for _, how in columns)
              + " |")
    why_linear(results, unrelated, sample, registrations)


def why_linear(results: list, unrelated: object, sample: set[str], n: int) -> None:
    """Where the linear estimate's competitors at `n` come from: the pooled tail of unrelated
    pairs is look-alike pairs (one manifest group or similar_pairs.tsv), which it hands to
    every query as a rate, while a query's own look-alikes rarely outscore its original."""
    import numpy as np

    look = unrelated.lookalike[:, 0]  # type: ignore[attr-defined]
    ind = unrelated.independent[:, 0]  # type: ignore[attr-defined]
    pairs = unrelated.pairs  # type: ignore[attr-defined]
    pooled = np.concatenate([np.c_[ind, np.zeros(len(ind))], np.c_[look, np.ones(len(look))]])
    best = pooled[np.argsort(-pooled[:, 0], kind="stable")]
    print("\nThe best unrelated pairs by word score that are look-alike pairs: "
          + ", ".join(f"top {k:,} {best[:k, 1].mean():.1%}" for k in (104, 1000, 5000))
          + f" (of {len(pooled):,} pairs with MIN_VOTES, {len(look):,} of them look-alike)\n")
    print(f"| edit | word-found copies | linear estimate at {n:,}: ≥ 3 competitors expected | "
          "of which mostly from look-alike pairs | outscored by a look-alike of their own |")
    print("|---|---|---|---|---|")
    for name, rs in _families(results, sample)[:-1]:
        found = [r for r in rs if r.verified_copy and not r.via_pdq
                 and r.verdict != "copy-fast" and r.true_words > 0 and r.others is not None]
        if not found:
            continue
        from_look = np.array([(look >= r.true_words).sum() / pairs * n for r in found])
        from_ind = np.array([(ind >= r.true_words).sum() / pairs * n for r in found])
        at_risk = from_look + from_ind >= 3
        own = sum(bool(((r.others[:, 2] > 0) & (r.others[:, 0] >= r.true_words)).any())
                  for r in found)
        print(f"| {name} | {len(found)} | {int(at_risk.sum())} | "
              f"{int((at_risk & (from_look > from_ind)).sum())} | {own} |")


# Distinct distractor fingerprints bench/fullscale.py registers (its seeds.pkl): 239 sources
# × (an original and 12 look-alikes), 3,107 after the refused ones.
SEEDS = 3107


def lookalike_shares(matcher: object, seeds: list, refs: dict[str, int]) -> None:
    """How often another shot of the same thing outranks a copy's original by word score:
    the seeds' look-alike families (bench/fullscale.py: each source's crops, perspective
    warps, lighting changes and new background) against its copier edits, in `matcher`."""
    from bench.fullscale import COPY_EDITS, FAMILY
    from shotstamp_service.matching import engine as rule

    by_source: dict[str, dict[str, object]] = collections.defaultdict(dict)
    for item in seeds:
        source, variant = item.photo.rsplit("|", 1)
        by_source[source][variant] = item
    kinds = {"crop": "crop (the same picture)", "warp": "warp (another viewpoint)",
             "light": "light (relit)", "background": "background (another ground)"}
    # (edit, kind) → [outranking by word score, at least as consistent, pairs]
    counts: dict[tuple[str, str], list[int]] = collections.defaultdict(lambda: [0, 0, 0])
    for members in by_source.values():
        if "original" not in members:
            continue
        true_ref = refs[members["original"].photo]  # type: ignore[attr-defined]
        for edit in COPY_EDITS:
            if edit not in members:
                continue
            query = members[edit].fp  # type: ignore[attr-defined]
            scores = {x.ref: x.score for x in matcher.word_scores(  # type: ignore[attr-defined]
                query, limit=1 << 30, max_postings=None, probes=0)
                if x.votes >= rule.MIN_VOTES}
            true = scores.get(true_ref, 0.0)
            if true <= 0 or query.local is None:
                continue
            shots = [(v, item) for v, item in members.items() if v in FAMILY]
            cons = rule.consistent_keypoints(query.local, [
                members["original"].fp.local,  # type: ignore[attr-defined]
                *(item.fp.local for _, item in shots)])  # type: ignore[attr-defined]
            for (variant, item), c in zip(shots, cons[1:], strict=True):
                tally = counts[(edit, variant.split("_")[0])]
                tally[0] += scores.get(refs[item.photo], 0.0) >= true  # type: ignore[attr-defined]
                tally[1] += int(c >= max(cons[0], rule.MIN_CONSISTENT))
                tally[2] += 1
    print("Look-alikes of the seeds against a copy's original: share outranking it by word "
          "score / at least as consistent (and ≥ MIN_CONSISTENT), of the pairs:\n")
    print("| copy | " + " | ".join(kinds.values()) + " | another shot (warp, background) |")
    print("|---|" + "---|" * (len(kinds) + 1))
    for edit in COPY_EDITS:
        cells = [counts[(edit, k)] for k in kinds]
        shot = [counts[(edit, "warp")][i] + counts[(edit, "background")][i] for i in (0, 1, 2)]
        print(f"| {edit} | " + " | ".join(f"{a / max(1, n):.1%} / {b / max(1, n):.1%} ({n})"
                                          for a, b, n in cells)
              + f" | **{shot[0] / max(1, shot[2]):.1%} / {shot[1] / max(1, shot[2]):.1%}** |")
    print()


def validate(seeds_pkl: Path, every: int, workers: int) -> None:
    """The estimate checked where it can be measured exactly: the engine with the corpus's
    registrations and the fullscale directory's distinct seeds registered once each."""
    import numpy as np

    from bench import matching as mb
    from shotstamp_service.matching.fingerprint import Fingerprint

    registered, sample, items, results, unrelated, related = _engine_run(every, workers)

    class Seeds(pickle.Unpickler):  # `python -m bench.fullscale` pickled __main__.Seed
        def find_class(self, module: str, name: str) -> object:
            return super().find_class("bench.fullscale" if module == "__main__" else module,
                                      name)

    with open(seeds_pkl, "rb") as f:
        seeds = Seeds(f).load()["distractors"]
    base = 1 + max(registered.values())
    with_seeds = dict(registered)
    family: dict[int, str] = {}
    extra = []
    for k, seed in enumerate(seeds):
        fp = Fingerprint.from_store(seed.sha256, seed.perceptual, seed.features, seed.width,
                                    seed.height)
        extra.append(mb.Item(seed.name, "original", fp, 0, 0.0))
        with_seeds[seed.name] = base + k
        family[base + k] = seed.family
    digest = mb._digest([*mb.FINGERPRINT_CODE, mb.SERVICE / "verification.py"])
    cache = mb.EvidenceCache(mb.OUT / "cache" / f"evidence-seeds-{digest}.pkl")
    t = time.perf_counter()
    matcher, measured, _ = mb.run_queries(items + extra, with_seeds, related, cache,
                                          pair_consistency=False)
    cache.save()
    print(f"<!-- engine with {len(with_seeds):,} registrations: {time.perf_counter() - t:.0f} s "
          "-->")
    lookalike_shares(matcher, extra, with_seeds)
    by_key = {(r.item.photo, r.item.edit): r for r in measured}
    n_seeds, families = len(seeds), len(set(family.values()))
    others = len(registered) - 1
    columns = [("linear (old)", len(with_seeds) - 1),
               (f"seeds independent ({others} + {n_seeds:,})",
                mb.Population(((others, 1), (n_seeds, 1)))),
               (f"families as one ({others} + {families} × 13)",
                mb.Population(((others, 1), (families, n_seeds // families))))]

    def at(r: mb.QueryResult, how: object) -> float:
        if isinstance(how, int):
            return mb.estimate_at_scale(r, unrelated, how)
        assert isinstance(how, mb.Population)
        return mb.estimate_in(r, unrelated, how)

    print(f"| edit | n | measured, {len(registered)} | **measured, {len(with_seeds):,}** | "
          + " | ".join(c for c, _ in columns) + " | registrations outscoring the original: "
          "measured / expected (mean per copy) |")
    print("|---|---|---|---|" + "---|" * len(columns) + "---|")
    for name, rs in _families(results, sample):
        ms = [by_key[(r.item.photo, r.item.edit)] for r in rs]
        # Suspect (d): the seeds scored against the copies as the corpus's independent photos
        # are. Measured: registrations outscoring the original with the seeds registered;
        # expected: its look-alikes as measured, and the independent rate × (663 + seeds).
        ind = unrelated.independent[:, 0]  # type: ignore[attr-defined]
        pairs = unrelated.independent_pairs  # type: ignore[attr-defined]
        seen = [int((m.others[:, 0] >= m.true_words).sum()) for m in ms
                if m.others is not None and m.true_words > 0]
        expected = [int(((r.others[:, 2] > 0) & (r.others[:, 0] >= r.true_words)).sum())
                    + int((ind >= r.true_words).sum()) / pairs * (n_seeds + others)
                    for r in rs if r.others is not None and r.true_words > 0]
        print(f"| {name} | {len(rs)} | "
              f"{np.mean([r.verdict.startswith('copy') for r in rs]):.1%} | "
              f"**{np.mean([m.verdict.startswith('copy') for m in ms]):.1%}** | "
              + " | ".join(f"{np.mean([at(r, how) for r in rs]):.1%}" for _, how in columns)
              + f" | {np.mean(seen or [0]):.1f} / {np.mean(expected or [0]):.1f} |")


def main() -> int:
    from tests.kit.corpus import corpus_dir
    from tests.kit.edits import EDITS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--every", type=int, default=3, help="every N-th query photo")
    parser.add_argument("--edits", default=",".join(e.name for e in EDITS))
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="SHOTSTAMP_FINGERPRINT_WORKERS")
    parser.add_argument("--checks", action="store_true",
                        help="POST /v1/checks instead of uploading: nothing is registered, so "
                             "no family's missed copy can be named instead of the original")
    parser.add_argument("--estimate", action="store_true")
    parser.add_argument("--registrations", type=int, default=1_000_000,
                        help="with --estimate: the size to estimate at")
    parser.add_argument("--validate", type=Path, metavar="SEEDS_PKL",
                        help="the estimate beside the engine with the corpus and the seeds of "
                             "DIR/../seeds.pkl registered once each (in process)")
    args = parser.parse_args()
    if args.validate:
        validate(args.validate, args.every, args.workers)
        return 0
    if args.estimate:
        estimate(args.every, args.registrations, args.workers)
        return 0
    copies, others = _jobs(corpus_dir(), args.every, args.edits.split(","))
    print(f"<!-- {len(copies)} edited copies, {len(others)} unseen uploads -->", flush=True)
    service = LocalService({**ENV, "SHOTSTAMP_FINGERPRINT_WORKERS": str(args.workers)})
    service.data = args.data
    t = time.perf_counter()
    service.start()
    print(f"<!-- service healthy {time.perf_counter() - t:.1f} s after launch -->", flush=True)
    try:
        asyncio.run(measure(service, copies, others, args.clients, args.checks))
    finally:
        service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
