"""Where a fingerprint worker's CPU goes under load: its jobs, and the pool's exchange around them.

    PYTHONPATH=sdk:service:. python -m bench.pool_account [--tree DIR] [--env K=V ...]
        [-- bench/load.py options]

`bench/load.py`'s workers column is what /proc charges to the forkserver and its workers over
a run. This says what that is made of, from inside the worker: it copies a source tree (this
one, or `--tree`, e.g. `git archive main`) to a temporary directory, patches a copy of the
worker's loop (`pool._worker_main`) to add `time.thread_time` around each phase of each job —
reading the frame, the CPU limit, unpickling the job, the job itself (by function), pickling
the reply, sending it — and runs `bench/load.py` (one process, `--cpus`, 8 clients, 15 s, no
half-peak run unless other options are given) against the copy. Every 50 jobs the worker
writes its totals with getrusage's context switches and page faults; printed per upload at
the end, with what the worker's thread used in all since its first job (the residual is
what the phases do not cover: the totals' own writes). The patch is bench-only; the
service's code is not changed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POOL = Path("service/shotstamp_service/matching/pool.py")

_TIMED = '''        try:
            job = _load_job(frame)
            t3 = tt(); add("load", t3 - t2)
            func = getattr(job, "func", job)
            if func.__name__ == "_on_bytes":
                func = job.args[0]
            kind = func.__name__
            reply = ("ok", job())
            t4 = tt(); add("job:" + kind, t4 - t3); add("n:" + kind, 1)
        except Exception as exc:  # handed back to the caller, as an executor would
            reply = ("error", exc)
            t4 = tt()
        try:
            payload = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # an unpicklable result or exception
            payload = pickle.dumps(("error", RuntimeError(f"unpicklable result: {exc!r}")))
        t5 = tt(); add("dump", t5 - t4)
        try:
            _send_frame(channel, payload)
        except OSError:
            os._exit(0)
        add("send", tt() - t5)
        njobs += 1
        if njobs % 50 == 0:
            ru = resource.getrusage(resource.RUSAGE_SELF)
            out = dict(acc, jobs=njobs, minflt=ru.ru_minflt, nvcsw=ru.ru_nvcsw,
                       nivcsw=ru.ru_nivcsw, thread=tt(), first=first,
                       threads=len(os.listdir("/proc/self/task")))
            with open(f"{account}.{os.getpid()}", "w") as fh:
                json.dump(out, fh)
'''

_UNTIMED = '''        try:
            job = _load_job(frame)
            reply = ("ok", job())
        except Exception as exc:  # handed back to the caller, as an executor would
            reply = ("error", exc)
        try:
            payload = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # an unpicklable result or exception
            payload = pickle.dumps(("error", RuntimeError(f"unpicklable result: {exc!r}")))
        try:
            _send_frame(channel, payload)
        except OSError:
            os._exit(0)
'''


def instrument(source: str) -> str:
    """`pool.py`'s source with the worker loop timed (this branch's loop or main's before it)."""
    kept = "inbox = bytearray(_INBOX)" in source
    read = "frame = _recv_frame(channel, inbox)" if kept else "frame = _recv_frame(channel)"
    limit = ("        if limit is not None:\n            limit.before_job()\n" if kept
             else "        if cpu_seconds:\n            _limit_cpu(cpu_seconds)\n")
    head = f"    while True:\n        {read}\n        if frame is None:\n            os._exit(0)\n"
    if head + limit not in source or _UNTIMED not in source:
        raise SystemExit("pool.py's worker loop is not the one this bench knows how to time")
    timed_head = (
        "    import json, time\n"
        "    account = os.environ['POOL_ACCOUNT']\n"
        "    tt = time.thread_time\n"
        "    acc = {}\n"
        "    def add(k, v):\n"
        "        acc[k] = acc.get(k, 0.0) + v\n"
        "    njobs, first = 0, None\n"
        "    while True:\n"
        "        t0 = tt()\n"
        "        first = t0 if first is None else first\n"
        f"        {read}\n"
        "        t1 = tt()\n"
        "        if frame is None:\n"
        "            os._exit(0)\n"
        "        add('recv', t1 - t0)\n"
        f"{limit}"
        "        t2 = tt()\n"
        "        add('limit_cpu', t2 - t1)\n"
    )
    return source.replace(head + limit, timed_head).replace(_UNTIMED, _TIMED)


def summarise(path: Path) -> str:
    d = json.loads(path.read_text())
    up = d["n:fingerprint_and_thumbnail"]
    phases = {k: d[k] for k in ("recv", "limit_cpu", "load", "dump", "send")}
    exchange = sum(phases.values())
    fp, stage2 = d["job:fingerprint_and_thumbnail"], d["job:verify_many"]
    thread = d["thread"] - d["first"]
    ms = 1000 / up
    return "\n".join([
        f"uploads {up:.0f}, jobs {d['jobs']} (stage-2 jobs per upload "
        f"{d['n:verify_many'] / up:.2f}), threads {d['threads']}",
        "| CPU ms per upload | fingerprint job | stage 2 | exchange | of it: read, CPU limit, "
        "unpickle, pickle reply, send | worker thread in all | residual |",
        "|---|---|---|---|---|---|---|",
        f"| | {fp * ms:.3f} | {stage2 * ms:.3f} | {exchange * ms:.3f} | "
        + ", ".join(f"{v * ms:.3f}" for v in phases.values())
        + f" | {thread * ms:.3f} | {(thread - exchange - fp - stage2) * ms:.3f} |",
        f"exchange per job {exchange / d['jobs'] * 1e6:.0f} µs; per upload: voluntary context "
        f"switches {d['nvcsw'] / up:.2f}, involuntary {d['nivcsw'] / up:.2f}, minor faults "
        f"{d['minflt'] / up:.1f}",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="source tree to account for")
    parser.add_argument("--env", action="append", default=[],
                        help="K=V for the worker's environment (repeatable)")
    parser.add_argument("load", nargs="*", help="bench/load.py options (after --)")
    args = parser.parse_args(argv)
    load = args.load or ["--processes", "1", "--cpus", "--clients", "8", "--duration", "15",
                         "--repeat", "1", "--max-rate", "150", "--no-half-peak"]
    with tempfile.TemporaryDirectory(prefix="pool-account-") as tmp:
        copy = Path(tmp) / "tree"
        shutil.copytree(args.tree / "service", copy / "service")
        shutil.copytree(args.tree / "sdk", copy / "sdk")
        (copy / POOL).write_text(instrument((args.tree / POOL).read_text()))
        account = Path(tmp) / "account"
        env = dict(os.environ, POOL_ACCOUNT=str(account),
                   PYTHONPATH=f"{copy}/sdk:{copy}/service:{ROOT}",
                   **dict(item.split("=", 1) for item in args.env))
        subprocess.run([sys.executable, str(ROOT / "bench" / "load.py"), *load], env=env,
                       cwd=ROOT, check=True)
        for path in sorted(Path(tmp).glob("account.*")):
            print(summarise(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
