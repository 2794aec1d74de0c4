"""Service configuration: one dataclass, filled from flags and SHOTSTAMP_* variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

__all__ = ["ENV_VARS", "MAX_THUMBNAIL_SIZE", "MIN_THUMBNAIL_SIZE", "Config"]

# Big enough to recognise a product shot side by side, small enough to keep
# per registration (a 256 px JPEG is ~5 KB at thumbnail.JPEG_QUALITY).
MIN_THUMBNAIL_SIZE = 16
MAX_THUMBNAIL_SIZE = 1024


@dataclass(frozen=True)
class Config:
    data_dir: Path = Path("data")
    host: str = "127.0.0.1"
    port: int = 8080
    origin: str = "shotstamp.local/log"
    signing_key_dir: Path | None = None  # default: <data_dir>/keys
    signing_key_file: Path | None = None  # one more key file, e.g. shared by replicas
    seal_interval: float = 1.0
    max_upload_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_frames: int = 1000
    max_scans: int = 100  # progressive JPEG scans (docs/security.md, "Crafted images")
    max_side: int = 20_000  # pixels on either side, whatever the other (same section)
    # CPU seconds one fingerprint job may use before its worker is ended and replaced.
    fingerprint_cpu_seconds: int = 5
    max_text_length: int = 500
    fingerprint_workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    # Serving processes sharing the port and the data directory (docs/processes.md).
    processes: int = field(default_factory=lambda: os.cpu_count() or 1)
    wait_timeout: float = 15.0
    # On SIGTERM, how long requests in flight may take to finish before the
    # service cuts them off and exits (pending registrations are sealed either way).
    shutdown_timeout: float = 30.0
    # A small JPEG of each registration, for staff comparing a suspected copy
    # with it on the dispute desk. Off: nothing is kept and the desk shows none.
    thumbnails: bool = True
    thumbnail_size: int = 256  # longest side in pixels

    # Webhooks: deliveries time out after webhook_timeout seconds; a failed one is
    # retried after webhook_retry_base · 2^(attempt-1) seconds (jittered, at most
    # webhook_retry_max), up to webhook_max_attempts tries in all.
    webhook_timeout: float = 10.0
    webhook_retry_base: float = 10.0
    webhook_retry_max: float = 3600.0
    webhook_max_attempts: int = 20
    # A delivery's connection must be made within webhook_connect_timeout seconds.
    # At most webhook_concurrency deliveries run at once, and at most
    # webhook_seller_concurrency of any one seller's (per replica), so a seller
    # whose endpoints hang delays only its own deliveries.
    webhook_connect_timeout: float = 5.0
    webhook_concurrency: int = 64
    webhook_seller_concurrency: int = 4
    # Refuse webhook URLs on loopback, private and link-local addresses unless set.
    webhook_allow_private: bool = False

    # Uploads being fingerprinted and decided at once; more wait their turn with
    # their bodies read (a slow body never holds one of these slots).
    max_inflight_uploads: int = 16
    # Per-key token buckets (requests per second, and the burst a key may bank);
    # a rate of 0 turns the limit off. Uploads (registrations, checks) cost a
    # fingerprint, so they get their own, smaller budget.
    upload_rate: float = 50.0
    upload_burst: int = 100
    read_rate: float = 100.0
    read_burst: int = 200
    # Slow or hostile clients (docs/security.md): a request head must arrive
    # within header_timeout seconds of the connection opening or of the previous
    # response (idle keep-alive connections close then too); after body_grace
    # seconds a body must keep up body_min_rate bytes per second (0: off), else
    # 408 and the connection closes. A key has at most max_uploads_per_key
    # uploads open at once (0: no cap), each of at most max_upload_parts parts.
    header_timeout: float = 15.0
    body_min_rate: float = 4096.0
    body_grace: float = 10.0
    max_uploads_per_key: int = 8
    max_upload_parts: int = 8

    # PostgreSQL instead of the embedded SQLite file: shared by several replicas.
    database_url: str | None = None
    database_pool_size: int = 10
    # How often each replica reads registrations made by the others into its index.
    index_follow_interval: float = 0.25
    # Persisted index segments (docs/index.md); local to each replica. Default <data_dir>/index.
    index_dir: Path | None = None
    # How often new registrations are checked for a segment, and the manifest for new ones.
    index_segment_interval: float = 10.0
    log_format: str = "json"  # json | text
    log_level: str = "INFO"

    # Anchors (none unless configured): an RFC 3161 TSA and/or an EVM chain are
    # handed the latest checkpoint every *_interval seconds, off the seal path; a
    # failed attempt is retried after anchor_retry_base · 2^(n-1) s (jittered,
    # at most anchor_retry_max).
    tsa_url: str | None = None
    tsa_interval: float = 60.0
    tsa_timeout: float = 30.0
    tsa_ca_file: Path | None = None  # the TSA's roots: tokens are verified before storing
    evm_rpc_url: str | None = None
    evm_key_file: Path | None = None  # default: <data_dir>/evm.key (hex, mode 0600)
    evm_chain_id: int | None = None  # refuse an RPC serving another chain
    evm_interval: float = 3600.0
    evm_timeout: float = 60.0
    evm_confirmations: int = 3
    evm_to: str | None = None  # default: the key's own address
    anchor_retry_base: float = 5.0
    anchor_retry_max: float = 3600.0

    def __post_init__(self) -> None:
        if not MIN_THUMBNAIL_SIZE <= self.thumbnail_size <= MAX_THUMBNAIL_SIZE:
            raise ValueError(
                f"thumbnail size must be {MIN_THUMBNAIL_SIZE}-{MAX_THUMBNAIL_SIZE} pixels, "
                f"got {self.thumbnail_size}"
            )
        if self.index_segment_interval <= 0:
            raise ValueError("the index segment interval must be positive")
        if min(self.tsa_interval, self.evm_interval) <= 0 or self.evm_confirmations < 0:
            raise ValueError("anchor intervals must be positive and confirmations >= 0")
        if min(self.webhook_concurrency, self.webhook_seller_concurrency) < 1:
            raise ValueError("webhook concurrency limits must be at least 1")
        if self.header_timeout <= 0 or self.body_grace < 0 or self.body_min_rate < 0:
            raise ValueError("header timeout must be positive, body grace and rate >= 0")
        if self.max_upload_parts < 1:
            raise ValueError("max upload parts must be at least 1")
        if self.processes < 1:
            raise ValueError(f"processes must be at least 1, got {self.processes}")
        if self.log_format not in ("json", "text"):
            raise ValueError(f"log format {self.log_format!r} is neither 'json' nor 'text'")
        if self.database_url is not None and not self.database_url.startswith(
            ("postgresql://", "postgres://")
        ):
            raise ValueError("SHOTSTAMP_DATABASE_URL must be a postgresql:// URL")

    @property
    def database_path(self) -> Path:
        return self.data_dir / "shotstamp.db"

    @property
    def index_path(self) -> Path:
        """Where this process keeps (or shares, with others on the machine) index segments."""
        return self.index_dir or self.data_dir / "index"

    @property
    def key_dir(self) -> Path:
        """Where `signing-key rotate` writes keys and the service looks for them."""
        return self.signing_key_dir or self.data_dir / "keys"

    @property
    def evm_key_path(self) -> Path:
        """The EVM anchor's private key (hex, 0600), created on first use if missing."""
        return self.evm_key_file or self.data_dir / "evm.key"

    @property
    def legacy_key_path(self) -> Path:
        """The first release's single key file, still read if present."""
        return self.data_dir / "signing.key"

    @property
    def shared_store(self) -> bool:
        """True when several replicas may share the store (PostgreSQL)."""
        return self.database_url is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Defaults, then SHOTSTAMP_* variables, then explicit overrides (flags)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = ENV_VARS.get(f.name)
            if name and name in env:
                values[f.name] = _parse(f.type, env[name], name)
        config = cls(**values)
        return replace(config, **{k: v for k, v in overrides.items() if v is not None})


