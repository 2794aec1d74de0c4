"""CPU of two serving-process steps per upload, and two builds interleaved.

    PYTHONPATH=sdk:service:. python -m bench.serving_steps [--against DIR] [--rounds 3]

- `read_upload`: `http.routes.read_upload` of a product shot's multipart body (a `title`
  and an `image` part), fed to aiohttp's `StreamReader` in 64 KiB pieces as a socket would;
  CPU µs per upload of this thread.
- the pool exchange: `FingerprintPool._run` of a job carrying a product shot (~200 KB) whose
  reply is 30 KB (`operator.getitem` of the image), against one real worker; CPU µs of the
  serving thread per exchange, of the worker (`/proc/PID/schedstat`), and the worker's
  context switches per exchange.

Each round runs in a fresh process; `--against DIR` (another source tree, e.g. `git archive`
of the commit before) alternates the two builds round by round.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import operator
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
BOUNDARY = "a3f1c9b2d4e5f60718293a4b5c6d7e8f"


def _shots(count: int) -> list[bytes]:
    sys.path.insert(0, str(ROOT / "bench"))
    from productshots import product_shots

    return [p.read_bytes() for p in product_shots(count)]


def _body(image: bytes) -> bytes:
    return (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="title"\r\n\r\nkettle\r\n'
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; '
            'filename="kettle.jpg"\r\nContent-Type: image/jpeg\r\n\r\n').encode() \
        + image + f"\r\n--{BOUNDARY}--\r\n".encode()


class _Protocol:
    """What aiohttp's StreamReader asks of its protocol; nothing to pause here."""

    _reading_paused = False

    def pause_reading(self, **_: object) -> None:
        pass

    def resume_reading(self, **_: object) -> None:
        pass


async def read_upload_us(shots: list[bytes], repeat: int = 5) -> float:
    from aiohttp import streams
    from multidict import CIMultiDict, CIMultiDictProxy

    from shotstamp_service.config import Config
    from shotstamp_service.http import routes
    from shotstamp_service.http.keys import CONFIG

    app = {CONFIG: Config()}
    bodies = [_body(s) for s in shots]
    headers = CIMultiDictProxy(CIMultiDict(
        {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}))
    loop = asyncio.get_running_loop()
    times = []
    for _ in range(repeat):
        started = time.thread_time()
        for body, shot in zip(bodies, shots, strict=True):
            stream = streams.StreamReader(_Protocol(), 2**16, loop=loop)  # type: ignore[arg-type]
            for at in range(0, len(body), 65536):
                stream.feed_data(body[at:at + 65536])
            stream.feed_eof()
            request = SimpleNamespace(app=app, content=stream, content_length=len(body),
                                      headers=headers)
            image, texts = await routes.read_upload(request)  # type: ignore[arg-type]
            assert image == shot and texts == {"title": "kettle"}
        times.append((time.thread_time() - started) / len(bodies) * 1e6)
    return statistics.median(times)


def _schedstat_seconds(pid: int) -> float:
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


def _switches(pid: int) -> int:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return sum(int(line.split()[1]) for line in lines if "ctxt_switches" in line)


async def exchange(shots: list[bytes], repeat: int = 5) -> dict[str, float]:
    from shotstamp_service.matching.fingerprint import DecodeLimits
    from shotstamp_service.matching.pool import FingerprintPool

    pool = FingerprintPool(1, DecodeLimits())
    await pool.start()
    try:
        (worker,) = pool.worker_pids()
        jobs = [functools.partial(operator.getitem, s, slice(0, 30000)) for s in shots] * 4
        serving, working, switches = [], [], []
        for _ in range(repeat):
            started, busy, woken = time.thread_time(), _schedstat_seconds(worker), \
                _switches(worker)
            for job in jobs:
                await pool._run(job)
            serving.append((time.thread_time() - started) / len(jobs) * 1e6)
            working.append((_schedstat_seconds(worker) - busy) / len(jobs) * 1e6)
            switches.append((_switches(worker) - woken) / len(jobs))
        return {"serving us": statistics.median(serving), "worker us": statistics.median(working),
                "worker switches": statistics.median(switches)}
    finally:
        pool.close()


def measure(count: int) -> dict[str, float]:
    shots = _shots(count)

    async def both() -> dict[str, float]:
        return {"read_upload us": await read_upload_us(shots), **await exchange(shots)}

    return asyncio.run(both())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", type=Path, help="another source tree, run alternately")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shots", type=int, default=60)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.shots)))
        return
    builds = {"this build": ROOT}
    if args.against is not None:
        builds = {"against": args.against.resolve(), **builds}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in builds}
    for round_ in range(args.rounds):
        for name, tree in builds.items():
            env = {**os.environ, "PYTHONPATH": f"{tree}/sdk:{tree}/service:{ROOT}"}
            done = subprocess.run(
                [sys.executable, "-m", "bench.serving_steps", "--child", "--shots",
                 str(args.shots)], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"round {round_ + 1} {name}: " + ", ".join(
                f"{k} {v:.2f}" for k, v in runs[name][-1].items()), flush=True)
    print("\n| per upload (median of rounds) | " + " | ".join(builds) + " |")
    print("|---|" + "---|" * len(builds))
    for key in runs["this build"][0]:
        cells = [statistics.median(r[key] for r in runs[n]) for n in builds]
        print(f"| {key} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
