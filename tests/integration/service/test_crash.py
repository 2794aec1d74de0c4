"""SIGKILL under load: nothing acknowledged is lost, all of it is sealed, the log never forks.

A real server process (SQLite, process pool, sealer) takes uploads from
several client threads while the test kills the whole service with SIGKILL,
several rounds over: at random moments, aimed at the sealer's beat, and right
after a restart (when the sealer's first tick seals what the last crash left
pending); once as one process, once as two under gunicorn (killed together).
After the last restart:

- every registration that was acknowledged (200/201) is present and sealed,
  and its proof verifies offline against the key from /v1/keys and carries
  exactly the record that was acknowledged;
- every checkpoint any client saw, before or after any crash, is still
  served, is signed by the log's key, and is consistent (RFC 9162
  consistency proof) with the final checkpoint, and so with every other.

The consistency proofs come from the service's `/v1/proofs/consistency`;
each must also equal the proof the SDK's reference implementation computes
from the leaves stored in SQLite, and those leaves must give the final root.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.client import HTTPException
from typing import Any

import pytest

from shotstamp import merkle, verify_proof
from shotstamp._canonical import canonical_json
from shotstamp._checkpoint import Checkpoint, NoteVerifier, open_note
from shotstamp._verify import seller_commitment
from tests.kit import imagegen
from tests.kit.liveserver import LiveServer, http, multipart

SEAL_INTERVAL = 0.5
ROUNDS = ("random", "at-seal", "after-start", "random", "at-seal", "after-start", "random")
CLIENTS_PER_SELLER = 3
_NO_ANSWER = (OSError, HTTPException, ValueError)


@dataclass
class Traffic:
    """Uploader threads and a checkpoint watcher, recording what the service acknowledged."""

    base: str
    keys: dict[str, str]
    acked: dict[str, dict[str, Any]] = field(default_factory=dict)
    checkpoints: dict[int, dict[str, Any]] = field(default_factory=dict)
    unexpected: list[Any] = field(default_factory=list)
    unanswered: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    seeds: Any = field(default_factory=lambda: itertools.count(1))

    def upload_forever(self, seller: str) -> None:
        retry: list[bytes] = []  # no answer: send it again, as a client would
        while not self.stop.is_set():
            data = retry.pop() if retry else imagegen.tiny_jpeg(next(self.seeds))
            body, ctype = multipart(data)
            try:
                status, reply, _ = http(
                    "POST",
                    f"{self.base}/v1/registrations",
                    key=self.keys[seller],
                    body=body,
                    content_type=ctype,
                    timeout=15,
                )
            except _NO_ANSWER:
                with self.lock:
                    self.unanswered += 1
                retry.append(data)
                time.sleep(0.02)
                continue
            with self.lock:
                if status in (200, 201):
                    self.acked[reply["id"]] = reply
                elif status != 409:  # a look-alike of the other seller's photo is fine
                    self.unexpected.append((status, reply))

    def watch_checkpoints(self) -> None:
        while not self.stop.is_set():
            try:
                status, cp, _ = http("GET", f"{self.base}/v1/checkpoints/latest", timeout=2)
            except _NO_ANSWER:
                time.sleep(0.02)
                continue
            if status == 200:
                with self.lock:
                    seen = self.checkpoints.setdefault(cp["tree_size"], cp)
                    if seen["root_hash"] != cp["root_hash"]:
                        self.unexpected.append(("fork", seen, cp))
            time.sleep(0.01)

    def start(self) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self.upload_forever, args=(seller,), daemon=True)
            for seller in self.keys
            for _ in range(CLIENTS_PER_SELLER)
        ]
        threads.append(threading.Thread(target=self.watch_checkpoints, daemon=True))
        for thread in threads:
            thread.start()
        return threads


def _note_timestamp_ns(note: str) -> int:
    for line in note.splitlines():
        if line.startswith("Timestamp: "):
            return int(line.split()[1])
    raise AssertionError(f"no timestamp in {note!r}")


def _sleep_until_next_seal(traffic: Traffic, rng: random.Random, since_size: int) -> None:
    """Sleep until just after the sealer's next beat, read off the checkpoints' timestamps.

    A seal stamps its checkpoint and then commits it; aiming a few ms past
    the beat lands the kill in the seal's transaction or just around it.
    """
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with traffic.lock:
            recent = [cp for size, cp in traffic.checkpoints.items() if size > since_size]
        if recent:
            last = max(_note_timestamp_ns(cp["note"]) for cp in recent) / 1e9
            beats = max(1, int((time.time() - last) / SEAL_INTERVAL) + 1)
            target = last + beats * SEAL_INTERVAL + rng.uniform(0.0, 0.012)
            if target - time.time() < 0.05:
                target += SEAL_INTERVAL
            time.sleep(max(0.0, target - time.time()))
            return
        time.sleep(0.05)
    time.sleep(rng.uniform(0.3, 1.5))  # nothing sealed yet this run: any moment will do


def _stored_leaves(db: os.PathLike[str]) -> list[bytes]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT id, seller, sha256, perceptual, received_at, leaf_index, seller_salt"
            " FROM registrations WHERE leaf_index IS NOT NULL ORDER BY leaf_index"
        ).fetchall()
    finally:
        conn.close()
    assert [row[5] for row in rows] == list(range(len(rows))), "leaf indices have gaps"

    return [
        merkle.leaf_hash(
            canonical_json(
                {
                    "id": row[0],
                    # Leaf version 2 (docs/security.md): a salted commitment to the seller.
                    **(
                        {"seller": row[1]}
                        if row[6] is None
                        else {"seller_commitment": seller_commitment(row[6], row[1])}
                    ),
                    "sha256": row[2],
                    "perceptual": json.loads(row[3]),
                    "received_at": row[4],
                }
            )
        )
        for row in rows
    ]


@pytest.mark.parametrize("processes", ["1", "2"])
def test_sigkill_under_concurrent_uploads_loses_nothing(tmp_path, processes):
    seed = int(os.environ.get("CRASH_SEED", str(int(time.time()))))
    rng = random.Random(seed)
    server = LiveServer(
        tmp_path / "data",
        env={
            "SHOTSTAMP_SEAL_INTERVAL": str(SEAL_INTERVAL),
            "SHOTSTAMP_FINGERPRINT_WORKERS": "2",
            "SHOTSTAMP_UPLOAD_RATE": "0",
            "SHOTSTAMP_MAX_UPLOADS_PER_KEY": "0",
            "SHOTSTAMP_READ_RATE": "0",
            # Two: gunicorn's arbiter and its workers, all killed at once.
            "SHOTSTAMP_PROCESSES": processes,
        },
    )
    keys = {seller: server.create_key(seller) for seller in ("acme", "globex")}
    server.start()
    traffic = Traffic(server.base, keys)
    threads = traffic.start()
    acked_at_kill = []
    try:
        for kind in ROUNDS:
            with traffic.lock:
                size_now = max(traffic.checkpoints, default=0)
            if kind == "random":
                time.sleep(rng.uniform(0.3, 1.8))
            elif kind == "at-seal":
                time.sleep(0.6)  # let uploads pile up for the seal
                _sleep_until_next_seal(traffic, rng, size_now)
            else:  # right after a restart, when the first tick seals the leftovers
                time.sleep(rng.uniform(0.0, 0.03))
            server.kill()
            with traffic.lock:
                acked_at_kill.append(len(traffic.acked))
            time.sleep(rng.uniform(0.0, 0.2))  # clients hammer a dead port meanwhile
            server.start()
        time.sleep(1.0)
    finally:
        traffic.stop.set()
        for thread in threads:
            thread.join(timeout=30)

    try:
        _verify_after_crashes(server, traffic, keys, seed, acked_at_kill)
    finally:
        server.stop()


def _verify_after_crashes(
    server: LiveServer,
    traffic: Traffic,
    keys: dict[str, str],
    seed: int,
    acked_at_kill: list[int],
) -> None:
    context = f"seed {seed}, acknowledged before each kill {acked_at_kill}"
    assert not traffic.unexpected, (context, traffic.unexpected[:5])
    assert len(traffic.acked) > 100 and acked_at_kill[0] > 0, context
    assert traffic.unanswered > 0, "no request was ever cut off: the kills missed"
    assert len(server.log().split("--- start")) == len(ROUNDS) + 2

    _, published, _ = http("GET", f"{server.base}/v1/keys")
    vkeys = [key["vkey"] for key in published["keys"]]
    verifiers = [NoteVerifier.from_vkey(vkey) for vkey in vkeys]

    # (1) Every acknowledged registration: present, sealed, provable, unchanged.
    def check(reg: dict[str, Any]) -> None:
        status, proof, _ = http(
            "GET",
            f"{server.base}/v1/registrations/{reg['id']}/proof?wait=true",
            key=keys[reg["seller"]],
        )
        assert status == 200, (context, reg, proof)
        verified = verify_proof(proof, keys=vkeys)
        assert verified.registration_id == reg["id"]
        assert verified.seller == reg["seller"] == proof["seller"], context
        leaf_fields = ("id", "sha256", "perceptual", "received_at")
        assert {name: proof["leaf"][name] for name in leaf_fields} == {
            name: reg[name] for name in leaf_fields
        }, context

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(check, traffic.acked.values()))

    # (2) The final tree is what the stored leaves make, and nothing is left pending.
    _, final, _ = http("GET", f"{server.base}/v1/checkpoints/latest")
    leaves = _stored_leaves(server.data_dir / "shotstamp.db")
    size = final["tree_size"]
    assert len(leaves) >= size >= len(traffic.acked)
    final_root = bytes.fromhex(final["root_hash"])
    assert merkle.root_hash(leaves[:size]) == final_root

    # (3) Every checkpoint seen at any time: still served, signed, and consistent
    # with the final one by the service's own consistency proof, which must also
    # be the proof the stored leaves give.
    for old_size, seen in sorted(traffic.checkpoints.items()):
        assert old_size <= size, context
        status, again, _ = http("GET", f"{server.base}/v1/checkpoints/{old_size}")
        assert status == 200 and again["root_hash"] == seen["root_hash"], (context, seen, again)
        body = Checkpoint.from_text(open_note(seen["note"], verifiers).text)
        assert body.size == old_size and body.root_hash.hex() == seen["root_hash"]
        if old_size == 0:
            continue  # every tree extends the empty one; RFC 9162 has no proof for it
        status, answer, _ = http(
            "GET", f"{server.base}/v1/proofs/consistency?from={old_size}&to={size}"
        )
        assert status == 200, (context, answer)
        proof = [bytes.fromhex(node) for node in answer["path"]]
        old_root = bytes.fromhex(seen["root_hash"])
        merkle.verify_consistency(old_size, size, proof, old_root, final_root)
        assert proof == merkle.consistency_proof(leaves[:size], old_size), context
    assert len(traffic.checkpoints) >= len(ROUNDS), context
