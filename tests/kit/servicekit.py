"""The test service handle: a running app under aiohttp's test client, with helpers.

A module of its own (not conftest) so tests can import it unambiguously.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def service_settings(
    tmp_path: Path, database_url: str | None = None, **overrides: Any
) -> Any:
    """The tests' service configuration, on SQLite or on the PostgreSQL `database_url`.

    The signing key is made beforehand: replicas sharing a database never make one.
    """
    from shotstamp_service.config import Config
    from shotstamp_service.log.signer import load_or_create_key

    key_file = tmp_path / "shared" / "signing.key"
    load_or_create_key(key_file)
    settings: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "signing_key_file": key_file,
        "database_url": database_url,
        "seal_interval": 0.2,
        "fingerprint_workers": 1,
        "wait_timeout": 10,
    }
    return Config(**{**settings, **overrides})


@dataclass
class Service:
    """A running app under the aiohttp test client, with helpers to mint keys."""

    client: Any
    app: Any
    keys: dict[str, str] = field(default_factory=dict)

    async def key(self, seller: str, role: str = "seller") -> str:
        from shotstamp_service.http.auth import issue_key
        from shotstamp_service.http.keys import STORE

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
