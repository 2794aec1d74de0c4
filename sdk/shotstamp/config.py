"""`shotstamp.config`, kept for compatibility: the old module path (docs/sdk-api.md)."""

from shotstamp._config import (
    DEFAULT_URL,
    ENV_API_KEY,
    ENV_CONFIG,
    ENV_URL,
    Settings,
    default_config_path,
    load_settings,
)

__all__ = [
    "DEFAULT_URL",
    "ENV_API_KEY",
    "ENV_CONFIG",
    "ENV_URL",
    "Settings",
    "default_config_path",
    "load_settings",
]
