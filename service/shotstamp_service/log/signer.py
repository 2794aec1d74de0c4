"""The log's checkpoint signing keys: private halves on disk, public halves in the store.

A log signs with one key at a time and may rotate to a new one over its life.
Every checkpoint names its key (the signed-note key hash in its signature
line), and the store lists every key with the period it was active in, so a
checkpoint signed before a rotation still verifies after it.

Private keys are Ed25519 PKCS#8 PEM files of mode 0600:

- in the key directory (`SHOTSTAMP_SIGNING_KEY_DIR`, default
  `<data dir>/keys/`), one `signing-<key id>.key` per key; `signing-key
  rotate` writes new keys there. Replicas that share this directory (a shared
  volume or a mounted secret) follow rotations without restarting.
- or one file named by `SHOTSTAMP_SIGNING_KEY_FILE` (created there on first
  start if missing), and the first release's `<data dir>/signing.key`; both are
  read as well as the directory.

Which key is active is the store's to say; each seal asks it, so a rotation
made by the admin command reaches every running replica at its next seal.

On a store several replicas share (PostgreSQL), no replica ever generates a
key (`create=False`): one that finds no key to adopt, or not the active one,
refuses to start with `SigningKeyUnavailable` naming where it looked. The
first key is made by the admin command (`signing-key rotate` on a log without
keys writes `signing-<key id>.key` into the key directory and records it) or
by the operator; every replica then reads the same directory or file. A
running replica that lacks a rotated key stops sealing (see `sealer.py`).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shotstamp._checkpoint import Checkpoint, NoteSigner, NoteVerifier, format_vkey
from shotstamp_service.records import SigningKeyRecord, format_time, utc_now
from shotstamp_service.store import ActiveKeyChanged, CheckpointReader, SigningKeyStore

__all__ = [
    "KEY_FILE_SUFFIX",
    "SHARE_ONE_KEY",
    "LogSigner",
    "SignerSource",
    "SigningKeyLog",
    "SigningKeyUnavailable",
    "SigningKeys",
    "key_json",
    "load_or_create_key",
    "read_key",
    "write_new_key",
]

log = logging.getLogger(__name__)

KEY_FILE_SUFFIX = ".key"


class SigningKeyUnavailable(RuntimeError):
    """The store's active signing key has no private key this process can read."""


SHARE_ONE_KEY = (
    "replicas sharing a database must share one key and never make their own: "
    "create it once with 'shotstamp-service signing-key rotate' (it writes "
    "signing-<key id>.key into SHOTSTAMP_SIGNING_KEY_DIR and records it), then give "
    "every replica that directory (a shared volume or mounted secret), or the one "
    "file as SHOTSTAMP_SIGNING_KEY_FILE"
)


