"""The real `shotstamp-service` and `shotstamp` commands, run as processes, on each store."""

from __future__ import annotations

import json
import signal

import pytest

from tests.kit import imagegen
from tests.kit.processes import http, multipart, run, start_service


def test_keys_create_prints_only_the_key_and_list_hides_secrets(backend):
    data, env = backend.data, backend.env
    created = run(
        "shotstamp-service", "--data-dir", str(data), "keys", "create", "--seller", "acme", env=env
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert created.stdout == key + "\n"
    assert key.startswith("ss_")
    staff = run(
        "shotstamp-service",
        "--data-dir",
        str(data),
        "keys",
        "create",
        "--seller",
        "desk",
        "--role",
        "staff",
        env=env,
    )
    assert staff.returncode == 0
    listed = run("shotstamp-service", "--data-dir", str(data), "keys", "list", env=env)
    assert listed.returncode == 0
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {(r["seller"], r["role"]) for r in rows} == {("acme", "seller"), ("desk", "staff")}
    assert key not in listed.stdout and key.split("_", 2)[2] not in listed.stdout
    # Stored hashed: the secret appears nowhere in the database.
    for stored in data.glob("shotstamp.db*"):
        assert key.encode() not in stored.read_bytes()
    stored_rows = backend.rows("SELECT * FROM api_keys")
    assert len(stored_rows) == 2
    assert key.split("_", 2)[2] not in repr(stored_rows)
    key_id = key.split("_")[1]
    revoked = run("shotstamp-service", "--data-dir", str(data), "keys", "revoke", key_id, env=env)
    assert revoked.returncode == 0
    again = run("shotstamp-service", "--data-dir", str(data), "keys", "revoke", key_id, env=env)
    assert again.returncode == 1


def test_env_var_selects_the_data_dir(tmp_path):
    data = tmp_path / "from-env"
    result = run(
        "shotstamp-service",
        "keys",
        "create",
        "--seller",
        "acme",
        env={"SHOTSTAMP_DATA_DIR": str(data)},
    )
    assert result.returncode == 0, result.stderr
    assert (data / "shotstamp.db").exists()


def test_data_dir_is_accepted_after_the_subcommand_too(tmp_path):
    after, before = tmp_path / "after", tmp_path / "before"
    created = run(
        "shotstamp-service", "keys", "create", "--seller", "acme", "--data-dir", str(after)
    )
    assert created.returncode == 0, created.stderr
    assert (after / "shotstamp.db").exists()
    listed = run("shotstamp-service", "keys", "list", "--data-dir", str(after))
    assert [json.loads(line)["seller"] for line in listed.stdout.splitlines()] == ["acme"]
    # Given before the subcommand only, it is not reset by the subcommand's default.
    listed = run("shotstamp-service", "--data-dir", str(before), "signing-key", "list")
    assert listed.returncode == 0, listed.stderr
    assert not (tmp_path / "data").exists()
    assert before.exists()


@pytest.fixture
def server(backend):
    data = backend.data
    key = run(
        "shotstamp-service",
        "--data-dir",
        str(data),
        "keys",
        "create",
        "--seller",
        "acme",
        env=backend.env,
    ).stdout.strip()
    service = start_service(data, env=backend.env)
    yield {"base": service.url, "key": key, "proc": service.proc, "data": data,
           "backend": backend, "service": service}
    service.kill()


def test_serve_registers_and_the_cli_verifies_the_proof(server, tmp_path):
    base, key = server["base"], server["key"]
    photo = imagegen.jpeg(21)
    body, ctype = multipart(photo)
    status, reg = http(
        "POST", f"{base}/v1/registrations?wait=true", key=key, body=body, content_type=ctype
    )
    assert status == 201, reg
    (key_file,) = server["backend"].key_dir.glob("signing-*.key")
    assert key_file.stat().st_mode & 0o777 == 0o600
    # The service logs one JSON object a line; the upload's line names its outcome.
    lines = [json.loads(line) for line in server["service"].output().splitlines()]
    created = [line for line in lines if line.get("registration_id") == reg["id"]]
    assert created and created[0]["outcome"] == "created" and created[0]["request_id"]

    proof_file = tmp_path / "proof.json"
    proof_file.write_text(json.dumps(reg["proof"]))
    _, keys = http("GET", f"{base}/v1/keys")
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps(keys))
    image_file = tmp_path / "photo.jpg"
    image_file.write_bytes(photo)

    ok = run(
        "shotstamp",
        "verify",
        str(proof_file),
        "--key",
        keys["keys"][0]["vkey"],
        "--image",
        str(image_file),
    )
    assert ok.returncode == 0, ok.stderr
    assert "VERIFIED" in ok.stdout and reg["id"] in ok.stdout
    ok = run("shotstamp", "verify", str(proof_file), "--key", str(keys_file))
    assert ok.returncode == 0, ok.stderr

    other = tmp_path / "other.jpg"
    other.write_bytes(imagegen.jpeg(22))
    bad = run(
        "shotstamp", "verify", str(proof_file), "--key", str(keys_file), "--image", str(other)
    )
    assert bad.returncode == 1
    assert "FAILED image" in bad.stderr

    tampered = dict(reg["proof"], tree_size=reg["proof"]["tree_size"] + 1)
    proof_file.write_text(json.dumps(tampered))
    bad = run("shotstamp", "verify", str(proof_file), "--key", str(keys_file))
    assert bad.returncode == 1 and "FAILED tree-size" in bad.stderr

    proof_file.write_text("{not json")
    bad = run("shotstamp", "verify", str(proof_file), "--key", str(keys_file))
    assert bad.returncode == 3
    missing_key = run("shotstamp", "verify", str(proof_file))
    assert missing_key.returncode == 2


def test_sigterm_stops_gracefully_and_seals_what_is_pending(server):
    base, key, proc = server["base"], server["key"], server["proc"]
    ids = []
    for seed in range(30, 34):
        body, ctype = multipart(imagegen.jpeg(seed))
        status, reg = http(
            "POST", f"{base}/v1/registrations", key=key, body=body, content_type=ctype
        )
        assert status == 201
        ids.append(reg["id"])
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    rows = dict(server["backend"].rows("SELECT id, leaf_index FROM registrations"))
    assert set(rows) == set(ids)
    assert all(index is not None for index in rows.values())


def test_a_replica_on_a_shared_database_will_not_invent_a_signing_key(postgres_url, tmp_path):
    missing = tmp_path / "shared" / "signing.key"
    result = run(
        "shotstamp-service",
        "--data-dir",
        str(tmp_path / "data"),
        "serve",
        "--port",
        "1",
        env={"SHOTSTAMP_DATABASE_URL": postgres_url, "SHOTSTAMP_SIGNING_KEY_FILE": str(missing)},
    )
    assert result.returncode == 1
    assert "must share one key" in result.stderr and str(missing) in result.stderr
    assert not missing.exists()
