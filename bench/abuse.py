"""Abuse benchmark: one hostile seller attacks while an honest one uploads ordinary photos.

For each attack of issue 19 it starts a fresh service (2 fingerprint workers), runs a quiet
phase of `--seconds` (at most 20) and then the attack for as long, the honest seller uploading
distinct 1000×1000 product JPEGs open-loop at `--rate` per second throughout. Prints, per
attack, the honest seller's p50/p99 latency against the quiet p99 just before it, its errors
(anything but 201), what the attacker's requests got back, the CPU seconds the service and
its workers spent (from /proc), and how long after the attack /healthz answered again. Each
attack loop sends at most every 0.25 s: the payload is the attack, not the volume.

    2  progressive-JPEG scan bomb, two at a time, over and over
    3  16 slow-body connections: headers with Content-Length 1000000, the part headers,
       then one byte every 5 s
    4  an 11 MB multipart body of 200,000 tiny unknown fields, then the image, over and over
    6  the 1×39,999,999 PNG, four at a time
    7  10 webhooks of the attacker's to 127.0.0.1 endpoints that accept and never answer,
       then conflicts with the attacker's photo (a second attacker key uploading its copies)

Goal: honest p99 at most 3× the quiet p99 and no honest error, in every attack. Attacks that
are refused quickly are fine; every attack stops after its phase.

    python bench/abuse.py                      # all attacks, 12 s each
    python bench/abuse.py --attacks 2,6 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.kit
from load import LocalService, pct
from productshots import product_shots
from tests.kit import badimages  # the crafted files

MAX_PHASE = 20.0
PACE = 0.25  # seconds between one attack loop's requests, at least


@dataclass
class Phase:
    name: str
    latencies: list[float] = field(default_factory=list)
    honest: Counter[str] = field(default_factory=Counter)
    attacker: Counter[str] = field(default_factory=Counter)
    cpu_main: float = 0.0
    cpu_workers: float = 0.0
    recovery: float = 0.0  # seconds after the phase until /healthz answered within 0.5 s
    acknowledged: list[str] = field(default_factory=list)  # the honest 201s' registration ids
    sealed: int = 0  # of those, read back with a leaf index after the phase

    @property
    def errors(self) -> int:
        return sum(n for status, n in self.honest.items() if status != "201")


def _form(data: bytes, filename: str = "shot.jpg") -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("image", data, filename=filename, content_type="application/octet-stream")
    return form


async def _post(
    session: aiohttp.ClientSession, url: str, key: str, body: aiohttp.FormData | bytes, **kw: str
) -> str:
    headers = {"Authorization": f"Bearer {key}", **kw}
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            raw = await resp.read()
            code = ""
            with contextlib.suppress(ValueError, AttributeError):
                code = " " + json.loads(raw).get("error", "")
            return f"{resp.status}{code}"
    except (TimeoutError, aiohttp.ClientError) as exc:
        return f"error:{type(exc).__name__}"


async def honest_uploads(
    session: aiohttp.ClientSession,
    base: str,
    key: str,
    files: list[bytes],
    cursor: list[int],
    seconds: float,
    rate: float,
    phase: Phase,
) -> None:
    """Open-loop arrivals: one upload every 1/rate s, however slowly they are answered."""

    async def one(data: bytes) -> None:
        started = time.monotonic()
        headers = {"Authorization": f"Bearer {key}"}
        try:
            async with session.post(
                f"{base}/v1/registrations", data=_form(data), headers=headers
            ) as resp:
                status = str(resp.status)
                if resp.status == 201:
                    phase.acknowledged.append((await resp.json())["id"])
        except (TimeoutError, aiohttp.ClientError) as exc:
            status = f"error:{type(exc).__name__}"
        phase.latencies.append(time.monotonic() - started)
        phase.honest[status] += 1

    tasks, next_at, stop_at = [], time.monotonic(), time.monotonic() + seconds
    while next_at < stop_at:
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        tasks.append(asyncio.create_task(one(files[cursor[0] % len(files)])))
        cursor[0] += 1
        next_at += 1 / rate
    await asyncio.gather(*tasks)


async def read_back_sealed(
    session: aiohttp.ClientSession, base: str, key: str, phase: Phase, limit: float = 10.0
) -> None:
    """Count the acknowledged registrations that the log sealed (nothing lost)."""
    headers = {"Authorization": f"Bearer {key}"}
    pending, stop_at = list(phase.acknowledged), time.monotonic() + limit
    while pending and time.monotonic() < stop_at:
        still = []
        for registration_id in pending:
            async with session.get(f"{base}/v1/registrations/{registration_id}",
                                   headers=headers) as resp:
                body = await resp.json() if resp.status == 200 else {}
            if body.get("leaf_index") is None:
                still.append(registration_id)
        pending = still
        if pending:
            await asyncio.sleep(0.5)
    phase.sealed = len(phase.acknowledged) - len(pending)


async def repeat(
    stop_at: float, concurrency: int, send: Callable[[], Awaitable[str]], phase: Phase
) -> None:
    """`concurrency` loops sending again as soon as answered, but at most every PACE s each:
    the attack is the payload, not a flood (the rate limiter's business)."""

    async def loop() -> None:
        while time.monotonic() < stop_at:
            sent = time.monotonic()
            phase.attacker[await send()] += 1
            await asyncio.sleep(max(0.0, PACE - (time.monotonic() - sent)))

    await asyncio.gather(*(loop() for _ in range(concurrency)))


# -- the attacks: each runs until stop_at -------------------------------------------------
async def attack_scan_bomb(ctx: Context, stop_at: float, phase: Phase) -> None:
    bomb = ctx.payloads["bomb"]
    url = f"{ctx.base}/v1/checks"
    await repeat(stop_at, 2, lambda: _post(ctx.session, url, ctx.mallory, _form(bomb)), phase)


async def attack_slow_bodies(ctx: Context, stop_at: float, phase: Phase) -> None:
    host, port = ctx.base.removeprefix("http://").split(":")
    boundary = uuid.uuid4().hex

    async def slow() -> None:
        try:
            reader, writer = await asyncio.open_connection(host, int(port))
        except OSError as exc:
            phase.attacker[f"connect:{type(exc).__name__}"] += 1
            return
        head = (
            f"POST /v1/registrations HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {ctx.mallory}\r\nContent-Length: 1000000\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
            f'filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        )
        outcome = "held open to the end"
        try:
            writer.write(head.encode())
            await writer.drain()
            while time.monotonic() < stop_at:
                try:
                    answer = await asyncio.wait_for(
                        reader.read(200), min(5.0, stop_at - time.monotonic())
                    )
                except TimeoutError:
                    writer.write(b"\xff")
                    await writer.drain()
                    continue
                outcome = answer.split(b"\r\n")[0].decode(errors="replace") or "closed by server"
                break
        except OSError as exc:
            outcome = f"reset:{type(exc).__name__}"
        finally:
            writer.close()
        phase.attacker[outcome] += 1

    await asyncio.gather(*(slow() for _ in range(16)))


async def attack_many_fields(ctx: Context, stop_at: float, phase: Phase) -> None:
    body, ctype = ctx.payloads["fields"], ctx.payloads["fields_type"].decode()
    url = f"{ctx.base}/v1/checks"
    await repeat(
        stop_at,
        1,
        lambda: _post(ctx.session, url, ctx.mallory, body, **{"Content-Type": ctype}),
        phase,
    )


def _many_fields(image: bytes) -> tuple[bytes, str]:
    """An 11 MB multipart body: 200,000 one-byte fields the service does not know, then
    the image."""
    boundary = uuid.uuid4().hex[:6]
    field_part = f'--{boundary}\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n'
    body = (
        field_part.encode() * 200_000
        + (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
            f'filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


async def attack_tall_png(ctx: Context, stop_at: float, phase: Phase) -> None:
    data = ctx.payloads["tall"]
    url = f"{ctx.base}/v1/checks"
    await repeat(
        stop_at, 4, lambda: _post(ctx.session, url, ctx.mallory, _form(data, "t.png")), phase
    )


def _tall_png(height: int = 39_999_999) -> bytes:
    """A 1×height grey PNG of zeros (each row: filter byte, one pixel), ~78 KB."""
    squeeze = zlib.compressobj(9)
    chunk = b"\x00\x00" * 1_000_000
    parts = [squeeze.compress(chunk) for _ in range(height // 1_000_000)]
    parts.append(squeeze.compress(b"\x00\x00" * (height % 1_000_000)))
    parts.append(squeeze.flush())
    return badimages.png_raw(1, height, b"".join(parts), colour=0)


async def attack_webhooks(ctx: Context, stop_at: float, phase: Phase) -> None:
    over = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await over.wait()  # accept, read nothing, answer nothing until the phase is over
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        photo = ctx.files[-1]
        phase.attacker[
            "own photo "
            + await _post(ctx.session, f"{ctx.base}/v1/registrations", ctx.mallory, _form(photo))
        ] += 1
        for n in range(10):
            body = json.dumps({"url": f"http://127.0.0.1:{port}/hook/{n}"}).encode()
            status = await _post(
                ctx.session,
                f"{ctx.base}/v1/webhooks",
                ctx.mallory,
                body,
                **{"Content-Type": "application/json"},
            )
            phase.attacker[f"webhook {status}"] += 1
        url = f"{ctx.base}/v1/registrations"
        await repeat(stop_at, 2, lambda: _post(ctx.session, url, ctx.mallory2, _form(photo)), phase)
    finally:
        over.set()
        server.close()


async def recovered(session: aiohttp.ClientSession, base: str, limit: float = 60.0) -> float:
    """Seconds until the service answers /healthz within 0.5 s again (at most `limit`), so
    one attack's leftovers do not land in the next phase."""
    started = time.monotonic()
    await asyncio.sleep(1)
    while time.monotonic() - started < limit:
        asked = time.monotonic()
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with session.get(f"{base}/healthz", timeout=aiohttp.ClientTimeout(5)) as resp:
                await resp.read()
                if time.monotonic() - asked < 0.5:
                    return time.monotonic() - started
        await asyncio.sleep(0.5)
    return time.monotonic() - started


ATTACKS: dict[str, tuple[str, Callable[[Context, float, Phase], Awaitable[None]]]] = {
    "2": ("progressive-JPEG scan bomb ×2", attack_scan_bomb),
    "3": ("16 slow-body connections", attack_slow_bodies),
    "4": ("11 MB body of 200,000 fields", attack_many_fields),
    "6": ("1×39,999,999 PNG ×4", attack_tall_png),
    "7": ("10 silent webhooks + conflicts", attack_webhooks),
}


@dataclass
class Context:
    session: aiohttp.ClientSession
    base: str
    honest: str
    mallory: str
    mallory2: str
    files: list[bytes]
    service: LocalService
    payloads: dict[str, bytes] = field(default_factory=dict)


async def run_phase(
    ctx: Context, name: str, attack, seconds: float, rate: float, cursor: list[int]
) -> Phase:
    phase = Phase(name)
    main0, workers0 = ctx.service.cpu_seconds()
    stop_at = time.monotonic() + seconds
    tasks = []
    if attack is not None:
        tasks.append(asyncio.create_task(attack(ctx, stop_at, phase)))
        await asyncio.sleep(0.5)  # the attack is under way before the honest seller starts
    await honest_uploads(
        ctx.session,
        ctx.base,
        ctx.honest,
        ctx.files,
        cursor,
        max(1.0, stop_at - time.monotonic()),
        rate,
        phase,
    )
    # Bounded: whatever the attack's requests are doing, the phase ends.
    done, pending = set(), set()
    if tasks:
        done, pending = await asyncio.wait(tasks, timeout=max(0.0, stop_at - time.monotonic()) + 10)
    for task in pending:
        task.cancel()
        phase.attacker["cut off at the phase's end"] += 1
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        if task.exception() is not None:
            phase.attacker[f"bench error: {task.exception()!r}"[:80]] += 1
    main1, workers1 = ctx.service.cpu_seconds()
    phase.cpu_main, phase.cpu_workers = main1 - main0, workers1 - workers0
    return phase


async def main_async(args: argparse.Namespace) -> None:
    seconds = min(args.seconds, MAX_PHASE)
    # Distinct photos for every honest upload (a quiet and an attack phase per attack).
    paths = product_shots(int(seconds * args.rate * 2 * len(args.attacks) * 1.1) + 20)
    files = [p.read_bytes() for p in paths]
    fields, fields_type = _many_fields(files[0])
    payloads = {
        "bomb": badimages.progressive_jpeg_scan_bomb(),
        "tall": _tall_png(),
        "fields": fields,
        "fields_type": fields_type.encode(),
    }
    cursor = [0]
    phases: list[tuple[Phase, Phase]] = []
    # A fresh service per attack, so one attack's leftovers never land in the next; in
    # each, a quiet phase just before the attack (the host is shared and noisy).
    for attack in args.attacks:
        service = LocalService(
            {
                "SHOTSTAMP_FINGERPRINT_WORKERS": str(args.workers),
                "SHOTSTAMP_SEAL_INTERVAL": "1",
                "SHOTSTAMP_WEBHOOK_ALLOW_PRIVATE": "1",
            }
        )
        base = service.start()
        try:
            assert service.process is not None
            keys = [service.process.key(s) for s in ("honest-shop", "mallory", "mallory-two")]
            timeout = aiohttp.ClientTimeout(total=MAX_PHASE + 10)
            async with aiohttp.ClientSession(
                timeout=timeout, connector=aiohttp.TCPConnector(limit=64)
            ) as session:
                ctx = Context(session, base, *keys, files, service, payloads)
                quiet = await run_phase(ctx, "quiet", None, seconds, args.rate, cursor)
                name, run = ATTACKS[attack]
                hit = await run_phase(ctx, f"{attack}: {name}", run, seconds, args.rate, cursor)
                hit.recovery = await recovered(session, base, limit=30.0)
                for phase in (quiet, hit):
                    await read_back_sealed(session, base, keys[0], phase)
                phases.append((quiet, hit))
                print(f"done: {hit.name}", file=sys.stderr, flush=True)
        finally:
            service.stop()
    print(report(phases, seconds, args))


def report(phases: list[tuple[Phase, Phase]], seconds: float, args: argparse.Namespace) -> str:
    lines = [
        f"{args.workers} fingerprint workers; honest seller {args.rate}/s open-loop, "
        f"{seconds:.0f} s per phase; per attack a fresh service, quiet then attacked",
        "",
        "| attack | honest uploads | p50 ms | p99 ms | quiet p99 ms | p99 / quiet | "
        "honest errors | acknowledged → sealed | CPU s service / workers (quiet) | "
        "recovery s | attacker's requests got |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for quiet, hit in phases:
        p99, quiet_p99 = pct(hit.latencies, 99), pct(quiet.latencies, 99)
        ratio = p99 / quiet_p99 if quiet_p99 else float("nan")
        errors = ", ".join(f"{s}×{n}" for s, n in hit.honest.items() if s != "201") or "0"
        got = ", ".join(f"{s} ×{n}" for s, n in hit.attacker.most_common(4)) or "-"
        acked = len(quiet.acknowledged) + len(hit.acknowledged)
        sealed = quiet.sealed + hit.sealed
        lines.append(
            f"| {hit.name} | {len(hit.latencies)} | {pct(hit.latencies, 50) * 1000:.0f} | "
            f"{p99 * 1000:.0f} | {quiet_p99 * 1000:.0f} | {ratio:.1f}× | {errors} | "
            f"{acked} → {sealed} | {hit.cpu_main:.1f} / {hit.cpu_workers:.1f} "
            f"({quiet.cpu_main:.1f} / {quiet.cpu_workers:.1f}) | {hit.recovery:.1f} | {got} |"
        )
        met = hit.errors == 0 and quiet.errors == 0 and ratio <= 3 and sealed == acked
        verdicts.append(f"{hit.name.split(':')[0]}: {'met' if met else 'NOT met'}")
    goal = "goal (p99 ≤ 3× quiet, no honest error, every acknowledged upload sealed): "
    lines += ["", goal + "; ".join(verdicts)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--attacks", default="2,3,4,6,7", type=lambda s: [a for a in s.split(",") if a]
    )
    parser.add_argument("--seconds", type=float, default=12.0, help="per phase, at most 20")
    parser.add_argument("--rate", type=float, default=3.0, help="honest uploads per second")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    unknown = [a for a in args.attacks if a not in ATTACKS]
    if unknown:
        parser.error(f"unknown attacks {unknown}; known: {', '.join(ATTACKS)}")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
