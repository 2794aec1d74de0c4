"""The data directory's files hold secrets: they are kept private whatever the umask.

The SQLite database (and its -wal and -shm, which SQLite creates with the
database file's mode) holds webhook secrets and API key hashes; `keys/` and
`evm.key` hold private keys. Files are made 0600 and directories 0700 (owner
bits kept, group and other bits removed); see docs/security.md, "Files on disk".
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from shotstamp_service.config import Config

__all__ = ["PRIVATE_UMASK", "create_private_file", "secure_data_dir", "tighten"]

log = logging.getLogger(__name__)

# What the service process runs under: nothing it creates is group/other accessible.
PRIVATE_UMASK = 0o077


def secure_data_dir(config: Config) -> list[Path]:
    """Create the data directory (0700) if missing and make its secret files private.

    Only the service's own files are touched (the database, keys/, evm.key,
    signing.key), never the rest of a directory an operator may share.
    Returns what was changed.
    """
    data = config.data_dir
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    database = config.database_path
    owned = [
        database,
        database.with_name(database.name + "-wal"),
        database.with_name(database.name + "-shm"),
        config.legacy_key_path,
        config.key_dir,
        config.evm_key_path,
    ]
    inside = [p for p in owned if p.parent == data]
    return tighten(data, recursive=False) + tighten(*inside)


def create_private_file(path: Path) -> None:
    """Create an empty `path` with mode 0600 if it does not exist (an existing one is kept)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def tighten(*paths: Path, recursive: bool = True) -> list[Path]:
    """Remove group and other permissions from `paths` and, for directories, all below.

    Symbolic links are not followed. Each change is logged; a path that cannot
    be changed (read-only mount, another owner) is logged and left as it is.
    """
    changed: list[Path] = []
    for root in paths:
        if not root.exists() or root.is_symlink():
            continue
        if root.is_dir() and recursive:
            for parent, dirs, files in os.walk(root):
                here = Path(parent)
                _tighten_one(here, changed)
                for name in files:
                    _tighten_one(here / name, changed)
                dirs[:] = [d for d in dirs if not (here / d).is_symlink()]
        else:
            _tighten_one(root, changed)
    return changed


def _tighten_one(path: Path, changed: list[Path]) -> None:
    try:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            return
        mode = stat.S_IMODE(info.st_mode)
        if not mode & 0o077:
            return
        path.chmod(mode & ~0o077)
    except OSError as exc:
        log.warning("could not make %s private: %s", path, exc)
        return
    changed.append(path)
    log.warning("made %s private: mode %o, was %o", path, mode & ~0o077, mode)
