"""Signed checkpoints: C2SP `signed-note` envelopes around `tlog-checkpoint` bodies.

A checkpoint commits the log to a tree size and root hash; the note around it
carries Ed25519 signatures.  The wire forms follow c2sp.org/signed-note and
c2sp.org/tlog-checkpoint, and key strings are those Go's
`golang.org/x/mod/sumdb/note` reads, so Go tooling can verify shotstamp
checkpoints and the reverse:

    shotstamp.example/log          <- origin (also the signing key's name)
    1042                           <- tree size
    Kx5n...base64 root...=         <- root hash
    Timestamp: 1732611600123456789 <- extension line, Unix time in nanoseconds

    — shotstamp.example/log <base64(4-byte key hash || 64-byte signature)>

Parsing failures raise `MalformedProofError` naming the field; a note whose
signatures do not verify raises `VerificationError` (check
`checkpoint-signature`).  Bad key strings and names passed in by the caller
raise `ValueError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from shotstamp._exceptions import MalformedProofError, VerificationError
from shotstamp._merkle import HASH_SIZE

__all__: list[str] = []

# Signature type byte of Ed25519 keys (c2sp.org/signed-note, "Signature types").
ALG_ED25519 = 0x01
# The spec requires accepting at least 16 signatures and asks for some limit;
# Go's note.Open stops at 100, so anything it accepts parses here too.
MAX_SIGNATURES = 100
TIMESTAMP_PREFIX = "Timestamp: "

_SIGNATURE_PREFIX = "— "  # em dash U+2014, space
_KEY_HASH_SIZE = 4
_ED25519_KEY_SIZE = 32
_ED25519_SIGNATURE_SIZE = 64
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_MAX_TREE_SIZE = 2**64 - 1  # Tree sizes are uint64 everywhere else.
# 9999-12-31T23:59:59.999999999Z: datetime goes no further, so refuse later
# timestamps at parse time rather than fail in `.timestamp`.
_MAX_TIMESTAMP_NS = 253_402_300_800 * 10**9 - 1


def _has_control_characters(text: str) -> bool:
    return any(char < " " and char != "\n" for char in text)


def _is_line(text: str) -> bool:
    """Non-empty Unicode text with no newline or other control character."""
    return bool(text) and _is_unicode_text(text) and not any(char < " " for char in text)


def _is_valid_name(name: str) -> bool:
    """Key names are non-empty, without Unicode spaces, `+` or control characters."""
    return (
        bool(name)
        and "+" not in name
        and not any(char.isspace() or char < " " for char in name)
        and _is_unicode_text(name)
    )


def _is_unicode_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _b64decode(value: str) -> bytes:
    """Strict standard base64: alphabet and padding checked."""
    return base64.b64decode(value.encode("ascii"), validate=True)


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def key_hash(name: str, public_key_raw: bytes) -> bytes:
    """The 4-byte key hash (key ID) of an Ed25519 key under `name`.

    SHA-256(name || 0x0A || 0x01 || public key)[:4], as c2sp.org/signed-note
    recommends and Go's note package computes.
    """
    if not _is_valid_name(name):
        raise ValueError(f"invalid key name {name!r}")
    if len(public_key_raw) != _ED25519_KEY_SIZE:
        raise ValueError(
            f"Ed25519 public key has size {len(public_key_raw)}, want {_ED25519_KEY_SIZE}"
        )
    digest = hashlib.sha256(
        name.encode("utf-8") + b"\n" + bytes([ALG_ED25519]) + public_key_raw
    ).digest()
    return digest[:_KEY_HASH_SIZE]


def format_vkey(name: str, public_key_raw: bytes) -> str:
    """The verifier key string `name+<8 hex>+base64(0x01 || public key)`."""
    hash_hex = key_hash(name, public_key_raw).hex()
    return f"{name}+{hash_hex}+{_b64encode(bytes([ALG_ED25519]) + public_key_raw)}"


def _check_note_text(text: str) -> None:
    def malformed(reason: str) -> MalformedProofError:
        return MalformedProofError(f"malformed note: {reason}", field="text")

    if not _is_unicode_text(text):
        raise malformed("text is not valid Unicode")
    if _has_control_characters(text):
        raise malformed("text contains control characters")
    if not text.endswith("\n"):
        raise malformed("text does not end in a newline")
    # The spec now allows empty lines in the text (the last one separates the
    # signatures), but a checkpoint has none, and refusing them keeps the
    # split between text and signatures unambiguous for every reader.
    if text.startswith("\n") or "\n\n" in text:
        raise malformed("text contains a blank line")


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, 4-byte key hash and raw signature bytes."""

    name: str
    key_hash: bytes
    signature: bytes

    def __post_init__(self) -> None:
        if not _is_valid_name(self.name):
            raise MalformedProofError(
                f"malformed note: invalid key name {self.name!r}", field="signature"
            )
        if len(self.key_hash) != _KEY_HASH_SIZE:
            raise MalformedProofError(
                f"malformed note: key hash has size {len(self.key_hash)}, want {_KEY_HASH_SIZE}",
                field="signature",
            )
        if not self.signature:
            raise MalformedProofError("malformed note: empty signature", field="signature")

    def to_line(self) -> str:
        """`— <name> <base64(key hash || signature)>` and a newline."""
        return f"{_SIGNATURE_PREFIX}{self.name} {_b64encode(self.key_hash + self.signature)}\n"

    @classmethod
    def from_line(cls, line: str) -> NoteSignature:
        """Parse one signature line (without its newline)."""
        if not line.startswith(_SIGNATURE_PREFIX):
            raise MalformedProofError(
                "malformed note: signature line does not start with an em dash and a space",
                field="signature",
            )
        name, _, encoded = line[len(_SIGNATURE_PREFIX) :].partition(" ")
        if not _is_valid_name(name):
            raise MalformedProofError(
                f"malformed note: invalid key name {name!r}", field="signature"
            )
        try:
            raw = _b64decode(encoded)
        except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
            raise MalformedProofError(
                f"malformed note: signature by {name!r} is not base64", field="signature"
            ) from exc
        if len(raw) <= _KEY_HASH_SIZE:
            raise MalformedProofError(
                f"malformed note: signature by {name!r} has {len(raw)} bytes, "
                f"want more than {_KEY_HASH_SIZE}",
                field="signature",
            )
        return cls(name, raw[:_KEY_HASH_SIZE], raw[_KEY_HASH_SIZE:])


