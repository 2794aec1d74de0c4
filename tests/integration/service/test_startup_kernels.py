"""The service compiles its numba kernels before it says it is healthy: no upload waits
seconds for the compiler (`create_app`'s start-up calls `kernels.warm()`; the fingerprint
pool's forkserver, whose forks run stage 2, calls `stage2_kernels.warm()`)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from numba.core.registry import CPUDispatcher

from shotstamp_service.matching import kernels, stage2_kernels
from tests.kit.liveserver import LiveServer


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