# One place that names every environment variable (the README's table mirrors it).
ENV_VARS: dict[str, str] = {
    "data_dir": "SHOTSTAMP_DATA_DIR",
    "host": "SHOTSTAMP_HOST",
    "port": "SHOTSTAMP_PORT",
    "origin": "SHOTSTAMP_ORIGIN",
    "signing_key_dir": "SHOTSTAMP_SIGNING_KEY_DIR",
    "signing_key_file": "SHOTSTAMP_SIGNING_KEY_FILE",
    "seal_interval": "SHOTSTAMP_SEAL_INTERVAL",
    "max_upload_bytes": "SHOTSTAMP_MAX_UPLOAD_BYTES",
    "max_pixels": "SHOTSTAMP_MAX_PIXELS",
    "max_frames": "SHOTSTAMP_MAX_FRAMES",
    "fingerprint_workers": "SHOTSTAMP_FINGERPRINT_WORKERS",
    "processes": "SHOTSTAMP_PROCESSES",
    "wait_timeout": "SHOTSTAMP_WAIT_TIMEOUT",
    "thumbnails": "SHOTSTAMP_THUMBNAILS",
    "thumbnail_size": "SHOTSTAMP_THUMBNAIL_SIZE",
    "webhook_timeout": "SHOTSTAMP_WEBHOOK_TIMEOUT",
    "webhook_retry_base": "SHOTSTAMP_WEBHOOK_RETRY_BASE",
    "webhook_retry_max": "SHOTSTAMP_WEBHOOK_RETRY_MAX",
    "webhook_max_attempts": "SHOTSTAMP_WEBHOOK_MAX_ATTEMPTS",
    "webhook_allow_private": "SHOTSTAMP_WEBHOOK_ALLOW_PRIVATE",
    "webhook_connect_timeout": "SHOTSTAMP_WEBHOOK_CONNECT_TIMEOUT",
    "webhook_concurrency": "SHOTSTAMP_WEBHOOK_CONCURRENCY",
    "webhook_seller_concurrency": "SHOTSTAMP_WEBHOOK_SELLER_CONCURRENCY",
    "shutdown_timeout": "SHOTSTAMP_SHUTDOWN_TIMEOUT",
    "max_text_length": "SHOTSTAMP_MAX_TEXT_LENGTH",
    "max_inflight_uploads": "SHOTSTAMP_MAX_INFLIGHT_UPLOADS",
    "upload_rate": "SHOTSTAMP_UPLOAD_RATE",
    "upload_burst": "SHOTSTAMP_UPLOAD_BURST",
    "read_rate": "SHOTSTAMP_READ_RATE",
    "read_burst": "SHOTSTAMP_READ_BURST",
    "header_timeout": "SHOTSTAMP_HEADER_TIMEOUT",
    "body_min_rate": "SHOTSTAMP_BODY_MIN_RATE",
    "body_grace": "SHOTSTAMP_BODY_GRACE",
    "max_uploads_per_key": "SHOTSTAMP_MAX_UPLOADS_PER_KEY",
    "max_upload_parts": "SHOTSTAMP_MAX_UPLOAD_PARTS",
    "tsa_url": "SHOTSTAMP_TSA_URL",
    "tsa_interval": "SHOTSTAMP_TSA_INTERVAL",
    "tsa_timeout": "SHOTSTAMP_TSA_TIMEOUT",
    "tsa_ca_file": "SHOTSTAMP_TSA_CA_FILE",
    "evm_rpc_url": "SHOTSTAMP_EVM_RPC_URL",
    "evm_key_file": "SHOTSTAMP_EVM_KEY_FILE",
    "evm_chain_id": "SHOTSTAMP_EVM_CHAIN_ID",
    "evm_interval": "SHOTSTAMP_EVM_INTERVAL",
    "evm_timeout": "SHOTSTAMP_EVM_TIMEOUT",
    "evm_confirmations": "SHOTSTAMP_EVM_CONFIRMATIONS",
    "evm_to": "SHOTSTAMP_EVM_TO",
    "anchor_retry_base": "SHOTSTAMP_ANCHOR_RETRY_BASE",
    "anchor_retry_max": "SHOTSTAMP_ANCHOR_RETRY_MAX",
    "database_url": "SHOTSTAMP_DATABASE_URL",
    "database_pool_size": "SHOTSTAMP_DATABASE_POOL_SIZE",
    "index_follow_interval": "SHOTSTAMP_INDEX_FOLLOW_INTERVAL",
    "index_dir": "SHOTSTAMP_INDEX_DIR",
    "index_segment_interval": "SHOTSTAMP_INDEX_SEGMENT_INTERVAL",
    "log_format": "SHOTSTAMP_LOG_FORMAT",
    "log_level": "SHOTSTAMP_LOG_LEVEL",
}

_ON = {"on", "true", "yes", "1"}
_OFF = {"off", "false", "no", "0"}


def _parse(kind: Any, raw: str, name: str) -> Any:
    kind = str(kind)
    if kind == "bool":
        word = raw.strip().lower()
        if word not in _ON | _OFF:
            raise ValueError(f"{name}={raw!r} is not on or off")
        return word in _ON
    try:
        if "Path" in kind:
            return Path(raw)
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name}={raw!r} is not a valid {kind}") from exc
    return raw