@dataclass(frozen=True)
class SignedNote:
    """A note text and its signatures (c2sp.org/signed-note).

    The text is UTF-8 without control characters other than newline, ends in a
    newline and has no blank line; there are 1 to `MAX_SIGNATURES` signatures.
    """

    text: str
    signatures: tuple[NoteSignature, ...]

    def __post_init__(self) -> None:
        _check_note_text(self.text)
        signatures = tuple(self.signatures)
        object.__setattr__(self, "signatures", signatures)
        if not signatures:
            raise MalformedProofError("malformed note: no signatures", field="signatures")
        if len(signatures) > MAX_SIGNATURES:
            raise MalformedProofError(
                f"malformed note: {len(signatures)} signatures, at most {MAX_SIGNATURES}",
                field="signatures",
            )

    def to_text(self) -> str:
        """The note as sent: text, a blank line, one line per signature."""
        return self.text + "\n" + "".join(s.to_line() for s in self.signatures)

    @classmethod
    def from_text(cls, note: str | bytes) -> SignedNote:
        """Parse a signed note; signatures are not verified (see `open_note`)."""
        if isinstance(note, bytes):
            try:
                note = note.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise MalformedProofError("malformed note: not valid UTF-8", field="text") from exc
        if _has_control_characters(note):
            raise MalformedProofError("malformed note: contains control characters", field="text")
        split = note.rfind("\n\n")
        if split < 0:
            raise MalformedProofError(
                "malformed note: no blank line before the signatures", field="signatures"
            )
        text, block = note[: split + 1], note[split + 2 :]
        if not block.endswith("\n"):
            raise MalformedProofError(
                "malformed note: signature block does not end in a newline", field="signatures"
            )
        lines = block[:-1].split("\n")
        if len(lines) > MAX_SIGNATURES:
            # Checked before parsing so a huge note costs nothing more.
            raise MalformedProofError(
                f"malformed note: {len(lines)} signatures, at most {MAX_SIGNATURES}",
                field="signatures",
            )
        return cls(text, tuple(NoteSignature.from_line(line) for line in lines))


