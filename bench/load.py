"""Load benchmark: registrations per second, latency and time to seal, against the naive loop.

Starts a real service (or targets one with --url), drives it over loopback with
N concurrent clients uploading distinct 1000×1000 product-style JPEGs for a
bounded time, and prints, for each concurrency level:

  uploads/s, latency p50/p95/p99, outcomes by status, and acknowledgement→sealed
  p50/p99 (the ack is when the 201 arrived; sealed is the signed timestamp of
  the first checkpoint containing the registration), and the CPU milliseconds
  per upload spent in the service process and in its fingerprint workers (from
  /proc: unlike rates, these barely move when other work shares the machine),
  and in this load generator, which shares the same cores. `cores` is what the
  service kept busy (CPU-seconds per second), `wait` how many cores' worth of
  its threads were ready to run but waited for a CPU (/proc schedstat): on a
  shared machine, what other work took (other login sessions are separate
  autogroups, so their `nice` does not yield to this one).

The load generator's client is `bench/rawhttp.py` (`--client raw`): the same
multipart uploads over keep-alive connections as aiohttp's client sent, each
answer read whole and its status and registration id checked, for about a third
of aiohttp's CPU per upload. `--client aiohttp` is the client of before;
`--client raw,aiohttp` alternates the two run by run and sums up each apart
(docs/cpu-budget.md, "The load generator's client").

In the same run it times the naive single-process loop
`imagehash.phash(Image.open(f))` over the same files and prints the ratio of
the service's end-to-end throughput to it. Figures are medians over --repeat
runs of each level; the machine is shared and noisy, so compare ratios.

    python bench/load.py                       # sweep 1,4,8,16,32 clients, 10 s each
    python bench/load.py --clients 16 --duration 60 --bad-fraction 0.2
    python bench/load.py --url http://host:8080 --key ss_...   # an existing service
    python bench/load.py --postgres --replicas 1,2   # one replica beside two, on PostgreSQL
    python bench/load.py --processes 1,2   # serve --processes 1 beside 2, on one SQLite dir

After the sweep it offers half of the peak rate open-loop (arrivals at a fixed
pace, however slowly the service answers) and prints the latency there: the
throughput issue's "p99 under 100 ms at half of peak load".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.kit
from productshots import product_shots
from rawhttp import RawClient
from tests.kit import processes  # real service processes


@dataclass
class RunResult:
    clients: int
    duration: float
    latencies: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    acked: list[tuple[str, float]] = field(default_factory=list)  # (id, wall-clock ack time)
    seal_delays: list[float] = field(default_factory=list)
    good_latencies: list[float] = field(default_factory=list)
    cpu_main: float = float("nan")  # CPU seconds of the service processes during the run
    cpu_workers: float = float("nan")  # ... and of their forkservers and fingerprint workers
    cpu_client: float = float("nan")  # ... and of this load generator, on the same cores
    cpu_wait: float = float("nan")  # seconds the service's threads waited for a CPU

    @property
    def rate(self) -> float:
        return self.outcomes["201"] / self.duration


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


class LocalService:
    """A real `shotstamp-service serve` (tests/kit/processes.py) in a temporary data directory."""

    def __init__(self, env: dict[str, str], cpus: set[int] | None = None) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="shotstamp-load-")
        self.data = Path(self.tmp.name) / "data"
        self.env = dict(env)
        self.cpus = cpus  # the cores it may run on (--cpus), its workers included
        self.process: processes.ServiceProcess | None = None

    def admin(self, *args: str) -> str:
        done = processes.run("shotstamp-service", "--data-dir", str(self.data), *args, env=self.env)
        if done.returncode != 0:
            raise SystemExit(f"shotstamp-service {' '.join(args)} failed: {done.stderr}")
        return done.stdout.strip()

    def start(self) -> str:
        """Start it and wait until it is healthy; returns its base URL."""
        if self.cpus is None:
            self.process = processes.start_service(self.data, env=self.env)
            return self.process.url
        # A child inherits its parent's affinity, and so do its workers, forked later.
        mine = os.sched_getaffinity(0)
        os.sched_setaffinity(0, self.cpus)
        try:
            self.process = processes.start_service(self.data, env=self.env)
        finally:
            os.sched_setaffinity(0, mine)
        return self.process.url

    def wait_for_workers(self, count: int, timeout: float = 60.0) -> None:
        """Until each of gunicorn's `count` workers has started its fingerprint pool (its app's
        startup, which ends in listening), and a second more."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stats = _proc_stats()
            workers = [p for p, (ppid, _) in stats.items() if ppid == self.process.proc.pid]
            started = [w for w in workers if any(ppid == w for ppid, _ in stats.values())]
            if len(started) >= count:
                time.sleep(1.0)
                return
            time.sleep(0.2)
        raise SystemExit(f"the service's {count} processes did not all start")

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU time (user + system) so far of the service process and of its descendants.

        Read from /proc (Linux): the descendants are the forkserver and the
        fingerprint workers, whose parent is the forkserver, not the service.
        """
        if self.process is None:
            return 0.0, 0.0
        stats = _proc_stats()
        serving, family = self._family(stats)
        main = sum(stats[p][1] for p in serving if p in stats)
        return main, sum(stats[pid][1] for pid in family - serving)

    def _family(self, stats: dict[int, tuple[int, float]]) -> tuple[set[int], set[int]]:
        """(serving processes, their descendants) among `stats`."""
        assert self.process is not None
        pid = self.process.proc.pid
        serving = {pid}
        if self.env.get("SHOTSTAMP_PROCESSES", "1") != "1":  # gunicorn's workers serve
            serving |= {child for child, (ppid, _) in stats.items() if ppid == pid}
        family, frontier = set(), set(serving)
        while frontier:
            frontier = {pid for pid, (ppid, _) in stats.items() if ppid in frontier} - family
            family |= frontier
        return serving, family

    def cpu_wait_seconds(self) -> float:
        """Seconds so far the service's threads (workers included) were ready to run but
        waited for a CPU (/proc/<pid>/task/*/schedstat, Linux): what others took of its cores."""
        if self.process is None:
            return 0.0
        serving, family = self._family(_proc_stats())
        waited = 0
        for pid in serving | family:
            for task in Path(f"/proc/{pid}/task").glob("*"):
                try:
                    waited += int((task / "schedstat").read_text().split()[1])
                except (OSError, IndexError, ValueError):
                    continue
        return waited / 1e9

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
        self.tmp.cleanup()


def bad_upload(rng: random.Random, good: bytes) -> tuple[bytes, str]:
    """One of the malformed uploads the reliability issue lists."""
    kind = rng.choice(["text", "truncated", "garbage-jpeg", "empty"])
    if kind == "text":
        return b"definitely not an image " * 40, "text/plain"
    if kind == "truncated":
        return good[: len(good) // 3], "image/jpeg"
    if kind == "garbage-jpeg":
        return b"\xff\xd8\xff\xe0" + os.urandom(4000), "image/jpeg"
    return b"", "image/jpeg"


class AiohttpClient:
    """The load generator's first client (`--client aiohttp`): aiohttp's session, a `FormData`
    per upload. Same calls as `rawhttp.RawClient`, which is leaner (docs/cpu-budget.md)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def post_image(
        self, base: str, path: str, key: str, data: bytes, content_type: str
    ) -> tuple[int, bytes]:
        form = aiohttp.FormData()
        form.add_field("image", data, filename="shot.jpg", content_type=content_type)
        async with self.session.post(
            f"{base}{path}", data=form, headers={"Authorization": f"Bearer {key}"}
        ) as resp:
            return resp.status, await resp.read()

    async def get(self, base: str, path: str, key: str | None = None) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {key}"} if key else None
        async with self.session.get(f"{base}{path}", headers=headers) as resp:
            return resp.status, await resp.read()

    async def close(self) -> None:
        await self.session.close()


Client = AiohttpClient | RawClient
CLIENTS = ("raw", "aiohttp")  # --client: the first is the default
# What a failed request raises, in either client.
REQUEST_ERRORS = (aiohttp.ClientError, OSError, ValueError)


def make_client(kind: str) -> Client:
    if kind == "raw":
        return RawClient()
    return AiohttpClient(
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=120)
        )
    )


class CheckpointWatcher:
    """Polls /v1/checkpoints/latest and keeps every (size, signed timestamp) it sees."""

    def __init__(self, client: Client, url: str) -> None:
        self.client, self.url = client, url
        self.seen: dict[int, float] = {}

    async def run(self) -> None:
        while True:
            try:
                _, raw = await self.client.get(self.url, "/v1/checkpoints/latest")
                body = json.loads(raw)
                self.seen.setdefault(body["tree_size"], _note_time(body["note"]))
            except (*REQUEST_ERRORS, KeyError):
                pass
            await asyncio.sleep(0.05)


def _note_time(note: str) -> float:
    for line in note.splitlines():
        if line.startswith("Timestamp: "):
            return int(line.split()[1]) / 1e9
    raise ValueError("checkpoint without a timestamp")


async def drive(
    http_client: Client,
    urls: list[str],
    keys: list[str],
    files: list[bytes],
    clients: int,
    duration: float,
    bad_fraction: float,
    cursor: list[int],
    pace: float | None = None,
) -> RunResult:
    """`clients` closed-loop clients for `duration` s; with `pace`, open-loop arrivals instead.

    Closed loop: each client sends its next upload when the last is answered
    (peak throughput). Open loop: one upload starts every 1/`pace` s whatever
    the answers (latency at a given offered load). Clients and arrivals are
    spread round-robin over `urls` (several replicas).
    """
    result = RunResult(clients=clients, duration=duration)
    rng = random.Random(clients)
    stop_at = time.monotonic() + duration

    async def upload(n: int) -> None:
        url, key = urls[n % len(urls)], keys[n % len(keys)]
        bad = rng.random() < bad_fraction
        if bad:
            data, ctype = bad_upload(rng, files[0])
        else:
            data, ctype = files[cursor[0]], "image/jpeg"
            cursor[0] += 1
        started = time.monotonic()
        try:
            status, body = await http_client.post_image(url, "/v1/registrations", key, data, ctype)
        except REQUEST_ERRORS as exc:
            result.outcomes[f"error:{type(exc).__name__}"] += 1
            return
        latency = time.monotonic() - started
        result.latencies.append(latency)
        if status == 201:
            # Every acknowledgement is checked: a 201 without a registration id is no ack.
            try:
                reg_id = json.loads(body)["id"]
            except (ValueError, KeyError, TypeError):
                reg_id = None
            if not isinstance(reg_id, str) or not reg_id:
                result.outcomes["201-without-id"] += 1
                return
            result.good_latencies.append(latency)
            result.acked.append((reg_id, time.time()))
        result.outcomes[str(status) if not bad else f"bad:{status}"] += 1

    async def client(n: int) -> None:
        while time.monotonic() < stop_at and cursor[0] < len(files):
            await upload(n)

    async def arrivals(rate: float) -> None:
        tasks, n, next_at = [], 0, time.monotonic()
        while next_at < stop_at and cursor[0] < len(files):
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            tasks.append(asyncio.create_task(upload(n)))
            n += 1
            next_at += 1 / rate
        await asyncio.gather(*tasks)

    started = time.monotonic()
    if pace is None:
        await asyncio.gather(*(client(n) for n in range(clients)))
    else:
        await arrivals(pace)
    result.duration = time.monotonic() - started
    return result


async def seal_delays(
    client: Client,
    url: str,
    key: str,
    result: RunResult,
    watcher: CheckpointWatcher,
) -> None:
    """Ack→sealed per registration, from its leaf index and the checkpoints seen."""
    deadline = time.monotonic() + 30
    pending = list(result.acked)
    while pending and time.monotonic() < deadline:
        still = []
        for reg_id, acked_at in pending:
            _, raw = await client.get(url, f"/v1/registrations/{reg_id}", key)
            index = json.loads(raw).get("leaf_index")
            sizes = sorted(s for s in watcher.seen if index is not None and s > index)
            if not sizes:
                still.append((reg_id, acked_at))
                continue
            result.seal_delays.append(watcher.seen[sizes[0]] - acked_at)
        pending = still
        if pending:
            await asyncio.sleep(0.5)
    if pending:
        result.outcomes["unsealed-after-30s"] += len(pending)


def naive_loop(paths: list[Path], seconds: float = 10.0) -> tuple[float, float]:
    """`imagehash.phash(Image.open(f))` in this one process: (images/s, CPU ms per image)."""
    import imagehash
    from PIL import Image

    imagehash.phash(Image.open(paths[0]))  # the first call's lazy set-up is not per image
    count, started, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        imagehash.phash(Image.open(paths[count % len(paths)]))
        count += 1
    return count / (time.perf_counter() - started), (time.process_time() - cpu) * 1000 / count


def cpu_per_upload(result: RunResult) -> tuple[float, float, float]:
    """CPU ms per upload answered: (service process, fingerprint workers, load generator)."""
    n = max(1, sum(result.outcomes.values()))
    return (
        result.cpu_main * 1000 / n,
        result.cpu_workers * 1000 / n,
        result.cpu_client * 1000 / n,
    )


def report(result: RunResult, naive: float, naive_cpu: float) -> str:
    ms = lambda v: f"{v * 1000:7.1f}"  # noqa: E731
    outcomes = ", ".join(f"{k}={v}" for k, v in sorted(result.outcomes.items()))
    main, workers, client = cpu_per_upload(result)
    total = main + workers + client
    return (
        f"{result.clients:7d} {result.rate:9.1f} {result.rate / naive:6.2f}x"
        f" {ms(pct(result.good_latencies, 50))} {ms(pct(result.good_latencies, 95))}"
        f" {ms(pct(result.good_latencies, 99))}"
        f" {ms(pct(result.seal_delays, 50))} {ms(pct(result.seal_delays, 99))}"
        f" {main:7.1f} {workers:8.1f} {client:7.1f} {total:7.1f} {total / naive_cpu:6.2f}x"
        f" {cores_used(result):5.2f} {result.cpu_wait / result.duration:5.2f}   {outcomes}"
    )


HEADER = (
    "clients  uploads/s  ×naive   p50 ms   p95 ms   p99 ms  seal50ms seal99ms"
    "  cpu/up main  workers  client   total ×pHash cores  wait   outcomes"
)


def cores_used(result: RunResult) -> float:
    """Cores the service (serving processes and workers) kept busy on average during the run:
    what it got of the machine, which others may share."""
    return (result.cpu_main + result.cpu_workers) / result.duration

# `--record` appends its line to this table (bench/RESULTS.md).
RECORD_SECTION = "## CPU per upload, by component"
RECORD_MARK = "<!-- bench/load.py --record appends below this line -->"


def cpu_summary(runs: dict[tuple[int, int], list[RunResult]], naive_cpu: float) -> list[str]:
    """Per level, the median CPU ms per upload of each component and their sum against pHash."""
    lines = [
        f"CPU ms per upload, by component (median of runs; the naive pHash {naive_cpu:.1f} ms):",
        "replicas clients  service  workers  client   total  ×pHash",
    ]
    for (replicas, clients), results in sorted(runs.items()):
        parts = [statistics.median(v) for v in zip(*map(cpu_per_upload, results), strict=True)]
        total = sum(parts)
        level = f"{clients:7d}" if clients >= 0 else " half-pk"
        lines.append(
            f"{replicas:8d} {level} {parts[0]:8.1f} {parts[1]:8.1f} {parts[2]:7.1f}"
            f" {total:7.1f} {total / naive_cpu:6.2f}x"
        )
    return lines


def current_commit() -> str:
    """The checkout's short commit, `+changes` when its service or SDK differ from it."""
    root = Path(__file__).parents[1]
    git = lambda *a: subprocess.run(  # noqa: E731
        ["git", *a], cwd=root, capture_output=True, text=True, check=False
    ).stdout.strip()
    commit = git("rev-parse", "--short", "HEAD") or "?"
    if git("status", "--porcelain", "--untracked-files=no", "--", "service", "sdk"):
        commit += "+changes"
    return commit


def record_row(result: RunResult, naive_cpu: float, commit: str, command: str) -> str:
    """One dated Markdown table row for `--record`: the commit, each component, the ratio."""
    main, workers, client = cpu_per_upload(result)
    total = main + workers + client
    day = time.strftime("%Y-%m-%d", time.gmtime())
    return (
        f"| {day} | {commit} | {result.clients} | {result.rate:.1f} | {main:.1f}"
        f" | {workers:.1f} | {client:.1f} | {total:.1f} | {naive_cpu:.1f}"
        f" | {total / naive_cpu:.2f}× | `{command}` |"
    )


def append_record(results: Path, row: str) -> None:
    """Add `row` under RECORD_MARK in `results`, after the rows already there."""
    lines = results.read_text().split("\n")
    try:
        at = lines.index(RECORD_MARK) + 1
    except ValueError:
        raise SystemExit(
            f"{results} has no line {RECORD_MARK!r} (under {RECORD_SECTION!r})"
        ) from None
    while at < len(lines) and lines[at].startswith("|"):
        at += 1
    lines.insert(at, row)
    results.write_text("\n".join(lines))


# Frames where a thread waits rather than works: left out of the profile's shares.
_IDLE_FRAMES = (
    "select (selectors.py",
    "_worker (concurrent/futures/thread.py",
    "wait (threading.py",
    "_recv_frame (shotstamp_service/matching/pool.py",
)


def start_profilers(service: LocalService, seconds: float, out: Path) -> list[subprocess.Popen]:
    """py-spy on each serving process and on one fingerprint worker of each, `seconds` long:
    `service.txt` and `worker.txt` with one process, `service-<i>.txt` and `worker-<i>.txt`
    with several (gunicorn's workers, not its arbiter, which only supervises).

    `--gil`: only the thread holding the GIL is sampled, so the shares are of
    the Python work that competes for the cores, not of threads waiting on a
    queue, a socket or SQLite's disk writes.
    """
    if service.process is None:
        return []
    serving, _ = service._family(_proc_stats())
    if len(serving) > 1:  # the arbiter serves nothing
        serving.discard(service.process.proc.pid)
    targets: list[tuple[str, int]] = []
    for i, pid in enumerate(sorted(serving)):
        suffix = f"-{i}" if len(serving) > 1 else ""
        targets.append((f"service{suffix}", pid))
        # The fingerprint workers are the serving process's grandchildren (its forkserver's).
        workers = sorted(w for fs in _children(pid) for w in _children(fs))
        if workers:
            targets.append((f"worker{suffix}", workers[0]))
    out.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).parent / "py-spy"
    return [
        subprocess.Popen(
            [
                str(spy),
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(max(1, int(seconds))),
                "--gil",
                "--rate",
                "200",
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(out / f"{name}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in targets
    ]


def _children(pid: int) -> list[int]:
    return [child for child, (parent, _) in _proc_stats().items() if parent == pid]


def _proc_stats() -> dict[int, tuple[int, float]]:
    """pid → (parent pid, CPU seconds so far) of every process, from /proc (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return stats


def summarise_profile(path: Path, top: int = 12) -> str:
    """Shares of the sampled work: inclusive by our and the libraries' frames, then self."""
    total, inclusive, own = 0, Counter[str](), Counter[str]()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if any(idle in frames[-1] for idle in _IDLE_FRAMES):
            continue
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    if not total:
        return f"{path.stem}: no samples"
    # Frames every request passes through (event loop, middlewares) say nothing.
    wanted = ("shotstamp_service/", "PIL/", "imagehash/", "aiohttp/multipart", "sqlite")
    rows = [
        f"  {n / total:6.1%}  {frame}"
        for frame, n in inclusive.most_common()
        if any(mark in frame for mark in wanted) and n < 0.6 * total
    ][:top]
    rows += ["  self:"] + [f"  {n / total:6.1%}  {frame}" for frame, n in own.most_common(8)]
    return f"{path.stem}: {total} samples\n" + "\n".join(rows)


async def run_level(
    args: argparse.Namespace,
    files: list[bytes],
    clients: int,
    naive: float,
    pace: float | None = None,
    *,
    replicas: int = 1,
    processes: int = 1,
) -> RunResult:
    """One measured run at `clients` (or at `pace` uploads/s), against fresh services unless --url.

    A fresh service per run lets every run upload the same distinct shots as new
    registrations (a second upload of a shot would be "already yours" or a conflict).
    With --postgres, `replicas` services share a fresh database of one server.
    """
    services: list[LocalService] = []
    urls, keys = [args.url] if args.url else [], [args.key] if args.key else []
    database = None
    steps: Path | None = None
    if args.url is None:
        # Peak throughput is the question here, so the per-key rate limits are off
        # (the bench reads every registration back with one staff key).
        env = {  # production settings over the test processes' quick ones
            "SHOTSTAMP_SEAL_INTERVAL": "1.0",
            "SHOTSTAMP_WAIT_TIMEOUT": "30",
            # The same fingerprint workers in all, however many serving processes share them;
            # with --cpus, the same on every core: --workers (default 1) per serving process.
            "SHOTSTAMP_FINGERPRINT_WORKERS": str(
                (args.workers or 1) if args.cpus
                else max(1, (args.workers or os.cpu_count() or 1) // processes)
            ),
            "SHOTSTAMP_PROCESSES": str(processes),
            "SHOTSTAMP_UPLOAD_RATE": "0",
            "SHOTSTAMP_MAX_UPLOADS_PER_KEY": "0",
            "SHOTSTAMP_READ_RATE": "0",
            "SHOTSTAMP_LOG_FORMAT": "text",
        }
        env.update(item.split("=", 1) for item in args.service_env)
        if args.step_cpu is not None:  # bench/step_cpu: thread CPU per step, a folder a run
            args.step_runs = getattr(args, "step_runs", 0) + 1
            steps = args.step_cpu / f"{args.step_runs:02d}-p{processes}x{replicas}-{clients}"
            env["BENCH_STEP_CPU"] = str(steps)
            env["PYTHONPATH"] = os.pathsep.join(
                [str(Path(__file__).parent / "step_cpu"), os.environ.get("PYTHONPATH", "")])
        if args.pg_server is not None:
            database = await args.pg_server.create_database("load")
            env["SHOTSTAMP_DATABASE_URL"] = database
        services = [
            LocalService(env, set(range(i * processes, (i + 1) * processes)) if args.cpus else None)
            for i in range(replicas)
        ]
        if database is not None:
            # One signing key for every replica, shared by configuration (docs/operations.md).
            keydir = services[0].data.parent / "signing-keys"
            for service in services:
                service.env["SHOTSTAMP_SIGNING_KEY_DIR"] = str(keydir)
            services[0].admin("signing-key", "rotate")
        first = services[0]
        keys = [first.admin("keys", "create", "--seller", f"seller{n}") for n in range(8)]
        args.staff_key = first.admin("keys", "create", "--seller", "bench", "--role", "staff")
        urls = [service.start() for service in services]
        if processes > 1:  # the first process up would take every client's connection
            for service in services:
                service.wait_for_workers(processes)
    client = make_client(args.client_kind)
    try:
        watcher = CheckpointWatcher(client, urls[0])
        watch = asyncio.create_task(watcher.run())
        cursor = [0] if services else args.cursor
        before = [service.cpu_seconds() for service in services]
        waited_before = sum(service.cpu_wait_seconds() for service in services)
        client_before = time.process_time()
        spies = []
        if args.profile and services:
            # Past the first seconds (connections, warm caches), not past the end.
            level = f"{replicas}x{clients}" if pace is None else f"{replicas}x{pace:.0f}per-s"
            level = f"p{processes}-{level}"  # each level its own folder: none overwrites another
            spies = start_profilers(services[0], args.duration - 4, args.profile / level)
        result = await drive(
            client,
            urls,
            keys,
            files,
            clients,
            args.duration,
            args.bad_fraction,
            cursor,
            pace,
        )
        result.cpu_client = time.process_time() - client_before
        for spy in spies:
            spy.wait()
        if spies:
            for raw in sorted((args.profile / level).glob("*.txt")):
                print(f"[{level}] " + summarise_profile(raw), file=sys.stderr)
        if services:
            after = [service.cpu_seconds() for service in services]
            result.cpu_wait = (sum(service.cpu_wait_seconds() for service in services)
                               - waited_before)
            result.cpu_main = sum(a[0] - b[0] for a, b in zip(after, before, strict=True))
            result.cpu_workers = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
        await seal_delays(client, urls[0], args.staff_key or keys[0], result, watcher)
        if steps is not None:
            steps.mkdir(parents=True, exist_ok=True)
            (steps / "run.json").write_text(json.dumps({"uploads": result.outcomes["201"],
                                                        "rate": result.rate}))
        watch.cancel()
        if cursor[0] >= len(files):
            print("ran out of distinct images; raise --max-rate", file=sys.stderr)
        return result
    finally:
        await client.close()
        for service in services:
            service.stop()
        if database is not None:
            await args.pg_server.drop_database(database)


async def main_async(args: argparse.Namespace) -> None:
    levels = [int(c) for c in args.clients.split(",")]
    needed = int(args.max_rate * args.duration)
    if args.url:  # an existing service keeps its registrations: every run needs new shots
        needed *= len(levels) * args.repeat
    print(
        f"preparing {needed} distinct 1000×1000 product shots (cached in bench/out/)…",
        file=sys.stderr,
    )
    paths = product_shots(needed)
    files = [p.read_bytes() for p in paths]
    args.cursor = [0]
    args.commit = current_commit()  # the code the services start from, not what it is later

    naive, naive_cpu = naive_loop(paths[:200], args.naive_seconds)
    print(
        f"naive loop imagehash.phash(Image.open(f)): {naive:.1f} img/s (one process), "
        f"{naive_cpu:.1f} ms CPU per image"
    )
    counts = [int(c) for c in str(args.replicas).split(",")]
    procs = [int(c) for c in str(args.processes).split(",")]
    if args.cpus:
        cores = os.cpu_count() or 1
        if max(counts) * max(procs) > cores:
            raise SystemExit(f"--cpus: {max(counts) * max(procs)} serving processes need as "
                             f"many cores, this machine has {cores}")
        # The load generator on the last core: alone there while one process runs on core 0,
        # beside the service's second process with two (its CPU is reported apart).
        os.sched_setaffinity(0, {cores - 1})
        print(f"--cpus: n serving processes on cores 0..n-1 with their "
              f"{args.workers or 1} fingerprint worker(s) each; the load generator on core "
              f"{cores - 1}", file=sys.stderr)
    if len(procs) > 1:  # compare serving processes (one replica) instead of replicas
        counts = procs
    kind = "processes" if len(procs) > 1 else "replicas"

    def sizes(n: int) -> dict[str, int]:
        return {"processes": n, "replicas": 1} if len(procs) > 1 else {
            "replicas": n, "processes": procs[0]}

    clients_kinds = args.client.split(",")
    print(("client  " if len(clients_kinds) > 1 else "")
          + (f"{kind:>8} " if len(counts) > 1 else "") + HEADER)
    # Replica counts (and load generator clients) interleaved round by round, so a noisy
    # minute on the shared machine hits them alike and their ratio stays fair. The first
    # client's runs make the peak and the rest below; each client's CPU is summed up apart.
    by_client: dict[str, dict[tuple[int, int], list[RunResult]]] = {k: {} for k in clients_kinds}
    runs = by_client[clients_kinds[0]]
    for _ in range(args.repeat):
        for client_kind in clients_kinds:
            args.client_kind = client_kind
            for replicas in counts:
                for clients in levels:
                    result = await run_level(args, files, clients, naive, **sizes(replicas))
                    by_client[client_kind].setdefault((replicas, clients), []).append(result)
                    prefix = f"{client_kind:7} " if len(clients_kinds) > 1 else ""
                    prefix += f"{replicas:8d} " if len(counts) > 1 else ""
                    print(prefix + report(result, naive, naive_cpu), flush=True)
    args.client_kind = clients_kinds[0]

    peaks = {}
    for replicas in counts:
        mine = {c: rs for (r, c), rs in runs.items() if r == replicas}
        best = max(mine.items(), key=lambda kv: statistics.median(r.rate for r in kv[1]))
        peak = peaks[replicas] = statistics.median(r.rate for r in best[1])
        label = f"{replicas} {kind}: " if len(counts) > 1 else ""
        print(
            f"\n{label}peak: {peak:.1f} registrations/s at {best[0]} clients = "
            f"{peak / naive:.2f}× the naive loop ({naive:.1f} img/s)"
        )
        if args.half_peak and peak > 0:
            pace = peak / 2
            halves = [
                await run_level(args, files, 0, naive, pace, **sizes(replicas))
                for _ in range(args.repeat)
            ]
            lat = [v for r in halves for v in r.good_latencies]
            print(
                f"{label}at half of peak ({pace:.1f} uploads/s offered open-loop, "
                f"{len(lat)} uploads): p50 {pct(lat, 50) * 1000:.1f} ms, "
                f"p95 {pct(lat, 95) * 1000:.1f} ms, p99 {pct(lat, 99) * 1000:.1f} ms"
            )
            runs[(replicas, -1)] = halves
    if len(counts) > 1:
        print(f"{counts[-1]} {kind} / {counts[0]}: {peaks[counts[-1]] / peaks[counts[0]]:.2f}×")
        # Per core obtained: on a shared machine a run gets what others leave of its cores.
        per_core = {
            n: statistics.median(r.rate / max(cores_used(r), 1e-9) for (m, c), rs in runs.items()
                                 if m == n and c >= 0 for r in rs)
            for n in counts
        }
        print("uploads per second per core the service kept busy: "
              + ", ".join(f"{per_core[n]:.1f} with {n}" for n in counts)
              + f"; {counts[-1]} {kind} / {counts[0]} at full cores: "
              f"{counts[-1] * per_core[counts[-1]] / (counts[0] * per_core[counts[0]]):.2f}×")
    every = [r for rs in runs.values() for r in rs]
    all_seal = [d for r in every for d in r.seal_delays]
    if all_seal:
        print(
            f"ack→sealed over all runs: p50 {pct(all_seal, 50) * 1000:.0f} ms, "
            f"p99 {pct(all_seal, 99) * 1000:.0f} ms, max {max(all_seal) * 1000:.0f} ms"
        )
    fives = sum(v for r in every for k, v in r.outcomes.items() if k.split(":")[-1].startswith("5"))
    lost = sum(r.outcomes["unsealed-after-30s"] for r in every)
    print(f"5xx answers: {fives}; acknowledged but not sealed within 30 s: {lost}")
    if not args.url:
        for client_kind, its_runs in by_client.items():
            label = f"load generator --client {client_kind}: " if len(by_client) > 1 else ""
            print("\n" + label + "\n".join(cpu_summary(its_runs, naive_cpu)))
    if args.record is not None:
        # The median run by total CPU of the busiest closed-loop level: one line per commit.
        level = max(((r, c) for r, c in runs if c >= 0), key=lambda k: k[1])
        ordered = sorted(runs[level], key=lambda r: sum(cpu_per_upload(r)))
        command = "python " + " ".join(sys.argv)
        row = record_row(ordered[len(ordered) // 2], naive_cpu, args.commit, command)
        append_record(args.record, row)
        print(f"recorded in {args.record}: {row}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="target an existing service instead of starting one")
    parser.add_argument("--key", help="API key for --url")
    parser.add_argument(
        "--staff-key", help="staff key for --url, to read back every client's registrations"
    )
    parser.add_argument("--clients", default="1,4,8,16,32", help="comma-separated levels")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per level")
    parser.add_argument("--repeat", type=int, default=1, help="runs per level (median)")
    parser.add_argument(
        "--bad-fraction",
        type=float,
        default=0.0,
        help="share of malformed uploads mixed in (e.g. 0.2)",
    )
    parser.add_argument("--workers", type=int, help="SHOTSTAMP_FINGERPRINT_WORKERS")
    parser.add_argument(
        "--client",
        default=CLIENTS[0],
        help="the load generator's HTTP client: raw (bench/rawhttp.py, lean) or aiohttp "
        "(its ClientSession, the client before); a comma-separated list alternates them "
        "run by run and sums up each one's CPU apart, e.g. raw,aiohttp",
    )
    parser.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the local service (repeatable), e.g. SHOTSTAMP_THUMBNAILS=off",
    )
    parser.add_argument(
        "--max-rate",
        type=float,
        default=400.0,
        help="upper bound on uploads/s, to size the image set",
    )
    parser.add_argument("--naive-seconds", type=float, default=10.0)
    parser.add_argument(
        "--no-half-peak",
        dest="half_peak",
        action="store_false",
        help="skip the open-loop run at half of the peak rate",
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="run the services on a throwaway PostgreSQL server (Debian's postgresql)",
    )
    parser.add_argument(
        "--replicas",
        default="1",
        help="service processes; a comma-separated list compares counts side by side "
        "(several need --postgres), e.g. 1,2",
    )
    parser.add_argument(
        "--processes",
        default="1",
        help="serving processes of one service (SHOTSTAMP_PROCESSES) on its SQLite data dir; "
        "a comma-separated list compares counts side by side, e.g. 1,2",
    )
    parser.add_argument(
        "--cpus",
        action="store_true",
        help="give n serving processes (or replicas) n cores: process i and its fingerprint "
        "workers run on core i only (sched_setaffinity); throughput per core, compared "
        "across counts (docs/processes.md)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="py-spy the service and one worker during each run; raw stacks in DIR, "
        "a summary on stderr",
    )
    parser.add_argument(
        "--step-cpu",
        type=Path,
        metavar="DIR",
        help="time the serving path's steps in each serving process (thread CPU per call, "
        "bench/step_cpu); a folder a run in DIR, read with python -m bench.step_cpu DIR",
    )
    parser.add_argument(
        "--record",
        type=Path,
        nargs="?",
        const=Path(__file__).parent / "RESULTS.md",
        metavar="FILE",
        help="append one dated line (commit, CPU per upload by component) to the table of "
        f"{RECORD_SECTION!r} in FILE (default bench/RESULTS.md)",
    )
    args = parser.parse_args()
    if not set(args.client.split(",")) <= set(CLIENTS):
        parser.error(f"--client: each of {', '.join(CLIENTS)}")
    if args.record is not None and args.url:
        parser.error("--record measures a local service's CPU: drop --url")
    if max(int(c) for c in args.replicas.split(",")) > 1 and not args.postgres:
        parser.error("several replicas share PostgreSQL: add --postgres")
    args.pg_server = None
    if args.postgres:
        from tests.kit.pgserver import start_server

        args.pg_server = start_server(durable=True)
    try:
        asyncio.run(main_async(args))
    finally:
        if args.pg_server is not None:
            args.pg_server.stop()


if __name__ == "__main__":
    main()
