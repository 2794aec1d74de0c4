"""The `shotstamp register` output directory: a JSON-lines manifest and the proofs.

    OUT/shotstamp-manifest.jsonl   one JSON object per line, appended as files finish
    OUT/proofs/<registration id>.json
    OUT/keys.json                  the log's public keys, for `shotstamp verify --key`

A line records one file's outcome: `path` (absolute), `sha256`, `size`,
`mtime_ns`, `outcome` (`new`, `existing`, `conflict`, `error`) and, as they
apply, `id`, `received_at`, `proof` (relative to OUT), `matches`, `error`,
and `at` (when the line was written). A file has a line when it is
registered and another when its proof is saved; the last line for a sha256
wins. A line cut short by a crash is ignored on the next run.

A line `{"log": {"origin", "key_ids", "url"}, "at"}` names the log the folder
was registered in; registrations in another log are not skipped for it, so a
run against another service is refused (`LogMismatch`). A manifest without
one (written before it existed) adopts the first log it is used with.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

__all__ = [
    "KEYS_NAME",
    "MANIFEST_NAME",
    "PROOFS_DIR",
    "LogMismatch",
    "Manifest",
    "file_sha256",
    "write_atomically",
]

MANIFEST_NAME = "shotstamp-manifest.jsonl"
PROOFS_DIR = "proofs"
KEYS_NAME = "keys.json"


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def write_atomically(path: Path, text: str | bytes) -> None:
    """Write via a temporary file and rename, so a crash leaves old or new, never half."""
    temporary = path.with_name(f".{path.name}.tmp")
    data = text.encode("utf-8") if isinstance(text, str) else text
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


class LogMismatch(Exception):
    """The output directory records registrations in another log than the service's."""


class Manifest:
    """The manifest of an output directory: read at start, appended to as files finish."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / MANIFEST_NAME
        self.by_sha256: dict[str, dict[str, Any]] = {}
        self.by_path: dict[str, dict[str, Any]] = {}
        self.log: dict[str, Any] | None = None
        self.unreadable_lines = 0
        self._handle: IO[str] | None = None
        self._load()

    def _load(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                self.unreadable_lines += 1
                continue
            if isinstance(record, dict):
                self._index(record)

    def _index(self, record: dict[str, Any]) -> None:
        if isinstance(record.get("log"), dict):
            self.log = record["log"]
        if isinstance(record.get("sha256"), str):
            self.by_sha256[record["sha256"]] = record
        if isinstance(record.get("path"), str):
            self.by_path[record["path"]] = record

    def bind_log(self, origin: str, key_ids: list[str], url: str) -> None:
        """Record the service's log, or refuse one that is not the log recorded.

        Same log: same origin and at least one signing key in common (a
        rotation keeps the retired key listed in /v1/keys).
        """
        if self.log is None:
            self.append({"log": {"origin": origin, "key_ids": sorted(key_ids), "url": url}})
            return
        known = {str(k) for k in self.log.get("key_ids") or []}
        if self.log.get("origin") != origin or not known & set(key_ids):
            raise LogMismatch(
                f"{self.path} records registrations in another log (origin "
                f"{self.log.get('origin')}, key {', '.join(sorted(known)) or 'none'}, at "
                f"{self.log.get('url', 'an unrecorded URL')}) than {url} serves (origin "
                f"{origin}, key {', '.join(sorted(key_ids))}); give another --out folder "
                "for this service"
            )
        if not set(key_ids) <= known:  # rotated since: remember the new key too
            merged = sorted(known | set(key_ids))
            self.append({"log": {"origin": origin, "key_ids": merged, "url": url}})

    def known_sha256(self, path: Path, stat: os.stat_result) -> str | None:
        """The sha256 recorded for this path if its size and mtime are unchanged."""
        record = self.by_path.get(str(path))
        if (
            record is not None
            and record.get("size") == stat.st_size
            and record.get("mtime_ns") == stat.st_mtime_ns
            and isinstance(record.get("sha256"), str)
        ):
            return str(record["sha256"])
        return None

    def registered(self, sha256: str) -> dict[str, Any] | None:
        """The latest record of a registration of these bytes, if there is one."""
        record = self.by_sha256.get(sha256)
        if record and record.get("outcome") in ("new", "existing") and record.get("id"):
            return record
        return None

    def proof_saved(self, record: dict[str, Any]) -> bool:
        proof = record.get("proof")
        return isinstance(proof, str) and (self.directory / proof).is_file()

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        record = {**record, "at": datetime.now(UTC).isoformat().replace("+00:00", "Z")}
        if self._handle is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("a", encoding="utf-8")
        self._handle.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
        self._handle.flush()
        self._index(record)
        return record

    def close(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None
