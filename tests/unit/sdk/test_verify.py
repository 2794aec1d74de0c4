"""verify_proof end to end: a bundle built here from a small signed tree, then tampered."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shotstamp._canonical import canonical_json
from shotstamp._checkpoint import Checkpoint, NoteSigner, SignedNote
from shotstamp._exceptions import MalformedProofError, VerificationError
from shotstamp._merkle import inclusion_proof, leaf_hash, root_hash
from shotstamp._verify import CHECKS, FORMAT, ProofBundle, VerifiedProof, verify_proof

ORIGIN = "shotstamp.test/log"
TIMESTAMP_NS = 1_764_147_601_500_000_000  # 2025-11-26T09:00:01.5Z
PHOTOS = [f"photo {i}".encode() for i in range(7)]


def _key(seed: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed.encode()).digest())


CURRENT = NoteSigner(ORIGIN, _key("2025"))
RETIRED = NoteSigner(ORIGIN, _key("2024"))


def _leaf(i: int) -> dict[str, Any]:
    return {
        "id": f"01JDZ{i:021d}",
        "seller": f"seller-{i % 3}",
        "sha256": hashlib.sha256(PHOTOS[i]).hexdigest(),
        "perceptual": {"phash": f"{i:016x}", "dhash": "00ff" * 4},
        "received_at": f"2025-11-26T09:00:00.{i:06d}Z",
    }


LEAVES = [_leaf(i) for i in range(len(PHOTOS))]
LEAF_HASHES = [leaf_hash(canonical_json(leaf)) for leaf in LEAVES]


def _note(checkpoint: Checkpoint, signer: NoteSigner = CURRENT) -> str:
    return signer.sign(checkpoint.to_text()).to_text()


def _checkpoint(size: int = 7, **changes: Any) -> Checkpoint:
    fields: dict[str, Any] = {
        "origin": ORIGIN,
        "size": size,
        "root_hash": root_hash(LEAF_HASHES[:size]),
        "extensions": (f"Timestamp: {TIMESTAMP_NS}",),
    }
    fields.update(changes)
    return Checkpoint(**fields)


def make_bundle(index: int = 4, size: int = 7, signer: NoteSigner = CURRENT) -> ProofBundle:
    return ProofBundle(
        leaf=LEAVES[index],
        leaf_index=index,
        tree_size=size,
        inclusion_path=tuple(inclusion_proof(LEAF_HASHES[:size], index)),
        leaf_hash=LEAF_HASHES[index],
        checkpoint=_note(_checkpoint(size), signer),
    )


def _fails(bundle: Any, check: str, match: str, **kwargs: Any) -> VerificationError:
    kwargs.setdefault("keys", CURRENT.verifier.vkey)
    with pytest.raises(VerificationError, match=match) as exc:
        verify_proof(bundle, **kwargs)
    assert exc.value.check == check
    assert check in CHECKS
    return exc.value


# --- the happy path ----------------------------------------------------------


def test_happy_bundle_verifies_and_reports_what_it_proves() -> None:
    result = verify_proof(make_bundle().to_json(), keys=CURRENT.verifier.vkey)
    assert result == VerifiedProof(
        registration_id=LEAVES[4]["id"],
        seller="seller-1",
        sha256=hashlib.sha256(PHOTOS[4]).hexdigest(),
        received_at=datetime(2025, 11, 26, 9, 0, 0, 4, tzinfo=UTC),
        leaf_index=4,
        tree_size=7,
        root_hash=root_hash(LEAF_HASHES),
        checkpoint_time=datetime(2025, 11, 26, 9, 0, 1, 500000, tzinfo=UTC),
        origin=ORIGIN,
        key_hash=CURRENT.key_hash.hex(),
        checks=(
            "format",
            "checkpoint-signature",
            "checkpoint-body",
            "tree-size",
            "leaf",
            "leaf-hash",
            "inclusion",
        ),
    )


@pytest.mark.parametrize(("index", "size"), [(0, 1), (0, 7), (6, 7), (3, 4), (2, 5)])
def test_every_position_verifies(index: int, size: int) -> None:
    assert verify_proof(make_bundle(index, size), keys=CURRENT.verifier).leaf_index == index


@pytest.mark.parametrize("form", ["object", "json", "bytes", "mapping"])
def test_bundle_may_be_given_in_any_form(form: str) -> None:
    bundle = make_bundle()
    given: Any = {
        "object": bundle,
        "json": bundle.to_json(),
        "bytes": bundle.to_json().encode(),
        "mapping": json.loads(bundle.to_json()),
    }[form]
    assert verify_proof(given, keys=[CURRENT.verifier]).seller == "seller-1"


def test_bundle_without_leaf_hash_skips_that_check() -> None:
    bundle = replace(make_bundle(), leaf_hash=None)
    assert "leaf-hash" not in verify_proof(bundle, keys=CURRENT.verifier.vkey).checks


def test_image_bytes_path_and_sha256_are_checked(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(PHOTOS[4])
    keys = CURRENT.verifier.vkey
    for kwargs in (
        {"image": PHOTOS[4]},
        {"image": str(photo)},
        {"image": photo},
        {"image_sha256": hashlib.sha256(PHOTOS[4]).hexdigest().upper()},
    ):
        assert verify_proof(make_bundle(), keys=keys, **kwargs).checks[-1] == "image"


def test_rotated_key_still_verifies_old_proofs() -> None:
    old_bundle = make_bundle(signer=RETIRED)
    both = [CURRENT.verifier.vkey, RETIRED.verifier.vkey]
    result = verify_proof(old_bundle, keys=both)
    assert result.key_hash == RETIRED.key_hash.hex()
    assert verify_proof(make_bundle(), keys=both).key_hash == CURRENT.key_hash.hex()
    _fails(old_bundle, "checkpoint-signature", "no signature by a known key")


def test_key_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        verify_proof(make_bundle(), keys=[])
    with pytest.raises(ValueError, match="malformed verifier key"):
        verify_proof(make_bundle(), keys="not a key")
    with pytest.raises(TypeError, match="vkey strings or NoteVerifiers"):
        verify_proof(make_bundle(), keys=[b"bytes"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="image_sha256 must be 64 hex digits"):
        verify_proof(make_bundle(), keys=CURRENT.verifier, image_sha256="abc")


# --- each tampering fails with its check -------------------------------------


def test_tampered_leaf_is_reported_as_leaf_hash() -> None:
    bundle = replace(make_bundle(), leaf={**LEAVES[4], "seller": "thief"})
    _fails(
        bundle,
        "leaf-hash",
        f"^leaf record hashes to [0-9a-f]{{64}}, bundle says {LEAF_HASHES[4].hex()}$",
    )


def test_tampered_leaf_without_leaf_hash_fails_inclusion() -> None:
    bundle = replace(make_bundle(), leaf={**LEAVES[4], "seller": "thief"}, leaf_hash=None)
    _fails(
        bundle, "inclusion", "^leaf 4 is not in the checkpoint's tree of size 7: calculated root"
    )


def test_tampered_leaf_hash_and_leaf_together_fail_inclusion() -> None:
    forged = {**LEAVES[4], "seller": "thief"}
    bundle = replace(make_bundle(), leaf=forged, leaf_hash=leaf_hash(canonical_json(forged)))
    _fails(bundle, "inclusion", "calculated root")


def test_tampered_path_element_fails_inclusion() -> None:
    path = list(make_bundle().inclusion_path)
    path[1] = bytes([path[1][0] ^ 1]) + path[1][1:]
    error = _fails(
        replace(make_bundle(), inclusion_path=tuple(path)), "inclusion", "calculated root"
    )
    assert error.__cause__ is not None


def test_truncated_path_fails_inclusion_with_got_want() -> None:
    path = make_bundle().inclusion_path[:2]
    _fails(replace(make_bundle(), inclusion_path=path), "inclusion", "wrong proof size 2, want 3$")


def test_other_leaf_index_fails_inclusion() -> None:
    _fails(replace(make_bundle(), leaf_index=5), "inclusion", "^leaf 5 is not in")
    _fails(replace(make_bundle(), leaf_index=7), "inclusion", "index is beyond size: 7 >= 7$")


def test_root_changed_in_signed_checkpoint_fails_signature() -> None:
    note = make_bundle().checkpoint.split("\n")
    note[2] = _checkpoint(root_hash=hashlib.sha256(b"x").digest()).to_text().split("\n")[2]
    bundle = replace(make_bundle(), checkpoint="\n".join(note))
    _fails(bundle, "checkpoint-signature", "^invalid signature for key shotstamp.test/log\\+")


def test_root_changed_and_resigned_by_the_log_fails_inclusion() -> None:
    lying = _note(_checkpoint(root_hash=hashlib.sha256(b"x").digest()))
    _fails(replace(make_bundle(), checkpoint=lying), "inclusion", "calculated root")


def test_flipped_signature_fails() -> None:
    note = SignedNote.from_text(make_bundle().checkpoint)
    signature = note.signatures[0]
    flipped = replace(
        signature, signature=bytes([signature.signature[0] ^ 0x80]) + signature.signature[1:]
    )
    bundle = replace(make_bundle(), checkpoint=SignedNote(note.text, (flipped,)).to_text())
    _fails(bundle, "checkpoint-signature", "invalid signature for key")


def test_note_by_an_unknown_key_fails() -> None:
    bundle = make_bundle(signer=NoteSigner(ORIGIN, _key("attacker")))
    _fails(bundle, "checkpoint-signature", "no signature by a known key")


def test_tree_size_changed_in_bundle_fails() -> None:
    bundle = replace(make_bundle(), tree_size=8)
    _fails(bundle, "tree-size", "^checkpoint is for tree size 7, bundle says 8$")


def test_checkpoint_for_another_origin_fails_body() -> None:
    other = _note(_checkpoint(origin="shotstamp.test/other-log"))
    _fails(
        replace(make_bundle(), checkpoint=other),
        "checkpoint-body",
        "origin 'shotstamp.test/other-log' is not the name of the key that signed it",
    )


def test_signed_text_that_is_not_a_checkpoint_fails_body() -> None:
    note = CURRENT.sign("hello\n").to_text()
    _fails(replace(make_bundle(), checkpoint=note), "checkpoint-body", "missing tree size")


def test_unparseable_note_fails_signature() -> None:
    bundle = replace(make_bundle(), checkpoint="not a note")
    _fails(bundle, "checkpoint-signature", "^checkpoint note does not parse: malformed note")


def test_wrong_image_fails() -> None:
    _fails(make_bundle(), "image", "^image sha256 [0-9a-f]{64} is not the registered", image=b"x")
    _fails(make_bundle(), "image", "is not the registered", image_sha256="00" * 32)


# --- bundle format -------------------------------------------------------------


def _bundle_dict(**changes: Any) -> dict[str, Any]:
    data = make_bundle().to_dict()
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        (_bundle_dict(format="shotstamp-proof/9"), "format", "is 'shotstamp-proof/9', want"),
        (_bundle_dict(leaf=[1]), "leaf", "must be an object"),
        (_bundle_dict(leaf_index=-1), "leaf_index", "must be a non-negative integer"),
        (_bundle_dict(leaf_index=True), "leaf_index", "must be a non-negative integer"),
        (_bundle_dict(tree_size="7"), "tree_size", "must be a non-negative integer"),
        (_bundle_dict(inclusion_path="ab"), "inclusion_path", "must be a list"),
        (
            _bundle_dict(inclusion_path=["ab" * 32, "AB" * 32]),
            "inclusion_path",
            "element 1 must be 64 lowercase hex digits",
        ),
        (
            _bundle_dict(inclusion_path=["ab" * 31]),
            "inclusion_path",
            "element 0 must be 64 lowercase hex digits",
        ),
        (_bundle_dict(leaf_hash="00"), "leaf_hash", "64 lowercase hex digits"),
        (_bundle_dict(checkpoint=""), "checkpoint", "must be a non-empty string"),
        ({k: v for k, v in _bundle_dict().items() if k != "tree_size"}, "tree_size", "is missing"),
    ],
)
def test_malformed_bundles_name_the_field(data: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(MalformedProofError, match=message) as exc:
        ProofBundle.from_json(json.dumps(data))
    assert exc.value.field == field
    assert f"field {field!r}" in str(exc.value)
    _fails(data, "format", f"^proof bundle does not parse: malformed proof bundle: field {field!r}")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[]", "not a JSON object"),
        ("{", "not JSON"),
        ('{"format": "a", "format": "b"}', "duplicate key 'format'"),
        ('{"leaf_index": NaN}', "NaN is not JSON"),
        (b"\xff\xfe\x00", "not JSON"),
        ('{"leaf_index": 1' + "0" * 5000 + "}", "not JSON"),
        ("[" * 100_000, "not JSON"),
    ],
)
def test_unparseable_bundles(text: str | bytes, message: str) -> None:
    with pytest.raises(MalformedProofError, match=message):
        ProofBundle.from_json(text)
    _fails(text, "format", message)


def test_round_trip_keeps_unknown_sections() -> None:
    data = _bundle_dict(cosignatures={"witness": []}, anchor="later")
    bundle = ProofBundle.from_json(json.dumps(data))
    assert bundle.extras == {"cosignatures": {"witness": []}, "anchor": "later"}
    assert ProofBundle.from_json(bundle.to_json()) == bundle
    assert json.loads(bundle.to_json()) == data
    assert bundle.format == FORMAT
    assert verify_proof(bundle, keys=CURRENT.verifier).leaf_index == 4


def test_extras_may_not_shadow_fields() -> None:
    with pytest.raises(ValueError, match="extras may not hold bundle fields: leaf_index"):
        replace(make_bundle(), extras={"leaf_index": 3})


# --- the leaf record -------------------------------------------------------------


@pytest.mark.parametrize(
    ("leaf", "message"),
    [
        ({k: v for k, v in LEAVES[4].items() if k != "perceptual"}, "is missing perceptual"),
        ({**LEAVES[4], "title": "x"}, "has unexpected fields title"),
        ({**LEAVES[4], "id": ""}, "field 'id' must be a non-empty string"),
        ({**LEAVES[4], "seller": 7}, "field 'seller' must be a non-empty string"),
        ({**LEAVES[4], "sha256": LEAVES[4]["sha256"].upper()}, "field 'sha256' must be 64"),
        ({**LEAVES[4], "perceptual": {"phash": "xyz"}}, "field 'perceptual' must map"),
        ({**LEAVES[4], "perceptual": {"phash": 1.5}}, "field 'perceptual' must map"),
        ({**LEAVES[4], "received_at": "yesterday"}, "field 'received_at' must be an RFC 3339"),
        ({**LEAVES[4], "received_at": "2025-13-40T09:00:00Z"}, "is not a valid time"),
        ({**LEAVES[4], "id": "\ud800"}, "is not canonical JSON: string contains a lone surrogate"),
    ],
)
def test_malformed_leaf_records_fail_leaf(leaf: dict[str, Any], message: str) -> None:
    _fails(replace(make_bundle(), leaf=leaf), "leaf", message)


def test_received_at_offsets_are_normalised_to_utc() -> None:
    leaf = {**LEAVES[4], "received_at": "2025-11-26T10:00:00+01:00"}
    bundle = ProofBundle(
        leaf=leaf,
        leaf_index=0,
        tree_size=1,
        inclusion_path=(),
        checkpoint=_note(_checkpoint(1, root_hash=leaf_hash(canonical_json(leaf)))),
    )
    result = verify_proof(bundle, keys=CURRENT.verifier)
    assert result.received_at == datetime(2025, 11, 26, 9, 0, tzinfo=UTC)
    assert result.received_at.tzinfo is UTC


def test_diagnostics_name_the_check_and_the_cause() -> None:
    path = make_bundle().inclusion_path[:2]
    error = _fails(replace(make_bundle(), inclusion_path=path), "inclusion", "wrong proof size")
    text = error.diagnostics()
    assert "check 'inclusion' did not pass" in text
    assert "caused by VerificationError: wrong proof size 2, want 3" in text
