"""A real service data directory holding ≥ 1 M registrations, written in bulk (issues 21, 22).

    PYTHONPATH=sdk:service:. python -m bench.fullscale seeds DIR [--products 150] [--workers 2]
    PYTHONPATH=sdk:service:. python -m bench.fullscale build DIR --registrations 1000000
    PYTHONPATH=sdk:service:. python -m bench.fullscale calibrate DIR

`seeds` fingerprints, with the service's own `fingerprint_and_thumbnail`, every real image the
distractors are made from, and the corpus's query originals (cached in DIR/seeds.pkl):

- distractor sources: half of the corpus's held-out photos (the other half stays unseen, for
  the recall benchmark's different-photo uploads) and `--products` generated product shots
  (bench/productshots.py); never a photo whose edits are queried, nor one listed as the same
  picture as one;
- for each source a look-alike family: the shot itself, three crops (70-85 %, off-centre),
  two perspective warps (another viewpoint), two lighting changes (a gradient, a colour
  cast), a new background (the shot smaller on a coloured ground), and four of the edits a
  copier makes (tests/kit/edits: rotate, crop_80, jpeg_q50, combination).

`build` writes `--registrations` registrations through the store's own API
(`SQLiteStore.add_registration`, group-committed as the service does), the query originals
spread evenly among them under one seller, every other one a distractor: a real seed with a
cheap feature-level perturbation (module `perturb`): one of 8 similarity transforms
(rotation ≤ 6°, scale 0.9-1.1, shift ≤ 6 % — applied to the keypoints, their angles and the
stage-2 thumbnail alike), 0-15 % of keypoints dropped, descriptor bits flipped at a rate and
PDQ bits flipped in a number drawn from those measured between the real members of a
look-alike family (`calibrate` prints both distributions). Then it starts the real service once
(`shotstamp-service serve`) and waits until the service has sealed every registration into
the log (real tiles, a signed checkpoint) and written its index segments (the upgrade path
of docs/index.md), and stops it: later starts take seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageEnhance

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Variants made of every distractor source: (name, function of (image, rng)).
FAMILY = ("crop_a", "crop_b", "crop_c", "warp_a", "warp_b", "light_gradient", "light_cast",
          "background")
COPY_EDITS = ("rotate", "crop_80", "jpeg_q50", "combination")
TRANSFORMS = 8  # similarity transforms precomputed per seed
FLIP_MASKS = 64  # descriptor flip masks precomputed per build
QUERY_SELLER = "fullscale-owner"
THUMBNAIL_SIZE = 256  # Config.thumbnail_size's default: the desk thumbnail


@dataclass
class Seed:
    name: str  # "<source>|<variant>"
    family: str  # the source: every variant of one source is one look-alike family
    perceptual: dict[str, str]
    features: bytes | None
    thumbnail: bytes | None
    width: int
    height: int
    sha256: str


def _perspective(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Another viewpoint: the corners moved inwards by up to 12 % (a homography)."""
    w, h = image.size
    src = np.array([(0, 0), (w, 0), (w, h), (0, h)], float)
    dst = src + rng.uniform(0, 0.12, (4, 2)) * np.array([w, h]) * np.array(
        [(1, 1), (-1, 1), (-1, -1), (1, -1)])
    # PIL maps output to input: solve for the coefficients taking dst to src.
    a = []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    coeffs = np.linalg.solve(np.array(a), src.reshape(8))
    return image.transform((w, h), Image.Transform.PERSPECTIVE, tuple(coeffs),
                           Image.Resampling.BICUBIC, fillcolor=(255, 255, 255))


def _variant(image: Image.Image, name: str, rng: np.random.Generator) -> Image.Image:
    w, h = image.size
    if name.startswith("crop"):
        keep = rng.uniform(0.70, 0.85)
        cw, ch = int(w * keep), int(h * keep)
        x, y = int(rng.uniform(0, w - cw)), int(rng.uniform(0, h - ch))
        return image.crop((x, y, x + cw, y + ch))
    if name.startswith("warp"):
        return _perspective(image, rng)
    if name == "light_gradient":
        ramp = np.linspace(rng.uniform(0.55, 0.8), rng.uniform(1.1, 1.3), w)[None, :, None]
        arr = np.asarray(image, float) * ramp
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if name == "light_cast":
        arr = np.asarray(ImageEnhance.Brightness(image).enhance(rng.uniform(0.75, 1.25)), float)
        arr *= rng.uniform(0.8, 1.15, 3)[None, None, :]
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if name == "background":
        colour = tuple(int(c) for c in rng.integers(60, 230, 3))
        scale = rng.uniform(0.6, 0.8)
        small = image.resize((max(1, int(w * scale)), max(1, int(h * scale))))
        ground = Image.new("RGB", (w, h), colour)
        ground.paste(small, (int(rng.uniform(0, w - small.width)),
                             int(rng.uniform(0, h - small.height))))
        return ground
    raise ValueError(name)


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=90)
    return out.getvalue()


