"""Serving processes on one SQLite file queue their writes on an flock, not in SQLite's
busy handler (which polls with sleeps of up to 100 ms)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from shotstamp_service.records import NewRegistration
from shotstamp_service.store.sqlite import SQLiteStore
from tests.kit.rows import new_registration


def _new(n: int) -> NewRegistration:
    return new_registration(n, height=20)


async def test_a_write_waits_for_the_write_lock_and_goes_on_when_it_is_released(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "db.sqlite")
    await store.open()
    try:
        fd = os.open(str(tmp_path / "db.sqlite.write-lock"), os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)  # another process writing
        write = asyncio.create_task(store.add_registration(_new(1)))
        await asyncio.sleep(0.5)
        assert not write.done()
        os.close(fd)
        registration = await asyncio.wait_for(write, 10)
        assert registration.seq == 1
    finally:
        await store.close()


def test_two_processes_writing_at_once_both_commit_everything(tmp_path: Path) -> None:
    """Each holds the lock across its transactions; none fails or is lost."""
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        sys.path[:0] = {sys.path!r}
        from tests.integration.service.test_sqlite_write_lock import _new
        from shotstamp_service.store.sqlite import SQLiteStore

        async def main(base):
            store = SQLiteStore({str(tmp_path / "db.sqlite")!r})
            await store.open()
            await asyncio.gather(*(store.add_registration(_new(base + n)) for n in range(40)))
            await store.close()

        asyncio.run(main(int(sys.argv[1])))
        """
    )
    writers = [subprocess.Popen([sys.executable, "-c", script, str(base)])
               for base in (1000, 2000)]
    assert [w.wait(timeout=60) for w in writers] == [0, 0]

    async def count() -> int:
        store = SQLiteStore(tmp_path / "db.sqlite")
        await store.open()
        try:
            return len([r async for r in store.iter_fingerprints(after_seq=0)])
        finally:
            await store.close()

    assert asyncio.run(count()) == 80


def test_processes_opening_a_new_database_at_once_all_open_it(tmp_path: Path) -> None:
    """Six processes open each of 30 new files together (a `--processes N` first start): the
    WAL switch is made under the write lock, so none gets "database is locked" (before the
    fix 1 to 8 opens in 180 did, from `PRAGMA journal_mode=WAL`)."""
    rounds, processes = 30, 6
    script = textwrap.dedent(
        f"""
        import asyncio, sys, time
        from pathlib import Path
        sys.path[:0] = {sys.path!r}
        from shotstamp_service.store.sqlite import SQLiteStore

        async def main(folder):
            failed = 0
            for n in range({rounds}):
                while not (folder / f"go{{n}}").exists():
                    time.sleep(0.0002)
                store = SQLiteStore(folder / f"db{{n}}.sqlite")
                try:
                    await store.open()
                except Exception as exc:
                    failed += 1
                    print(n, repr(exc), file=sys.stderr)
                finally:
                    await store.close()
            sys.exit(1 if failed else 0)

        asyncio.run(main(Path(sys.argv[1])))
        """
    )
    openers = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)])
               for _ in range(processes)]
    time.sleep(3)  # every opener imported and waiting
    for n in range(rounds):
        (tmp_path / f"go{n}").touch()
        time.sleep(0.15)
    assert [p.wait(timeout=120) for p in openers] == [0] * processes
