"""The service's checkpoint signing key on disk.

The key is an Ed25519 private key in PKCS#8 PEM, created on first start with
file mode 0600. Several replicas share one key by pointing at the same file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shotstamp.checkpoint import Checkpoint, NoteSigner, NoteVerifier

__all__ = ["LogSigner", "load_or_create_key"]


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """Read the PEM key at `path`, creating it (mode 0600) if it does not exist."""
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise PermissionError(
                f"signing key {path} is readable by others (mode {mode:o}); chmod 600 it"
            )
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"signing key {path} is not an Ed25519 key")
        return key
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: two processes starting at once must not write two different keys.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    return key


@dataclass(frozen=True)
class LogSigner:
    """Signs checkpoints of the log named `origin`."""

    origin: str
    key: Ed25519PrivateKey

    @cached_property
    def note_signer(self) -> NoteSigner:
        return NoteSigner(self.origin, self.key)

    @property
    def verifier(self) -> NoteVerifier:
        return self.note_signer.verifier

    @property
    def key_id(self) -> str:
        return self.verifier.key_hash.hex()

    def sign_checkpoint(self, size: int, root: bytes, timestamp_ns: int) -> str:
        body = Checkpoint(self.origin, size, root, (f"Timestamp: {timestamp_ns}",))
        return self.note_signer.sign(body.to_text()).to_text()