def _fingerprint_source(job: tuple[str, str, bool]) -> list[Seed]:
    """One source (a corpus file or `product:<seed>`): its original, and its family if asked."""
    from shotstamp_service.matching.fingerprint import DecodeLimits
    from shotstamp_service.matching.thumbnail import fingerprint_and_thumbnail
    from tests.kit.corpus import original_bytes
    from tests.kit.edits import EDITS, apply_edit

    root, source, family = job
    os.nice(0)
    if source.startswith("product:"):
        from bench.productshots import product_shot

        shot = product_shot(int(source.split(":")[1]))
        data = _jpeg(shot)
    else:
        data, shot = original_bytes(Path(root) / source)
    blobs = [("original", data)]
    if family:
        rng = np.random.default_rng(int.from_bytes(hashlib.sha256(source.encode()).digest()[:8],
                                                   "big"))
        blobs += [(name, _jpeg(_variant(shot, name, rng))) for name in FAMILY]
        edits = {e.name: e for e in EDITS}
        blobs += [(name, apply_edit(edits[name], shot, photo=source)) for name in COPY_EDITS]
    seeds = []
    for name, blob in blobs:
        try:
            fp, thumb = fingerprint_and_thumbnail(blob, DecodeLimits(), THUMBNAIL_SIZE)
        except Exception:  # an image the service refuses is not registered either
            continue
        perceptual, features = fp.to_store()
        seeds.append(Seed(f"{source}|{name}", source, perceptual, features, thumb, fp.width,
                          fp.height, fp.sha256))
    return seeds


def split_corpus(root: Path) -> tuple[list[str], list[str], list[str]]:
    """(query photos = registered originals, distractor sources, unseen different photos)."""
    from tests.kit.corpus import held_out, known_copies, load_photos, same_picture

    photos = load_photos(root)
    holdout = held_out(photos, root)
    partners = same_picture()
    involved = {o for o, _, _ in known_copies(root)} | {c for _, c, _ in known_copies(root)}
    queries = [p.file for p in photos if p.file not in holdout]
    sources, unseen = [], []
    for p in photos:
        if p.file not in holdout:
            continue
        if hashlib.sha256(p.file.encode()).digest()[0] % 2 == 0:
            unseen.append(p.file)
        elif not (partners.get(p.file, set()) | ({p.file} & involved)):
            sources.append(p.file)
    return queries, sources, unseen


def make_seeds(directory: Path, products: int, workers: int) -> dict[str, list[Seed]]:
    path = directory / "seeds.pkl"
    if path.exists():
        with open(path, "rb") as f:
            cached: dict[str, list[Seed]] = pickle.load(f)
        return cached
    from tests.kit.corpus import corpus_dir

    root = corpus_dir()
    queries, sources, _ = split_corpus(root)
    jobs = ([(str(root), s, True) for s in sources]
            + [(str(root), f"product:{900_000 + k}", True) for k in range(products)]
            + [(str(root), q, False) for q in queries])
    out: dict[str, list[Seed]] = {"distractors": [], "queries": []}
    t = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers, initializer=os.nice, initargs=(10,)) as pool:
        for k, (job, seeds) in enumerate(zip(jobs, pool.map(_fingerprint_source, jobs,
                                                            chunksize=2), strict=True)):
            out["queries" if not job[2] else "distractors"].extend(seeds)
            if k % 50 == 0:
                print(f"  seeds: {k}/{len(jobs)} sources ({time.perf_counter() - t:.0f} s)",
                      flush=True)
    directory.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(out, f)
    print(f"seeds: {len(out['distractors'])} distractor fingerprints from {len(sources)} corpus "
          f"photos and {products} product shots, {len(out['queries'])} query originals, "
          f"{time.perf_counter() - t:.0f} s", flush=True)
    return out


# -- perturbation -------------------------------------------------------------------------------


def _pdq_names(perceptual: dict[str, str]) -> list[str]:
    return [n for n in perceptual if n.startswith("pdq")]


