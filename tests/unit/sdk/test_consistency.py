"""Consistency between signed checkpoints: verify_consistency_between and verify_proof."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from shotstamp._canonical import canonical_json
from shotstamp._checkpoint import Checkpoint, NoteSigner
from shotstamp._consistency import (
    CONSISTENCY_CHECKS,
    ConsistencyProof,
    check_extends,
    verify_consistency_between,
)
from shotstamp._exceptions import MalformedProofError, VerificationError
from shotstamp._merkle import (
    EMPTY_ROOT,
    inclusion_proof,
    leaf_hash,
    root_hash,
)
from shotstamp._verify import CHECKS, ProofBundle, verify_proof
from tests.kit import TESTDATA
from tests.kit.signedlog import (
    HASHES,
    KEY_2024,
    KEY_2025,
    KEYS,
    LEAVES,
    ORIGIN,
    OTHER_LOG,
    answer,
    note,
    seeded_key,
)


def _fails(check: str, match: str, old: str, new: str, proof: Any, keys: Any = KEYS) -> None:
    with pytest.raises(VerificationError, match=match) as exc:
        verify_consistency_between(old, new, proof, keys=keys)
    assert exc.value.check == check
    assert check in CONSISTENCY_CHECKS


@pytest.mark.parametrize(("first", "second"), [(1, 1), (1, 2), (3, 7), (4, 8), (8, 20), (19, 20)])
def test_every_form_of_the_proof_verifies(first, second):
    proof = answer(first, second)
    forms = [
        proof,
        ConsistencyProof.from_json(proof),
        proof["path"],
        [bytes.fromhex(h) for h in proof["path"]],
    ]
    for form in forms:
        result = verify_consistency_between(note(first), note(second), form, keys=KEYS)
        assert (result.old_size, result.new_size) == (first, second)
        assert result.checks == CONSISTENCY_CHECKS
        assert result.origin == ORIGIN
        assert result.new_root == root_hash(HASHES[:second])


def test_checkpoints_on_either_side_of_a_key_rotation():
    old, new = note(5, KEY_2024), note(12, KEY_2025)
    verify_consistency_between(old, new, answer(5, 12), keys=KEYS)
    _fails(
        "old-checkpoint-signature",
        "no signature by a known key",
        old,
        new,
        answer(5, 12),
        keys=[KEY_2025.verifier.vkey],
    )


def test_a_rewritten_leaf_is_a_fork():
    forged = list(HASHES)
    forged[2] = leaf_hash(canonical_json({**LEAVES[2], "seller": "mallory"}))
    old = note(6)
    new = note(12, hashes=forged)
    # The forger's honest proof over its own tree does not reach the old root...
    _fails(
        "consistency", "^fork: the tree of size 12 does not extend", old, new, answer(6, 12, forged)
    )
    # ...nor does the real log's proof reach the forged root.
    _fails("consistency", "^fork", old, new, answer(6, 12))
    # And the same size with another root is a fork without any proof.
    _fails("consistency", "^fork: two different trees of size 6", old, note(6, hashes=forged), [])


def test_a_smaller_tree_is_a_rollback():
    _fails("consistency", "^rollback", note(9), note(4), answer(4, 9))


def test_a_proof_for_other_sizes_is_refused():
    _fails("consistency", "proof is from size 3 to 9", note(4), note(9), answer(3, 9))
    _fails("consistency", "wrong proof size", note(4), note(9), answer(3, 9)["path"])


def test_named_failures_of_each_checkpoint():
    unknown = NoteSigner(ORIGIN, seeded_key("mallory"))
    _fails(
        "old-checkpoint-signature",
        "no signature by a known key",
        note(3, unknown),
        note(9),
        answer(3, 9),
    )
    _fails(
        "new-checkpoint-signature",
        "no signature by a known key",
        note(3),
        note(9, unknown),
        answer(3, 9),
    )
    garbled = KEY_2025.sign("not a checkpoint\n").to_text()
    _fails("new-checkpoint-body", "does not parse", note(3), garbled, answer(3, 9))
    _fails("old-checkpoint-signature", "does not parse", "junk", note(9), answer(3, 9))
    _fails(
        "origin",
        "different logs",
        note(3),
        note(9, OTHER_LOG),
        answer(3, 9),
        keys=[*KEYS, OTHER_LOG.verifier.vkey],
    )


def test_malformed_proof_objects():
    with pytest.raises(MalformedProofError, match="'path' must be a list"):
        ConsistencyProof.from_json({"from": 1, "to": 2, "path": "ab"})
    with pytest.raises(MalformedProofError, match="larger than"):
        ConsistencyProof.from_json({"from": 3, "to": 2, "path": []})
    with pytest.raises(MalformedProofError, match="64 lowercase hex"):
        ConsistencyProof.from_json({"from": 1, "to": 2, "path": ["AB" * 32]})
    _fails("consistency", "64 lowercase hex", note(3), note(9), ["zz"])


def _vector_checkpoints(probe: dict[str, Any]) -> tuple[Checkpoint, Checkpoint, list[bytes]] | None:
    b64 = base64.b64decode
    root1, root2 = b64(probe["root1"] or ""), b64(probe["root2"] or "")
    size1, size2 = probe["size1"], probe["size2"]
    # check_extends accepts the empty tree as a prefix of every tree (a witness
    # may start there), where the RFC verifier calls such a proof meaningless:
    # the size-0 probes are test_merkle_vectors' business.
    if size1 == 0 or len(root1) != 32 or len(root2) != 32 or max(size1, size2) >= 2**63:
        return None
    return (
        Checkpoint(ORIGIN, size1, root1),
        Checkpoint(ORIGIN, size2, root2),
        [b64(h or "") for h in probe["proof"] or []],
    )


def test_published_consistency_probes_through_signed_checkpoints():
    ran = 0
    for path in sorted((TESTDATA / "consistency").rglob("*.json")):
        probe = json.loads(path.read_text())
        built = _vector_checkpoints(probe)
        if built is None:
            continue
        old, new, proof = built
        old_note = KEY_2025.sign(old.to_text()).to_text()
        new_note = KEY_2025.sign(new.to_text()).to_text()
        if probe["wantErr"]:
            with pytest.raises(VerificationError) as exc:
                verify_consistency_between(old_note, new_note, proof, keys=KEYS)
            assert exc.value.check == "consistency", path
        else:
            verify_consistency_between(old_note, new_note, proof, keys=KEYS)
        ran += 1
    assert ran == 75  # of 98 probes: all but size-0 probes and roots that are not 32 bytes


def test_check_extends_on_the_empty_tree():
    empty = Checkpoint(ORIGIN, 0, EMPTY_ROOT)
    check_extends(empty, Checkpoint(ORIGIN, 5, root_hash(HASHES[:5])), [])
    with pytest.raises(VerificationError, match="empty root"):
        check_extends(Checkpoint(ORIGIN, 0, HASHES[0]), Checkpoint(ORIGIN, 5, HASHES[1]), [])


# --- verify_proof against a trusted checkpoint ---------------------------------------


def bundle(index: int, size: int, signer: NoteSigner = KEY_2025, **extra: Any) -> ProofBundle:
    return ProofBundle(
        leaf=LEAVES[index],
        leaf_index=index,
        tree_size=size,
        inclusion_path=tuple(inclusion_proof(HASHES[:size], index)),
        leaf_hash=HASHES[index],
        checkpoint=note(size, signer),
        **extra,
    )


def test_a_trusted_later_checkpoint_with_the_proof_passed_in():
    result = verify_proof(
        bundle(3, 5, KEY_2024),
        keys=KEYS,
        trusted_checkpoint=note(17),
        consistency=answer(5, 17)["path"],
    )
    assert result.checks[-4:] == (
        "trusted-checkpoint-signature",
        "trusted-checkpoint-body",
        "origin",
        "consistency",
    )
    assert set(result.checks) <= set(CHECKS)
    assert (result.trusted_size, result.extends_trusted) == (17, False)


def test_a_trusted_earlier_checkpoint_with_the_proof_carried_in_the_bundle():
    carried = bundle(9, 14, consistency=(ConsistencyProof.from_json(answer(6, 14)),))
    reparsed = ProofBundle.from_json(carried.to_json())
    assert reparsed == carried
    assert json.loads(carried.to_json())["consistency"] == [answer(6, 14)]
    result = verify_proof(reparsed, keys=KEYS, trusted_checkpoint=note(6))
    assert (result.trusted_size, result.extends_trusted) == (6, True)
    # The same size needs no proof; the roots must simply agree.
    assert verify_proof(bundle(9, 14), keys=KEYS, trusted_checkpoint=note(14)).extends_trusted


def test_verify_proof_names_each_trusted_check():
    def fails(check: str, match: str, **kwargs: Any) -> None:
        kwargs.setdefault("keys", KEYS)
        with pytest.raises(VerificationError, match=match) as exc:
            verify_proof(bundle(2, 8), **kwargs)
        assert exc.value.check == check and check in CHECKS

    unknown = NoteSigner(ORIGIN, seeded_key("mallory"))
    fails(
        "trusted-checkpoint-signature",
        "no signature by a known key",
        trusted_checkpoint=note(4, unknown),
    )
    fails(
        "origin",
        "log 'other.test/log'",
        trusted_checkpoint=note(4, OTHER_LOG),
        keys=[*KEYS, OTHER_LOG.verifier.vkey],
    )
    fails(
        "consistency",
        "bundle carries none; fetch GET /v1/proofs/consistency",
        trusted_checkpoint=note(4),
    )
    forged = list(HASHES)
    forged[0] = HASHES[1]
    fails(
        "consistency",
        "not one append-only log: fork",
        trusted_checkpoint=note(12, hashes=forged),
        consistency=answer(8, 12)["path"],
    )


def test_a_bundle_with_a_malformed_consistency_section_does_not_parse():
    data = json.loads(bundle(2, 8).to_json())
    data["consistency"] = [{"from": 1, "to": 8}]
    with pytest.raises(MalformedProofError, match="field 'consistency'"):
        ProofBundle.from_json(json.dumps(data))
    data["consistency"] = {"from": 1}
    with pytest.raises(MalformedProofError, match="field 'consistency'"):
        ProofBundle.from_json(json.dumps(data))
