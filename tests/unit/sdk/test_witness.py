"""CheckpointWitness: trust on first use, then only checkpoints that extend what it holds."""

from __future__ import annotations

import json

import pytest

from shotstamp._canonical import canonical_json
from shotstamp._exceptions import MalformedProofError, VerificationError
from shotstamp._merkle import leaf_hash
from shotstamp._witness import WITNESS_FORMAT, CheckpointWitness
from tests.kit.signedlog import (
    HASHES,
    KEY_2024,
    KEY_2025,
    KEYS,
    LEAVES,
    OTHER_LOG,
    answer,
    note,
)


def _refused(witness: CheckpointWitness, check: str, match: str, *args) -> None:
    before = witness.latest
    with pytest.raises(VerificationError, match=match) as exc:
        witness.update(*args)
    assert exc.value.check == check
    assert witness.latest == before  # a refused checkpoint changes nothing


def test_it_follows_a_growing_log():
    witness = CheckpointWitness(KEYS)
    assert witness.latest is None and witness.tree_size == 0
    assert witness.proof_range(5) is None  # nothing to prove against yet
    witness.update(note(5))  # trust on first use
    assert witness.tree_size == 5
    for size in (5, 9, 9, 16, 20):
        wanted = witness.proof_range(size)
        assert wanted == (None if size == witness.tree_size else (witness.tree_size, size))
        proof = answer(*wanted) if wanted else []
        accepted = witness.update(note(size), proof)
        assert accepted.size == size == witness.tree_size


def test_a_server_that_rewrites_an_old_leaf_is_refused():
    witness = CheckpointWitness(KEYS)
    witness.update(note(8))
    forged = list(HASHES)
    forged[3] = leaf_hash(canonical_json({**LEAVES[3], "seller": "mallory"}))
    # Whatever the forger sends: its own tree's proof, the real log's proof, none.
    for proof in (answer(8, 15, forged), answer(8, 15), []):
        _refused(witness, "consistency", "^fork", note(15, hashes=forged), proof)
    _refused(witness, "consistency", "^fork: two different trees of size 8", note(8, hashes=forged))


def test_a_rollback_is_refused():
    witness = CheckpointWitness(KEYS)
    witness.update(note(12))
    _refused(witness, "consistency", "^rollback", note(7), answer(7, 12))


def test_another_log_or_an_unknown_key_is_refused():
    witness = CheckpointWitness([*KEYS, OTHER_LOG.verifier.vkey], origin="shotstamp.test/log")
    _refused(witness, "origin", "follows 'shotstamp.test/log'", note(3, OTHER_LOG))
    witness.update(note(3))
    witness = CheckpointWitness([KEY_2025.verifier.vkey])
    _refused(witness, "checkpoint-signature", "no signature by a known key", note(3, KEY_2024))


def test_a_key_rotation_is_followed_when_both_keys_are_known():
    witness = CheckpointWitness(KEYS)
    witness.update(note(4, KEY_2024))
    assert witness.update(note(11, KEY_2025), answer(4, 11)).signer.key_hash == (
        KEY_2025.key_hash
    )


def test_the_state_file_survives_restarts_and_is_checked(tmp_path):
    state = tmp_path / "state" / "checkpoint.json"
    witness = CheckpointWitness(KEYS, state_file=state)
    witness.update(note(6))
    saved = json.loads(state.read_text())
    assert saved["format"] == WITNESS_FORMAT and saved["tree_size"] == 6
    assert [p.name for p in state.parent.iterdir()] == ["checkpoint.json"]  # no temp files

    restarted = CheckpointWitness(KEYS, state_file=state)
    assert restarted.tree_size == 6
    # It remembers: a fork of what it saw before the restart is still refused.
    forged = list(HASHES)
    forged[0] = HASHES[1]
    _refused(restarted, "consistency", "^fork", note(10, hashes=forged), answer(6, 10, forged))
    restarted.update(note(10), answer(6, 10))
    assert CheckpointWitness(KEYS, state_file=state).tree_size == 10

    # A state the keys cannot verify, or garbage, is an error, not a fresh start.
    with pytest.raises(VerificationError) as exc:
        CheckpointWitness([OTHER_LOG.verifier.vkey], state_file=state)
    assert exc.value.check == "state-checkpoint-signature"
    state.write_text("{")
    with pytest.raises(MalformedProofError, match="cannot be read"):
        CheckpointWitness(KEYS, state_file=state)
    state.write_text(json.dumps({"format": "other", "note": note(3)}))
    with pytest.raises(MalformedProofError, match="not a shotstamp-witness/1"):
        CheckpointWitness(KEYS, state_file=state)