def _matched_flip_rate(a: np.ndarray, b: np.ndarray) -> float | None:
    """Bit-flip rate over mutual nearest descriptors (Hamming ≤ 64) of two keypoint sets."""
    if len(a) == 0 or len(b) == 0:
        return None
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)
    matches = [m for m in matcher.match(a, b) if m.distance <= 64]
    if len(matches) < 10:
        return None
    return float(np.mean([m.distance for m in matches]) / 256)


def family_statistics(seeds: list[Seed]) -> tuple[np.ndarray, np.ndarray]:
    """(PDQ distances, descriptor flip rates) between each source's original and its variants."""
    from shotstamp_service.matching.features import LocalFeatures

    by_family: dict[str, list[Seed]] = {}
    for s in seeds:
        by_family.setdefault(s.family, []).append(s)
    pdq, flips = [], []
    for members in by_family.values():
        base = next((s for s in members if s.name.endswith("|original")), None)
        if base is None or base.features is None or "pdq" not in base.perceptual:
            continue
        a = LocalFeatures.from_bytes(base.features).descriptors
        for s in members:
            if s is base or s.features is None or "pdq" not in s.perceptual:
                continue
            x = int.from_bytes(bytes.fromhex(base.perceptual["pdq"]), "big")
            y = int.from_bytes(bytes.fromhex(s.perceptual["pdq"]), "big")
            pdq.append((x ^ y).bit_count())
            rate = _matched_flip_rate(a, LocalFeatures.from_bytes(s.features).descriptors)
            if rate is not None:
                flips.append(rate)
    return np.array(pdq), np.array(flips)


@dataclass
class Prepared:
    """A seed as TRANSFORMS blobs, each with its keypoints moved by a similarity transform
    (positions, angles and the stage-2 thumbnail alike) and 0-15 % of them dropped; a
    distractor is one of them with descriptor and PDQ bits flipped (`perturb`)."""

    seed: Seed
    prefixes: list[bytes]  # header, positions, angles, octaves
    descriptors: list[np.ndarray]  # (n, 32) uint8
    suffixes: list[bytes]  # the stage-2 thumbnail
    pdq: dict[str, int]  # the seed's PDQ codes as integers
    other: dict[str, str]  # its other hashes (pHash), kept as they are


def prepare(seed: Seed, rng: np.random.Generator) -> Prepared | None:
    from shotstamp_service.matching.features import THUMB_QUALITY, LocalFeatures

    if seed.features is None:
        return None
    local = LocalFeatures.from_bytes(seed.features)
    h, w = local.shape
    thumb = local.thumbnail
    th, tw = thumb.shape
    prefixes, descriptors, suffixes = [], [], []
    n = len(local)
    for _ in range(TRANSFORMS):
        theta = rng.uniform(-6, 6)
        scale = rng.uniform(0.9, 1.1)
        shift = rng.uniform(-0.06, 0.06, 2) * np.array([w, h])
        m = cv2.getRotationMatrix2D((w / 2, h / 2), theta, scale)
        m[:, 2] += shift
        keep = np.sort(rng.choice(n, n - int(rng.uniform(0, 0.15) * n), replace=False))
        xy = np.clip(local.xy[keep] @ m[:, :2].T + m[:, 2], 0, [w - 1, h - 1])
        # OpenCV's angle is clockwise in image coordinates; 256 steps a turn.
        angle = ((local.angle[keep].astype(np.int32) - round(theta * 256 / 360)) % 256)
        mt = m.copy()
        mt[:, 2] *= np.array([tw / w, th / h])
        warped = cv2.warpAffine(thumb, mt, (tw, th), borderMode=cv2.BORDER_REPLICATE)
        _, enc = cv2.imencode(".jpg", warped, [cv2.IMWRITE_JPEG_QUALITY, THUMB_QUALITY])
        blob = LocalFeatures(local.shape, xy.astype(np.float32), angle.astype(np.uint8),
                             local.octave[keep], local.descriptors[keep], enc.tobytes(),
                             (th, tw), local.quality, local.trim_quality, local.black_quality,
                             local.source).to_bytes()
        k = len(keep)
        at = len(blob) - len(enc.tobytes()) - 32 * k
        prefixes.append(blob[:at])
        descriptors.append(np.frombuffer(blob, np.uint8, 32 * k, at).reshape(k, 32))
        suffixes.append(blob[at + 32 * k:])
    pdq = {name: int(v, 16) for name, v in seed.perceptual.items() if name.startswith("pdq")}
    other = {name: v for name, v in seed.perceptual.items() if not name.startswith("pdq")}
    return Prepared(seed, prefixes, descriptors, suffixes, pdq, other)


