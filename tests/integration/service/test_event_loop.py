"""Which event loop a serving process runs (`SHOTSTAMP_EVENT_LOOP`, http/eventloop.py).

Each serving process logs the class of the loop it runs on, from inside that loop,
and uvloop's compiled loop is mapped into it only when it runs uvloop: both are
read here from real processes, one serving alone and two under gunicorn, with
uvloop (the default), with asyncio's own, and with uvloop asked for where it
cannot be imported. Under uvloop a graceful reload (SIGHUP to gunicorn) replaces
the workers on uvloop again and loses no registration.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.kit import imagegen
from tests.kit.processes import ServiceProcess, command, http, multipart, start_service

UVLOOP = "uvloop.Loop"
ASYNCIO = "asyncio.unix_events._UnixSelectorEventLoop"


def loops_logged(service: ServiceProcess) -> list[str]:
    """The loop named by each `event loop: ...` line of the service's log, in order."""
    found = []
    for line in service.output().splitlines():
        try:
            message = json.loads(line).get("message", "")
        except ValueError:
            continue
        if message.startswith("event loop: "):
            found.append(message.removeprefix("event loop: "))
    return found


def maps_uvloop(pid: int) -> bool:
    """Whether uvloop's compiled loop module is mapped into process `pid`."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return any("/uvloop/loop." in line for line in maps.splitlines())


def serving_pids(service: ServiceProcess, processes: int) -> list[int]:
    if processes == 1:
        return [service.proc.pid]
    out = subprocess.run(["pgrep", "-P", str(service.proc.pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]  # gunicorn's workers


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := predicate():
            return found
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def register(service: ServiceProcess, key: str, seed: int) -> str:
    body, ctype = multipart(imagegen.tiny_jpeg(seed))
    status, reg = http("POST", f"{service.url}/v1/registrations", key=key, body=body,
                       content_type=ctype)
    assert status == 201, reg
    return reg["id"]


@pytest.mark.parametrize("processes", [1, 2])
@pytest.mark.parametrize(("choice", "loop"), [(None, UVLOOP), ("asyncio", ASYNCIO)])
def test_a_serving_process_runs_the_loop_its_setting_names(tmp_path, processes, choice, loop):
    env = {"SHOTSTAMP_PROCESSES": str(processes)}
    if choice is not None:
        env["SHOTSTAMP_EVENT_LOOP"] = choice
    service = start_service(tmp_path / "data", env=env)
    try:
        wait_for(lambda: len(loops_logged(service)) == processes, 30, "every process's line")
        assert loops_logged(service) == [loop] * processes
        pids = serving_pids(service, processes)
        assert len(pids) == processes
        assert [maps_uvloop(pid) for pid in pids] == [loop == UVLOOP] * processes
        register(service, service.key("acme"), 7100 + processes)
    finally:
        service.stop()
    assert service.proc.returncode == 0, service.output()


def test_uvloop_asked_for_but_missing_serves_on_asyncio_and_says_why(tmp_path):
    # A `uvloop` module that cannot be imported, ahead of the real one on the path.
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "uvloop.py").write_text("raise ImportError('no uvloop wheel for this platform')\n")
    path = os.pathsep.join(filter(None, [str(shadow), os.environ.get("PYTHONPATH")]))
    service = start_service(
        tmp_path / "data", env={"SHOTSTAMP_EVENT_LOOP": "uvloop", "PYTHONPATH": path}
    )
    try:
        wait_for(lambda: loops_logged(service), 30, "the loop's line")
        assert loops_logged(service) == [ASYNCIO]
        assert "uvloop cannot be imported (no uvloop wheel for this platform)" in service.output()
        assert not maps_uvloop(service.proc.pid)
        register(service, service.key("acme"), 7200)
    finally:
        service.stop()


def test_an_unknown_event_loop_is_refused_at_start(tmp_path):
    done = subprocess.run(
        [*command("shotstamp-service"), "--data-dir", str(tmp_path / "data"), "serve"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "SHOTSTAMP_EVENT_LOOP": "trio"},
    )
    assert done.returncode != 0
    assert "event loop 'trio' is not one of ('uvloop', 'asyncio')" in done.stderr


def test_a_graceful_reload_on_uvloop_replaces_the_workers_and_loses_nothing(tmp_path):
    service = start_service(tmp_path / "data", env={"SHOTSTAMP_PROCESSES": "2"})
    try:
        wait_for(lambda: len(loops_logged(service)) == 2, 30, "both workers' lines")
        key = service.key("acme")
        before = set(serving_pids(service, 2))
        acked = [register(service, key, 7300 + n) for n in range(4)]
        os.kill(service.proc.pid, signal.SIGHUP)  # gunicorn: new workers, then the old stop
        wait_for(lambda: len(set(serving_pids(service, 2)) - before) == 2, 60, "two new workers")
        wait_for(lambda: set(serving_pids(service, 2)).isdisjoint(before), 60, "old ones gone")
        wait_for(lambda: len(loops_logged(service)) == 4, 30, "the new workers' lines")
        assert loops_logged(service) == [UVLOOP] * 4
        assert all(maps_uvloop(pid) for pid in serving_pids(service, 2))
        acked += [register(service, key, 7310 + n) for n in range(4)]

        def all_sealed() -> bool:
            return all(
                service.get(f"/v1/registrations/{rid}", key)[1].get("status") == "sealed"
                for rid in acked
            )

        wait_for(all_sealed, 20, "every acknowledged registration sealed after the reload")
    finally:
        service.stop()
    assert service.proc.returncode == 0, service.output()
