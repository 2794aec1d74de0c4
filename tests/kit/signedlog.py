"""A small signed log for the SDK's consistency and witness tests: leaves, keys, checkpoints."""

from __future__ import annotations

import hashlib
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shotstamp.canonical import canonical_json
from shotstamp.checkpoint import Checkpoint, NoteSigner
from shotstamp.merkle import consistency_proof, leaf_hash, root_hash

ORIGIN = "shotstamp.test/log"


def seeded_key(seed: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed.encode()).digest())


KEY_2024 = NoteSigner(ORIGIN, seeded_key("2024"))
KEY_2025 = NoteSigner(ORIGIN, seeded_key("2025"))
OTHER_LOG = NoteSigner("other.test/log", seeded_key("other"))
KEYS = [KEY_2024.verifier.vkey, KEY_2025.verifier.vkey]


def _leaf(i: int) -> dict[str, Any]:
    return {
        "id": f"01JDZ{i:021d}",
        "seller": f"seller-{i % 3}",
        "sha256": hashlib.sha256(f"photo {i}".encode()).hexdigest(),
        "perceptual": {"phash": f"{i:016x}"},
        "received_at": f"2025-11-26T09:00:00.{i:06d}Z",
    }


LEAVES = [_leaf(i) for i in range(20)]
HASHES = [leaf_hash(canonical_json(leaf)) for leaf in LEAVES]


def note(size: int, signer: NoteSigner = KEY_2025, hashes: list[bytes] = HASHES) -> str:
    body = Checkpoint(
        signer.name, size, root_hash(hashes[:size]), (f"Timestamp: {1_700_000_000 + size}",)
    )
    return signer.sign(body.to_text()).to_text()


def answer(first: int, second: int, hashes: list[bytes] = HASHES) -> dict[str, Any]:
    path = consistency_proof(hashes[:second], first) if first else []
    return {"from": first, "to": second, "path": [h.hex() for h in path]}
