"""Where each serving process's CPU goes with two processes against one, per function.

Reads the raw py-spy stacks `bench/load.py --profile DIR` writes for each level
(`DIR/p1-1x8/service.txt`, `DIR/p2-1x8/service-0.txt`, `service-1.txt`; sampled with
`--gil` at 200 Hz, so a sample is 5 ms of one thread holding the GIL) and the rate of
each level, and prints, per function (line numbers merged, inclusive), the GIL-held
milliseconds per upload of the whole service: a level's samples in that function × 5 ms
over the uploads the service answered while the sampler ran (rate × seconds). With two
processes both processes' samples count, so the figure is what the machine pays per
upload in that function, comparable with the one-process level's.

    python -m bench.profile_compare DIR --rates 77.2,124.1 --seconds 16
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# A sample's period at py-spy's --rate 200.
SAMPLE_MS = 5.0
# Leaf frames of a thread that waits: not work (as bench/load.py's _IDLE_FRAMES).
IDLE = ("select (selectors.py", "_worker (concurrent/futures/thread.py", "wait (threading.py",
        "_recv_exactly (shotstamp_service/matching/pool.py")
_LINE = re.compile(r":\d+\)$")


def function_samples(paths: list[Path]) -> tuple[int, Counter[str]]:
    """(busy samples, inclusive samples per function) over the raw stack files `paths`."""
    total, inclusive = 0, Counter[str]()
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = [_LINE.sub(")", f) for f in stack.split(";")]
            if any(idle in frames[-1] for idle in IDLE):
                continue
            total += int(count)
            for frame in set(frames):
                inclusive[frame] += int(count)
    return total, inclusive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", type=Path, help="bench/load.py --profile's DIR")
    parser.add_argument("--levels", default="p1-1x8,p2-1x8", help="two level folders")
    parser.add_argument("--rates", required=True, help="uploads/s of each level, e.g. 77.2,124.1")
    parser.add_argument("--seconds", type=float, required=True,
                        help="how long the sampler ran (bench/load.py: --duration - 4)")
    parser.add_argument("--match", default="shotstamp_service/",
                        help="only frames containing this")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    levels = args.levels.split(",")
    rates = [float(r) for r in args.rates.split(",")]
    per_upload: list[dict[str, float]] = []
    for level, rate in zip(levels, rates, strict=True):
        files = sorted((args.dir / level).glob("service*.txt"))
        total, inclusive = function_samples(files)
        scale = SAMPLE_MS / (rate * args.seconds)
        per_upload.append({f: n * scale for f, n in inclusive.items()})
        per_upload[-1]["(all busy samples)"] = total * scale
        print(f"{level}: {len(files)} serving process(es), {total} busy samples, "
              f"{total * scale:.2f} GIL-held ms per upload")
    one, two = per_upload
    frames = [f for f in set(one) | set(two)
              if args.match in f or f == "(all busy samples)"]
    frames.sort(key=lambda f: -abs(two.get(f, 0.0) - one.get(f, 0.0)))
    print(f"\n{'ms/upload: ' + levels[0]:>22} {levels[1]:>8} {'extra':>7}  function")
    for f in frames[:args.top]:
        a, b = one.get(f, 0.0), two.get(f, 0.0)
        print(f"{a:22.3f} {b:8.3f} {b - a:+7.3f}  {f}")


if __name__ == "__main__":
    main()
