"""Upload throughput of one service replica beside two, on one PostgreSQL database.

Stands in for `bench/load.py` (the throughput issue's driver) until that lands:
the same upload mix is sent over loopback to one replica, then spread round
robin over two, each on a fresh database; SQLite is measured too, for
reference. Each configuration runs `--rounds` times, interleaved, and the
medians are printed side by side with the two-to-one ratio.

The mix: `--photos` photos from ../shared/photos registered by one seller,
then 10 % of them again by the same seller (200, already yours) and 10 %
recompressed at half size by another seller (409, a copy), sent after the
originals so every configuration sees the same outcomes.

    nice python bench/replicas.py [--photos 300] [--concurrency 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.kit

from tests.kit.pgserver import PostgresServer, start_server  # noqa: E402
from tests.kit.processes import ServiceProcess, run, start_service  # noqa: E402


def find_photos() -> Path:
    """shared/photos beside the checkout (or a folder above it), or $SHOTSTAMP_PHOTOS."""
    if os.environ.get("SHOTSTAMP_PHOTOS"):
        return Path(os.environ["SHOTSTAMP_PHOTOS"])
    for base in ROOT.parents:
        if (base / "shared" / "photos" / "manifest.tsv").exists():
            return base / "shared" / "photos"
    raise SystemExit("no shared/photos found; set SHOTSTAMP_PHOTOS")


@dataclass
class Upload:
    seller: str
    data: bytes


@dataclass
class Result:
    name: str
    seconds: float
    outcomes: Counter[int]
    latencies: list[float]
    seal_seconds: float

    @property
    def rate(self) -> float:
        return sum(self.outcomes.values()) / self.seconds


def load_mix(count: int, seed: int = 9) -> list[Upload]:
    photos = find_photos()
    manifest = (photos / "manifest.tsv").read_text().splitlines()[1:]
    files = sorted(line.split("\t")[0] for line in manifest)
    random.Random(seed).shuffle(files)
    originals = [(photos / name).read_bytes() for name in files[:count]]
    mix = [Upload("owner", data) for data in originals]
    rng = random.Random(seed + 1)
    again = rng.sample(originals, count // 10)
    copied = rng.sample(originals, count // 10)
    tail = [Upload("owner", data) for data in again]
    tail += [Upload("thief", recompress(data)) for data in copied]
    rng.shuffle(tail)
    return mix + tail


def recompress(data: bytes) -> bytes:
    """Half size, JPEG q60; transparency flattened onto white, as the service sees it
    (PIL's plain convert("RGB") would paint it black: another picture, not a copy)."""
    image = Image.open(io.BytesIO(data))
    if image.mode in ("P", "LA", "PA") or "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        flat = Image.new("RGB", image.size, (255, 255, 255))
        flat.paste(image, mask=image.getchannel("A"))
        image = flat
    image = image.convert("RGB")
    w, h = image.size
    out = io.BytesIO()
    image.resize((max(8, w // 2), max(8, h // 2)), Image.LANCZOS).save(out, "JPEG", quality=60)
    return out.getvalue()


async def drive(
    bases: list[str], keys: dict[str, str], mix: list[Upload], concurrency: int
) -> tuple[float, Counter[int], list[float]]:
    outcomes: Counter[int] = Counter()
    latencies: list[float] = []
    queue = list(enumerate(mix))
    queue.reverse()

    async def worker(session: aiohttp.ClientSession) -> None:
        while queue:
            n, upload = queue.pop()
            form = aiohttp.FormData()
            form.add_field("image", upload.data, filename="photo", content_type="image/jpeg")
            started = time.perf_counter()
            async with session.post(
                f"{bases[n % len(bases)]}/v1/registrations",
                data=form,
                headers={"Authorization": f"Bearer {keys[upload.seller]}"},
            ) as resp:
                await resp.read()
                outcomes[resp.status] += 1
            latencies.append(time.perf_counter() - started)

    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await warm_up(session, bases, keys["owner"], concurrency)
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return time.perf_counter() - started, outcomes, latencies


async def warm_up(
    session: aiohttp.ClientSession, bases: list[str], key: str, concurrency: int
) -> None:
    """Checks (which register nothing) until every replica's fingerprint workers are up."""
    photo = io.BytesIO()
    Image.new("RGB", (64, 64), "grey").save(photo, "PNG")

    async def check(base: str) -> None:
        form = aiohttp.FormData()
        form.add_field("image", photo.getvalue(), filename="warm.png", content_type="image/png")
        async with session.post(
            f"{base}/v1/checks", data=form, headers={"Authorization": f"Bearer {key}"}
        ) as resp:
            assert resp.status == 200, await resp.text()

    for _ in range(2):
        await asyncio.gather(*(check(base) for base in bases for _ in range(concurrency)))


async def wait_sealed(base: str, timeout: float = 60) -> float:
    """Seconds until the replica reports nothing pending."""
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        while time.perf_counter() - started < timeout:
            async with session.get(f"{base}/metrics") as resp:
                text = await resp.text()
            for line in text.splitlines():
                if line.startswith("shotstamp_pending_registrations ") and float(
                    line.split()[1]
                ) == 0:
                    return time.perf_counter() - started
            await asyncio.sleep(0.05)
    raise RuntimeError("registrations still pending")


def measure(
    name: str,
    replicas: int,
    server: PostgresServer | None,
    mix: list[Upload],
    args: argparse.Namespace,
) -> Result:
    work = Path(tempfile.mkdtemp(prefix="shotstamp-bench-"))
    env = {  # production settings, not the tests' quick ones
        "SHOTSTAMP_FINGERPRINT_WORKERS": str(args.workers),
        "SHOTSTAMP_SEAL_INTERVAL": "1.0",
        "SHOTSTAMP_WAIT_TIMEOUT": "15",
        "SHOTSTAMP_LOG_LEVEL": "WARNING",
        # One seller sends the whole mix: per-key rate limits would measure
        # themselves (429), not the replicas.
        "SHOTSTAMP_UPLOAD_RATE": "0",
        "SHOTSTAMP_MAX_UPLOADS_PER_KEY": "0",
        "SHOTSTAMP_READ_RATE": "0",
    }
    url = None
    if server is not None:
        url = server.create_database_sync("bench")
        env["SHOTSTAMP_DATABASE_URL"] = url
        # One key directory shared by every replica; its first key made as docs/operations.md says.
        env["SHOTSTAMP_SIGNING_KEY_DIR"] = str(work / "keys")
        made = run("shotstamp-service", "signing-key", "rotate", env=env)
        if made.returncode != 0:
            raise SystemExit(f"cannot make the signing key: {made.stderr}")
    keys = {}
    for seller in ("owner", "thief"):
        made = run("shotstamp-service", "--data-dir", str(work / "data-0"), "keys", "create",
                   "--seller", seller, env=env)
        keys[seller] = made.stdout.strip()
    processes: list[ServiceProcess] = []
    try:
        for n in range(replicas):
            # One SQLite database belongs to one process; replicas share PostgreSQL.
            processes.append(
                start_service(work / f"data-{n}", env=env)
            )
        bases = [p.url for p in processes]
        seconds, outcomes, latencies = asyncio.run(drive(bases, keys, mix, args.concurrency))
        sealing = asyncio.run(wait_sealed(bases[0]))
    finally:
        for process in processes:
            process.stop()
        if server is not None and url is not None:
            server.drop_database_sync(url)
    return Result(name, seconds, outcomes, latencies, sealing)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="fingerprint processes per replica")
    args = parser.parse_args()
    mix = load_mix(args.photos)
    server = start_server(durable=True)
    configs = [("sqlite, 1 process", 1, None), ("postgres, 1 replica", 1, server),
               ("postgres, 2 replicas", 2, server)]
    results: dict[str, list[Result]] = {name: [] for name, _, _ in configs}
    try:
        for _ in range(args.rounds):
            for name, count, db in configs:
                result = measure(name, count, db, mix, args)
                print(f"  {name}: {result.rate:.1f} uploads/s", file=sys.stderr, flush=True)
                results[name].append(result)
    finally:
        server.stop()

    print(f"{len(mix)} uploads, concurrency {args.concurrency}, {args.workers} fingerprint "
          f"workers per replica, {os.cpu_count()} cores, median of {args.rounds} rounds")
    print(f"{'configuration':24} {'uploads/s':>10} {'p50 ms':>8} {'p95 ms':>8} "
          f"{'drain s':>8}  outcomes")
    medians = {}
    for name, runs in results.items():
        rate = statistics.median(r.rate for r in runs)
        medians[name] = rate
        lat = sorted(x for r in runs for x in r.latencies)
        p50, p95 = lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.95)] * 1000
        drain = statistics.median(r.seal_seconds for r in runs)
        outcomes = " ".join(f"{k}:{v}" for k, v in sorted(runs[-1].outcomes.items()))
        print(f"{name:24} {rate:10.1f} {p50:8.0f} {p95:8.0f} {drain:8.2f}  {outcomes}")
    ratio = medians["postgres, 2 replicas"] / medians["postgres, 1 replica"]
    print(f"two replicas / one replica: {ratio:.2f}x")


if __name__ == "__main__":
    main()
