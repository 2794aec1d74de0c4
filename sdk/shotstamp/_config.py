"""Where the clients and the CLI find the service URL and the API key.

Each setting is taken from the first of:

1. an explicit argument (`Client(url=..., api_key=...)`, `--url`, `--api-key`);
2. the environment: `SHOTSTAMP_URL`, `SHOTSTAMP_API_KEY`;
3. a TOML config file: `--config FILE`, else `$SHOTSTAMP_CONFIG`, else
   `$XDG_CONFIG_HOME/shotstamp/config.toml` (`~/.config/shotstamp/config.toml`):

       url = "https://shotstamp.example.com"
       api_key = "ss_0123456789ab_..."

4. the default URL `http://127.0.0.1:8080` (there is no default key).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__: list[str] = []

DEFAULT_URL = "http://127.0.0.1:8080"
ENV_URL = "SHOTSTAMP_URL"
ENV_API_KEY = "SHOTSTAMP_API_KEY"
ENV_CONFIG = "SHOTSTAMP_CONFIG"
_FILE_KEYS = frozenset({"url", "api_key"})


@dataclass(frozen=True)
class Settings:
    """A resolved URL and API key, and where each came from (for error messages)."""

    url: str
    api_key: str | None
    url_from: str
    api_key_from: str | None
    config_file: Path | None = None


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    """`$SHOTSTAMP_CONFIG`, else `$XDG_CONFIG_HOME/shotstamp/config.toml`."""
    env = os.environ if env is None else env
    if env.get(ENV_CONFIG):
        return Path(env[ENV_CONFIG]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")) / ".config")
    return Path(base).expanduser() / "shotstamp" / "config.toml"


def _read_file(path: Path, *, required: bool) -> dict[str, str]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if required:
            raise ValueError(f"config file {path} does not exist") from None
        return {}
    except OSError as exc:
        raise ValueError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"config file {path} is not valid TOML: {exc}") from exc
    unknown = sorted(set(document) - _FILE_KEYS)
    if unknown:
        raise ValueError(
            f"config file {path} has unknown settings {', '.join(unknown)} "
            f"(known: {', '.join(sorted(_FILE_KEYS))})"
        )
    values: dict[str, str] = {}
    for name, value in document.items():
        if not isinstance(value, str) or not value:
            raise ValueError(f"config file {path}: {name} must be a non-empty string")
        values[name] = value
    return values


def load_settings(
    *,
    url: str | None = None,
    api_key: str | None = None,
    config_file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve the URL and API key: arguments, then environment, then config file.

    Raises `ValueError` for an unreadable or invalid config file, or a URL
    that is not http(s). The file is read only when an argument or variable
    leaves something unset.
    """
    env = os.environ if env is None else env
    path = Path(config_file).expanduser() if config_file is not None else default_config_path(env)
    required = config_file is not None or bool(env.get(ENV_CONFIG))
    chosen_url, url_from = url, "argument"
    chosen_key, key_from = api_key, "argument"
    if chosen_url is None and env.get(ENV_URL):
        chosen_url, url_from = env[ENV_URL], ENV_URL
    if chosen_key is None and env.get(ENV_API_KEY):
        chosen_key, key_from = env[ENV_API_KEY], ENV_API_KEY
    used_file: Path | None = None
    if chosen_url is None or chosen_key is None or required:
        from_file = _read_file(path, required=required)
        if from_file:
            used_file = path
        if chosen_url is None and "url" in from_file:
            chosen_url, url_from = from_file["url"], str(path)
        if chosen_key is None and "api_key" in from_file:
            chosen_key, key_from = from_file["api_key"], str(path)
    if chosen_url is None:
        chosen_url, url_from = DEFAULT_URL, "default"
    if not chosen_url.startswith(("http://", "https://")):
        raise ValueError(
            f"service URL {chosen_url!r} (from {url_from}) must be http:// or https://"
        )
    return Settings(
        url=chosen_url.rstrip("/"),
        api_key=chosen_key,
        url_from=url_from,
        api_key_from=key_from if chosen_key is not None else None,
        config_file=used_file,
    )