def flip_masks(rng: np.random.Generator, rates: np.ndarray, keypoints: int = 512) -> np.ndarray:
    """FLIP_MASKS masks (keypoints, 32) uint8, each at a bit rate drawn from `rates`."""
    out = np.zeros((FLIP_MASKS, keypoints, 32), np.uint8)
    for k in range(FLIP_MASKS):
        rate = float(rng.choice(rates))
        out[k] = np.packbits(rng.random((keypoints, 256)) < rate, axis=1)
    return out


def pdq_masks(rng: np.random.Generator, distances: np.ndarray, count: int = 4096) -> list[int]:
    """`count` 256-bit masks, each with a number of bits drawn from `distances`."""
    out = []
    for _ in range(count):
        bits = np.zeros(256, bool)
        bits[rng.choice(256, int(rng.choice(distances)), replace=False)] = True
        out.append(int.from_bytes(np.packbits(bits).tobytes(), "big"))
    return out


def perturb(p: Prepared, rng: np.random.Generator, masks: np.ndarray,
            pdq_flips: list[int]) -> tuple[dict[str, str], bytes]:
    """A distractor's (perceptual, feature blob) from a prepared seed."""
    t, m, row, f = (int(v) for v in rng.integers(0, (TRANSFORMS, len(masks), masks.shape[1],
                                                     len(pdq_flips))))
    d = p.descriptors[t]
    mask = np.roll(masks[m], -row, axis=0)[: len(d)] if row + len(d) > masks.shape[1] \
        else masks[m, row:row + len(d)]
    blob = b"".join([p.prefixes[t], (d ^ mask).tobytes(), p.suffixes[t]])
    flip = pdq_flips[f]
    perceptual = dict(p.other)
    for name, value in p.pdq.items():
        perceptual[name] = f"{value ^ flip:064x}"
    return perceptual, blob


# -- the build ----------------------------------------------------------------------------------


def _service_env() -> dict[str, str]:
    paths = [str(ROOT / "sdk"), str(ROOT / "service"), str(ROOT)]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "SHOTSTAMP_PROCESSES": "1",
            "SHOTSTAMP_FINGERPRINT_WORKERS": "1"}


