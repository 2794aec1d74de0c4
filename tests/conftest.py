"""Shared fixtures: a real service (real store, real sealer, real process pool) per test."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from servicekit import Service


@pytest.fixture
def service_config(tmp_path: Path) -> Any:
    from shotstamp_service.config import Config

    return Config(
        data_dir=tmp_path / "data",
        seal_interval=0.2,
        fingerprint_workers=1,
        wait_timeout=10,
    )


@pytest.fixture
async def service(
    aiohttp_client: Callable[[Any], Awaitable[Any]], service_config: Any
) -> AsyncIterator[Service]:
    from shotstamp_service.app import create_app

    app = create_app(service_config)
    client = await aiohttp_client(app)
    yield Service(client=client, app=app)


@pytest.fixture(scope="module")
def service_process(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real `shotstamp-service serve` process, shared by a module's tests."""
    from processes import start_service

    running = start_service(tmp_path_factory.mktemp("service") / "data")
    yield running
    running.stop()
