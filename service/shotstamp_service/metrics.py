"""Prometheus metrics of one replica, served at `GET /metrics`.

Counters and histograms are updated as things happen; the gauges (log size,
pending queue, index size, whether this replica seals) are read when scraped.
Each application gets its own registry, so several apps in one process (the
tests) do not share counts.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from shotstamp_service.records import CheckpointRecord, Registration

__all__ = ["CONTENT_TYPE", "UPLOAD_OUTCOMES", "Metrics", "upload_outcome"]

T = TypeVar("T")

# The classic text format every Prometheus version scrapes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

UPLOAD_OUTCOMES = ("created", "existing", "conflict", "rejected", "unauthorized", "error")


def upload_outcome(status: int) -> str:
    """The outcome label of a `POST /v1/registrations` answered with `status`."""
    if status == 201:
        return "created"
    if status == 200:
        return "existing"
    if status == 409:
        return "conflict"
    if status in (401, 403):
        return "unauthorized"
    if status >= 500:
        return "error"
    return "rejected"  # not an image, too large, malformed, rate limited


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.uploads = Counter(
            "shotstamp_uploads", "Registration uploads by outcome", ["outcome"], registry=r
        )
        for outcome in UPLOAD_OUTCOMES:
            self.uploads.labels(outcome)
        self.conflicts = Counter(
            "shotstamp_conflicts",
            "Uploads refused as copies of another seller's registration, by the deciding match",
            ["match"],
            registry=r,
        )
        for match in ("exact", "near_duplicate"):
            self.conflicts.labels(match)
        self.fingerprint_seconds = Histogram(
            "shotstamp_fingerprint_seconds",
            "Time to decode and fingerprint one upload",
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
            registry=r,
        )
        self.seal_seconds = Histogram(
            "shotstamp_seal_seconds",
            "Time one seal takes: read pending, hash, sign, commit",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.seal_delay_seconds = Histogram(
            "shotstamp_seal_delay_seconds",
            "From a registration's received_at to the checkpoint that sealed it",
            buckets=(0.1, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 3, 5, 10, 30),
            registry=r,
        )
        self.sealed = Counter(
            "shotstamp_sealed_registrations", "Registrations this replica sealed", registry=r
        )
        self.log_size = Gauge(
            "shotstamp_log_size", "Leaves in the newest checkpoint this replica knows", registry=r
        )
        self.pending = Gauge(
            "shotstamp_pending_registrations", "Registrations stored but not yet sealed", registry=r
        )
        self.index_size = Gauge(
            "shotstamp_index_size",
            "Fingerprints in this replica's near-duplicate index",
            registry=r,
        )
        self.sealing = Gauge(
            "shotstamp_sealing", "1 if this replica holds the sealer lock", registry=r
        )

    def timed(self, work: Callable[[bytes], Awaitable[T]]) -> Callable[[bytes], Awaitable[T]]:
        """`work` (fingerprinting an upload), observed into the fingerprint histogram."""

        async def timed_work(data: bytes) -> T:
            started = time.perf_counter()
            try:
                return await work(data)
            finally:
                self.fingerprint_seconds.observe(time.perf_counter() - started)

        return timed_work

    def observe_seal(
        self, checkpoint: CheckpointRecord, sealed: Sequence[Registration], seconds: float
    ) -> None:
        self.seal_seconds.observe(seconds)
        self.sealed.inc(len(sealed))
        sealed_at = checkpoint.timestamp_ns / 1e9
        for reg in sealed:
            received = datetime.fromisoformat(reg.received_at).timestamp()
            self.seal_delay_seconds.observe(max(0.0, sealed_at - received))

    def render(
        self, *, log_size: int, pending: int, index_size: int, sealing: bool
    ) -> bytes:
        self.log_size.set(log_size)
        self.pending.set(pending)
        self.index_size.set(index_size)
        self.sealing.set(1 if sealing else 0)
        return generate_latest(self.registry)
