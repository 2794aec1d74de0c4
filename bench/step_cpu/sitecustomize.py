"""Thread CPU per call of the serving path's steps, inside real serving processes.

`bench/load.py --step-cpu DIR` puts this folder first on the services' PYTHONPATH with
BENCH_STEP_CPU set to a folder per run: every process that imports the service (one
serving process, or each of gunicorn's workers) wraps the methods in STEPS once they are
imported, times each call with `time.thread_time_ns` (its own thread's CPU, whatever the
others do: no sampling, no time counted while preempted or waiting) and writes
`steps-<pid>.txt` (step, calls, ns) every second. Wrapped calls nest: `Matcher.look`
includes its `candidates`. Coroutines are not timed (their thread time would include
whatever ran between their awaits). `python -m bench.step_cpu` reads the files.
"""

import os
import threading
import time

# (module, class or None for a module function, attribute): only plain synchronous calls,
# none the fingerprint pool pickles by reference (a wrapper cannot be pickled).
STEPS = (
    ("shotstamp_service.matching.engine", "Matcher", "look"),
    ("shotstamp_service.matching.engine", "Matcher", "look_again"),
    ("shotstamp_service.matching.engine", "Matcher", "candidates"),
    ("shotstamp_service.matching.engine", "Matcher", "add"),
    ("shotstamp_service.matching.engine", "Matcher", "discard"),
    ("shotstamp_service.matching.engine", "Matcher", "entry"),
    ("shotstamp_service.matching.engine", "Matcher", "match"),
    ("shotstamp_service.registry", "Registry", "_index_parsed"),
    ("shotstamp_service.registry", "_ForeignScreen", "check"),
    ("shotstamp_service.registry", None, "could_match"),
    ("shotstamp_service.registry", None, "index_entry"),
    ("shotstamp_service.registry", None, "verify_many"),  # stage 2 on the loop (branch rounds)
    ("shotstamp_service.store.sqlite", "SQLiteStore", "_foreign_rows"),
    ("shotstamp_service.store.sqlite", "SQLiteStore", "_insert_many"),
)

_OUT = os.environ.get("BENCH_STEP_CPU")
_stats: dict[str, list[int]] = {}
_lock = threading.Lock()


def _wrap(owner: object, attribute: str, key: str) -> None:
    fn = getattr(owner, attribute)
    if getattr(fn, "_step_cpu", False):
        return

    def timed(*args: object, **kwargs: object) -> object:
        start = time.thread_time_ns()
        try:
            return fn(*args, **kwargs)
        finally:
            spent = time.thread_time_ns() - start
            with _lock:
                entry = _stats.setdefault(key, [0, 0])
                entry[0] += 1
                entry[1] += spent

    timed._step_cpu = True  # type: ignore[attr-defined]
    setattr(owner, attribute, timed)


def _patch() -> bool:
    import sys

    if not all(m in sys.modules for m, _, _ in STEPS):
        return False
    for module, cls, attribute in STEPS:
        owner = sys.modules[module] if cls is None else getattr(sys.modules[module], cls)
        _wrap(owner, attribute, f"{cls}.{attribute}" if cls else attribute)
    return True


def _dump() -> None:
    assert _OUT is not None
    with _lock:
        lines = [f"{k} {c} {ns}\n" for k, (c, ns) in sorted(_stats.items())]
    if lines:
        path = os.path.join(_OUT, f"steps-{os.getpid()}.txt")
        with open(path + ".tmp", "w") as f:
            f.writelines(lines)
        os.replace(path + ".tmp", path)


def _run() -> None:
    patched = False
    while True:
        time.sleep(0.5 if not patched else 1.0)
        if not patched:
            try:
                patched = _patch()
            except AttributeError:  # a module still being imported
                continue
        else:
            _dump()


def _start() -> None:
    _stats.clear()  # a forked worker counts its own calls
    threading.Thread(target=_run, name="step-cpu", daemon=True).start()


if _OUT:
    os.makedirs(_OUT, exist_ok=True)
    _start()
    os.register_at_fork(after_in_child=_start)
