"""The sealer's signing key file (the sealer over real stores: tests/integration/service)."""

from __future__ import annotations

import pytest

from shotstamp_service.log.signer import load_or_create_key


def test_signing_key_is_created_private_and_reused(tmp_path):
    path = tmp_path / "keys" / "signing.key"
    key = load_or_create_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    again = load_or_create_key(path)
    assert again.public_key().public_bytes_raw() == key.public_key().public_bytes_raw()
    path.chmod(0o644)
    with pytest.raises(PermissionError):
        load_or_create_key(path)
