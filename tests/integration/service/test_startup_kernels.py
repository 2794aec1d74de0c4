"""The service compiles its numba kernels before it says it is healthy: no upload waits
seconds for the compiler (`create_app`'s start-up calls `kernels.warm()`)."""

from __future__ import annotations

from pathlib import Path

from numba.core.registry import CPUDispatcher

from shotstamp_service.matching import kernels
from tests.kit.liveserver import LiveServer


def _kernel_names() -> list[str]:
    """The module's compiled functions, less the helpers numba inlines into their callers
    (compiled only as part of those, never on their own)."""
    return sorted(name for name, value in vars(kernels).items()
                  if isinstance(value, CPUDispatcher)
                  and value.targetoptions.get("inline") != "always")


def test_every_kernel_is_compiled_before_healthz_answers(tmp_path: Path) -> None:
    cache = tmp_path / "numba-cache"
    server = LiveServer(tmp_path / "data", env={"NUMBA_CACHE_DIR": str(cache),
                                                "SHOTSTAMP_FINGERPRINT_WORKERS": "1"})
    names = _kernel_names()
    assert names, "no compiled kernels found in matching/kernels.py"
    server.start()  # returns once /healthz answers 200
    try:
        # numba writes a kernel's cache index when it compiles it, in the empty cache given
        written = {p.name.split("-")[0] for p in cache.rglob("*.nbi")}
        assert {f"kernels.{name}" for name in names} <= written, (names, written)
    finally:
        server.stop()