def start(data: Path, port: int, *, wait: float = 3600) -> subprocess.Popen[bytes]:
    """`shotstamp-service serve` on the data directory; returns once /healthz answers."""
    from tests.kit.processes import command

    log = data.parent / f"{data.name}-service.log"
    with log.open("a") as out:
        proc = subprocess.Popen([*command("shotstamp-service"), "--data-dir", str(data), "serve",
                                 "--host", "127.0.0.1", "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=_service_env())
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"service exited {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"service not healthy after {wait} s; see {log}")


def _latest_size(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/checkpoints/latest",
                                timeout=30) as r:
        body = json.loads(r.read())
    return int(body.get("tree_size", 0))


def build(directory: Path, registrations: int, seed: int) -> None:
    from shotstamp_service.records import NewRegistration, format_time, new_registration_id, utc_now
    from shotstamp_service.store.sqlite import SQLiteStore

    seeds = make_seeds(directory, 150, 2)
    pdq_d, flip_d = family_statistics(seeds["distractors"])
    print(f"look-alike families: PDQ distance median {np.median(pdq_d):.0f} "
          f"(p10 {np.percentile(pdq_d, 10):.0f}, p90 {np.percentile(pdq_d, 90):.0f}), "
          f"descriptor flip rate median {np.median(flip_d):.3f}", flush=True)
    rng = np.random.default_rng(seed)
    t = time.perf_counter()
    prepared = [x for x in (prepare(s, rng) for s in seeds["distractors"]) if x is not None]
    print(f"prepared {len(prepared)} seeds × {TRANSFORMS} transforms "
          f"({time.perf_counter() - t:.0f} s)", flush=True)
    masks = flip_masks(rng, flip_d)
    pdq_flips = pdq_masks(rng, pdq_d)
    data = directory / "data"
    data.mkdir(parents=True, exist_ok=True)
    queries = seeds["queries"]
    every = max(1, registrations // max(1, len(queries)))

    async def fill() -> int:
        store = SQLiteStore(data / "shotstamp.db", group_commit_max=4096)
        await store.open()
        have = await store.count_pending() + await store.tree_size()
        done = have
        started = time.perf_counter()
        while done < registrations:
            batch = []
            now = format_time(utc_now())
            for k in range(done, min(registrations, done + 4096)):
                if k % every == every // 2 and k // every < len(queries):
                    q = queries[k // every]
                    perceptual, features, thumb = q.perceptual, q.features, q.thumbnail
                    seller, sha, w, h = QUERY_SELLER, q.sha256, q.width, q.height
                    title = q.name.split("|")[0]
                else:
                    p = prepared[int(rng.integers(len(prepared)))]
                    perceptual, features = perturb(p, rng, masks, pdq_flips)
                    thumb = p.seed.thumbnail
                    seller = f"seller-{int(rng.integers(5000))}"
                    sha = hashlib.sha256(b"fullscale-%d" % k).hexdigest()
                    w, h, title = p.seed.width, p.seed.height, None
                batch.append(store.add_registration(NewRegistration(
                    id=new_registration_id(), seller=seller, sha256=sha, perceptual=perceptual,
                    received_at=now, width=w, height=h, title=title, features=features,
                    thumbnail=thumb, seller_salt=os.urandom(32))))
            await asyncio.gather(*batch)
            done += len(batch)
            if done % 50_000 < 4096:
                rate = (done - have) / (time.perf_counter() - started)
                print(f"  {done:,} registrations ({rate:,.0f}/s)", flush=True)
        await store.close()
        return done

    total = asyncio.run(fill())
    print(f"stored {total:,} registrations in {time.perf_counter() - t:.0f} s; starting the "
          "service to seal them and write its segments", flush=True)
    t = time.perf_counter()
    port = 18000 + os.getpid() % 1000
    proc = start(data, port)
    print(f"service healthy after {time.perf_counter() - t:.0f} s", flush=True)
    while _latest_size(port) < total:
        time.sleep(2)
    print(f"sealed {total:,} after {time.perf_counter() - t:.0f} s", flush=True)
    proc.terminate()
    proc.wait(timeout=600)
    manifest = json.loads((data / "index" / "manifest.json").read_text())
    print(f"segments: {json.dumps(manifest)[:300]}", flush=True)
    size = sum(f.stat().st_size for f in data.rglob("*") if f.is_file())
    print(f"data directory: {size / 1e9:.1f} GB", flush=True)


def calibrate(directory: Path) -> None:
    """Perturbed fingerprints' distances to their seed beside real look-alikes' to theirs."""
    from shotstamp_service.matching.features import LocalFeatures

    seeds = make_seeds(directory, 150, 2)
    pdq_d, flip_d = family_statistics(seeds["distractors"])
    rng = np.random.default_rng(5)
    masks = flip_masks(rng, flip_d)
    pdq_flips = pdq_masks(rng, pdq_d)
    originals = [s for s in seeds["distractors"] if s.name.endswith("|original")]
    pdq_p, flip_p = [], []
    for s in originals[:: max(1, len(originals) // 150)]:
        p = prepare(s, rng)
        if p is None or s.features is None or "pdq" not in s.perceptual:
            continue
        perceptual, blob = perturb(p, rng, masks, pdq_flips)
        x, y = int(s.perceptual["pdq"], 16), int(perceptual["pdq"], 16)
        pdq_p.append((x ^ y).bit_count())
        rate = _matched_flip_rate(LocalFeatures.from_bytes(s.features).descriptors,
                                  LocalFeatures.from_bytes(blob).descriptors)
        if rate is not None:
            flip_p.append(rate)
    print("| pairs | n | PDQ distance p10 / median / p90 | matched-descriptor bit rate "
          "p10 / median / p90 |")
    print("|---|---|---|---|")
    for label, a, b in (("real look-alikes (original, variant)", pdq_d, flip_d),
                        ("perturbed (seed, distractor)", np.array(pdq_p), np.array(flip_p))):
        print(f"| {label} | {len(a)} | " + " / ".join(f"{np.percentile(a, q):.0f}"
                                                       for q in (10, 50, 90))
              + " | " + " / ".join(f"{np.percentile(b, q):.3f}" for q in (10, 50, 90)) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["seeds", "build", "calibrate"])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--registrations", type=int, default=1_000_000)
    parser.add_argument("--products", type=int, default=150)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args(argv)
    if args.command == "seeds":
        make_seeds(args.directory, args.products, args.workers)
    elif args.command == "build":
        build(args.directory, args.registrations, args.seed)
    else:
        calibrate(args.directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
