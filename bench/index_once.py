"""What indexing an upload costs the serving process: as a reservation, then again under its
seq (discard and add, main until branch look), against re-keying the reservation (`rekey`).

    PYTHONPATH=sdk:service:. python -m bench.index_once [--shots 400] [--rounds 5]

Product shots (`bench/productshots.py`) are fingerprinted once; a `Matcher` holds `--shots`
of them under their seqs; then each of the next `--shots` is uploaded as the registry does
it: added as a reservation, a few other uploads' reservations added meanwhile (8 clients),
then committed: either `discard` and `add` or `rekey`, timed in CPU of the thread
(`time.thread_time`), both ways alternating by round in one process. After each round every
look of the uploads (`look(fp, stop_at_copy=False)`) is asserted equal both ways, and the
generation and the journal too.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import deque

from bench.productshots import product_shots
from shotstamp_service.matching.engine import Matcher
from shotstamp_service.matching.fingerprint import Fingerprint, fingerprint

RESERVED = 1 << 62


def one_round(base: list[Fingerprint], uploads: list[Fingerprint], once: bool,
              clients: int) -> tuple[float, float, Matcher]:
    """(ms a commit, ms a reservation's add) for `uploads` on top of `base`."""
    matcher = Matcher(background=False)
    matcher.add_many((seq, fp) for seq, fp in enumerate(base, start=1))
    seq, commit, reserve = len(base), 0.0, 0.0
    inflight: deque[tuple[int, Fingerprint]] = deque()

    def commit_oldest() -> float:
        nonlocal seq
        ref, held = inflight.popleft()
        seq += 1
        t = time.thread_time()
        if once:
            matcher.rekey(ref, seq, held)
        else:
            matcher.discard(ref)
            matcher.add(seq, held)
        return time.thread_time() - t

    for k, fp in enumerate(uploads):
        t = time.thread_time()
        matcher.add(RESERVED + k, fp)
        reserve += time.thread_time() - t
        inflight.append((RESERVED + k, fp))
        if len(inflight) < clients and k < len(uploads) - 1:
            continue
        commit += commit_oldest()
    while inflight:
        commit += commit_oldest()
    return commit / len(uploads) * 1e3, reserve / len(uploads) * 1e3, matcher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shots", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    paths = product_shots(2 * args.shots)
    fps = [fingerprint(p.read_bytes()) for p in paths]
    base, uploads = fps[: args.shots], fps[args.shots:]
    spent: dict[bool, list[float]] = {False: [], True: []}
    reserve: list[float] = []
    for r in range(args.rounds):
        got = {}
        for once in ((False, True) if r % 2 else (True, False)):
            ms, res, matcher = one_round(base, uploads, once, args.clients)
            spent[once].append(ms)
            reserve.append(res)
            got[once] = matcher
        a, b = got[True], got[False]
        assert a.generation == b.generation and list(a._journal) == list(b._journal)
        for fp in uploads + base[:50]:
            x, y = a.look(fp, stop_at_copy=False), b.look(fp, stop_at_copy=False)
            assert x.found == y.found and x.candidates == y.candidates, "the looks differ"
    twice, once = statistics.median(spent[False]), statistics.median(spent[True])
    print(f"{args.shots} uploads on {args.shots} registrations, {args.rounds} rounds, "
          f"every look equal")
    print(f"reservation's add: {statistics.median(reserve):.3f} ms an upload (both ways)")
    print(f"commit, discard + add: {twice:.3f} ms an upload "
          f"({', '.join(f'{x:.3f}' for x in spent[False])})")
    print(f"commit, rekey:         {once:.3f} ms an upload "
          f"({', '.join(f'{x:.3f}' for x in spent[True])})")
    print(f"saved: {twice - once:.3f} ms an upload")


if __name__ == "__main__":
    main()
