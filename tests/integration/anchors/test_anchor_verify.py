"""`shotstamp verify` and `shotstamp.anchors` on proofs anchored by a real service process.

One `shotstamp-service` process per module, anchoring to a real TSA (openssl)
and a real chain (py-evm over JSON-RPC). The TSA refuses until three photos
are sealed, so the first photo's TSA anchor is of a later tree and its proof
needs the consistency proof the bundle carries. Then every way an anchor can
be wrong is tried on a copy of that proof, through the CLI and the library:
each must fail, naming its check.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import html
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import shotstamp
from shotstamp import verify_anchors
from shotstamp._anchors import ANCHOR_CHECKS
from shotstamp._evm import evm_payload
from tests.kit import imagegen
from tests.kit.chainkit import ChainServer, chain_server, write_key
from tests.kit.processes import ServiceProcess, free_port, run, start_service
from tests.kit.tsakit import TsaPki, TsaServer, openssl_reply, tsa_server


@dataclass
class Anchored:
    service: ServiceProcess
    tsa: TsaServer
    chain: ChainServer
    bundle: dict[str, Any]  # the first photo's proof, both anchors on it
    keys: list[str]
    keys_file: Path
    directory: Path


@pytest.fixture(scope="module")
def anchored(tmp_path_factory: pytest.TempPathFactory, tsa_pki: TsaPki) -> Iterator[Anchored]:
    from eth_account import Account

    directory = tmp_path_factory.mktemp("anchored")
    with tsa_server(tsa_pki) as tsa, chain_server() as chain:
        account = Account.create()
        chain.fund(account.address)
        write_key(directory / "evm.key", bytes(account.key))
        tsa.fail_next = 10**6  # down until three photos are sealed
        service = start_service(
            directory / "data",
            env={
                "SHOTSTAMP_TSA_URL": tsa.url,
                "SHOTSTAMP_TSA_CA_FILE": str(tsa_pki.ca_cert),
                "SHOTSTAMP_TSA_INTERVAL": "0.3",
                "SHOTSTAMP_EVM_RPC_URL": chain.url,
                "SHOTSTAMP_EVM_KEY_FILE": str(directory / "evm.key"),
                "SHOTSTAMP_EVM_CHAIN_ID": str(chain.chain_id),
                "SHOTSTAMP_EVM_INTERVAL": "0.3",
                "SHOTSTAMP_EVM_CONFIRMATIONS": "0",
                "SHOTSTAMP_ANCHOR_RETRY_BASE": "0.2",
                "SHOTSTAMP_ANCHOR_RETRY_MAX": "0.5",
            },
        )
        try:
            key = service.key("acme")
            with shotstamp.Client(service.url, api_key=key) as client:
                first = client.register(imagegen.jpeg(501), wait=True)
                for seed in (502, 503):
                    client.register(imagegen.jpeg(seed), wait=True)
                time.sleep(1.0)  # past the interval: the newest checkpoint supersedes
                tsa.fail_next = 0
                deadline = time.monotonic() + 60
                while True:
                    bundle = client.proof(first.id).to_dict()
                    if {"tsa", "chain"} <= {a["name"] for a in bundle.get("anchors", [])}:
                        break
                    assert time.monotonic() < deadline, bundle.get("anchors")
                    time.sleep(0.2)
                keys = client.keys()
            vkeys = [k.vkey for k in keys.keys]
            keys_file = directory / "keys.json"
            keys_file.write_text(json.dumps(keys.raw))
            yield Anchored(service, tsa, chain, bundle, vkeys, keys_file, directory)
        finally:
            service.stop()


def _tsa(bundle: dict[str, Any]) -> dict[str, Any]:
    return next(a for a in bundle["anchors"] if a["name"] == "tsa")


def _chain(bundle: dict[str, Any]) -> dict[str, Any]:
    return next(a for a in bundle["anchors"] if a["name"] == "chain")


def _cli(anchored: Anchored, bundle: dict[str, Any], *extra: str) -> Any:
    digest = hashlib.sha256(json.dumps(bundle).encode()).hexdigest()[:12]
    path = anchored.directory / f"proof-{digest}.json"
    path.write_text(json.dumps(bundle))
    return run("shotstamp", "verify", str(path), "--key", str(anchored.keys_file), *extra)


def _full(anchored: Anchored) -> tuple[str, ...]:
    return ("--tsa-cert", str(anchored.tsa.pki.ca_cert), "--chain-rpc", anchored.chain.url)


def _root(note: str) -> bytes:
    return base64.b64decode(note.split("\n")[2])


def test_the_cli_reports_what_each_anchor_proves(anchored):
    bundle = anchored.bundle
    assert _tsa(bundle)["tree_size"] > bundle["tree_size"]  # consistency needed and carried
    done = _cli(anchored, bundle, *_full(anchored), "--require-anchors")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("VERIFIED registration ") for line in lines)
    tsa_line = next(line for line in lines if line.startswith("ANCHORED anchor tsa (rfc3161"))
    assert ": registered no later than 20" in tsa_line
    assert tsa_line.endswith("per shotstamp test TSA (accuracy ±1 s)")
    evidence = _chain(bundle)["evidence"]
    chain_line = next(line for line in lines if line.startswith("ANCHORED anchor chain (evm"))
    assert f": no later than block {evidence['block_number']} at " in chain_line
    assert chain_line.endswith(f" on chain {anchored.chain.chain_id}")
    for check in ("anchor-consistency", "tsa-token", "tsa-imprint", "chain-data", "chain-block"):
        assert any(line.endswith(f": {check}") and line.startswith("ok   ") for line in lines)


def test_without_trust_anchors_are_skipped_and_require_anchors_fails(anchored):
    done = _cli(anchored, anchored.bundle)
    assert done.returncode == 0, done.stderr
    assert "SKIPPED anchor tsa (rfc3161" in done.stdout and "--tsa-cert" in done.stdout
    assert "SKIPPED anchor chain (evm" in done.stdout and "--chain-rpc" in done.stdout
    assert _cli(anchored, anchored.bundle, "--require-anchors").returncode == 1


def test_the_token_checks_out_with_openssl_too(anchored, tmp_path):
    # The dispute-staff path: no shotstamp code, only the TSA root and openssl.
    anchor = _tsa(anchored.bundle)
    (tmp_path / "token.tsr").write_bytes(base64.b64decode(anchor["evidence"]["response"]))
    (tmp_path / "root.bin").write_bytes(_root(anchor["checkpoint"]))
    checked = run_openssl(
        "ts",
        "-verify",
        "-in",
        str(tmp_path / "token.tsr"),
        "-data",
        str(tmp_path / "root.bin"),
        "-CAfile",
        str(anchored.tsa.pki.ca_cert),
    )
    assert checked.returncode == 0 and "Verification: OK" in checked.stdout, checked.stderr
    (tmp_path / "root.bin").write_bytes(bytes(32))
    checked = run_openssl(
        "ts",
        "-verify",
        "-in",
        str(tmp_path / "token.tsr"),
        "-data",
        str(tmp_path / "root.bin"),
        "-CAfile",
        str(anchored.tsa.pki.ca_cert),
    )
    assert checked.returncode != 0


def run_openssl(*args: str) -> Any:
    import subprocess

    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)


# -- every way an anchor can be wrong ------------------------------------------------------
def _tampered_token(bundle: dict[str, Any], anchored: Anchored) -> None:
    anchor = _tsa(bundle)
    token = bytearray(base64.b64decode(anchor["evidence"]["response"]))
    token[-5] ^= 0x01  # inside the signature
    anchor["evidence"]["response"] = base64.b64encode(bytes(token)).decode()


def _token_for_another_root(bundle: dict[str, Any], anchored: Anchored) -> None:
    from rfc3161_client import HashAlgorithm, TimestampRequestBuilder

    query = TimestampRequestBuilder().data(bytes(32)).hash_algorithm(HashAlgorithm.SHA256).build()
    reply = openssl_reply(anchored.tsa.pki, query.as_bytes())  # genuine, but for other bytes
    _tsa(bundle)["evidence"]["response"] = base64.b64encode(reply).decode()


def _token_from_another_tsa(bundle: dict[str, Any], anchored: Anchored) -> None:
    from rfc3161_client import HashAlgorithm, TimestampRequestBuilder

    other = anchored.directory.parent / "other-tsa"
    from tests.kit.tsakit import make_tsa_pki

    pki = make_tsa_pki(other, ca_name="a CA nobody trusts")
    root = _root(_tsa(bundle)["checkpoint"])
    query = TimestampRequestBuilder().data(root).hash_algorithm(HashAlgorithm.SHA256).build()
    _tsa(bundle)["evidence"]["response"] = base64.b64encode(
        openssl_reply(pki, query.as_bytes())
    ).decode()


def _wrong_chain_id(bundle: dict[str, Any], anchored: Anchored) -> None:
    _chain(bundle)["evidence"]["chain_id"] = 1


def _transaction_without_the_root(bundle: dict[str, Any], anchored: Anchored) -> None:
    from eth_account import Account

    chain = anchored.chain
    sender = Account.create()
    chain.fund(sender.address)
    anchor = _chain(bundle)
    other_root = hashlib.sha256(b"another history").digest()
    signed = sender.sign_transaction(
        {
            "to": sender.address,
            "value": 0,
            "nonce": 0,
            "gas": 60000,
            "gasPrice": 3 * 10**9,
            "chainId": chain.chain_id,
            "data": evm_payload(anchor["tree_size"], other_root),
        }
    )
    tx_hash = "0x" + chain.send_raw(signed.raw_transaction).hex()
    mined = chain.call("eth_getTransactionByHash", tx_hash)
    anchor["evidence"]["transaction"] = tx_hash
    anchor["evidence"]["block_number"] = mined["block_number"]


def _no_such_transaction(bundle: dict[str, Any], anchored: Anchored) -> None:
    _chain(bundle)["evidence"]["transaction"] = "0x" + "ab" * 32


def _wrong_block(bundle: dict[str, Any], anchored: Anchored) -> None:
    _chain(bundle)["evidence"]["block_number"] += 1


def _anchored_checkpoint_edited(bundle: dict[str, Any], anchored: Anchored) -> None:
    anchor = _tsa(bundle)
    lines = anchor["checkpoint"].split("\n")
    lines[2] = base64.b64encode(bytes(32)).decode()
    anchor["checkpoint"] = "\n".join(lines)


def _anchor_of_another_size(bundle: dict[str, Any], anchored: Anchored) -> None:
    _tsa(bundle)["tree_size"] += 1


def _consistency_dropped(bundle: dict[str, Any], anchored: Anchored) -> None:
    size = _tsa(bundle)["tree_size"]
    bundle["consistency"] = [c for c in bundle["consistency"] if c["to"] != size]


def _consistency_path_edited(bundle: dict[str, Any], anchored: Anchored) -> None:
    size = _tsa(bundle)["tree_size"]
    proof = next(c for c in bundle["consistency"] if c["to"] == size)
    proof["path"][0] = "00" * 32


def _malformed_anchor(bundle: dict[str, Any], anchored: Anchored) -> None:
    del _tsa(bundle)["checkpoint"]


CORRUPTIONS = [
    (_tampered_token, "tsa", "tsa-token"),
    (_token_for_another_root, "tsa", "tsa-imprint"),
    (_token_from_another_tsa, "tsa", "tsa-token"),
    (_wrong_chain_id, "chain", "chain-id"),
    (_transaction_without_the_root, "chain", "chain-data"),
    (_no_such_transaction, "chain", "chain-transaction"),
    (_wrong_block, "chain", "chain-transaction"),
    (_anchored_checkpoint_edited, "tsa", "anchor-checkpoint-signature"),
    (_anchor_of_another_size, "tsa", "anchor-tree-size"),
    (_consistency_dropped, "tsa", "anchor-consistency"),
    (_consistency_path_edited, "tsa", "anchor-consistency"),
    (_malformed_anchor, "tsa", "anchor-format"),
]


@pytest.mark.parametrize(
    ("corrupt", "name", "check"), CORRUPTIONS, ids=[c[0].__name__[1:] for c in CORRUPTIONS]
)
def test_a_corrupted_anchor_fails_naming_its_check(anchored, corrupt, name, check):
    assert check in ANCHOR_CHECKS
    bundle = copy.deepcopy(anchored.bundle)
    corrupt(bundle, anchored)
    report = verify_anchors(
        bundle,
        keys=anchored.keys,
        tsa_certs=[anchored.tsa.pki.ca_cert],
        chain_rpcs=[anchored.chain.url],
    )
    results = {r.name: r for r in report.results}
    assert results[name].status == "failed", results[name]
    assert results[name].error is not None and results[name].error.check == check
    other = "chain" if name == "tsa" else "tsa"
    shared = check == "anchor-consistency" and (
        _chain(bundle)["tree_size"] == _tsa(bundle)["tree_size"]
    )  # the two anchors then share the consistency proof that was spoiled
    if not shared:
        assert results[other].status == "verified"  # one bad anchor spoils only itself
    with pytest.raises(shotstamp.VerificationError) as raised:
        report.raise_for_failure()
    assert raised.value.check == check

    done = _cli(anchored, bundle, *_full(anchored))
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"FAILED {check}: anchor '{name}'" in done.stderr
    assert next(line for line in done.stdout.splitlines() if line.startswith("VERIFIED "))


def test_an_anchor_of_an_unknown_type_is_kept_and_skipped(anchored):
    bundle = copy.deepcopy(anchored.bundle)
    future = copy.deepcopy(_tsa(bundle))
    future.update(name="ots", type="opentimestamps")
    bundle["anchors"].append(future)
    parsed = shotstamp.ProofBundle.from_json(json.dumps(bundle))
    assert parsed.to_dict()["anchors"][-1]["type"] == "opentimestamps"
    report = verify_anchors(
        bundle,
        keys=anchored.keys,
        tsa_certs=[anchored.tsa.pki.ca_cert],
        chain_rpcs=[anchored.chain.url],
    )
    assert sorted(r.status for r in report.results) == ["skipped", "verified", "verified"]
    skipped = report.results[-1]
    assert skipped.status == "skipped" and "unknown anchor type" in (skipped.reason or "")
    assert _cli(anchored, bundle, *_full(anchored)).returncode == 0


def test_an_unreachable_rpc_is_a_service_error_not_a_failed_proof(anchored):
    done = _cli(
        anchored,
        anchored.bundle,
        "--tsa-cert",
        str(anchored.tsa.pki.ca_cert),
        "--chain-rpc",
        f"http://127.0.0.1:{free_port()}/",
        "--timeout",
        "5",
    )
    assert done.returncode == 4, done.stdout + done.stderr
    assert "UNAVAILABLE anchor chain (evm" in done.stderr
    assert "ANCHORED anchor tsa (rfc3161" in done.stdout


def test_the_core_proof_still_verifies_alone(anchored):
    result = shotstamp.verify_proof(anchored.bundle, keys=anchored.keys)
    assert result.tree_size == anchored.bundle["tree_size"]


def test_the_admin_command_lists_anchor_jobs_and_the_evm_address(anchored):
    from eth_account import Account

    done = run(
        "shotstamp-service",
        "--data-dir",
        str(anchored.service.data),
        "anchors",
        "status",
        "--limit",
        "50",
        env={"SHOTSTAMP_EVM_KEY_FILE": str(anchored.directory / "evm.key")},
    )
    assert done.returncode == 0, done.stderr
    jobs = [json.loads(line) for line in done.stdout.splitlines()]
    anchored_sizes = {(j["anchor"], j["tree_size"]) for j in jobs if j["status"] == "anchored"}
    assert ("tsa", _tsa(anchored.bundle)["tree_size"]) in anchored_sizes
    assert ("chain", _chain(anchored.bundle)["tree_size"]) in anchored_sizes
    # The TSA was down at first: that job's failures are on record, as the error of a
    # job superseded meanwhile or as the attempts before the one that succeeded
    # (which clears the error) when all three seals fell within one poll.
    assert any(
        "HTTP 503" in (j["last_error"] or "") or (j["status"] == "anchored" and j["attempts"] > 1)
        for j in jobs
        if j["anchor"] == "tsa"
    ), jobs
    address = run(
        "shotstamp-service",
        "--data-dir",
        str(anchored.service.data),
        "anchors",
        "evm-address",
        env={"SHOTSTAMP_EVM_KEY_FILE": str(anchored.directory / "evm.key")},
    )
    key = (anchored.directory / "evm.key").read_text().strip()
    assert address.stdout.strip() == Account.from_key(key).address


def test_a_dispute_file_lists_both_anchors_as_the_service_checked_them(anchored):
    """The service checks every anchor with its own TSA roots and chain RPC for the file."""
    staff = anchored.service.key("dana", "staff")
    reg_id = anchored.bundle["leaf"]["id"]
    with shotstamp.Client(anchored.service.url, api_key=staff) as client:
        page = client.dispute_file(reg_id, imagegen.jpeg(501)).decode("utf-8")
    assert "tsa (rfc3161): verified by the service when this file was made" in page
    assert "chain (evm): verified by the service when this file was made" in page
    assert "shotstamp test TSA" in page  # the authority that dated it
    proof = json.loads(html.unescape(page.split('<pre id="proof-json">', 1)[1].split("</pre>")[0]))
    assert {a["name"] for a in proof["anchors"]} == {"tsa", "chain"}
