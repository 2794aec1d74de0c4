"""What keeping stage 2's geometry for people costs on the upload path.

    PYTHONPATH=sdk:service python -m bench.geometry [--photos 40] [--rounds 5]

Stage 2 already fits the transform and knows its inliers; the geometry (`verification.Geometry`)
only keeps them: a 2×3 matrix and up to GEOMETRY_PAIRS inlier pairs, built from arrays
`verify_pair` holds, and pickled back from the pool with the evidence. For real photos
(../shared/photos, the wallpapers and opencv samples) and a cropped, turned copy of each, in one
process and interleaved pair by pair, this times with process CPU time:

- `verify_pair` (the whole stage-2 check of one candidate, geometry included);
- building the geometry alone (`verification._geometry` on the same arrays);
- the pool's round trip of the evidence: pickle + unpickle with its geometry and without.

Prints medians per operation and the geometry's share of `verify_pair`.
"""

from __future__ import annotations

import argparse
import io
import pickle
import statistics
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from shotstamp_service.matching import verification
from shotstamp_service.matching.fingerprint import fingerprint

PHOTOS = Path(__file__).resolve().parents[1].parent.parent / "shared" / "photos"
FOLDERS = ("wallpapers-lxqt", "wallpapers-mate", "wallpapers-plasma", "opencv")


def _photos(limit: int) -> list[Path]:
    root = PHOTOS if PHOTOS.exists() else Path("/work/shared/photos")
    found = [p for folder in FOLDERS for p in sorted((root / folder).glob("*"))
             if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp")]
    return found[:limit]


def _copy(path: Path) -> tuple[bytes, bytes]:
    image = Image.open(path).convert("RGB")
    image.thumbnail((1200, 1200))
    w, h = image.size
    crop = image.crop((int(w * 0.05), int(h * 0.1), int(w * 0.75), int(h * 0.9))).rotate(4)
    out = []
    for im in (image, crop):
        buffer = io.BytesIO()
        im.save(buffer, "JPEG", quality=88)
        out.append(buffer.getvalue())
    return out[0], out[1]


def _cpu(fn, rounds: int) -> float:  # type: ignore[no-untyped-def]
    """Median process CPU seconds of one call."""
    times = []
    for _ in range(rounds):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    pairs = []
    for path in _photos(args.photos):
        original, copy = _copy(path)
        stored, query = fingerprint(original).local, fingerprint(copy).local
        if stored is not None and query is not None:
            pairs.append((query, stored))
    verify_t, build_t, with_t, without_t, sizes = [], [], [], [], []
    kept = 0
    for query, stored in pairs:
        evidence = verification.verify_pair(query, stored)
        verify_t.append(_cpu(lambda q=query, s=stored: verification.verify_pair(q, s),
                             args.rounds))
        g = evidence.geometry
        if g is None:
            continue
        kept += 1
        q_xy, s_xy = g.pairs[:, :2].astype(np.float64), g.pairs[:, 2:].astype(np.float64)
        # the arrays verify_pair passes hold all inliers: as many as the evidence counted
        repeat = max(1, -(-evidence.inliers // max(len(q_xy), 1)))
        q_all, s_all = np.tile(q_xy, (repeat, 1)), np.tile(s_xy, (repeat, 1))
        build_t.append(_cpu(lambda q=q_all, s=s_all, t=g.transform, a=query, b=stored:
                            verification._geometry("similarity", t, q, s, a, b), args.rounds))
        bare = replace(evidence, geometry=None, global_geometry=None)
        with_t.append(_cpu(lambda e=evidence: pickle.loads(pickle.dumps(e)), args.rounds))
        without_t.append(_cpu(lambda e=bare: pickle.loads(pickle.dumps(e)), args.rounds))
        sizes.append((len(pickle.dumps(evidence)), len(pickle.dumps(bare))))
    ms = 1000.0
    verify = statistics.median(verify_t) * ms
    build = statistics.median(build_t) * ms
    round_with = statistics.median(with_t) * ms
    round_without = statistics.median(without_t) * ms
    extra = build + round_with - round_without
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(f"commit {commit}; {len(pairs)} photo/copy pairs, {kept} with a fitted transform; "
          f"process CPU, median of {args.rounds} per pair, then over pairs")
    print("| operation | ms per candidate |")
    print("|---|---|")
    print(f"| verify_pair (stage 2, geometry included) | {verify:.3f} |")
    print(f"| build the geometry alone | {build:.4f} |")
    print(f"| pickle + unpickle the evidence, with geometry | {round_with:.4f} |")
    print(f"| pickle + unpickle the evidence, without | {round_without:.4f} |")
    print(f"| geometry's extra (build + pickling) | {extra:.4f} ({100 * extra / verify:.2f} % "
          "of verify_pair) |")
    with_size = statistics.median(s[0] for s in sizes)
    without_size = statistics.median(s[1] for s in sizes)
    print(f"| pickled evidence, bytes with / without | {with_size:.0f} / {without_size:.0f} |")


if __name__ == "__main__":
    main()
