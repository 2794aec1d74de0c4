"""Read `bench/load.py --step-cpu DIR`'s files: per run, each step's calls per upload, CPU
per call and CPU per upload, summed over the run's serving processes.

    python -m bench.step_cpu DIR
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def read_run(folder: Path) -> tuple[int, dict[str, tuple[int, int]], int]:
    """(processes, step → (calls, ns) over them, uploads the run registered)."""
    steps: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    files = sorted(folder.glob("steps-*.txt"))
    for path in files:
        for line in path.read_text().splitlines():
            name, calls, ns = line.split()
            steps[name][0] += int(calls)
            steps[name][1] += int(ns)
    meta = json.loads((folder / "run.json").read_text()) if (folder / "run.json").exists() else {}
    return len(files), {k: (c, ns) for k, (c, ns) in steps.items()}, int(meta.get("uploads", 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dir", type=Path)
    args = parser.parse_args()
    for folder in sorted(p for p in args.dir.iterdir() if p.is_dir()):
        processes, steps, uploads = read_run(folder)
        print(f"\n{folder.name}: {processes} serving process(es), {uploads} registrations")
        print(f"{'step':32} {'calls/upload':>12} {'ms/call':>8} {'ms/upload':>10}")
        for name, (calls, ns) in sorted(steps.items(), key=lambda kv: -kv[1][1]):
            per = max(1, uploads)
            print(f"{name:32} {calls / per:12.2f} {ns / calls / 1e6:8.3f} {ns / per / 1e6:10.3f}")


if __name__ == "__main__":
    main()
