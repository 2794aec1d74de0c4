"""A throwaway PostgreSQL server for the tests and benchmarks.

`start_server()` runs Debian's `initdb` and `pg_ctl` in a temporary
directory on a free loopback port. Both refuse to run as root, so as root they
run as the `postgres` user (which the Debian package creates). Durability
settings are relaxed (`fsync=off`): the tests kill service processes, never
the machine, and a killed process loses nothing the kernel has been handed.

`SHOTSTAMP_TEST_DATABASE_URL` (a role that may CREATE DATABASE) uses an
existing server instead; `SHOTSTAMP_PG_BINDIR` names where the binaries are.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

__all__ = ["PostgresServer", "PostgresUnavailable", "find_bindir", "start_server"]


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries, or the server would not start."""


@dataclass
class PostgresServer:
    admin_url: str
    datadir: Path | None = None  # set when this process started the server
    bindir: Path | None = None
    run_as: list[str] = field(default_factory=list)

    def url(self, database: str) -> str:
        parts = urlsplit(self.admin_url)
        return urlunsplit(parts._replace(path=f"/{database}"))

    async def create_database(self, prefix: str = "t") -> str:
        """A new empty database; returns its URL."""
        import asyncpg

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        finally:
            await conn.close()
        return self.url(name)

    async def drop_database(self, url: str) -> None:
        import asyncpg

        name = urlsplit(url).path.lstrip("/")
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    def create_database_sync(self, prefix: str = "t") -> str:
        return asyncio.run(self.create_database(prefix))

    def drop_database_sync(self, url: str) -> None:
        asyncio.run(self.drop_database(url))

    def stop(self) -> None:
        if self.datadir is None or self.bindir is None:
            return
        subprocess.run(
            [*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m",
             "immediate", "-w", "stop"],
            capture_output=True,
            timeout=60,
            cwd=self.datadir.parent,
        )
        shutil.rmtree(self.datadir.parent, ignore_errors=True)
        self.datadir = None


def find_bindir() -> Path | None:
    """Where initdb and pg_ctl are: $SHOTSTAMP_PG_BINDIR, Debian's newest, or $PATH."""
    if os.environ.get("SHOTSTAMP_PG_BINDIR"):
        return Path(os.environ["SHOTSTAMP_PG_BINDIR"])
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit()
        else 0,
    )
    if versions:
        return Path(versions[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(*, durable: bool = False) -> PostgresServer:
    """An existing server named by $SHOTSTAMP_TEST_DATABASE_URL, or a new throwaway one.

    `durable` keeps PostgreSQL's fsync on (benchmarks compare like with like:
    the SQLite store fsyncs every commit).
    """
    existing = os.environ.get("SHOTSTAMP_TEST_DATABASE_URL")
    if existing:
        return PostgresServer(admin_url=existing)
    bindir = find_bindir()
    if bindir is None or not (bindir / "initdb").exists():
        raise PostgresUnavailable(
            "PostgreSQL is not installed (no initdb); install Debian's 'postgresql' package"
        )
    run_as: list[str] = []
    owner = None
    if os.geteuid() == 0:  # initdb and pg_ctl refuse root
        run_as = ["runuser", "-u", "postgres", "--"]
        try:
            import pwd

            owner = pwd.getpwnam("postgres")
        except KeyError as exc:
            raise PostgresUnavailable("running as root and there is no 'postgres' user") from exc
    base = Path(tempfile.mkdtemp(prefix="shotstamp-pg-"))
    datadir = base / "data"
    if owner is not None:
        os.chown(base, owner.pw_uid, owner.pw_gid)
    port = _free_port()

    def run(*args: str) -> None:
        # cwd: the postgres user may not be allowed into the checkout's folder.
        result = subprocess.run(
            [*run_as, *args], capture_output=True, text=True, timeout=120, cwd=base
        )
        if result.returncode != 0:
            log = (base / "server.log").read_text() if (base / "server.log").exists() else ""
            shutil.rmtree(base, ignore_errors=True)
            raise PostgresUnavailable(
                f"{Path(args[0]).name} failed ({result.returncode}): {result.stderr}{log}"
            )

    run(
        str(bindir / "initdb"), "-D", str(datadir), "-A", "trust", "-U", "postgres",
        "-E", "UTF8", "--no-sync", "--no-instructions",
    )
    options = " ".join(
        [
            f"-p {port}",
            f"-k {base}",
            "-c listen_addresses=127.0.0.1",
            "-c max_connections=300",
            *([] if durable else ["-c fsync=off", "-c full_page_writes=off"]),
        ]
    )
    run(
        str(bindir / "pg_ctl"), "-D", str(datadir), "-o", options,
        "-l", str(base / "server.log"), "-w", "-t", "60", "start",
    )
    return PostgresServer(
        admin_url=f"postgresql://postgres@127.0.0.1:{port}/postgres",
        datadir=datadir,
        bindir=bindir,
        run_as=run_as,
    )
