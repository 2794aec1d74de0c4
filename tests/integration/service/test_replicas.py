"""Real service processes on one PostgreSQL database, sharing one signing-key directory.

Three replicas, the sealing one killed: afterwards every acknowledged
registration is sealed exactly once, every checkpoint seen before and after the
kill is consistent with the final one (by the replicas' own
`/v1/proofs/consistency`), a copy uploaded to one replica of a photo registered
on another is refused, and `wait=true` works on every replica.

A key rotation made with `signing-key rotate` reaches every replica reading the
shared directory; a replica without the new key hands sealing over, and one
started without it refuses to start.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shotstamp import merkle, verify_consistency_between, verify_proof
from tests.kit import imagegen
from tests.kit.processes import ServiceProcess, http, multipart, run, start_service

REPLICAS = 3


def shared_log(postgres_url: str, key_dir: Path) -> dict[str, str]:
    """The replicas' environment, after the operator made the log's first key as documented."""
    env = {
        "SHOTSTAMP_DATABASE_URL": postgres_url,
        "SHOTSTAMP_SIGNING_KEY_DIR": str(key_dir),
        "SHOTSTAMP_FINGERPRINT_WORKERS": "1",
        "SHOTSTAMP_SEAL_INTERVAL": "0.5",
        "SHOTSTAMP_WAIT_TIMEOUT": "20",
    }
    first = run("shotstamp-service", "signing-key", "rotate", env=env)
    assert first.returncode == 0, first.stderr
    made = json.loads(first.stdout)["key_id"]
    assert [p.name for p in key_dir.iterdir()] == [f"signing-{made}.key"]
    return env


@pytest.fixture
def cluster(postgres_url, tmp_path):
    env = shared_log(postgres_url, tmp_path / "shared-keys")
    keys = {}
    for seller in ("acme", "thief", "bulk"):
        made = run("shotstamp-service", "keys", "create", "--seller", seller, env=env)
        assert made.returncode == 0, made.stderr
        keys[seller] = made.stdout.strip()
    made = run("shotstamp-service", "keys", "create", "--seller", "desk", "--role", "staff",
               env=env)
    keys["staff"] = made.stdout.strip()
    replicas = [
        start_service(tmp_path / f"data-{n}", env=env)
        for n in range(REPLICAS)
    ]
    yield replicas, keys, postgres_url
    for replica in replicas:
        replica.kill()


def upload(replica: ServiceProcess, key: str, photo: bytes, *, wait: bool = False):
    body, ctype = multipart(photo)
    query = "?wait=true" if wait else ""
    return http("POST", f"{replica.url}/v1/registrations{query}", key=key, body=body,
                content_type=ctype)


def sealing_replicas(replicas: list[ServiceProcess]) -> list[int]:
    return [n for n, r in enumerate(replicas) if (r.health() or {}).get("sealing")]


def wait_for_one_sealer(replicas: list[ServiceProcess], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sealing_replicas(replicas)
        if len(found) == 1:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no single sealing replica within {timeout}s: {found}")


def test_replicas_share_the_log_and_survive_losing_the_sealer(cluster):
    replicas, keys, url = cluster
    leader = wait_for_one_sealer(replicas, timeout=10)
    followers = [n for n in range(REPLICAS) if n != leader]
    seen_checkpoints: dict[int, dict] = {}
    acknowledged: set[str] = set()
    lock = threading.Lock()

    def note_checkpoints() -> None:
        for replica in replicas:
            if replica.alive():
                try:
                    status, cp = http("GET", f"{replica.url}/v1/checkpoints/latest", timeout=5)
                except OSError:
                    continue
                if status == 200:
                    seen_checkpoints[cp["tree_size"]] = cp

    # (1) wait=true on a replica that does not seal still returns a verified proof.
    photo = imagegen.jpeg(500, size=(320, 240))
    status, reg = upload(replicas[followers[0]], keys["acme"], photo, wait=True)
    assert status == 201, reg
    assert reg["status"] == "sealed"
    _, published = http("GET", f"{replicas[followers[0]].url}/v1/keys")
    vkey = published["keys"][0]["vkey"]
    verify_proof(reg["proof"], keys=vkey, image=photo)
    acknowledged.add(reg["id"])

    # (2) A copy uploaded to another replica is caught within one second.
    original = imagegen.jpeg(501, size=(320, 240))
    status, first = upload(replicas[followers[0]], keys["acme"], original)
    assert status == 201
    acknowledged.add(first["id"])
    time.sleep(1.0)
    for other in (leader, followers[1]):
        status, body = upload(replicas[other], keys["thief"],
                              imagegen.recompressed_copy(original, scale=0.5, quality=50))
        assert status == 409, body
        assert body["matches"][0]["registration_id"] == first["id"]
    status, body = upload(replicas[followers[1]], keys["thief"], original)  # byte-exact copy
    assert status == 409 and body["matches"][0]["exact"] is True

    # (3) Uploads spread over all replicas while the sealing one is SIGKILLed.
    photos = [imagegen.jpeg(1000 + n, size=(320, 240)) for n in range(60)]
    killed_at: list[float] = []

    def send(n: int) -> None:
        target = replicas[n % REPLICAS]
        if not target.alive():
            target = replicas[followers[n % 2]]
        try:
            status, body = upload(target, keys["bulk"], photos[n])
        except OSError:
            return  # the replica died with the request: never acknowledged
        if status == 201:
            with lock:
                acknowledged.add(body["id"])
        else:
            assert status in (502, 503), (status, body)

    note_checkpoints()
    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = [pool.submit(send, n) for n in range(30)]
        for f in futures:
            f.result()
        note_checkpoints()
        replicas[leader].kill()
        killed_at.append(time.monotonic())
        futures = [pool.submit(send, n) for n in range(30, 60)]
        for f in futures:
            f.result()

    # (4) Another replica takes over within a few seconds.
    survivors = [replicas[n] for n in followers]
    new_leader = followers[wait_for_one_sealer(survivors, timeout=5)]
    takeover = time.monotonic() - killed_at[0]
    assert takeover < 5, takeover

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        status, metrics = http("GET", f"{replicas[new_leader].url}/metrics")
        pending = [line for line in metrics.splitlines()
                   if line.startswith("shotstamp_pending_registrations ")]
        if pending and float(pending[0].split()[1]) == 0:
            break
        time.sleep(0.2)
    assert "shotstamp_sealing 1.0" in metrics
    note_checkpoints()

    # (5) Every acknowledged registration is sealed exactly once, in one consistent log.
    latest, leaves = asyncio.run(read_log(url))
    rows = leaves["rows"]
    assert acknowledged <= set(rows), acknowledged - set(rows)
    assert sorted(index for index in rows.values()) == list(range(latest["tree_size"]))
    assert latest["root_hash"] == merkle.root_hash(leaves["hashes"])
    for survivor in survivors:
        status, final = http("GET", f"{survivor.url}/v1/checkpoints/latest")
        assert status == 200 and final["tree_size"] == latest["tree_size"], final
        assert bytes.fromhex(final["root_hash"]) == latest["root_hash"]
        for size, cp in sorted(seen_checkpoints.items()):
            assert size <= latest["tree_size"]
            if size == 0:
                continue  # every log extends the empty one
            # Each replica proves, from the tiles it reads, that the log only grew;
            # both notes are checked against the one shared key.
            status, proof = http(
                "GET",
                f"{survivor.url}/v1/proofs/consistency?from={size}&to={latest['tree_size']}",
            )
            assert status == 200, proof
            verified = verify_consistency_between(cp["note"], final["note"], proof, keys=vkey)
            assert (verified.old_size, verified.new_size) == (size, latest["tree_size"])
    assert any(0 < size < latest["tree_size"] for size in seen_checkpoints)

    # (6) Proofs from a surviving replica verify, for registrations sealed after the kill.
    for reg_id in list(acknowledged)[:5]:
        base = replicas[followers[0]].url
        status, proof = http("GET", f"{base}/v1/registrations/{reg_id}/proof", key=keys["staff"])
        assert status == 200, proof
        verify_proof(proof, keys=vkey)


async def read_log(url: str):
    """The latest checkpoint and every registration's leaf, read from the database."""
    from shotstamp_service.store.postgres import PostgresStore

    store = PostgresStore(url)
    await store.open()
    try:
        latest = await store.latest_checkpoint()
        assert latest is not None
        regs = (await store.get_registrations(range(1, 10_000))).values()
        sealed = sorted((r for r in regs if r.leaf_index is not None), key=lambda r: r.leaf_index)
        assert all(r.leaf_index is not None for r in regs), "something is left unsealed"
        return (
            {"tree_size": latest.tree_size, "root_hash": latest.root_hash},
            {
                "rows": {r.id: r.leaf_index for r in sealed},
                "hashes": [merkle.leaf_hash(r.leaf_bytes()) for r in sealed],
            },
        )
    finally:
        await store.close()


