"""Offline verification of shotstamp proof bundles.

A proof bundle (`"format": "shotstamp-proof/2"`, or `/1` for registrations logged
before leaf version 2) carries a registration's leaf
record, its index in the log, the size of the tree it was first sealed into,
the inclusion path and that tree's signed checkpoint.  `verify_proof` checks
it with nothing but the log's public key(s): no network, no service.

Given a checkpoint the holder already trusts (seen earlier, or from a
witness), it also proves that the proof's log and the trusted one are the same
append-only log, with a consistency proof the bundle may carry in its
`consistency` list (`GET /v1/registrations/{id}/proof?consistency_with=N`) or
the caller passes in (`GET /v1/proofs/consistency`).

Usage:

    result = verify_proof(bundle_json, keys="shotstamp.example/log+1a2b3c4d+AQ...",
                          image="photo.jpg")
    print(result.seller, result.checkpoint_time)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shotstamp._canonical import canonical_json
from shotstamp._checkpoint import NoteVerifier, open_checkpoint, verifiers_from
from shotstamp._consistency import ConsistencyProof, check_extends, proof_path
from shotstamp._exceptions import MalformedProofError, VerificationError
from shotstamp._merkle import HASH_SIZE, leaf_hash, verify_inclusion

__all__ = ["ProofBundle", "VerifiedProof", "verify_proof"]

FORMAT = "shotstamp-proof/1"  # the leaf names the seller
# The leaf commits to the seller with a salt only the bundle carries (docs/security.md).
FORMAT_V2 = "shotstamp-proof/2"
FORMATS = (FORMAT, FORMAT_V2)
# The checks against a checkpoint the caller already trusts (`trusted_checkpoint=`).
TRUSTED_CHECKS = (
    "trusted-checkpoint-signature",
    "trusted-checkpoint-body",
    "origin",
    "consistency",
)
# Every check `verify_proof` can run, in order; VerificationError.check is one.
CHECKS = (
    "format",
    "checkpoint-signature",
    "checkpoint-body",
    "tree-size",
    "leaf",
    "seller",
    "leaf-hash",
    "inclusion",
    "image",
    *TRUSTED_CHECKS,
)
LEAF_FIELDS = ("id", "seller", "sha256", "perceptual", "received_at")
LEAF_FIELDS_V2 = ("id", "seller_commitment", "sha256", "perceptual", "received_at")

_KNOWN_KEYS = frozenset(
    {
        "format",
        "leaf",
        "leaf_index",
        "tree_size",
        "inclusion_path",
        "checkpoint",
        "leaf_hash",
        "consistency",
        "anchors",
        "seller",
        "seller_salt",
    }
)
_HEX_HASH = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"(?:[0-9a-f]{2})+")
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:Z|[+-][0-9]{2}:[0-9]{2})"
)


SALT_SIZE = 32


def seller_commitment(salt: bytes, seller: str) -> str:
    """The `seller_commitment` of a version-2 leaf: hex SHA-256(salt ‖ UTF-8 seller).

    The salt (32 random bytes per registration) travels only in the owner's proof bundle,
    so the public leaf fields cannot be hashed with guessed seller names (docs/security.md).
    """
    if len(salt) != SALT_SIZE:
        raise ValueError(f"a seller salt is {SALT_SIZE} bytes, got {len(salt)}")
    return hashlib.sha256(salt + seller.encode("utf-8")).hexdigest()


def _malformed(field_name: str, reason: str) -> MalformedProofError:
    return MalformedProofError(
        f"malformed proof bundle: field {field_name!r} {reason}", field=field_name
    )


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _hex_hash(field_name: str, value: Any, which: str = "") -> bytes:
    if not isinstance(value, str) or not _HEX_HASH.fullmatch(value):
        raise _malformed(field_name, f"{which}must be {2 * HASH_SIZE} lowercase hex digits")
    return bytes.fromhex(value)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two parsers that keep different copies of a repeated key would verify
    # different bundles from the same bytes.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise MalformedProofError(f"malformed proof bundle: duplicate key {key!r}")
        result[key] = value
    return result


def _refuse_constant(name: str) -> Any:
    raise MalformedProofError(f"malformed proof bundle: {name} is not JSON")


@dataclass(frozen=True, kw_only=True)
class ProofBundle:
    """A parsed `shotstamp-proof/1` or `/2` bundle.

    A `/2` bundle also carries `seller` and `seller_salt` (32 bytes, hex on the wire), which
    open the leaf's `seller_commitment`; a `/1` bundle's leaf names the seller itself.

    `inclusion_path` and `leaf_hash` hold raw 32-byte hashes (hex on the
    wire); keys this version does not know are kept in `extras` and written
    back by `to_json`.  `consistency` holds consistency proofs between this
    checkpoint's tree and other sizes of the same log (optional).  `anchors`
    holds the anchors section's elements as decoded JSON objects (checked by
    `shotstamp.anchors`, element by element, so an anchor of a type this
    version does not know, or one that fails, never spoils the proof).
    """

    leaf: Mapping[str, Any]
    leaf_index: int
    tree_size: int
    inclusion_path: tuple[bytes, ...]
    checkpoint: str
    leaf_hash: bytes | None = None
    consistency: tuple[ConsistencyProof, ...] = ()
    anchors: tuple[Mapping[str, Any], ...] = ()
    format: str = FORMAT
    extras: Mapping[str, Any] = field(default_factory=dict)
    seller: str | None = None
    seller_salt: bytes | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "inclusion_path", tuple(self.inclusion_path))
        object.__setattr__(self, "consistency", tuple(self.consistency))
        object.__setattr__(self, "anchors", tuple(self.anchors))
        for position, anchor in enumerate(self.anchors):
            if not isinstance(anchor, Mapping):
                raise _malformed("anchors", f"element {position} is not an object")
        for position, proof in enumerate(self.consistency):
            if not isinstance(proof, ConsistencyProof):
                raise _malformed("consistency", f"element {position} is not a ConsistencyProof")
        if self.format not in FORMATS:
            raise _malformed("format", f"is {self.format!r}, want one of {', '.join(FORMATS)}")
        if self.format == FORMAT_V2:
            if not isinstance(self.seller, str) or not self.seller:
                raise _malformed("seller", "must be a non-empty string")
            try:
                self.seller.encode("utf-8")
            except UnicodeEncodeError as exc:  # a lone surrogate, which JSON can spell
                raise _malformed("seller", "is not Unicode text") from exc
            if not isinstance(self.seller_salt, bytes) or len(self.seller_salt) != SALT_SIZE:
                raise _malformed("seller_salt", f"must be {SALT_SIZE} bytes")
        elif self.seller is not None or self.seller_salt is not None:
            raise _malformed("seller", f"and 'seller_salt' belong to {FORMAT_V2} only")
        if not isinstance(self.leaf, Mapping):
            raise _malformed("leaf", "must be an object")
        if not _is_count(self.leaf_index):
            raise _malformed("leaf_index", "must be a non-negative integer")
        if not _is_count(self.tree_size):
            raise _malformed("tree_size", "must be a non-negative integer")
        for position, element in enumerate(self.inclusion_path):
            if not isinstance(element, bytes) or len(element) != HASH_SIZE:
                raise _malformed("inclusion_path", f"element {position} is not a 32-byte hash")
        if not isinstance(self.checkpoint, str) or not self.checkpoint:
            raise _malformed("checkpoint", "must be a non-empty string")
        if self.leaf_hash is not None and len(self.leaf_hash) != HASH_SIZE:
            raise _malformed("leaf_hash", "is not a 32-byte hash")
        clashes = sorted(_KNOWN_KEYS & set(self.extras))
        if clashes:
            raise ValueError(f"extras may not hold bundle fields: {', '.join(clashes)}")

    @classmethod
    def from_json(cls, data: str | bytes | Mapping[str, Any]) -> ProofBundle:
        """Parse a bundle from JSON text or an already-decoded mapping.

        Raises `MalformedProofError` naming the offending field.
        """
        if isinstance(data, (str, bytes)):
            try:
                decoded = json.loads(
                    data, object_pairs_hook=_no_duplicate_keys, parse_constant=_refuse_constant
                )
            except MalformedProofError:
                raise
            # ValueError also covers bad encodings and integers too long to
            # convert; RecursionError, nesting deeper than the parser allows.
            except (ValueError, RecursionError) as exc:
                raise MalformedProofError(f"malformed proof bundle: not JSON: {exc}") from exc
        else:
            decoded = data
        if not isinstance(decoded, Mapping):
            raise MalformedProofError("malformed proof bundle: not a JSON object")
        for required in (
            "format",
            "leaf",
            "leaf_index",
            "tree_size",
            "inclusion_path",
            "checkpoint",
        ):
            if required not in decoded:
                raise _malformed(required, "is missing")
        if not isinstance(decoded["format"], str):
            raise _malformed("format", "must be a string")
        path = decoded["inclusion_path"]
        if not isinstance(path, list):
            raise _malformed("inclusion_path", "must be a list of hex hashes")
        raw_leaf_hash = decoded.get("leaf_hash")
        raw_consistency = decoded.get("consistency", [])
        if not isinstance(raw_consistency, list):
            raise _malformed("consistency", "must be a list of {from, to, path} objects")
        try:
            consistency = tuple(ConsistencyProof.from_json(p) for p in raw_consistency)
        except MalformedProofError as exc:
            raise _malformed("consistency", f"has an element that does not parse: {exc}") from exc
        raw_anchors = decoded.get("anchors", [])
        if not isinstance(raw_anchors, list):
            raise _malformed("anchors", "must be a list of objects")
        raw_salt = decoded.get("seller_salt")
        return cls(
            format=decoded["format"],
            leaf=decoded["leaf"],
            leaf_index=decoded["leaf_index"],
            tree_size=decoded["tree_size"],
            inclusion_path=tuple(
                _hex_hash("inclusion_path", element, f"element {position} ")
                for position, element in enumerate(path)
            ),
            checkpoint=decoded["checkpoint"],
            leaf_hash=None if raw_leaf_hash is None else _hex_hash("leaf_hash", raw_leaf_hash),
            consistency=consistency,
            anchors=tuple(raw_anchors),
            extras={k: v for k, v in decoded.items() if k not in _KNOWN_KEYS},
            seller=decoded.get("seller"),
            seller_salt=None if raw_salt is None else _hex_hash("seller_salt", raw_salt),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this bundle, extras last."""
        result: dict[str, Any] = {
            "format": self.format,
            "leaf": dict(self.leaf),
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size,
            "inclusion_path": [element.hex() for element in self.inclusion_path],
        }
        if self.leaf_hash is not None:
            result["leaf_hash"] = self.leaf_hash.hex()
        if self.seller is not None:
            result["seller"] = self.seller
        if self.seller_salt is not None:
            result["seller_salt"] = self.seller_salt.hex()
        result["checkpoint"] = self.checkpoint
        if self.consistency:
            result["consistency"] = [proof.to_dict() for proof in self.consistency]
        if self.anchors:
            result["anchors"] = [dict(anchor) for anchor in self.anchors]
        result.update(self.extras)
        return result

    def consistency_path(self, first: int, second: int) -> tuple[bytes, ...] | None:
        """The carried proof from size `first` to `second`, or None if the bundle has none."""
        for proof in self.consistency:
            if (proof.first, proof.second) == (first, second):
                return proof.path
        return None

    def to_json(self) -> str:
        """The bundle as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class VerifiedProof:
    """What a verified bundle proves: who registered which file, no later than when."""

    registration_id: str
    seller: str
    sha256: str
    received_at: datetime
    leaf_index: int
    tree_size: int
    root_hash: bytes
    checkpoint_time: datetime | None
    origin: str
    key_hash: str
    checks: tuple[str, ...]
    trusted_size: int | None = None
    trusted_time: datetime | None = None

    @property
    def extends_trusted(self) -> bool | None:
        """Whether the proof's tree extends the trusted one (None: no trusted checkpoint).

        False means the trusted tree is the larger one and extends the proof's.
        """
        return None if self.trusted_size is None else self.tree_size >= self.trusted_size


@dataclass(frozen=True)
class _Leaf:
    registration_id: str
    seller: str
    sha256: str
    received_at: datetime


def _leaf_error(reason: str) -> VerificationError:
    return VerificationError(f"leaf record {reason}", check="leaf")


def _check_leaf(leaf: Mapping[str, Any], bundle: ProofBundle) -> _Leaf:
    """The leaf's fields, for the bundle's version; `seller` is the bundle's for `/2`
    (its commitment is checked separately, as the `seller` check)."""
    fields = LEAF_FIELDS_V2 if bundle.format == FORMAT_V2 else LEAF_FIELDS
    missing = [name for name in fields if name not in leaf]
    if missing:
        raise _leaf_error(f"is missing {', '.join(missing)}")
    # The leaf format is fixed (docs/DESIGN.md): a field this SDK does not
    # know would be a signed claim it cannot interpret, so it is refused.
    unexpected = sorted(str(name) for name in leaf if name not in fields)
    if unexpected:
        raise _leaf_error(f"has unexpected fields {', '.join(unexpected)}")
    for name in ("id", "seller") if bundle.format == FORMAT else ("id",):
        if not isinstance(leaf[name], str) or not leaf[name]:
            raise _leaf_error(f"field {name!r} must be a non-empty string")
    if bundle.format == FORMAT_V2:
        commitment = leaf["seller_commitment"]
        if not isinstance(commitment, str) or not _HEX_HASH.fullmatch(commitment):
            raise _leaf_error("field 'seller_commitment' must be 64 lowercase hex digits")
    if not isinstance(leaf["sha256"], str) or not _HEX_HASH.fullmatch(leaf["sha256"]):
        raise _leaf_error("field 'sha256' must be 64 lowercase hex digits")
    perceptual = leaf["perceptual"]
    if not isinstance(perceptual, Mapping) or not all(
        isinstance(name, str) and isinstance(value, str) and _HEX.fullmatch(value)
        for name, value in perceptual.items()
    ):
        raise _leaf_error("field 'perceptual' must map names to lowercase hex strings")
    received_at = leaf["received_at"]
    if not isinstance(received_at, str) or not _RFC3339.fullmatch(received_at):
        raise _leaf_error("field 'received_at' must be an RFC 3339 time")
    try:
        moment = datetime.fromisoformat(received_at)
    except ValueError as exc:
        raise _leaf_error(f"field 'received_at' is not a valid time: {exc}") from exc
    seller = leaf["seller"] if bundle.format == FORMAT else bundle.seller
    assert isinstance(seller, str)  # checked by ProofBundle for /2
    return _Leaf(leaf["id"], seller, leaf["sha256"], moment.astimezone(UTC))


def _file_sha256(image: bytes | bytearray | memoryview | str | os.PathLike[str]) -> str:
    if isinstance(image, (bytes, bytearray, memoryview)):
        return hashlib.sha256(image).hexdigest()
    with open(image, "rb") as photo:
        return hashlib.file_digest(photo, "sha256").hexdigest()


def verify_proof(
    bundle: ProofBundle | str | bytes | Mapping[str, Any],
    *,
    keys: str | NoteVerifier | Iterable[str | NoteVerifier],
    image: bytes | bytearray | memoryview | str | os.PathLike[str] | None = None,
    image_sha256: str | None = None,
    trusted_checkpoint: str | bytes | None = None,
    consistency: ConsistencyProof | Mapping[str, Any] | Sequence[bytes | str] | None = None,
) -> VerifiedProof:
    """Verify a proof bundle offline and return what it proves.

    **Parameters:**

    * **bundle** - a `ProofBundle`, or its JSON text or decoded mapping.
    * **keys** - the log's verifier key(s): vkey strings or `NoteVerifier`s.
      Pass every key the log has used; a key retired by rotation still
      verifies the proofs it signed.
    * **image** - optional photo bytes, or a path to the photo file.
    * **image_sha256** - optional hex SHA-256 of the photo file.
    * **trusted_checkpoint** - optional signed checkpoint note of this log
      that the caller already trusts; the proof's tree and the trusted tree
      must then be one append-only log (either may be the larger).
    * **consistency** - the consistency proof from the smaller of the two
      sizes to the larger (the `/v1/proofs/consistency` answer or its bare
      path), if the bundle does not carry it.

    Raises `VerificationError` whose `.check` names the first check that
    failed (one of `CHECKS`).  A malformed vkey raises `ValueError`, an
    unreadable image path `OSError`.

    Usage:

        result = verify_proof(bundle_json, keys=[current_vkey, retired_vkey])
    """
    verifiers = verifiers_from(keys)
    checks: list[str] = []

    # Verification plan.  Each step below raises VerificationError naming
    # its check; the names of the checks that passed are returned, in order.
    #
    # (1) format: the bundle parses as shotstamp-proof/1 or /2.
    # (2) checkpoint-signature: the checkpoint note carries a valid
    #     signature by one of the trusted keys, and none that fails.
    # (3) checkpoint-body, tree-size: the signed text is a checkpoint whose
    #     origin is the name of the key that signed it, and its tree size is
    #     the bundle's tree_size.
    # (4) leaf, leaf-hash: the leaf record is well-formed and, if the bundle
    #     states a leaf_hash, the record's canonical hash equals it.
    # (5) inclusion: the leaf hash at leaf_index, with inclusion_path, leads
    #     to the checkpoint's root hash.
    # (6) image: if the caller has the photo (bytes, file or SHA-256), it is
    #     the registered file.

    # (1): Parse the bundle.
    if not isinstance(bundle, ProofBundle):
        try:
            bundle = ProofBundle.from_json(bundle)
        except MalformedProofError as exc:
            raise VerificationError(f"proof bundle does not parse: {exc}", check="format") from exc
    checks.append("format")

    # (2), (3): Verify the checkpoint note's signature before reading its
    # contents; the signed text is a checkpoint of the signing key's log.
    signed = open_checkpoint(bundle.checkpoint, verifiers)
    checkpoint, signer = signed.checkpoint, signed.signer
    checks += ["checkpoint-signature", "checkpoint-body"]
    if checkpoint.size != bundle.tree_size:
        raise VerificationError(
            f"checkpoint is for tree size {checkpoint.size}, bundle says {bundle.tree_size}",
            check="tree-size",
        )
    checks.append("tree-size")

    # (4): The leaf record, and the hash the log committed to.
    leaf = _check_leaf(bundle.leaf, bundle)
    try:
        computed_leaf_hash = leaf_hash(canonical_json(dict(bundle.leaf)))
    except (TypeError, ValueError) as exc:
        raise VerificationError(f"leaf record is not canonical JSON: {exc}", check="leaf") from exc
    checks.append("leaf")
    if bundle.format == FORMAT_V2:
        # (4b) seller: the bundle's seller and salt open the leaf's commitment.
        assert bundle.seller is not None and bundle.seller_salt is not None
        if seller_commitment(bundle.seller_salt, bundle.seller) != bundle.leaf["seller_commitment"]:
            raise VerificationError(
                "the bundle's seller and salt do not open the leaf's seller_commitment",
                check="seller",
            )
        checks.append("seller")
    if bundle.leaf_hash is not None:
        if computed_leaf_hash != bundle.leaf_hash:
            raise VerificationError(
                f"leaf record hashes to {computed_leaf_hash.hex()}, "
                f"bundle says {bundle.leaf_hash.hex()}",
                check="leaf-hash",
            )
        checks.append("leaf-hash")

    # (5): The leaf is in the signed tree.
    try:
        verify_inclusion(
            bundle.leaf_index,
            bundle.tree_size,
            computed_leaf_hash,
            bundle.inclusion_path,
            checkpoint.root_hash,
        )
    except VerificationError as exc:
        raise VerificationError(
            f"leaf {bundle.leaf_index} is not in the checkpoint's tree of size "
            f"{bundle.tree_size}: {exc}",
            check="inclusion",
        ) from exc
    checks.append("inclusion")

    # (6): The photo the caller holds is the one registered.
    if image is not None or image_sha256 is not None:
        claimed = []
        if image is not None:
            claimed.append(_file_sha256(image))
        if image_sha256 is not None:
            normalised = image_sha256.strip().lower()
            if not _HEX_HASH.fullmatch(normalised):
                raise ValueError(f"image_sha256 must be 64 hex digits, got {image_sha256!r}")
            claimed.append(normalised)
        for digest in claimed:
            if digest != leaf.sha256:
                raise VerificationError(
                    f"image sha256 {digest} is not the registered sha256 {leaf.sha256}",
                    check="image",
                )
        checks.append("image")

    trusted = None
    if trusted_checkpoint is not None:
        # (7): The checkpoint the caller trusts is genuine.
        trusted = open_checkpoint(trusted_checkpoint, verifiers, which="trusted-checkpoint")
        checks += ["trusted-checkpoint-signature", "trusted-checkpoint-body"]

        # (8): Of the same log.
        if trusted.origin != checkpoint.origin:
            raise VerificationError(
                f"the trusted checkpoint is of log {trusted.origin!r}, "
                f"the proof of log {checkpoint.origin!r}",
                check="origin",
            )
        checks.append("origin")

        # (9): One tree extends the other.
        older, newer = sorted((trusted.checkpoint, checkpoint), key=lambda c: c.size)
        path = _consistency_path(bundle, consistency, older.size, newer.size)
        try:
            check_extends(older, newer, path)
        except VerificationError as exc:
            raise VerificationError(
                f"the proof's checkpoint (size {checkpoint.size}) and the trusted one "
                f"(size {trusted.size}) are not one append-only log: {exc}",
                check="consistency",
            ) from exc
        checks.append("consistency")

    return VerifiedProof(
        registration_id=leaf.registration_id,
        seller=leaf.seller,
        sha256=leaf.sha256,
        received_at=leaf.received_at,
        leaf_index=bundle.leaf_index,
        tree_size=bundle.tree_size,
        root_hash=checkpoint.root_hash,
        checkpoint_time=checkpoint.timestamp,
        origin=checkpoint.origin,
        key_hash=signer.key_hash.hex(),
        checks=tuple(checks),
        trusted_size=None if trusted is None else trusted.size,
        trusted_time=None if trusted is None else trusted.timestamp,
    )


def _consistency_path(
    bundle: ProofBundle,
    given: ConsistencyProof | Mapping[str, Any] | Sequence[bytes | str] | None,
    first: int,
    second: int,
) -> tuple[bytes, ...]:
    """The path from size `first` to `second`: the caller's, else the bundle's."""
    if first == second or first == 0:
        return ()  # nothing to prove beyond equal (or empty) roots
    if given is not None:
        return proof_path(given, first, second)
    carried = bundle.consistency_path(first, second)
    if carried is None:
        raise VerificationError(
            f"no consistency proof from size {first} to {second}: the bundle carries none; "
            f"fetch GET /v1/proofs/consistency?from={first}&to={second}",
            check="consistency",
        )
    return carried
