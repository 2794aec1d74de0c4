"""CPU of stage 1's looks on a small index, the way an upload makes them, two builds alternated.

    PYTHONPATH=sdk:service:. python -m bench.vote [--against SRC] [--rounds 4]
        [--registered 1000] [--queries 300] [--profile]

The index is what an empty service holds after a minute of `bench/load.py`: `--registered`
distinct product shots (`bench/productshots.py`) added one by one (`Matcher.add`, so the word
index is a Python tail over a few in-memory segments), plus the development corpus's originals.
Each query makes the looks an upload makes in `Registry._match`: `look` (PDQ and the word
vote), then, after one more registration arrived during its await, `look_again` (a scratch
matcher over the newcomer). Queries: `--queries` further product shots, and corpus edits
(crop_80, rotate, mirror, combination) of some registered originals, which the vote must find.

Reported per build: thread CPU µs per `look`, per `add` of the newcomer, per `look_again`
and per word vote alone
(`Matcher.word_scores` with the shortlist's limit), medians over the queries, and every
answer (stage-1 matches, candidates with their word scores) is asserted equal between the
builds. Each round runs in a fresh process; `--against DIR` (e.g. `git archive main | tar -x
-C DIR`) alternates the two builds round by round.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("VOTE_DATA", "/tmp/bench-vote-data.pkl"))
EDITS = ("crop_80", "rotate", "mirror", "combination")
KINDS = ("look", "add", "look_again", "vote")


def _prepare(registered: int, queries: int) -> Path:
    """Fingerprints of the shots and corpus photos (cached: the fingerprint code is the same
    for both builds, only the lookup differs)."""
    path = DATA.with_name(f"{DATA.stem}-{registered}-{queries}{DATA.suffix}")
    if path.exists():
        return path
    sys.path.insert(0, str(ROOT / "bench"))
    from productshots import product_shots
    from shotstamp_service.matching.decode import ImageRejected
    from shotstamp_service.matching.fingerprint import fingerprint
    from tests.kit.corpus import corpus_dir, load_photos, original_bytes
    from tests.kit.edits import EDITS_BY_NAME, apply_edit

    shots = [fingerprint(p.read_bytes()) for p in product_shots(registered + 2 * queries)]
    root = corpus_dir()
    originals, edited = [], []
    for k, photo in enumerate(load_photos(root)):
        try:
            data, image = original_bytes(root / photo.file)
            originals.append(fingerprint(data))
            if k % 6 == 0:
                edit = EDITS_BY_NAME[EDITS[(k // 6) % len(EDITS)]]
                edited.append(fingerprint(apply_edit(edit, image, photo=photo.file)))
        except ImageRejected:  # a photo the service rejects is left out, as it would be
            continue
    with open(path, "wb") as f:
        pickle.dump({"registered": shots[:registered] + originals,
                     "queries": shots[registered:registered + queries] + edited,
                     "late": shots[registered + queries:]}, f)
    return path


def _round(data: Path, profile: bool) -> dict[str, object]:
    """One build, in this process: build the index, time every query's looks."""
    from shotstamp_service.matching.engine import SHORTLIST, Matcher

    with open(data, "rb") as f:
        held = pickle.load(f)
    registered, queries, late = held["registered"], held["queries"], held["late"]
    matcher = Matcher(background=False)
    for ref, fp in enumerate(registered, start=1):
        matcher.add(ref, fp)
    base = len(registered) + 1  # the newcomers that arrive during each query's await
    looks, adds, agains, votes, answers = [], [], [], [], []
    if profile:
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    for i, fp in enumerate(queries):
        t0 = time.thread_time()
        seen = matcher.look(fp)
        t1 = time.thread_time()
        if i < len(late):
            matcher.add(base + i, late[i])
        t2 = time.thread_time()
        again = matcher.look_again(seen)
        t3 = time.thread_time()
        scores = matcher.word_scores(fp, limit=SHORTLIST)
        t4 = time.thread_time()
        looks.append(t1 - t0)
        adds.append(t2 - t1)
        agains.append(t3 - t2)
        votes.append(t4 - t3)
        answers.append(repr((_answer(seen), _answer(again),
                             [(s.ref, s.score, s.votes) for s in scores])))
    if profile:
        prof.disable()
        import pstats
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    digest = hashlib.sha256("\n".join(answers).encode()).hexdigest()
    return {"look": looks, "add": adds, "look_again": agains, "vote": votes, "answers": digest,
            "detail": answers, "registered": len(matcher)}


def _answer(seen: object) -> object:
    found = [(m.ref, m.verdict, m.clause, tuple(sorted(m.distances.items())))
             for m in seen.found]  # type: ignore[attr-defined]
    candidates = (None if seen.candidates is None  # type: ignore[attr-defined]
                  else [(c.ref, c.pdq, c.gated, c.words, c.votes)
                        for c in seen.candidates])  # type: ignore[attr-defined]
    return found, candidates


def _child(tree: Path, data: Path, profile: bool) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=f"{tree}/sdk:{tree}/service:{ROOT}")
    out = subprocess.run([sys.executable, "-m", "bench.vote", "--child", str(data)]
                         + (["--profile"] if profile else []),
                         env=env, cwd=ROOT, check=True, stdout=subprocess.PIPE)
    result: dict[str, object] = json.loads(out.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", type=Path, help="another source tree, alternated")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--registered", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--profile", action="store_true", help="cProfile the looks (stderr)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(_round(args.child, args.profile)))
        return
    data = _prepare(args.registered, args.queries)
    builds = {"this": ROOT} | ({"against": args.against} if args.against else {})
    runs: dict[str, list[dict[str, object]]] = {name: [] for name in builds}
    for r in range(args.rounds):
        order = list(builds.items()) if r % 2 == 0 else list(builds.items())[::-1]
        for name, tree in order:
            runs[name].append(_child(tree, data, args.profile))
    first = runs["this"][0]
    print(f"{first['registered']} registrations at the end, {len(first['look'])} queries "  # type: ignore[arg-type]
          f"({args.registered} product shots + corpus originals; shots + corpus edits)")
    print("| build | round | look µs | add µs | look_again µs | vote µs |")
    print("|---|---|---|---|---|---|")
    for name, rounds in runs.items():
        for r, run in enumerate(rounds):
            cells = [f"{1e6 * statistics.median(run[k]):.0f}"  # type: ignore[arg-type]
                     for k in KINDS]
            print(f"| {name} | {r + 1} | " + " | ".join(cells) + " |")
        meds = [statistics.median(1e6 * statistics.median(run[k])  # type: ignore[arg-type]
                                  for run in rounds) for k in KINDS]
        print(f"| {name} | median | " + " | ".join(f"**{m:.0f}**" for m in meds) + " |")
    digests = {run["answers"] for rounds in runs.values() for run in rounds}
    if len(digests) != 1:
        a, b = runs["this"][0]["detail"], runs["against"][0]["detail"]  # type: ignore[index]
        bad = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]  # type: ignore[arg-type]
        raise SystemExit(f"answers differ between builds: {len(bad)} queries, first {bad[:5]}")
    print(f"answers equal across builds and rounds ({len(first['look'])} queries, "  # type: ignore[arg-type]
          f"sha256 {digests.pop()[:16]})")


if __name__ == "__main__":
    main()
