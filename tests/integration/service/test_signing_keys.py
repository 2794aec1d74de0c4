"""Signing keys in each real store (SQLite, PostgreSQL): first start, rotation followed
by running sealers, replicas sharing a key directory, refusals."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shotstamp._checkpoint import NoteVerifier, format_vkey, open_note
from shotstamp._exceptions import VerificationError
from shotstamp_service.log.sealer import Sealer
from shotstamp_service.log.signer import (
    LogSigner,
    SigningKeys,
    SigningKeyUnavailable,
    load_or_create_key,
    write_new_key,
)
from shotstamp_service.records import format_time, utc_now
from shotstamp_service.store import ActiveKeyChanged
from shotstamp_service.store.postgres import PostgresStore
from tests.kit.rows import new_registration as registration

ORIGIN = "test.example/log"


@pytest.fixture
async def store(store_target):
    store = store_target.make()
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


async def test_the_first_release_signing_key_is_adopted(store, tmp_path):
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


# --- a store several replicas share: no replica ever makes a key -------------------------


async def test_a_replica_on_a_shared_store_never_makes_a_key(store, tmp_path):
    shared = tmp_path / "shared"
    with pytest.raises(SigningKeyUnavailable, match="SHOTSTAMP_SIGNING_KEY_DIR") as exc:
        await SigningKeys(store, ORIGIN, key_dir=shared, create=False).open()
    assert "must share one key" in str(exc.value) and "signing-key rotate" in str(exc.value)
    missing = tmp_path / "secret" / "signing.key"
    with pytest.raises(SigningKeyUnavailable, match="SHOTSTAMP_SIGNING_KEY_FILE") as exc:
        await SigningKeys(store, ORIGIN, key_dir=shared, key_file=missing, create=False).open()
    assert str(missing) in str(exc.value)
    assert not shared.exists() and not missing.exists()
    assert await store.list_signing_keys() == []


async def test_rotate_makes_the_first_key_of_a_new_shared_log(store, tmp_path):
    shared = tmp_path / "shared"
    admin = SigningKeys(store, ORIGIN, key_dir=shared, create=False)
    await admin.open_for_rotation()  # nothing to check yet, and nothing made
    assert not shared.exists()
    record, path = await admin.rotate()
    assert path == shared / f"signing-{record.key_id}.key"
    assert (await store.list_signing_keys()) == [record]  # one key, not an adopted one retired
    replicas = [SigningKeys(store, ORIGIN, key_dir=shared, create=False) for _ in range(3)]
    await asyncio.gather(*(replica.open() for replica in replicas))
    assert {(await replica.current()).key_id for replica in replicas} == {record.key_id}
    assert len(list(shared.iterdir())) == 1


async def test_replicas_adopting_one_shared_key_together_record_it_once(postgres_url, tmp_path):
    shared = tmp_path / "shared"
    _, key = write_new_key(shared, ORIGIN)
    stores = [PostgresStore(postgres_url) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        replicas = [SigningKeys(s, ORIGIN, key_dir=shared, create=False) for s in stores]
        await asyncio.gather(*(replica.open() for replica in replicas))
        (record,) = await stores[0].list_signing_keys()
        assert record.public_key == key.public_key().public_bytes_raw()
        assert {(await r.current()).key_id for r in replicas} == {record.key_id}
        # A replica given another key is refused rather than signing a log of its own.
        write_new_key(tmp_path / "elsewhere", ORIGIN)
        stray = SigningKeys(stores[0], ORIGIN, key_dir=tmp_path / "elsewhere", create=False)
        with pytest.raises(SigningKeyUnavailable, match="has no private key"):
            await stray.open()
        assert len(await stores[0].list_signing_keys()) == 1
    finally:
        for s in stores:
            await s.close()


async def test_of_rotations_racing_from_one_active_key_exactly_one_wins(store, tmp_path):
    keys = SigningKeys(store, ORIGIN, key_dir=tmp_path / "keys")
    await keys.open()
    (first,) = await store.list_signing_keys()
    since = format_time(utc_now())
    candidates = [LogSigner(ORIGIN, Ed25519PrivateKey.generate()).record(since) for _ in range(8)]
    results = await asyncio.gather(
        *(store.activate_signing_key(c, replacing=first.key_id) for c in candidates),
        return_exceptions=True,
    )
    won = [c for c, r in zip(candidates, results, strict=True) if r is None]
    assert len(won) == 1, results
    assert all(isinstance(r, ActiveKeyChanged) for r in results if r is not None)
    listed = await store.list_signing_keys()
    assert [k.key_id for k in listed] == [first.key_id, won[0].key_id]
    assert [k.key_id for k in listed if k.active] == [won[0].key_id]
    assert listed[0].not_after == since


async def _until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_sealer_without_the_active_key_stops_sealing_and_says_why(store, tmp_path, caplog):
    keys = SigningKeys(store, ORIGIN, key_dir=tmp_path / "a")
    await keys.open()
    sealer = Sealer(store, keys, interval=0.05)
    await sealer.load()
    task = asyncio.create_task(sealer.run())
    try:
        new, new_path = await SigningKeys(store, ORIGIN, key_dir=tmp_path / "b").rotate()
        with caplog.at_level(logging.ERROR, logger="shotstamp_service.log.sealer"):
            reg = await store.add_registration(registration(1))
            await asyncio.sleep(0.5)  # ten ticks
        assert (await store.get_registration(reg.id)).leaf_index is None
        assert not sealer.leading
        why = [r.getMessage() for r in caplog.records if "cannot seal" in r.getMessage()]
        assert len(why) == 1 and new.key_id in why[0]  # said once, not every tick
        shutil.copy(new_path, tmp_path / "a" / new_path.name)
        await _until(lambda: sealer.last_checkpoint.tree_size == 1)
        assert sealer.last_checkpoint.key_id == new.key_id
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_replica_without_a_rotated_key_hands_sealing_to_one_with_it(
    postgres_url, tmp_path
):
    """Two replicas on one database: A has only a copy of the first key, B reads the
    shared directory the rotation writes to. A seals until the rotation, then lets go of
    the sealer lock and B signs with the new key; A takes over again once it has it."""
    shared, own = tmp_path / "shared", tmp_path / "a-only"
    first_path, _ = write_new_key(shared, ORIGIN)
    own.mkdir(mode=0o700)
    shutil.copy(first_path, own / first_path.name)
    stores = [PostgresStore(postgres_url) for _ in range(3)]
    await asyncio.gather(*(s.open() for s in stores))
    a_keys = SigningKeys(stores[0], ORIGIN, key_dir=own, create=False)
    b_keys = SigningKeys(stores[1], ORIGIN, key_dir=shared, create=False)
    await a_keys.open()
    await b_keys.open()
    a = Sealer(stores[0], a_keys, interval=0.1, follow_interval=0.02)
    b = Sealer(stores[1], b_keys, interval=0.1, follow_interval=0.02)
    await a.load()
    await b.load()
    tasks = [asyncio.create_task(a.run())]
    try:
        await _until(lambda: a.leading)
        tasks.append(asyncio.create_task(b.run()))
        admin = stores[2]
        await admin.add_registration(registration(1))
        await _until(lambda: b.tree_size == 1)
        assert a.leading and not b.leading
        first_key = (await admin.latest_checkpoint()).key_id

        rotated, rotated_path = await SigningKeys(admin, ORIGIN, key_dir=shared).rotate()
        await admin.add_registration(registration(2))
        await _until(lambda: b.leading and not a.leading)
        await _until(lambda: a.tree_size == 2)  # A follows the checkpoint B signed
        latest = await admin.latest_checkpoint()
        assert latest.key_id == rotated.key_id != first_key

        # With the new key copied over, A may seal again: B goes away, A takes over.
        shutil.copy(rotated_path, own / rotated_path.name)
        tasks[1].cancel()
        await asyncio.gather(tasks[1], return_exceptions=True)
        await stores[1].release_sealer_lock()
        await _until(lambda: a.leading)
        await admin.add_registration(registration(3))
        await _until(lambda: a.tree_size == 3)
        assert (await admin.latest_checkpoint()).key_id == rotated.key_id

        # One log throughout: every checkpoint verifies under the key it names.
        listed = {k.key_id: k for k in await admin.list_signing_keys()}
        for size in (1, 2, 3):
            cp = await admin.get_checkpoint(size)
            open_note(cp.note, [verifier(listed[cp.key_id])])
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for s in stores:
            await s.close()