def read_key(path: Path) -> Ed25519PrivateKey:
    """Read the PEM key at `path`, refusing a file others may read."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(
            f"signing key {path} is readable by others (mode {mode:o}); chmod 600 it"
        )
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"signing key {path} is not an Ed25519 key")
    return key


def _write_private(path: Path, key: Ed25519PrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Written whole to a temporary file, flushed, then linked into place: a
    # crash leaves either no key or the complete key, never an empty or half
    # file that would stop the next start. link() fails if the name exists
    # (as O_EXCL would), so two processes starting at once cannot both
    # install a key.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            raise
        except OSError:  # a filesystem without hard links: rename (loses only the race check)
            os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    # The new name must survive a crash too, before the store names the key.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_or_create_key(path: Path, *, create: bool = True) -> Ed25519PrivateKey:
    """Read the PEM key at `path`, creating it (mode 0600) if it does not exist.

    With `create=False` a missing key is an error: replicas sharing a store must
    share one key, and a key made up by one of them would sign a different log.
    """
    if path.exists():
        return read_key(path)
    if not create:
        raise SigningKeyUnavailable(
            f"signing key {path} (SHOTSTAMP_SIGNING_KEY_FILE) does not exist; {SHARE_ONE_KEY}"
        )
    key = Ed25519PrivateKey.generate()
    _write_private(path, key)
    return key


def write_new_key(directory: Path, origin: str) -> tuple[Path, Ed25519PrivateKey]:
    """Generate a key and write it to `directory/signing-<key id>.key` (mode 0600)."""
    key = Ed25519PrivateKey.generate()
    path = directory / f"signing-{LogSigner(origin, key).key_id}{KEY_FILE_SUFFIX}"
    _write_private(path, key)
    return path, key


@dataclass(frozen=True)
class LogSigner:
    """Signs checkpoints of the log named `origin` with one key."""

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

    def record(self, not_before: str) -> SigningKeyRecord:
        """This key as the store lists it, active from `not_before`."""
        return SigningKeyRecord(
            key_id=self.key_id,
            name=self.origin,
            algorithm="ed25519",
            public_key=self.verifier.public_key_raw,
            not_before=not_before,
        )

    async def current(self) -> LogSigner:
        """A fixed signer is its own `SignerSource` (tests, tools)."""
        return self


class SignerSource(Protocol):
    async def current(self) -> LogSigner:
        """The signer to sign the next checkpoint with."""
        ...


class SigningKeyLog(SigningKeyStore, CheckpointReader, Protocol):
    """What the signing keys need of the store: the keys, and the checkpoints they signed."""


class SigningKeys:
    """The service's keys: finds the active one's private key on disk, follows rotations.

    `open()` runs at start: on a store without keys it adopts the configured
    key file, the first release's `signing.key` or the one key in the directory,
    or generates one (only with `create`: never on a shared store), and
    records it as active.
    """

    def __init__(
        self,
        store: SigningKeyLog,
        origin: str,
        *,
        key_dir: Path,
        key_file: Path | None = None,
        legacy_file: Path | None = None,
        create: bool = True,
    ) -> None:
        self.store = store
        self.origin = origin
        self.key_dir = key_dir
        self.key_file = key_file
        self.legacy_file = legacy_file
        # False when replicas share the store: a key one of them made up would
        # sign a log the others cannot continue.
        self.create = create
        self._signer: LogSigner | None = None

    def _key_files(self) -> list[Path]:
        files = sorted(self.key_dir.glob(f"*{KEY_FILE_SUFFIX}")) if self.key_dir.is_dir() else []
        for extra in (self.key_file, self.legacy_file):
            if extra is not None and extra.exists() and extra not in files:
                files.append(extra)
        return files

    def _private_keys(self) -> dict[bytes, Ed25519PrivateKey]:
        """Every private key on disk, by raw public key."""
        keys = {}
        for path in self._key_files():
            key = read_key(path)
            keys[key.public_key().public_bytes_raw()] = key
        return keys

    def _signer_for(self, record: SigningKeyRecord) -> LogSigner:
        if record.name != self.origin:
            raise SigningKeyUnavailable(
                f"the store's log is {record.name!r} but the configured origin is "
                f"{self.origin!r} (SHOTSTAMP_ORIGIN); a log's origin never changes"
            )
        key = self._private_keys().get(record.public_key)
        if key is None:
            where = ", ".join(str(p) for p in [self.key_dir, self.key_file] if p is not None)
            raise SigningKeyUnavailable(
                f"the active signing key {record.key_id} has no private key in {where}; "
                "copy signing-<key id>.key from where it was rotated"
            )
        return LogSigner(self.origin, key)

    async def open(self) -> None:
        """Make sure the log has an active key and that this process holds it."""
        active = await self._active()
        if active is None:
            await self._adopt_first_key()
            active = await self._active()
            assert active is not None
        self._signer = self._signer_for(active)

    async def _active(self) -> SigningKeyRecord | None:
        return next((k for k in await self.store.list_signing_keys() if k.active), None)

    async def _adopt_first_key(self) -> None:
        if self.key_file is not None:
            key = load_or_create_key(self.key_file, create=self.create)
        else:
            found = self._private_keys()
            if len(found) > 1:
                raise SigningKeyUnavailable(
                    f"the store names no signing key yet and {self.key_dir} holds "
                    f"{len(found)}; set SHOTSTAMP_SIGNING_KEY_FILE to the one to use"
                )
            if found:
                (key,) = found.values()
            elif not self.create:
                raise SigningKeyUnavailable(
                    f"the store names no signing key yet and {self.key_dir} "
                    f"(SHOTSTAMP_SIGNING_KEY_DIR) holds none; {SHARE_ONE_KEY}"
                )
            else:
                path, key = write_new_key(self.key_dir, self.origin)
                log.info("created signing key %s", path)
        signer = LogSigner(self.origin, key)
        # A store sealed before keys were recorded (the first release) must have
        # been signed by this very key, or its history belongs to another.
        latest = await self.store.latest_checkpoint()
        if latest is not None and latest.key_id != signer.key_id:
            raise SigningKeyUnavailable(
                f"the log's checkpoints are signed by key {latest.key_id}, "
                f"not by the configured key {signer.key_id}"
            )
        first = await self.store.get_checkpoint(0)
        since = first.timestamp if first is not None else utc_now()
        # If another replica recorded its key first, open() uses that one.
        with contextlib.suppress(ActiveKeyChanged):
            await self.store.activate_signing_key(signer.record(format_time(since)), replacing=None)

    async def open_for_rotation(self) -> None:
        """What `rotate` needs first: the active key in order, or the log's first key adopted.

        A log with no key anywhere yet (say a new shared database, before any
        replica started) needs nothing: the rotation makes its first key.
        """
        if (
            await self._active() is None
            and not self._key_files()
            and await self.store.latest_checkpoint() is None
        ):
            return
        await self.open()

    async def current(self) -> LogSigner:
        """The active key's signer, reloaded from disk when the store's active key changed."""
        active = await self._active()
        if active is None:
            raise SigningKeyUnavailable("the store lists no active signing key")
        if self._signer is None or self._signer.key_id != active.key_id:
            self._signer = self._signer_for(active)
            log.info("signing checkpoints with key %s", active.key_id)
        return self._signer

    async def records(self) -> list[SigningKeyRecord]:
        """Every key the log has used, oldest first."""
        return await self.store.list_signing_keys()

    async def rotate(self) -> tuple[SigningKeyRecord, Path]:
        """Generate a key in the key directory and make it the active one from now.

        The retired key stays listed (its checkpoints keep verifying); its
        private file is no longer needed and may be archived or destroyed.
        """
        active = await self._active()
        path, key = write_new_key(self.key_dir, self.origin)
        record = LogSigner(self.origin, key).record(format_time(utc_now()))
        try:
            await self.store.activate_signing_key(
                record, replacing=active.key_id if active is not None else None
            )
        except ActiveKeyChanged:
            # Certainly not recorded (another rotation won): drop the orphan.
            # On any other failure the key may have been recorded; keep it.
            path.unlink()
            raise
        return record, path


def key_json(key: SigningKeyRecord) -> dict[str, Any]:
    """A signing key's public form (`GET /v1/keys`, `shotstamp-service signing-key list`)."""
    return {
        "key_id": key.key_id,
        "algorithm": key.algorithm,
        "public_key": base64.b64encode(key.public_key).decode(),
        "vkey": format_vkey(key.name, key.public_key),
        "status": "active" if key.active else "retired",
        "not_before": key.not_before,
        "not_after": key.not_after,
    }
