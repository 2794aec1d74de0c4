"""The service compiles its numba kernels before it says it is healthy: no upload waits
seconds for the compiler (`create_app`'s start-up calls `kernels.warm()`; the fingerprint
pool's forkserver, whose forks run stage 2, calls `stage2_kernels.warm()`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from numba.core.registry import CPUDispatcher

from shotstamp_service.matching import kernels, stage2_kernels
from tests.kit.liveserver import LiveServer, rss_kib


def _kernel_names(module: ModuleType) -> list[str]:
    """The module's compiled functions, less the helpers numba inlines into their callers
    (compiled only as part of those, never on their own)."""
    return sorted(name for name, value in vars(module).items()
                  if isinstance(value, CPUDispatcher)
                  and value.targetoptions.get("inline") != "always")


def test_every_kernel_is_compiled_before_healthz_answers(tmp_path: Path) -> None:
    cache = tmp_path / "numba-cache"
    server = LiveServer(tmp_path / "data", env={"NUMBA_CACHE_DIR": str(cache),
                                                "SHOTSTAMP_FINGERPRINT_WORKERS": "1"})
    names = [f"{module.__name__.rsplit('.', 1)[1]}.{name}" for module in (kernels, stage2_kernels)
             for name in _kernel_names(module)]
    assert any(n.startswith("kernels.") for n in names), "none found in matching/kernels.py"
    assert "stage2_kernels.consistency_counts" in names, names
    server.start()  # returns once /healthz answers 200
    try:
        # numba writes a kernel's cache index when it compiles it, in the empty cache given
        written = {p.name.split("-")[0] for p in cache.rglob("*.nbi")}
        assert set(names) <= written, (names, written)
    finally:
        server.stop()


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[1])


def _pool_rss_mib(server: LiveServer) -> tuple[int, list[int]]:
    """(the forkserver's RSS, each fingerprint worker's), MiB, of a one-process service."""
    pids = server.pids()
    forkservers = [p for p in pids if b"multiprocessing.forkserver"
                   in Path(f"/proc/{p}/cmdline").read_bytes() and _parent(p) == server.pid]
    assert len(forkservers) == 1, forkservers
    workers = [p for p in pids if _parent(p) == forkservers[0]]
    assert workers, "no fingerprint worker"
    return rss_kib(forkservers[0]) // 1024, [rss_kib(p) // 1024 for p in workers]


def test_a_first_start_leaves_the_workers_as_small_as_a_later_one(tmp_path: Path) -> None:
    """A start that compiles stage 2's kernels (a fresh numba cache) compiles them in a child of
    the forkserver, not in it: the compiler's memory (~85 MB in each worker and ~100 MB in the
    forkserver when the forkserver compiled, 2026-12-07) must not reach the workers."""
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "numba-cache"), "SHOTSTAMP_PROCESSES": "1",
           "SHOTSTAMP_FINGERPRINT_WORKERS": "2"}
    sizes = []
    for _ in ("cold", "warm"):
        server = LiveServer(tmp_path / "data", env=env)
        server.start(timeout=180)
        try:
            sizes.append(_pool_rss_mib(server))
        finally:
            server.stop()
    (cold_forkserver, cold_workers), (warm_forkserver, warm_workers) = sizes
    # the same code and the same warm-up either way: only the compiler's leftovers differ
    assert max(cold_workers) - max(warm_workers) < 30, sizes
    assert cold_forkserver - warm_forkserver < 30, sizes


# Imports the forkserver's preload as the forkserver does, and says how it got its kernels:
# loaded from numba's cache, compiled in this process, and whether it forked a child.
_PRELOAD = """
import resource, sys
from shotstamp_service.matching import stage2_kernels
if sys.argv[1] == "uncached":  # as where numba finds no writable cache directory
    stage2_kernels.cacheable = lambda: False
from shotstamp_service.matching import forkserver_init  # noqa: F401
kernels = (stage2_kernels.consistency_counts, stage2_kernels.stored_keypoints)
hits = sum(sum(k.stats.cache_hits.values()) for k in kernels)
print(hits, sum(len(k.overloads) for k in kernels) - hits,
      resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime > 0)
"""


def _preload(cache: Path, mode: str) -> tuple[int, int, bool]:
    result = subprocess.run([sys.executable, "-c", _PRELOAD, mode], capture_output=True,
                            text=True, timeout=300, check=True,
                            env={**os.environ, "NUMBA_CACHE_DIR": str(cache)})
    hits, compiled, forked = result.stdout.split()
    return int(hits), int(compiled), forked == "True"


def test_the_forkserver_loads_the_kernels_a_child_compiled(tmp_path: Path) -> None:
    """From a fresh cache the forkserver's preload compiles nothing itself: a child does, and it
    loads both kernels from the cache; the next start loads them without a child."""
    cache = tmp_path / "numba-cache"
    assert _preload(cache, "cached") == (2, 0, True)
    written = {p.name.split("-")[0] for p in cache.rglob("*.nbi")}
    assert {"stage2_kernels.consistency_counts", "stage2_kernels.stored_keypoints"} <= written
    assert _preload(cache, "cached") == (2, 0, False)


def test_without_a_cache_the_forkserver_compiles_the_kernels_itself(tmp_path: Path) -> None:
    hits, compiled, forked = _preload(tmp_path / "numba-cache", "uncached")
    assert hits == 0 and compiled >= 2 and not forked