@dataclass(frozen=True)
class NoteVerifier:
    """A known Ed25519 note key: its name and 32-byte public key."""

    name: str
    public_key_raw: bytes
    _key: Ed25519PublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _is_valid_name(self.name):
            raise ValueError(f"invalid key name {self.name!r}")
        if len(self.public_key_raw) != _ED25519_KEY_SIZE:
            raise ValueError(
                f"Ed25519 public key has size {len(self.public_key_raw)}, want {_ED25519_KEY_SIZE}"
            )
        object.__setattr__(self, "_key", Ed25519PublicKey.from_public_bytes(self.public_key_raw))

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteVerifier:
        """Parse a verifier key string `name+<8 hex key hash>+base64(0x01 || key)`.

        Checks the name, that the algorithm byte is Ed25519's and that the key
        hash matches the name and key.  Raises `ValueError` otherwise.
        """
        # base64 has "+" in its alphabet: only the first two separate fields.
        parts = vkey.split("+", 2)
        if len(parts) != 3:
            raise ValueError(f"malformed verifier key {vkey!r}: want name+hash+key")
        name, hash_hex, encoded = parts
        if not _is_valid_name(name):
            raise ValueError(f"malformed verifier key {vkey!r}: invalid name")
        if not _HEX8.fullmatch(hash_hex):
            raise ValueError(f"malformed verifier key {vkey!r}: key hash is not 8 hex digits")
        try:
            raw = _b64decode(encoded)
        except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
            raise ValueError(f"malformed verifier key {vkey!r}: key is not base64") from exc
        if not raw:
            raise ValueError(f"malformed verifier key {vkey!r}: empty key")
        if raw[0] != ALG_ED25519:
            raise ValueError(
                f"malformed verifier key {vkey!r}: unknown algorithm {raw[0]:#04x}, "
                f"want {ALG_ED25519:#04x} (Ed25519)"
            )
        if len(raw) != 1 + _ED25519_KEY_SIZE:
            raise ValueError(
                f"malformed verifier key {vkey!r}: key has size {len(raw) - 1}, "
                f"want {_ED25519_KEY_SIZE}"
            )
        verifier = cls(name, raw[1:])
        if verifier.key_hash != bytes.fromhex(hash_hex):
            raise ValueError(
                f"malformed verifier key {vkey!r}: key hash {hash_hex.lower()} does not match "
                f"name and key, want {verifier.key_hash.hex()}"
            )
        return verifier

    @property
    def key_hash(self) -> bytes:
        return key_hash(self.name, self.public_key_raw)

    @property
    def vkey(self) -> str:
        return format_vkey(self.name, self.public_key_raw)

    def verify(self, text: str, signature: bytes) -> bool:
        """Whether `signature` is this key's Ed25519 signature of `text`."""
        if len(signature) != _ED25519_SIGNATURE_SIZE:
            return False
        try:
            self._key.verify(signature, text.encode("utf-8"))
        except InvalidSignature:
            return False
        return True


class NoteSigner:
    """Signs note texts with an Ed25519 private key under a key name."""

    __slots__ = ("_private_key", "verifier")

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self._private_key = private_key
        self.verifier = NoteVerifier(name, raw)

    def __repr__(self) -> str:
        return f"NoteSigner({self.name!r}, key_hash={self.key_hash.hex()})"

    @property
    def name(self) -> str:
        return self.verifier.name

    @property
    def key_hash(self) -> bytes:
        return self.verifier.key_hash

    def sign(self, text: str) -> SignedNote:
        """Sign `text` (which must be a valid note text) into a one-signature note."""
        _check_note_text(text)
        signature = self._private_key.sign(text.encode("utf-8"))
        return SignedNote(text, (NoteSignature(self.name, self.key_hash, signature),))