def test_a_rotation_reaches_every_replica_reading_the_shared_key_directory(
    postgres_url, tmp_path
):
    shared = tmp_path / "shared-keys"
    env = shared_log(postgres_url, shared)
    (first_file,) = shared.iterdir()
    # Replica "c" reads a directory of its own holding a copy of the first key only.
    own = tmp_path / "c-keys"
    own.mkdir(mode=0o700)
    shutil.copy(first_file, own / first_file.name)
    c = start_service(tmp_path / "data-c", env={**env, "SHOTSTAMP_SIGNING_KEY_DIR": str(own)})
    replicas = {"c": c}
    try:
        assert wait_for_one_sealer([c], timeout=10) == 0  # c seals: it started alone
        replicas["a"] = start_service(tmp_path / "data-a", env=env)
        replicas["b"] = start_service(tmp_path / "data-b", env=env)
        acme = run("shotstamp-service", "keys", "create", "--seller", "acme", env=env)
        key = acme.stdout.strip()
        status, before = upload(c, key, imagegen.jpeg(700, size=(320, 240)), wait=True)
        assert status == 201 and before["status"] == "sealed", before

        rotated = run("shotstamp-service", "signing-key", "rotate", env=env)
        assert rotated.returncode == 0, rotated.stderr
        new = json.loads(rotated.stdout)
        assert (shared / f"signing-{new['key_id']}.key").exists()

        # c cannot sign with the new key: it lets go and one of a, b seals instead.
        status, after = upload(c, key, imagegen.jpeg(701, size=(320, 240)), wait=True)
        assert status == 201 and after["status"] == "sealed", after
        names = list(replicas)
        leader = names[wait_for_one_sealer(list(replicas.values()), timeout=10)]
        assert leader in ("a", "b")
        _, published = http("GET", f"{replicas['a'].url}/v1/keys")
        listed = {k["key_id"]: k for k in published["keys"]}
        assert listed[new["key_id"]]["status"] == "active"
        vkeys = [k["vkey"] for k in published["keys"]]
        assert verify_proof(after["proof"], keys=vkeys).key_hash == new["key_id"]
        old_key_id = verify_proof(before["proof"], keys=vkeys).key_hash
        assert listed[old_key_id]["status"] == "retired" and old_key_id != new["key_id"]
        logged = [json.loads(line) for line in c.output().splitlines() if line.startswith("{")]
        assert any(
            "cannot seal" in line["message"] and new["key_id"] in line["message"]
            for line in logged
        )

        # The leader dies: the other replica reading the shared directory takes over.
        replicas[leader].kill()
        other = "b" if leader == "a" else "a"
        status, later = upload(replicas[other], key, imagegen.jpeg(702, size=(320, 240)),
                               wait=True)
        assert status == 201 and later["status"] == "sealed", later
        assert verify_proof(later["proof"], keys=vkeys).key_hash == new["key_id"]
        assert not (c.health() or {}).get("sealing")

        # A replica started now without the new key refuses to start, saying why.
        refused = run(
            "shotstamp-service", "--data-dir", str(tmp_path / "data-d"), "serve", "--port", "1",
            env={**env, "SHOTSTAMP_SIGNING_KEY_DIR": str(own)},
        )
        assert refused.returncode == 1
        assert "Traceback" not in refused.stderr
        assert f"the active signing key {new['key_id']} has no private key" in refused.stderr
    finally:
        for replica in replicas.values():
            replica.kill()
