"""Shared fixtures: a real service (real store, real sealer, real process pool) per test."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@dataclass
class Service:
    """A running app under the aiohttp test client, with helpers to mint keys."""

    client: Any
    app: Any
    keys: dict[str, str] = field(default_factory=dict)

    async def key(self, seller: str, role: str = "seller") -> str:
        from shotstamp_service.auth import issue_key
        from shotstamp_service.keys import STORE

        secret, record = issue_key(seller, role)  # type: ignore[arg-type]
        await self.app[STORE].add_api_key(record)
        return secret

    @staticmethod
    def auth(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    async def upload(
        self,
        key: str,
        data: bytes,
        *,
        path: str = "/v1/registrations",
        params: dict[str, str] | None = None,
        filename: str = "photo.jpg",
        **fields: str,
    ) -> Any:
        import aiohttp

        form = aiohttp.FormData()
        form.add_field("image", data, filename=filename, content_type="image/jpeg")
        for name, value in fields.items():
            form.add_field(name, value)
        return await self.client.post(path, data=form, headers=self.auth(key), params=params)


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
