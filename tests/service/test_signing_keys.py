"""Signing keys: first start, rotation followed by running sealers, replicas, refusals."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shotstamp.checkpoint import NoteVerifier, format_vkey, open_note
from shotstamp.errors import VerificationError
from shotstamp_service.records import NewRegistration, format_time, new_registration_id, utc_now
from shotstamp_service.sealer import Sealer
from shotstamp_service.signer import (
    LogSigner,
    SigningKeys,
    SigningKeyUnavailable,
    load_or_create_key,
)
from shotstamp_service.store.sqlite import SQLiteStore

ORIGIN = "test.example/log"


def registration(n: int) -> NewRegistration:
    return NewRegistration(
        id=new_registration_id(),
        seller="s",
        sha256=f"{n:064x}",
        perceptual={"phash": f"{n:016x}"},
        received_at=format_time(utc_now()),
        width=10,
        height=10,
    )


@pytest.fixture
async def store(tmp_path):
    store = SQLiteStore(tmp_path / "db.sqlite")
    await store.open()
    yield store
    await store.close()


def verifier(record) -> NoteVerifier:
    return NoteVerifier.from_vkey(format_vkey(record.name, record.public_key))


async def test_first_start_creates_a_private_key_and_records_it(store, tmp_path):
    keys = SigningKeys(store, ORIGIN, key_dir=tmp_path / "keys")
    await keys.open()
    (path,) = (tmp_path / "keys").glob("signing-*.key")
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "keys").stat().st_mode & 0o777 == 0o700
    (record,) = await keys.records()
    assert record.active and record.name == ORIGIN and record.algorithm == "ed25519"
    signer = await keys.current()
    assert path.name == f"signing-{signer.key_id}.key" == f"signing-{record.key_id}.key"
    # Opening again (a restart) reuses it.
    again = SigningKeys(store, ORIGIN, key_dir=tmp_path / "keys")
    await again.open()
    assert (await again.current()).key_id == signer.key_id
    assert len(await again.records()) == 1


async def test_rotation_reaches_a_running_sealer_at_its_next_seal(store, tmp_path):
    service_keys = SigningKeys(store, ORIGIN, key_dir=tmp_path / "keys")
    await service_keys.open()
    sealer = Sealer(store, service_keys)
    await sealer.load()
    await store.add_registration(registration(1))
    before = await sealer.seal_once()

    # The admin command runs in another process: its own SigningKeys, same store and directory.
    admin = SigningKeys(store, ORIGIN, key_dir=tmp_path / "keys")
    new, path = await admin.rotate()
    assert path.exists() and path.stat().st_mode & 0o777 == 0o600

    await store.add_registration(registration(2))
    after = await sealer.seal_once()
    assert before.key_id != new.key_id
    assert after.key_id == new.key_id
    old, current = await store.list_signing_keys()
    assert old.key_id == before.key_id and old.not_after == current.not_before
    assert current.active and not old.active
    # Each checkpoint verifies under the key it names, and not under the other.
    open_note(before.note, [verifier(old)])
    open_note(after.note, [verifier(current)])
    with pytest.raises(VerificationError):
        open_note(before.note, [verifier(current)])


async def test_a_replica_without_the_new_key_stops_signing_rather_than_sign_with_the_old(
    store, tmp_path
):
    shared = SigningKeys(store, ORIGIN, key_dir=tmp_path / "a")
    await shared.open()
    first = await shared.current()
    # The rotation writes its key somewhere this replica does not look.
    await SigningKeys(store, ORIGIN, key_dir=tmp_path / "b").rotate()
    with pytest.raises(SigningKeyUnavailable, match="has no private key"):
        await shared.current()
    # Copying the file over is all it takes.
    (new_file,) = (tmp_path / "b").glob("*.key")
    (tmp_path / "a" / new_file.name).write_bytes(new_file.read_bytes())
    (tmp_path / "a" / new_file.name).chmod(0o600)
    assert (await shared.current()).key_id != first.key_id


async def test_the_foundation_signing_key_is_adopted(store, tmp_path):
    legacy = tmp_path / "signing.key"
    key = load_or_create_key(legacy)
    sealer = Sealer(store, LogSigner(ORIGIN, key))  # a log sealed before keys were recorded
    await sealer.load()
    await store.add_registration(registration(1))
    await sealer.seal_once()
    keys = SigningKeys(store, ORIGIN, key_dir=tmp_path / "keys", legacy_file=legacy)
    await keys.open()
    (record,) = await keys.records()
    assert record.public_key == key.public_key().public_bytes_raw()
    # Active since the log's first checkpoint, which it signed.
    assert record.not_before == format_time((await store.get_checkpoint(0)).timestamp)
    assert not (tmp_path / "keys").exists()  # nothing generated


async def test_a_key_file_is_created_where_configured(store, tmp_path):
    key_file = tmp_path / "shared" / "log.key"
    keys = SigningKeys(store, ORIGIN, key_dir=tmp_path / "keys", key_file=key_file)
    await keys.open()
    assert key_file.stat().st_mode & 0o777 == 0o600
    replica = SigningKeys(store, ORIGIN, key_dir=tmp_path / "other", key_file=key_file)
    await replica.open()
    assert (await replica.current()).key_id == (await keys.current()).key_id


async def test_a_store_signed_by_another_key_is_refused(store, tmp_path):
    sealer = Sealer(store, LogSigner(ORIGIN, Ed25519PrivateKey.generate()))
    await sealer.load()
    keys = SigningKeys(store, ORIGIN, key_dir=tmp_path / "keys")
    with pytest.raises(SigningKeyUnavailable, match="signed by key"):
        await keys.open()
    assert await store.list_signing_keys() == []


async def test_changing_the_origin_of_an_existing_log_is_refused(store, tmp_path):
    await SigningKeys(store, ORIGIN, key_dir=tmp_path / "keys").open()
    with pytest.raises(SigningKeyUnavailable, match="origin never changes"):
        await SigningKeys(store, "other.example/log", key_dir=tmp_path / "keys").open()


async def test_a_key_readable_by_others_is_refused(store, tmp_path):
    keys = SigningKeys(store, ORIGIN, key_dir=tmp_path / "keys")
    await keys.open()
    (path,) = (tmp_path / "keys").glob("*.key")
    path.chmod(0o644)
    with pytest.raises(PermissionError):
        await SigningKeys(store, ORIGIN, key_dir=tmp_path / "keys").open()


async def test_two_keys_and_no_record_is_ambiguous(store, tmp_path):
    for _ in range(2):
        key = Ed25519PrivateKey.generate()
        load_or_create_key(tmp_path / "keys" / f"{LogSigner(ORIGIN, key).key_id}.key")
    with pytest.raises(SigningKeyUnavailable, match="holds 2"):
        await SigningKeys(store, ORIGIN, key_dir=tmp_path / "keys").open()
