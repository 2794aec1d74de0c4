"""Several serving processes on one SQLite data directory (docs/processes.md).

Two `serve --processes 1` on separate ports sharing one data directory, so the
test can aim at each: exactly one seals (the flock beside the database); when
it is SIGKILLed the other seals within a couple of ticks and every
acknowledged registration ends up sealed; a copy uploaded to one process right
after its original was acknowledged by the other is refused, however long the
index's follow interval (the registration guard under SQLite's write lock).
Then `serve --processes 2` under gunicorn: a worker SIGKILLed is replaced and
the service keeps answering, with nothing acknowledged lost.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shotstamp import verify_proof
from tests.kit import imagegen
from tests.kit.processes import ServiceProcess, http, multipart, start_service

SEAL_INTERVAL = 0.5
# Long enough that only the guard, never the index's own follow, can see the other
# process's registration in time.
ENV = {
    "SHOTSTAMP_SEAL_INTERVAL": str(SEAL_INTERVAL),
    "SHOTSTAMP_INDEX_FOLLOW_INTERVAL": "30",
    "SHOTSTAMP_UPLOAD_RATE": "0",
    "SHOTSTAMP_READ_RATE": "0",
}


def upload(service: ServiceProcess, key: str, photo: bytes) -> tuple[int, dict]:
    body, ctype = multipart(photo)
    return http("POST", f"{service.url}/v1/registrations", key=key, body=body,
                content_type=ctype)


def sealing(services: list[ServiceProcess]) -> list[int]:
    return [n for n, s in enumerate(services) if s.alive() and (s.health() or {}).get("sealing")]


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := predicate():
            return found
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout} s: {what}")


@pytest.fixture
def pair(tmp_path):
    data = tmp_path / "data"
    first = start_service(data, env=ENV)  # makes the signing key before the second starts
    second = start_service(data, env=ENV)
    keys = {seller: first.key(seller) for seller in ("acme", "thief")}
    services = [first, second]
    yield services, keys
    for service in services:
        service.kill()


def test_one_of_two_processes_seals_and_the_other_takes_over_when_it_is_killed(pair):
    services, keys = pair
    wait_until(lambda: len(sealing(services)) == 1, 10, "exactly one sealing process")
    time.sleep(3 * SEAL_INTERVAL)
    assert len(sealing(services)) == 1  # still one: the other keeps trying and failing
    leader = sealing(services)[0]
    follower = 1 - leader

    acked: dict[str, bytes] = {}
    for n in range(12):
        photo = imagegen.tiny_jpeg(3000 + n)
        status, reg = upload(services[n % 2], keys["acme"], photo)
        assert status == 201, reg
        acked[reg["id"]] = photo
    services[leader].kill()
    killed = time.monotonic()
    wait_until(lambda: sealing(services) == [follower], 5, "the survivor sealing")
    took = time.monotonic() - killed
    # Sealing again within about two ticks (and polling /healthz's slack).
    assert took < 2 * SEAL_INTERVAL + 0.5, took

    survivor = services[follower]

    def all_sealed() -> bool:
        return all(
            survivor.get(f"/v1/registrations/{rid}", keys["acme"])[1].get("status") == "sealed"
            for rid in acked
        )

    wait_until(all_sealed, 10, "every acknowledged registration sealed by the survivor")
    vkeys = [k["vkey"] for k in survivor.get("/v1/keys")[1]["keys"]]
    for rid, photo in acked.items():
        status, proof = survivor.get(f"/v1/registrations/{rid}/proof", keys["acme"])
        assert status == 200, proof
        verify_proof(proof, keys=vkeys, image=photo)
    _, checkpoint = survivor.get("/v1/checkpoints/latest")
    assert checkpoint["tree_size"] == len(acked)


def test_a_copy_sent_to_the_other_process_right_after_its_original_is_refused(pair):
    services, keys = pair
    for n in range(8):
        original = imagegen.jpeg(4000 + n, size=(320, 240))
        a, b = services[n % 2], services[1 - n % 2]
        status, first = upload(a, keys["acme"], original)
        assert status == 201, first
        status, body = upload(b, keys["thief"], imagegen.recompressed_copy(original))
        assert status == 409, (n, body)
        assert body["matches"][0]["registration_id"] == first["id"]


def test_original_and_copy_at_once_on_two_processes_never_both_accepted(pair):
    services, keys = pair
    with ThreadPoolExecutor(2) as pool:
        for n in range(8):
            original = imagegen.jpeg(5000 + n, size=(320, 240))
            copy = imagegen.recompressed_copy(original)
            sent = pool.submit(upload, services[n % 2], keys["acme"], original)
            time.sleep(0.001)
            racing = pool.submit(upload, services[1 - n % 2], keys["thief"], copy)
            statuses = sorted([sent.result()[0], racing.result()[0]])
            assert statuses == [201, 409], (n, statuses)


def _workers(master: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]  # the workers (their pools are theirs)


def test_gunicorn_replaces_a_killed_worker_and_loses_nothing(tmp_path):
    service = start_service(tmp_path / "data", env={**ENV, "SHOTSTAMP_PROCESSES": "2"})
    try:
        key = service.key("acme")
        master = service.proc.pid
        workers = wait_until(lambda: len(_workers(master)) == 2 and _workers(master), 20,
                             "two workers")
        acked = []
        for n in range(10):
            status, reg = upload(service, key, imagegen.tiny_jpeg(6000 + n))
            assert status == 201, reg
            acked.append(reg["id"])
        os.kill(workers[0], signal.SIGKILL)
        replaced = wait_until(
            lambda: len(now := _workers(master)) == 2 and workers[0] not in now and now,
            20, "a new worker in the killed one's place",
        )
        assert workers[1] in replaced
        for n in range(10):
            status, reg = upload(service, key, imagegen.tiny_jpeg(7000 + n))
            assert status == 201, reg
            acked.append(reg["id"])

        def all_sealed() -> bool:
            return all(service.get(f"/v1/registrations/{rid}", key)[1].get("status") == "sealed"
                       for rid in acked)

        wait_until(all_sealed, 15, "everything acknowledged sealed")
        service.stop()
        assert service.proc.returncode == 0, service.output()[-2000:]
    finally:
        service.kill()


def _sockets(pid: int) -> int:
    fds = Path(f"/proc/{pid}/fd")
    count = 0
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            count += os.readlink(fd).startswith("socket:")
    return count


def test_a_burst_of_keep_alive_connections_is_shared_by_the_processes(tmp_path):
    """Clients that keep their connections (the load bench, storefront plugins) connect at
    once: each serving process takes some of them, not one process all."""
    service = start_service(tmp_path / "data", env={**ENV, "SHOTSTAMP_PROCESSES": "2"})
    try:
        workers = _workers(service.proc.pid)
        assert len(workers) == 2
        # Both up: each has started its fingerprint pool (app startup, before it listens).
        wait_until(lambda: all(_workers(pid) for pid in workers), 30, "both workers' pools")
        time.sleep(1.0)
        port = int(service.url.rsplit(":", 1)[1])
        # A process the host has descheduled cannot accept: on a loaded machine one burst
        # may fall to the other alone, so up to three bursts, and one must be shared.
        splits = []
        for _ in range(3):
            taken = _burst(workers, port, 16)
            splits.append(taken)
            if sum(taken.values()) == 16 and min(taken.values()) >= 3:
                break
            time.sleep(1.0)  # the closed connections leave the processes' socket counts
        else:
            raise AssertionError(f"no burst of 16 was shared: {splits}")
    finally:
        service.kill()


def _burst(workers: list[int], port: int, n: int) -> dict[int, int]:
    """How many of `n` keep-alive connections, opened at once, each process holds."""
    before = {pid: _sockets(pid) for pid in workers}
    conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    try:
        for conn in conns:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        for conn in conns:
            assert conn.recv(64).startswith(b"HTTP/1.1 200")
        return {pid: _sockets(pid) - before[pid] for pid in workers}
    finally:
        for conn in conns:
            conn.close()