def verifiers_from(keys: str | NoteVerifier | Iterable[str | NoteVerifier]) -> list[NoteVerifier]:
    """Verifier keys from vkey strings or `NoteVerifier`s, one or several.

    Raises `ValueError` for a malformed vkey or no keys at all, `TypeError`
    for anything else.
    """
    items: Iterable[str | NoteVerifier] = [keys] if isinstance(keys, (str, NoteVerifier)) else keys
    verifiers = []
    for key in items:
        if isinstance(key, NoteVerifier):
            verifiers.append(key)
        elif isinstance(key, str):
            verifiers.append(NoteVerifier.from_vkey(key))
        else:
            raise TypeError(f"keys must be vkey strings or NoteVerifiers, got {type(key).__name__}")
    if not verifiers:
        raise ValueError("verification needs at least one key")
    return verifiers


def open_note(note: str | bytes, verifiers: NoteVerifier | Iterable[NoteVerifier]) -> SignedNote:
    """Parse `note` and verify its signatures against the known `verifiers`.

    Following c2sp.org/signed-note: signatures by unknown keys (name and key
    hash not both matching a known key) are ignored; a signature by a known
    key that does not verify rejects the whole note; at least one signature by
    a known key must verify.  Returns the note with only its verified
    signatures, in their original order, duplicates dropped.

    Raises `MalformedProofError` if the note does not parse and
    `VerificationError` (check `checkpoint-signature`) if it is not verified.
    """
    known: dict[tuple[str, bytes], NoteVerifier] = {}
    for verifier in [verifiers] if isinstance(verifiers, NoteVerifier) else verifiers:
        slot = (verifier.name, verifier.key_hash)
        if slot in known and known[slot] != verifier:
            raise ValueError(f"ambiguous keys: two keys are named {verifier.name}+{slot[1].hex()}")
        known[slot] = verifier
    if not known:
        raise ValueError("open_note needs at least one verifier")

    parsed = SignedNote.from_text(note)
    verified: list[NoteSignature] = []
    seen: set[tuple[str, bytes]] = set()
    for signature in parsed.signatures:
        slot = (signature.name, signature.key_hash)
        key = known.get(slot)
        if key is None or slot in seen:
            continue
        seen.add(slot)
        if not key.verify(parsed.text, signature.signature):
            raise VerificationError(
                f"invalid signature for key {signature.name}+{signature.key_hash.hex()}",
                check="checkpoint-signature",
            )
        verified.append(signature)
    if not verified:
        signers = ", ".join(f"{s.name}+{s.key_hash.hex()}" for s in parsed.signatures)
        trusted = ", ".join(f"{name}+{hash_.hex()}" for name, hash_ in known)
        raise VerificationError(
            f"note has no signature by a known key: signed by {signers}; known keys {trusted}",
            check="checkpoint-signature",
        )
    return SignedNote(parsed.text, tuple(verified))


def _malformed_checkpoint(reason: str, field_name: str) -> MalformedProofError:
    return MalformedProofError(f"malformed checkpoint: {reason}", field=field_name)


