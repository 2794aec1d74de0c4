"""The anchor runner over each real store (SQLite, PostgreSQL), stepped by hand:
restarts, leases, replicas.

Each test builds a log with the real sealer, then drives `AnchorRunner.tick()`
(schedule, then one attempt of each due job) against the real TSA and chain,
with a clock it controls where time matters. "Restart" is a new store, anchor
and runner on the same database, as after a process restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shotstamp_service.anchors import AnchorRunner
from shotstamp_service.anchors.evm import EvmAnchor, load_or_create_evm_key
from shotstamp_service.anchors.rfc3161 import Rfc3161Anchor
from shotstamp_service.log.sealer import Sealer
from shotstamp_service.log.signer import LogSigner
from shotstamp_service.records import NewRegistration, format_time, new_registration_id, utc_now

SIGNER = LogSigner("anchors.test/log", Ed25519PrivateKey.generate())


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def registration(n: int) -> NewRegistration:
    return NewRegistration(
        id=new_registration_id(),
        seller="acme",
        sha256=f"{n:064x}",
        perceptual={"phash": f"{n:016x}"},
        received_at=format_time(utc_now()),
        width=10,
        height=10,
    )


class Log:
    """A store and sealer on one database (`target`: the test's `store_target`)."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.store = target.make()
        self.sealer = Sealer(self.store, SIGNER)
        self.count = 0

    async def open(self) -> None:
        await self.store.open()
        await self.sealer.load()

    async def grow(self, leaves: int = 1) -> int:
        for _ in range(leaves):
            self.count += 1
            await self.store.add_registration(registration(self.count))
        checkpoint = await self.sealer.seal_once()
        assert checkpoint is not None
        return checkpoint.tree_size


@pytest.fixture
async def log(store_target: Any) -> AsyncIterator[Log]:
    opened = Log(store_target)
    await opened.open()
    yield opened
    await opened.store.close()


def tsa_anchor(tsa: Any, *, interval: float = 60, timeout: float = 5, pki: Any = None) -> Any:
    from shotstamp._rfc3161 import load_tsa_certificates

    return Rfc3161Anchor(
        "tsa",
        url=tsa.url,
        interval=interval,
        timeout=timeout,
        certificates=load_tsa_certificates([(pki or tsa.pki).ca_cert]),
    )


def evm_anchor(chain: Any, key_file: Path, **options: Any) -> EvmAnchor:
    settings: dict[str, Any] = {
        "interval": 60,
        "timeout": 10,
        "chain_id": chain.chain_id,
        "confirmations": 0,
        "poll": 0,
    }
    settings.update(options)
    return EvmAnchor(
        "chain", rpc_url=chain.url, account=load_or_create_evm_key(key_file), **settings
    )


async def test_a_signed_transaction_survives_a_restart_and_is_paid_for_once(
    log, chain, evm_key, tmp_path
):
    clock = Clock()
    size = await log.grow(3)
    runner = AnchorRunner(log.store, [evm_anchor(chain, tmp_path / "evm.key")], clock=clock)
    await runner.start(background=False)
    await runner.tick()  # (1) signs and stores the transaction, sends nothing
    (job,) = await log.store.list_anchor_jobs(anchor="chain")
    assert job.status == "pending" and job.tree_size == size
    assert job.progress is not None and "eth_sendRawTransaction" not in chain.requests
    signed_hash = job.progress["transaction"]
    await runner.stop()
    await log.store.close()  # the process dies here

    restarted = Log(log.target)
    await restarted.open()
    runner = AnchorRunner(
        restarted.store,
        [evm_anchor(chain, tmp_path / "evm.key", confirmations=2)],
        clock=clock,
    )
    await runner.start(background=False)
    await runner.tick()  # (2) sends the stored bytes: the same transaction
    assert chain.requests.count("eth_sendRawTransaction") == 1
    await runner.tick()  # mined, but not 2 blocks deep yet
    (job,) = await restarted.store.list_anchor_jobs(anchor="chain")
    assert job.status == "pending"
    chain.mine(2)
    await runner.tick()
    (job,) = await restarted.store.list_anchor_jobs(anchor="chain")
    assert job.status == "anchored" and job.evidence is not None
    assert job.evidence["transaction"] == signed_hash
    # One transaction from the anchor's key, ever.
    assert chain.call("eth_getTransactionCount", evm_key.address, "latest") == 1
    await runner.stop()
    await restarted.store.close()
    log.store = restarted.store  # the fixture closes it again: harmless


async def test_a_transaction_whose_nonce_was_taken_is_signed_again(log, chain, evm_key, tmp_path):
    await log.grow(2)
    runner = AnchorRunner(log.store, [evm_anchor(chain, tmp_path / "evm.key")], clock=Clock())
    await runner.start(background=False)
    await runner.tick()  # signed with nonce 0, not sent
    (job,) = await log.store.list_anchor_jobs(anchor="chain")
    lost = job.progress["transaction"]
    # Someone else spends nonce 0 of the same key first.
    other = evm_key.sign_transaction(
        {
            "to": evm_key.address,
            "value": 1,
            "nonce": 0,
            "gas": 21000,
            "gasPrice": 2 * 10**9,
            "chainId": chain.chain_id,
        }
    )
    chain.send_raw(other.raw_transaction)
    for _ in range(4):
        await runner.tick()
    (job,) = await log.store.list_anchor_jobs(anchor="chain")
    assert job.status == "anchored", job
    assert job.evidence["transaction"] != lost
    assert chain.call("eth_getTransactionCount", evm_key.address, "latest") == 2
    await runner.stop()


async def test_a_pending_job_survives_a_restart_and_is_anchored_once_the_tsa_answers(log, tsa):
    clock = Clock()
    size = await log.grow(2)
    tsa.fail_next = 100
    runner = AnchorRunner(log.store, [tsa_anchor(tsa)], clock=clock, retry_base=10)
    await runner.start(background=False)
    await runner.tick()
    (job,) = await log.store.list_anchor_jobs(anchor="tsa")
    assert (job.status, job.attempts) == ("pending", 1)
    assert "HTTP 503" in (job.last_error or "")
    assert 5 <= job.next_attempt_at - clock.now <= 10  # backoff: base 10, equal jitter
    await runner.stop()

    tsa.fail_next = 0
    runner = AnchorRunner(log.store, [tsa_anchor(tsa)], clock=clock, retry_base=10)
    await runner.start(background=False)
    await runner.tick()  # not due yet: no request
    assert len(tsa.queries) == 0
    clock.now += 11
    await runner.tick()
    (job,) = await log.store.list_anchor_jobs(anchor="tsa")
    assert (job.status, job.tree_size, job.attempts) == ("anchored", size, 2)
    assert len(tsa.queries) == 1
    await runner.stop()


async def test_a_newer_checkpoint_supersedes_a_job_not_yet_anchored(log, tsa):
    clock = Clock()
    first = await log.grow(1)
    tsa.fail_next = 1
    runner = AnchorRunner(log.store, [tsa_anchor(tsa, interval=30)], clock=clock, retry_base=100)
    await runner.start(background=False)
    await runner.tick()  # job for `first`, fails once; its retry is due in 50-100 s
    second = await log.grow(4)
    clock.now += 10
    await runner.tick()  # within the interval: no new job; the retry is not due yet either
    assert [j.tree_size for j in await log.store.list_anchor_jobs(anchor="tsa")] == [first]
    clock.now += 25
    await runner.tick()  # the interval passed: `second` queued, `first` superseded
    jobs = {j.tree_size: j for j in await log.store.list_anchor_jobs(anchor="tsa")}
    assert jobs[first].status == "superseded" and jobs[second].status == "anchored"
    assert len(tsa.queries) == 1  # only the newer one was dated
    # Both trees' registrations are covered by the one anchor.
    assert [j.tree_size for j in await log.store.anchors_covering(first)] == [second]
    await runner.stop()


async def test_replicas_sharing_a_store_queue_one_job_and_attempt_it_once(log, tsa):
    clock = Clock()
    await log.grow(3)
    other_store = log.target.make()  # a second process on the same database
    await other_store.open()
    runners = [
        AnchorRunner(store, [tsa_anchor(tsa)], clock=clock) for store in (log.store, other_store)
    ]
    for runner in runners:
        await runner.start(background=False)
    await asyncio.gather(*(runner.tick() for runner in runners))
    await asyncio.gather(*(runner.tick() for runner in runners))
    jobs = await log.store.list_anchor_jobs(anchor="tsa")
    assert [j.status for j in jobs] == ["anchored"], jobs
    assert len(tsa.queries) == 1
    for runner in runners:
        await runner.stop()
    await other_store.close()


async def test_an_expired_lease_passes_the_job_on_and_the_late_worker_loses(log, tsa):
    clock = Clock()
    await log.grow(1)
    store = log.store
    assert await store.schedule_anchor("tsa", "rfc3161", 1, now=clock.now, interval=60)
    (slow,) = await store.claim_anchor_jobs(["tsa"], clock.now, clock.now + 40, 8)
    assert await store.claim_anchor_jobs(["tsa"], clock.now + 39, clock.now + 80, 8) == []
    (taken,) = await store.claim_anchor_jobs(["tsa"], clock.now + 41, clock.now + 80, 8)
    assert taken.id == slow.id and taken.claim != slow.claim
    runner = AnchorRunner(store, [tsa_anchor(tsa)], clock=clock)
    await runner.start(background=False)
    await runner._attempt(runner.anchors["tsa"], taken)
    from shotstamp_service.store import AnchorAttempt

    late = AnchorAttempt(status="pending", attempts=9, next_attempt_at=0, last_error="late")
    assert not await store.finish_anchor_attempt(slow.id, slow.claim, late)
    (job,) = await store.list_anchor_jobs(anchor="tsa")
    assert (job.status, job.attempts) == ("anchored", 1)
    await runner.stop()


async def test_tokens_the_configured_tsa_roots_do_not_vouch_for_are_never_stored(
    log, tsa, other_pki
):
    await log.grow(1)
    runner = AnchorRunner(log.store, [tsa_anchor(tsa, pki=other_pki)], clock=Clock())
    await runner.start(background=False)
    await runner.tick()
    (job,) = await log.store.list_anchor_jobs(anchor="tsa")
    assert job.status == "pending" and job.evidence is None
    assert "tsa-token" in (job.last_error or "") or "signature" in (job.last_error or "")
    assert await log.store.anchors_covering(1) == []
    await runner.stop()


async def test_an_rpc_serving_another_chain_is_refused(log, chain, evm_key, tmp_path):
    await log.grow(1)
    anchor = evm_anchor(chain, tmp_path / "evm.key", chain_id=1)  # mainnet, not the test chain
    runner = AnchorRunner(log.store, [anchor], clock=Clock())
    await runner.start(background=False)
    await runner.tick()
    (job,) = await log.store.list_anchor_jobs(anchor="chain")
    assert job.status == "pending" and job.progress is None
    assert f"serves chain {chain.chain_id}, configured for 1" in (job.last_error or "")
    assert "eth_sendRawTransaction" not in chain.requests
    await runner.stop()


async def test_nothing_is_anchored_before_the_log_has_an_entry(log, tsa):
    runner = AnchorRunner(log.store, [tsa_anchor(tsa)], clock=Clock())
    await runner.start(background=False)
    await runner.tick()
    assert await log.store.list_anchor_jobs() == []
    await runner.stop()


def test_the_evm_key_file_is_private_and_created_once(tmp_path):
    path = tmp_path / "keys" / "evm.key"
    first = load_or_create_evm_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_evm_key(path).address == first.address
    path.chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        load_or_create_evm_key(path)


def test_importing_the_evm_anchor_leaves_the_recursion_limit_alone():
    # web3 raises it to 100,000 on import; a service that kept that would crash
    # (C stack overflow) on a deeply nested JSON body instead of answering 400.
    probe = (
        "import sys; before = sys.getrecursionlimit()\n"
        "import shotstamp_service.anchors.evm\n"
        "assert sys.getrecursionlimit() == before, sys.getrecursionlimit()\n"
        "import json\n"
        "try:\n"
        "    json.loads('[' * 100000)\n"
        "except RecursionError:\n"
        "    print('RecursionError')\n"
    )
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "RecursionError"
