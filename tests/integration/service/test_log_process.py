"""The real processes, on each store: an operator who rewrites history is caught; keys
rotate under load."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error

import pytest

from shotstamp import CheckpointWitness, VerificationError
from tests.kit import imagegen
from tests.kit.processes import Backend, command, free_port, http, multipart, run

FAST = {"SHOTSTAMP_SEAL_INTERVAL": "0.2", "SHOTSTAMP_FINGERPRINT_WORKERS": "1"}


class Server:
    """`shotstamp-service serve` on a data directory, restartable."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.data = backend.data
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                *command("shotstamp-service"),
                "--data-dir",
                str(self.data),
                "serve",
                "--port",
                str(self.port),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **FAST, **self.backend.env},
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if http("GET", f"{self.base}/healthz")[0] == 200:
                    return
            except (urllib.error.URLError, ConnectionError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                out = self.proc.stdout.read() if self.proc.stdout else ""
                raise AssertionError(f"service did not start (exit {self.proc.poll()}):\n{out}")
            time.sleep(0.1)

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=60) == 0
        self.proc = None

    def register(self, key: str, seed: int) -> dict:
        body, ctype = multipart(imagegen.jpeg(seed))
        status, reg = http(
            "POST",
            f"{self.base}/v1/registrations?wait=true",
            key=key,
            body=body,
            content_type=ctype,
        )
        assert status == 201, reg
        assert reg["status"] == "sealed"
        return reg

    def admin(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`shotstamp-service ARGS` on the same store and keys, as an operator runs it."""
        return run(
            "shotstamp-service", "--data-dir", str(self.data), *args, env=self.backend.env
        )

    def get(self, path: str) -> dict:
        status, body = http("GET", f"{self.base}{path}")
        assert status == 200, (path, body)
        return body


@pytest.fixture
def server(backend):
    server = Server(backend)
    server.key = server.admin("keys", "create", "--seller", "acme").stdout.strip()
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.proc.kill()
        server.proc.wait()


def _rewrite_history(backend: Backend) -> None:
    """What a dishonest operator with the database and the key can do: change leaf 0
    and re-seal everything into a new tree, under freshly signed checkpoints."""
    backend.execute(
        "UPDATE registrations SET seller = 'mallory' WHERE leaf_index = 0",
        "UPDATE registrations SET leaf_index = NULL",
        "DELETE FROM tiles",
        "DELETE FROM checkpoints",
    )


def test_a_client_holding_an_earlier_checkpoint_catches_a_rewritten_leaf(server, tmp_path):
    first = server.register(server.key, 101)
    for seed in (102, 103):
        server.register(server.key, seed)
    keys = [k["vkey"] for k in server.get("/v1/keys")["keys"]]
    witness = CheckpointWitness(keys, state_file=tmp_path / "witness.json")
    seen = server.get("/v1/checkpoints/latest")
    witness.update(seen["note"])
    assert witness.tree_size == 3
    (tmp_path / "seen.json").write_text(json.dumps(seen))
    (tmp_path / "proof.json").write_text(json.dumps(first["proof"]))

    server.stop()
    _rewrite_history(server.backend)
    server.start()
    server.register(server.key, 104)  # the log moves on, to size 4

    latest = server.get("/v1/checkpoints/latest")
    assert latest["tree_size"] == 4
    # The rewritten log serves leaf 0 with the new seller, signed by the same key.
    staff = server.admin("keys", "create", "--seller", "desk", "--role", "staff").stdout.strip()
    status, bundle = http("GET", f"{server.base}/v1/registrations/{first['id']}/proof", key=staff)
    assert status == 200 and bundle["seller"] == "mallory"
    assert latest["key_id"] == seen["key_id"]

    restarted = CheckpointWitness(keys, state_file=tmp_path / "witness.json")
    wanted = restarted.proof_range(latest["tree_size"])
    assert wanted == (3, 4)
    proof = server.get(f"/v1/proofs/consistency?from={wanted[0]}&to={wanted[1]}")
    with pytest.raises(VerificationError, match=r"^fork") as exc:
        restarted.update(latest["note"], proof)
    assert exc.value.check == "consistency"
    assert restarted.tree_size == 3  # still holding what it saw

    # The holder of the original proof sees it with the command line, too.
    (tmp_path / "latest.json").write_text(json.dumps(latest))
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps(server.get("/v1/keys")))
    result = run(
        "shotstamp",
        "verify",
        str(tmp_path / "proof.json"),
        "--key",
        str(keys_file),
        "--checkpoint",
        str(tmp_path / "latest.json"),
        "--url",
        server.base,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED consistency" in result.stderr


def test_rotating_the_key_while_serving(server, tmp_path):
    before = server.register(server.key, 111)
    trusted = tmp_path / "trusted.json"
    trusted.write_text(json.dumps(server.get("/v1/checkpoints/latest")))
    old_key_id = server.get("/v1/checkpoints/latest")["key_id"]

    rotated = server.admin("signing-key", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    new_key = json.loads(rotated.stdout)
    assert new_key["status"] == "active" and new_key["key_id"] != old_key_id
    assert "rotated" in rotated.stderr
    (new_file,) = server.backend.key_dir.glob(f"signing-{new_key['key_id']}.key")
    assert new_file.stat().st_mode & 0o777 == 0o600

    after = server.register(server.key, 112)  # sealed by the running service
    assert server.get("/v1/checkpoints/latest")["key_id"] == new_key["key_id"]
    listed = server.admin("signing-key", "list")
    statuses = {
        json.loads(line)["key_id"]: json.loads(line)["status"]
        for line in listed.stdout.splitlines()
    }
    assert statuses == {old_key_id: "retired", new_key["key_id"]: "active"}

    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps(server.get("/v1/keys")))
    for name, reg in (("before", before), ("after", after)):
        (tmp_path / f"{name}.json").write_text(json.dumps(reg["proof"]))

    def verify(*args: str) -> subprocess.CompletedProcess[str]:
        return run("shotstamp", "verify", *args)

    ok = verify(str(tmp_path / "before.json"), "--key", str(keys_file))
    assert ok.returncode == 0, ok.stderr
    only_new = verify(str(tmp_path / "before.json"), "--key", new_key["vkey"])
    assert only_new.returncode == 1 and "FAILED checkpoint-signature" in only_new.stderr

    # The later proof's log extends the checkpoint trusted before the rotation:
    # fetched from the service, or carried in the bundle for an offline check.
    online = verify(
        str(tmp_path / "after.json"),
        "--key",
        str(keys_file),
        "--checkpoint",
        str(trusted),
        "--url",
        server.base,
    )
    assert online.returncode == 0, online.stderr
    assert "ok   consistency" in online.stdout and "CONSISTENT" in online.stdout
    no_url = verify(
        str(tmp_path / "after.json"), "--key", str(keys_file), "--checkpoint", str(trusted)
    )
    assert no_url.returncode == 2 and "--url" in no_url.stderr
    unreachable = verify(
        str(tmp_path / "after.json"), "--key", str(keys_file),
        "--checkpoint", str(trusted), "--url", "http://127.0.0.1:9",
    )  # fmt: skip
    assert unreachable.returncode == 4 and "cannot fetch the consistency proof" in (
        unreachable.stderr
    )

    size = after["proof"]["tree_size"]
    status, carried = http(
        "GET",
        f"{server.base}/v1/registrations/{before['id']}/proof?consistency_with={size}",
        key=server.key,
    )
    assert status == 200
    (tmp_path / "carried.json").write_text(json.dumps(carried))
    (tmp_path / "later.txt").write_text(after["proof"]["checkpoint"])
    offline = verify(
        str(tmp_path / "carried.json"),
        "--key",
        str(keys_file),
        "--checkpoint",
        str(tmp_path / "later.txt"),
        "--url",
        "http://127.0.0.1:9",
    )
    assert offline.returncode == 0, offline.stderr  # the unreachable URL was never needed
    assert "registration is in the log you trust" in offline.stdout
