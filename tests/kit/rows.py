"""Store rows for tests that talk to a store directly: one registration per number `n`."""

from __future__ import annotations

from typing import Any

from shotstamp_service.records import NewRegistration, format_time, new_registration_id, utc_now


def new_registration(n: int, **fields: Any) -> NewRegistration:
    """A registration of seller "s" whose SHA-256 and pHash are `n` (unique per `n`)."""
    values: dict[str, Any] = dict(
        id=new_registration_id(),
        seller="s",
        sha256=f"{n:064x}",
        perceptual={"phash": f"{n:016x}"},
        received_at=format_time(utc_now()),
        width=10,
        height=10,
    )
    values.update(fields)
    return NewRegistration(**values)
