"""Fixtures for the anchor tests: a real TSA (openssl), a real EVM chain (py-evm), a service
on each store (SQLite, PostgreSQL).

Nothing here is skipped: openssl comes from scripts/system-deps and the
chain and rfc3161-client from the `dev` extra, so a missing piece fails.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kit.chainkit import ChainServer, chain_server, write_key
from tests.kit.servicekit import Service, service_settings
from tests.kit.tsakit import TsaPki, TsaServer, make_tsa_pki, tsa_server


@pytest.fixture(autouse=True, scope="module")
def _keep_the_recursion_limit() -> Iterator[None]:
    """eth_account, web3 and py-evm raise the recursion limit to 100,000 when first
    imported; later tests that expect RecursionError (deeply nested JSON) would
    overflow the C stack instead. Put it back once these tests are done."""
    limit = sys.getrecursionlimit()
    yield
    sys.setrecursionlimit(limit)


@pytest.fixture(scope="session")
def tsa_pki(tmp_path_factory: pytest.TempPathFactory) -> TsaPki:
    return make_tsa_pki(tmp_path_factory.mktemp("tsa-pki"))


@pytest.fixture(scope="session")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> TsaPki:
    """A second CA and TSA: tokens it signs must not verify under `tsa_pki`'s root."""
    return make_tsa_pki(tmp_path_factory.mktemp("other-pki"), ca_name="another CA")


@pytest.fixture
def tsa(tsa_pki: TsaPki) -> Iterator[TsaServer]:
    with tsa_server(tsa_pki) as server:
        yield server


@pytest.fixture
def chain() -> Iterator[ChainServer]:
    with chain_server() as server:
        yield server


@pytest.fixture
def evm_key(tmp_path: Path, chain: ChainServer) -> Any:
    """A funded account's key file, mode 0600, as the service reads it."""
    from eth_account import Account

    account = Account.create()
    chain.fund(account.address)
    path = tmp_path / "evm.key"
    write_key(path, bytes(account.key))
    return account


@pytest.fixture
def anchored_config(
    tmp_path: Path, store_target: Any, tsa: TsaServer, chain: ChainServer, evm_key: Any
) -> Any:
    """The tests' service settings on this test's store (SQLite or PostgreSQL), anchored."""
    return service_settings(
        tmp_path,
        store_target.url,
        tsa_url=tsa.url,
        tsa_ca_file=tsa.pki.ca_cert,
        tsa_interval=0.5,
        tsa_timeout=5,
        evm_rpc_url=chain.url,
        evm_key_file=tmp_path / "evm.key",
        evm_chain_id=chain.chain_id,
        evm_interval=0.5,
        evm_timeout=10,
        evm_confirmations=0,
        anchor_retry_base=0.2,
        anchor_retry_max=1.0,
    )


@pytest.fixture
async def anchored_service(
    aiohttp_client: Callable[[Any], Awaitable[Any]], anchored_config: Any
) -> AsyncIterator[Service]:
    from shotstamp_service.http.app import create_app

    app = create_app(anchored_config)
    client = await aiohttp_client(app)
    yield Service(client=client, app=app)