@dataclass(frozen=True)
class Checkpoint:
    """A tlog-checkpoint body: origin, tree size, root hash and extension lines.

    The root hash is the RFC 9162 SHA-256 root, 32 bytes.  Extension lines are
    kept verbatim; `Timestamp: <unix ns>` is the one shotstamp reads.
    """

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "extensions", tuple(self.extensions))
        if not _is_line(self.origin):
            raise _malformed_checkpoint("invalid origin", "origin")
        if (
            not isinstance(self.size, int)
            or isinstance(self.size, bool)
            or not 0 <= self.size <= _MAX_TREE_SIZE
        ):
            raise _malformed_checkpoint("invalid tree size", "size")
        if len(self.root_hash) != HASH_SIZE:
            raise _malformed_checkpoint("invalid root hash", "root_hash")
        for line in self.extensions:
            if not _is_line(line):
                raise _malformed_checkpoint("invalid extension line", "extensions")
        timestamps = [line for line in self.extensions if line.startswith("Timestamp:")]
        if len(timestamps) > 1:
            raise _malformed_checkpoint("more than one timestamp", "timestamp")
        if timestamps:
            digits = timestamps[0].removeprefix(TIMESTAMP_PREFIX)
            if (
                not timestamps[0].startswith(TIMESTAMP_PREFIX)
                or not _DECIMAL.fullmatch(digits)
                or int(digits) > _MAX_TIMESTAMP_NS
            ):
                raise _malformed_checkpoint("invalid timestamp", "timestamp")

    @property
    def timestamp_ns(self) -> int | None:
        """The `Timestamp:` extension in Unix nanoseconds, or None if absent."""
        for line in self.extensions:
            if line.startswith(TIMESTAMP_PREFIX):
                return int(line.removeprefix(TIMESTAMP_PREFIX))
        return None

    @property
    def timestamp(self) -> datetime | None:
        """The `Timestamp:` extension as an aware UTC datetime (to the microsecond)."""
        nanoseconds = self.timestamp_ns
        if nanoseconds is None:
            return None
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=nanoseconds // 1000)

    def to_text(self) -> str:
        """The note text: one line each for origin, size, root and extensions."""
        lines = [self.origin, str(self.size), _b64encode(self.root_hash), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def from_text(cls, text: str) -> Checkpoint:
        """Parse a checkpoint body (the text of its signed note)."""
        if not text.endswith("\n"):
            raise _malformed_checkpoint("missing final newline", "text")
        lines = text[:-1].split("\n")
        if len(lines) == 1:
            raise _malformed_checkpoint("missing tree size", "size")
        if len(lines) == 2:
            raise _malformed_checkpoint("missing root hash", "root_hash")
        origin, size_line, root_line, *extensions = lines
        if not origin:
            raise _malformed_checkpoint("invalid origin", "origin")
        if not _DECIMAL.fullmatch(size_line):
            raise _malformed_checkpoint("invalid tree size", "size")
        try:
            root = _b64decode(root_line)
        except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
            raise _malformed_checkpoint("invalid root hash", "root_hash") from exc
        # Only the canonical encoding, so one checkpoint has one text.
        if _b64encode(root) != root_line:
            raise _malformed_checkpoint("invalid root hash", "root_hash")
        if any(not line for line in extensions):
            raise _malformed_checkpoint("empty extension line", "extensions")
        return cls(origin, int(size_line), root, tuple(extensions))


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint whose note verified under a trusted key named for its origin.

    `note` is the note as received (to store or pass on), `checkpoint` its
    parsed body and `signer` the verified signature by the log's own key.
    """

    note: str
    checkpoint: Checkpoint
    signer: NoteSignature

    @property
    def origin(self) -> str:
        return self.checkpoint.origin

    @property
    def size(self) -> int:
        return self.checkpoint.size

    @property
    def root_hash(self) -> bytes:
        return self.checkpoint.root_hash

    @property
    def timestamp(self) -> datetime | None:
        return self.checkpoint.timestamp


def open_checkpoint(
    note: str | bytes,
    verifiers: NoteVerifier | Iterable[NoteVerifier],
    *,
    which: str = "checkpoint",
) -> SignedCheckpoint:
    """Verify a checkpoint note's signature, then parse its body.

    The note must carry a valid signature by one of `verifiers` (see
    `open_note`), and its origin must be the name of a key that signed it: a
    log's checkpoints are signed by the log's own key.  Raises
    `VerificationError` with check `<which>-signature` or `<which>-body`, so
    a caller verifying several checkpoints names which one failed (e.g.
    `which="trusted-checkpoint"`).
    """
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise VerificationError(
                f"{which} note is not UTF-8", check=f"{which}-signature"
            ) from exc
    try:
        opened = open_note(note, verifiers)
    except MalformedProofError as exc:
        raise VerificationError(
            f"{which} note does not parse: {exc}", check=f"{which}-signature"
        ) from exc
    except VerificationError as exc:
        raise VerificationError(str(exc), check=f"{which}-signature") from exc
    try:
        body = Checkpoint.from_text(opened.text)
    except MalformedProofError as exc:
        raise VerificationError(
            f"signed {which} does not parse: {exc}", check=f"{which}-body"
        ) from exc
    signer = next((s for s in opened.signatures if s.name == body.origin), None)
    if signer is None:
        raise VerificationError(
            f"{which} origin {body.origin!r} is not the name of the key that signed it "
            f"({', '.join(repr(s.name) for s in opened.signatures)})",
            check=f"{which}-body",
        )
    return SignedCheckpoint(note, body, signer)
