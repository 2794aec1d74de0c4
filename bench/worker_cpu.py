"""CPU per upload of a fingerprint worker's job, by step, and two builds interleaved.

    PYTHONPATH=sdk:service:. python -m bench.worker_cpu [--against DIR] [--rounds 3]

Runs what a fingerprint worker runs per upload (`thumbnail.fingerprint_and_thumbnail`, staff
thumbnails of 256 px on) over the same images in a fresh process per round: the product shots
`bench/load.py` uploads (1000×1000 JPEG) and real corpus photos as a seller registers them.
Prints CPU ms per image (`time.thread_time`, the process's one thread) and minor page faults
per image; then, for this build, the same job split into its steps, each timed alone.

`--against DIR` (another source tree, e.g. `git archive` of the commit before) alternates the
two builds round by round, so that the shared machine's load hits both alike.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shotstamp_service.matching.decode import DecodeLimits

ROOT = Path(__file__).resolve().parent.parent


def _images(products: int, photos: int) -> dict[str, list[bytes]]:
    sys.path.insert(0, str(ROOT / "bench"))
    from productshots import product_shots
    from tests.kit.corpus import corpus_dir, load_photos, original_bytes

    root = corpus_dir()
    chosen = load_photos()[:: max(1, 839 // photos)][:photos]
    return {"product shots": [p.read_bytes() for p in product_shots(products)],
            "corpus photos": [original_bytes(root / p.file)[0] for p in chosen]}


def measure(products: int, photos: int, steps: bool) -> dict[str, object]:
    """In this process: CPU per image of the worker's job (and of each step if asked)."""
    from shotstamp_service.matching import forkserver_init  # noqa: F401  (as a worker is made)
    from shotstamp_service.matching.fingerprint import DecodeLimits
    from shotstamp_service.matching.thumbnail import fingerprint_and_thumbnail

    limits = DecodeLimits()
    out: dict[str, object] = {}
    for name, files in _images(products, photos).items():
        for data in files[:5]:
            fingerprint_and_thumbnail(data, limits, 256)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        started = time.thread_time()
        for data in files:
            fingerprint_and_thumbnail(data, limits, 256)
        cpu = (time.thread_time() - started) / len(files) * 1000
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / len(files)
        out[name] = {"ms": cpu, "faults": faults}
        if steps:
            out[name + " steps"] = _steps(files, limits)
    return out


def _steps(files: list[bytes], limits: DecodeLimits) -> dict[str, float]:
    """The job's steps, as fingerprint_decoded and fingerprint_and_thumbnail run them."""
    import hashlib

    import cv2

    from shotstamp_service.matching import hashes
    from shotstamp_service.matching.decode import CANONICAL_SIDE, canonical_grey, draft_side
    from shotstamp_service.matching.decode import open_image as decode
    from shotstamp_service.matching.features import THUMB_QUALITY, _orb, thumbnail
    from shotstamp_service.matching.fingerprint import fingerprint_decoded
    from shotstamp_service.matching.thumbnail import thumbnail_jpeg

    totals: dict[str, float] = {}

    @contextlib.contextmanager
    def step(name: str) -> Iterator[None]:
        started = time.thread_time()
        yield
        totals[name] = totals.get(name, 0.0) + time.thread_time() - started

    from shotstamp_service.matching import engine  # noqa: F401  (loaded in the service too)

    side = draft_side(CANONICAL_SIDE)
    for data in files:
        with step("sha256"):
            hashlib.sha256(data).hexdigest()
        with step("decode (draft, RGB)"):
            decoded = decode(data, limits, draft=(side, side), mode="RGB")
        with step("canonical grey"):
            grey = canonical_grey(decoded.image.convert("L"))
        with step("PDQ whole"):
            hashes.pdq(grey)
        with step("PDQ mirror"):
            hashes.pdq(grey, mirror=True)
        with step("content box"):
            box = hashes.content_box(grey)
        if box is not None:
            x0, y0, x1, y1 = box
            with step("PDQ content box"):
                hashes.pdq(grey[y0:y1, x0:x1])
        with step("pHash"):
            hashes.phash(grey)
        with step("ORB"):
            _orb().detectAndCompute(grey, None)
        with step("stage-2 thumbnail"):
            cv2.imencode(".jpg", thumbnail(grey), [cv2.IMWRITE_JPEG_QUALITY, THUMB_QUALITY])
        with step("whole fingerprint_decoded"):
            fp = fingerprint_decoded("0" * 64, decoded)
        with step("Fingerprint.to_store (service process)"):
            fp.to_store()
        with step("desk thumbnail"):
            thumbnail_jpeg(decoded.image, 256)
    return {k: v / len(files) * 1000 for k, v in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", type=Path, help="another source tree, run alternately")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--products", type=int, default=150)
    parser.add_argument("--photos", type=int, default=120)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--steps", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.products, args.photos, args.steps)))
        return
    builds = {"this build": ROOT}
    if args.against is not None:
        builds = {"against": args.against.resolve(), **builds}
    runs: dict[str, list[dict[str, object]]] = {name: [] for name in builds}
    for round_ in range(args.rounds):
        for name, tree in builds.items():
            env = {**os.environ, "PYTHONPATH": f"{tree}/sdk:{tree}/service:{ROOT}"}
            steps = name == "this build" and round_ == args.rounds - 1
            cmd = [sys.executable, "-m", "bench.worker_cpu", "--child", "--products",
                   str(args.products), "--photos", str(args.photos)] + (["--steps"] if steps
                                                                         else [])
            done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True,
                                  check=True)
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"round {round_ + 1} {name}: " + ", ".join(
                f"{k} {v['ms']:.2f} ms ({v['faults']:.0f} faults)"  # type: ignore[index]
                for k, v in runs[name][-1].items() if not k.endswith("steps")), flush=True)
    print("\n| CPU ms per image (median of rounds) | " + " | ".join(builds) + " |")
    print("|---|" + "---|" * len(builds))
    for kind in ("product shots", "corpus photos"):
        cells = [statistics.median(r[kind]["ms"] for r in runs[n]) for n in builds]  # type: ignore[index]
        print(f"| {kind} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    last = runs["this build"][-1]
    for kind in ("product shots", "corpus photos"):
        print(f"\n| step ({kind}, this build, last round) | CPU ms per image |\n|---|---|")
        by_step: dict[str, float] = last[kind + " steps"]  # type: ignore[assignment]
        for step, ms in by_step.items():
            print(f"| {step} | {ms:.2f} |")


if __name__ == "__main__":
    main()
