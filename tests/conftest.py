"""Shared fixtures: a real service (real store, real sealer, real process pool) per test.

Every service test runs twice, on SQLite and on PostgreSQL (`store_kind`). The
PostgreSQL server is a throwaway one started once per session (see
`tests/kit/pgserver.py`); each test gets a fresh database on it. Without PostgreSQL the
postgres half is skipped, unless SHOTSTAMP_REQUIRE_POSTGRES=1 (CI sets it),
which turns a missing server into a failure.

It also marks every test outside tests/unit/ `integration` (docs/testing.md).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.kit.pgserver import PostgresServer, PostgresUnavailable, start_server
from tests.kit.servicekit import Service, service_settings

STORE_KINDS = ("sqlite", "postgres")
UNIT = Path(__file__).parent / "unit"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test outside tests/unit/ is an integration test: `make check` runs only the rest."""
    for item in items:
        if UNIT not in item.path.parents:
            item.add_marker(pytest.mark.integration)

# Services the tests start run one process (tests of several ask for them):
# quicker to start, and one pid to signal or kill.
os.environ.setdefault("SHOTSTAMP_PROCESSES", "1")


def postgres_required() -> bool:
    return os.environ.get("SHOTSTAMP_REQUIRE_POSTGRES", "") not in ("", "0")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        server = start_server()
    except PostgresUnavailable as exc:
        if postgres_required():
            pytest.fail(f"SHOTSTAMP_REQUIRE_POSTGRES is set but PostgreSQL is unavailable: {exc}")
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database for one test."""
    url = postgres_server.create_database_sync()
    yield url
    postgres_server.drop_database_sync(url)


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass
class StoreTarget:
    """Where a test's store lives: a SQLite file or a PostgreSQL database."""

    kind: str
    path: Path
    url: str | None = None

    def make(self) -> Any:
        """A new, unopened store on the same data (open it again to "restart")."""
        if self.url is not None:
            from shotstamp_service.store.postgres import PostgresStore

            return PostgresStore(self.url)
        from shotstamp_service.store.sqlite import SQLiteStore

        return SQLiteStore(self.path)


@pytest.fixture
def store_target(request: pytest.FixtureRequest, store_kind: str, tmp_path: Path) -> StoreTarget:
    url = request.getfixturevalue("postgres_url") if store_kind == "postgres" else None
    return StoreTarget(store_kind, tmp_path / "db.sqlite", url)


@pytest.fixture
def service_config(tmp_path: Path, store_target: StoreTarget) -> Any:
    return service_settings(tmp_path, store_target.url)


@pytest.fixture
async def service(
    service_config: Any, aiohttp_client: Callable[[Any], Awaitable[Any]]
) -> AsyncIterator[Service]:
    # service_config first: its database must outlive the app, which the
    # aiohttp_client fixture closes at teardown (fixtures end in reverse order).
    from shotstamp_service.http.app import create_app

    app = create_app(service_config)
    client = await aiohttp_client(app)
    yield Service(client=client, app=app)


@pytest.fixture
def backend(store_target: StoreTarget, tmp_path: Path) -> Any:
    """What a service process needs to run on this test's store (`processes.Backend`)."""
    from tests.kit.processes import Backend

    data = tmp_path / "data"
    if store_target.url is None:
        return Backend("sqlite", data, data / "keys")
    from shotstamp_service.config import Config
    from shotstamp_service.log.signer import write_new_key

    key_dir = tmp_path / "shared-keys"
    write_new_key(key_dir, Config().origin)
    env = {"SHOTSTAMP_DATABASE_URL": store_target.url, "SHOTSTAMP_SIGNING_KEY_DIR": str(key_dir)}
    return Backend("postgres", data, key_dir, store_target.url, env)


@pytest.fixture(scope="module")
def service_process(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real `shotstamp-service serve` process, shared by a module's tests."""
    from tests.kit.processes import start_service

    running = start_service(tmp_path_factory.mktemp("service") / "data")
    yield running
    running.stop()


# The matching tests' photos: the development corpus (read in place, never copied), and the
# real photos scikit-image's wheel ships (`tests/kit/bundled_photos.py`), which every run has.
@pytest.fixture(scope="session")
def photos() -> Path:
    from tests.kit.corpus import corpus_dir

    root = corpus_dir()
    if not (root / "manifest.tsv").exists():
        pytest.skip(f"development photo corpus not found at {root} "
                    "(expected ../shared/photos beside the repository, or $SHOTSTAMP_PHOTOS)")
    return root


@pytest.fixture(scope="session")
def bundled() -> dict[str, tuple[bytes, Any]]:
    """file → (original bytes, RGB image) for every photo in BUNDLED_PHOTOS. Never skipped:
    scikit-image is a test dependency, so a missing photo fails the run."""
    from tests.kit.bundled_photos import BUNDLED_PHOTOS, load_bundled

    try:
        return {p.file: load_bundled(p) for p in BUNDLED_PHOTOS}
    except FileNotFoundError as exc:
        pytest.fail(str(exc))
