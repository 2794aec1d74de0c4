"""Stage 2 in the pool (`engine.verify_many`): CPU per upload, and two builds' answers compared.

    PYTHONPATH=sdk:service:. python -m bench.stage2 --against /tmp/stage2-before [--rounds 4]
        [--check] [--corpus-calls 300] [--photos DIR]

The calls are real stage-2 tasks, built once with this tree's stage 1 and kept under
bench/out/cache (they depend on the fingerprint code and the corpus, not on stage 2):

- **product shots**: what `bench/load.py`'s uploads hand to the pool — 300 product shots looked
  up in a matcher holding 1,000 others; each is a full shortlist of 64 word candidates, of which
  `engine.shortlist` picks 3–6 to verify;
- **corpus**: every query `bench/matching.py` makes (each photo's 20 edits and the known copies;
  held-out photos are non-copies) against the registered originals, with the candidates
  `Matcher.candidates` gives (PDQ and word candidates, SHORTLIST of them), plus — verified in
  full, as `bench/matching.py` verifies the genuine registration and its hard negatives — the
  query's own original and its two PDQ-nearest other originals, each with the code pair
  PDQ would align it by.

Each build runs in a fresh process per round (`--against DIR`: another source tree, e.g. `git
archive main`), the two alternated so the shared host's load hits both alike. Printed: CPU ms
(`time.thread_time`) per call of `verify_many`, of its shortlist alone (`engine.shortlist`,
the candidates' keypoints read from their blobs and ranked), and per verification
(`verification.verify_pair`); medians over rounds. `--check` first runs every call of both
sets in both builds and compares the answers: each candidate's evidence field by field
(geometry included), each word candidate's consistency, and which candidates were verified.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pickle
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / "out" / "cache"
# A call: (query feature blob, [(ref, global_pair, by_words)]); blobs by ref beside it.
Call = tuple[bytes, list[tuple[int, tuple[str, str] | None, bool]]]
Cases = tuple[list[Call], dict[int, bytes]]


def _product_cases() -> Cases:
    sys.path.insert(0, str(ROOT / "bench"))
    from productshots import product_shots
    from shotstamp_service.matching.engine import Matcher
    from shotstamp_service.matching.fingerprint import fingerprint

    matcher = Matcher(background=False)
    blobs: dict[int, bytes] = {}
    calls: list[Call] = []
    for i, path in enumerate(product_shots(1300)):
        fp = fingerprint(path.read_bytes())
        if i >= 1000 and fp.features is not None and not matcher.search(fp):
            calls.append((fp.features, [(c.ref, c.global_pair, c.by_words)
                                        for c in matcher.candidates(fp)]))
        matcher.add(i, fp)
        blob = fp.to_store()[1]
        assert blob is not None
        blobs[i] = blob
    return calls, blobs


def _corpus_cases(root: Path) -> Cases:
    from bench.matching import closest_code_pair, fingerprint_corpus, pair_distances
    from shotstamp_service.matching.engine import Matcher
    from tests.kit.corpus import held_out, load_photos

    photos = load_photos(root)
    holdout = held_out(photos, root)
    registered = {p.file: i for i, p in enumerate(photos) if p.file not in holdout}
    items = fingerprint_corpus(root, 1)
    by_key = {(i.photo, i.edit): i for i in items}
    refs = sorted(registered.values())
    originals = [by_key[(photos[r].file, "original")] for r in refs]
    matcher = Matcher(background=False)
    blobs: dict[int, bytes] = {}
    for ref, item in zip(refs, originals, strict=True):
        matcher.add(ref, item.fp)
        blob = item.fp.to_store()[1]
        assert blob is not None
        blobs[ref] = blob
    queries = [i for i in items if i.fp.features is not None
               and not (i.edit == "original" and i.photo in registered)]
    nearest = pair_distances(queries, originals, gated=True)
    calls: list[Call] = []
    for k, item in enumerate(queries):
        found = matcher.search(item.fp)
        listed = [] if found else [(c.ref, c.global_pair, c.by_words)
                                   for c in matcher.candidates(item.fp)]
        own = registered.get(item.photo)
        others = [refs[j] for j in nearest[k].argsort(kind="stable") if refs[j] != own][:2]
        for ref in ([own] if own is not None else []) + others:
            stored = originals[refs.index(ref)].fp
            try:
                pair: tuple[str, str] | None = closest_code_pair(item.fp, stored)
            except AssertionError:  # no code of either passes the quality gate
                pair = None
            listed.append((ref, pair, False))
        assert item.fp.features is not None
        calls.append((item.fp.features, listed))
    return calls, blobs


def cases(name: str, root: Path | None) -> Cases:
    from bench.matching import fingerprints_digest

    path = CACHE / f"stage2-{name}-{fingerprints_digest()}.pkl"
    if path.exists():
        with open(path, "rb") as f:
            loaded: Cases = pickle.load(f)
            return loaded
    if name == "products":
        built = _product_cases()
    else:
        from tests.kit.corpus import corpus_dir

        built = _corpus_cases(root or corpus_dir())
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(built, f)
    return built


def _items(call: Call, blobs: dict[int, bytes]) -> list[tuple[int, bytes, Any, bool]]:
    return [(ref, blobs[ref], pair, by_words) for ref, pair, by_words in call[1]]


def child(args: argparse.Namespace) -> None:
    """In a fresh process of one build: answers (--check) or timings of the given calls."""
    from shotstamp_service.matching import forkserver_init  # noqa: F401  (the workers' heap)
    from shotstamp_service.matching.engine import consistent_keypoints, shortlist, verify_many
    from shotstamp_service.matching.features import LocalFeatures
    from shotstamp_service.matching.verification import verify_pair

    with open(args.cases, "rb") as f:
        calls, blobs = pickle.load(f)
    out: dict[str, Any] = {}
    if args.child == "check":
        answers = []
        for call in calls:
            items = _items(call, blobs)
            query = LocalFeatures.from_bytes(call[0])
            words = [blob for _, blob, _, by_words in items if by_words]
            answers.append((
                [(ref, dataclasses.astuple(ev)) for ref, ev in verify_many(call[0], items)],
                consistent_keypoints(query, words).tolist() if words else [],
                # every candidate verified in full, whatever the shortlist picks
                [dataclasses.astuple(verify_pair(query, LocalFeatures.from_bytes(blob), pair))
                 for _, blob, pair, _ in items[:8]] if args.full else []))
        out["answers"] = answers
    else:
        prepared = [(call[0], _items(call, blobs)) for call in calls]
        for query, items in prepared[:10]:
            verify_many(query, items)
        started = time.thread_time()
        for query, items in prepared:
            verify_many(query, items)
        out["verify_many"] = (time.thread_time() - started) / len(prepared) * 1000
        started = time.thread_time()
        for query, items in prepared:
            shortlist(LocalFeatures.from_bytes(query),
                      [(ref, blob) for ref, blob, _, by_words in items if by_words])
        out["shortlist"] = (time.thread_time() - started) / len(prepared) * 1000
        pairs = [(LocalFeatures.from_bytes(query), LocalFeatures.from_bytes(blob), pair)
                 for query, items in prepared[:100] for _, blob, pair, _ in items[:6]]
        started = time.thread_time()
        for query_features, stored, pair in pairs:
            verify_pair(query_features, stored, pair)
        out["verify_pair"] = (time.thread_time() - started) / len(pairs) * 1000
    with open(args.out, "wb") as f:
        pickle.dump(out, f)


def _run(tree: Path, mode: str, case_file: Path, full: bool = False) -> dict[str, Any]:
    out = case_file.with_suffix(f".{os.getpid()}.out")
    env = dict(os.environ, PYTHONPATH=f"{tree}/sdk:{tree}/service:{ROOT}")
    command = [sys.executable, "-m", "bench.stage2", "--child", mode, "--cases", str(case_file),
               "--out", str(out)] + (["--full"] if full else [])
    subprocess.run(command, env=env, check=True, cwd=ROOT)
    with open(out, "rb") as f:
        result: dict[str, Any] = pickle.load(f)
    out.unlink()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", type=Path, help="another source tree to alternate with")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--check", action="store_true", help="compare both builds' answers")
    parser.add_argument("--full", action="store_true",
                        help="with --check, also verify the first 8 candidates of every call")
    parser.add_argument("--corpus-calls", type=int, default=300,
                        help="corpus calls timed (spread over the corpus); all are checked")
    parser.add_argument("--photos", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--cases", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0
    builds = {"this tree": ROOT} | ({"against": args.against} if args.against else {})
    sets: dict[str, Cases] = {"product shots": cases("products", None),
                              "corpus": cases("corpus", args.photos)}
    files: dict[str, tuple[Path, Path]] = {}
    for name, (calls, blobs) in sets.items():
        every = CACHE / f"stage2-run-{name.replace(' ', '-')}-all.pkl"
        step = max(1, len(calls) // args.corpus_calls)
        timed = CACHE / f"stage2-run-{name.replace(' ', '-')}-timed.pkl"
        for path, chosen in ((every, calls), (timed, calls[::step][: args.corpus_calls])):
            with open(path, "wb") as f:
                pickle.dump((chosen, blobs), f)
        files[name] = (every, timed)
        print(f"{name}: {len(calls)} calls, {sum(len(c[1]) for c in calls)} candidates",
              flush=True)
    if args.check and args.against:
        for name, (every, _) in files.items():
            answers = {b: _run(tree, "check", every, args.full)["answers"]
                       for b, tree in builds.items()}
            mine, theirs = answers["this tree"], answers["against"]
            differ = [k for k, (a, b) in enumerate(zip(mine, theirs, strict=True)) if a != b]
            verified = sum(len(a[0]) + len(a[2]) for a in mine)
            scored = sum(len(a[1]) for a in mine)
            print(f"check, {name}: {len(mine)} calls, {verified} verifications and {scored} "
                  f"consistency scores compared; calls that differ: {len(differ)} "
                  f"{differ[:10]}", flush=True)
    timings: dict[str, dict[str, list[dict[str, float]]]] = {
        name: {b: [] for b in builds} for name in files}
    for r in range(args.rounds):
        for b, tree in (builds.items() if r % 2 == 0 else reversed(builds.items())):
            for name, (_, timed) in files.items():
                got = _run(tree, "time", timed)
                timings[name][b].append(got)
                print(f"round {r + 1} {b:9s} {name:13s} "
                      + "  ".join(f"{k} {v:.3f}" for k, v in got.items()), flush=True)
    if not args.rounds:
        return 0
    print("\nCPU ms per call (verify_many, its shortlist) and per verification, medians of "
          f"{args.rounds} rounds:")
    print("| calls | build | verify_many | shortlist | verify_pair |")
    print("|---|---|---|---|---|")
    for name, by_build in timings.items():
        for b, rounds in by_build.items():
            med = {k: statistics.median(x[k] for x in rounds) for k in rounds[0]}
            print(f"| {name} | {b} | {med['verify_many']:.3f} | {med['shortlist']:.3f} | "
                  f"{med['verify_pair']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
