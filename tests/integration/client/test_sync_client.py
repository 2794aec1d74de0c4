"""The sync `Client` against a real `shotstamp-service` process."""

from __future__ import annotations

import asyncio
import threading

import pytest

from shotstamp import (
    AsyncClient,
    Client,
    ConflictError,
    NotFoundError,
    Registration,
    verify_proof,
)
from tests.kit import imagegen


@pytest.fixture(scope="module")
def keys(service_process):
    return {"acme": service_process.key("acme"), "thief": service_process.key("thief")}


def test_register_wait_and_verify_offline(service_process, keys, tmp_path):
    photo = tmp_path / "kettle.jpg"
    photo.write_bytes(imagegen.jpeg(401))
    with Client(service_process.url, api_key=keys["acme"]) as client:
        reg = client.register(photo, wait=True, reference="SKU-9")
        assert isinstance(reg, Registration) and reg.created and reg.sealed
        assert reg.proof is not None
        log_keys = client.keys()
        verify_proof(reg.proof, keys=log_keys.vkeys, image=photo)
        assert client.get(reg.id).reference == "SKU-9"
        assert client.proof(reg.id).leaf_index == reg.proof.leaf_index
        checkpoint = client.checkpoint()
        assert checkpoint.tree_size >= reg.proof.tree_size
        assert client.last_checkpoint == checkpoint
        checkpoint.verify(log_keys.vkeys)
        with pytest.raises(NotFoundError):
            client.get("01NOSUCHREGISTRATION00000")
    with Client(service_process.url, api_key=keys["thief"]) as thief:
        with pytest.raises(ConflictError) as info:
            thief.register(imagegen.recompressed_copy(photo.read_bytes()))
        assert info.value.matches[0]["registration_id"] == reg.id
        assert thief.check(photo).copies[0].registration_id == reg.id


def test_one_session_one_background_thread(service_process, keys):
    before = {t.name for t in threading.enumerate()}
    client = Client(service_process.url, api_key=keys["acme"])
    client.checkpoint()
    client.keys()
    threads = [t for t in threading.enumerate() if t.name == "shotstamp-client"]
    assert len(threads) == 1 and "shotstamp-client" not in before
    session = client._async._session  # type: ignore[union-attr]
    client.checkpoint()
    assert client._async._session is session  # type: ignore[union-attr]
    client.close()
    assert not threads[0].is_alive()
    assert session.closed


def test_register_many_is_an_iterator_of_results(service_process, keys, tmp_path):
    paths = []
    for seed in range(410, 416):
        path = tmp_path / f"{seed}.jpg"
        path.write_bytes(imagegen.jpeg(seed))
        paths.append(path)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    paths.append(tmp_path / "bad.jpg")
    with Client(service_process.url, api_key=keys["acme"]) as client:
        results = list(client.register_many(paths, concurrency=3, wait=True))
        outcomes = sorted(r.outcome for r in results)
        assert outcomes == ["error"] + ["new"] * 6
        for result in results:
            if result.ok:
                assert result.registration.sealed and result.registration.proof is not None
        # Breaking out early stops the rest; the client stays usable.
        more = []
        for seed in range(420, 440):
            path = tmp_path / f"{seed}.jpg"
            path.write_bytes(imagegen.jpeg(seed, size=(200, 150)))
            more.append(path)
        _, health = service_process.get("/healthz")
        before = health["indexed"]
        stream = client.register_many(more, concurrency=2)
        first = next(stream)
        stream.close()
        assert first.outcome == "new"
        assert client.get(first.registration.id).id == first.registration.id
    _, health = service_process.get("/healthz")
    # At most the two uploads in flight when it was closed: the tail never left.
    assert 1 <= health["indexed"] - before <= 3


def test_the_sync_client_works_inside_a_running_event_loop(service_process, keys):
    async def main() -> int:
        # A plugin calling the sync API from async code (a notebook, a web app).
        with Client(service_process.url, api_key=keys["acme"]) as client:
            return client.checkpoint().tree_size

    assert asyncio.run(main()) >= 0


def test_sync_and_async_clients_have_the_same_methods():
    public = {n for n in dir(AsyncClient) if not n.startswith("_")} - {"aclose"}
    assert public == {n for n in dir(Client) if not n.startswith("_")} - {"close"}
    assert {"register", "check", "get", "proof", "checkpoint", "register_many"} <= public


def test_a_dropped_client_closes_its_session_and_thread(service_process, keys):
    import gc

    client = Client(service_process.url, api_key=keys["acme"])
    client.checkpoint()
    session = client._async._session  # type: ignore[union-attr]
    (thread,) = [t for t in threading.enumerate() if t.name == "shotstamp-client"]
    del client
    gc.collect()
    thread.join(timeout=10)
    assert not thread.is_alive() and session.closed
