"""C2SP signed notes and checkpoints, with Go's sumdb/note test data for interop.

The PeterNeumann and EnochRoot keys, notes and signatures are from
golang.org/x/mod/sumdb/note (note_test.go, BSD-3-Clause).
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shotstamp._checkpoint import (
    MAX_SIGNATURES,
    Checkpoint,
    NoteSignature,
    NoteSigner,
    NoteVerifier,
    SignedNote,
    format_vkey,
    key_hash,
    open_note,
)
from shotstamp._exceptions import MalformedProofError, VerificationError

PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqd"
    "ngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWL"
    "ox33WWd1RvMc+QQ=\n"
)

ORIGIN = "shotstamp.test/log"
ROOT = hashlib.sha256(b"some root").digest()


def _key(seed: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed.encode()).digest())


def _peter_signer() -> NoteSigner:
    # Go's skey is PRIVATE+KEY+name+hash+base64(0x01 || 32-byte seed).
    seed = base64.b64decode(PETER_SKEY.split("+", 4)[4])[1:]
    return NoteSigner("PeterNeumann", Ed25519PrivateKey.from_private_bytes(seed))


# --- keys --------------------------------------------------------------------


def test_go_verifier_key_parses() -> None:
    verifier = NoteVerifier.from_vkey(PETER_VKEY)
    assert verifier.name == "PeterNeumann"
    assert verifier.key_hash == bytes.fromhex("c74f20a3")
    assert verifier.vkey == PETER_VKEY
    assert len(verifier.public_key_raw) == 32
    assert format_vkey(verifier.name, verifier.public_key_raw) == PETER_VKEY


def test_signer_from_go_private_key_has_go_verifier_key() -> None:
    assert _peter_signer().verifier.vkey == PETER_VKEY
    assert _peter_signer().key_hash == bytes.fromhex("c74f20a3")


def test_every_mangling_of_a_verifier_key_is_refused() -> None:
    # Port of TestNewVerifier: every proper substring and every byte + 1.
    raw = PETER_VKEY.encode()
    mangled = {raw[i:j] for i in range(len(raw) + 1) for j in range(i + 1, len(raw) + 1)}
    mangled.discard(raw)
    for i in range(len(raw)):
        mangled.add(raw[:i] + bytes([raw[i] + 1]) + raw[i + 1 :])
    accepted = []
    for candidate in mangled:
        try:
            NoteVerifier.from_vkey(candidate.decode())
        except ValueError:
            continue
        accepted.append(candidate)
    assert accepted == []


@pytest.mark.parametrize(
    ("vkey", "message"),
    [
        # Wrong length key and unknown algorithm, each with a matching key hash.
        (
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
            "key has size 36, want 32",
        ),
        (
            "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "unknown algorithm 0x65",
        ),
        ("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "does not match"),
        ("Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "invalid name"),
        ("PeterNeumann+c74f20a3", "want name\\+hash\\+key"),
        ("PeterNeumann+c74f20+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "8 hex digits"),
        ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T", "not base64"),
    ],
)
def test_bad_verifier_keys_say_why(vkey: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NoteVerifier.from_vkey(vkey)


def test_key_hash_is_c2sp_key_id() -> None:
    public = NoteVerifier.from_vkey(PETER_VKEY).public_key_raw
    expected = hashlib.sha256(b"PeterNeumann\n\x01" + public).digest()[:4]
    assert key_hash("PeterNeumann", public) == expected == bytes.fromhex("c74f20a3")


@pytest.mark.parametrize("name", ["", "a b", "a+b", "tab\there", "nbsp\u00a0"])
def test_invalid_key_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid key name"):
        key_hash(name, bytes(32))
    with pytest.raises(ValueError, match="invalid key name"):
        NoteSigner(name, _key("a"))


def test_public_key_size_is_checked() -> None:
    with pytest.raises(ValueError, match="size 31, want 32"):
        format_vkey("log", bytes(31))


# --- signing and opening, against Go's outputs ------------------------------


def test_signing_reproduces_gos_signed_note_byte_for_byte() -> None:
    assert _peter_signer().sign(TEXT).to_text() == TEXT + "\n" + PETER_SIG


def test_open_go_note_with_one_known_key_ignores_the_unknown_one() -> None:
    opened = open_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, NoteVerifier.from_vkey(PETER_VKEY))
    assert opened.text == TEXT
    assert [(s.name, s.key_hash.hex()) for s in opened.signatures] == [("PeterNeumann", "c74f20a3")]


def test_open_go_note_with_both_keys_verifies_both() -> None:
    keys = [NoteVerifier.from_vkey(PETER_VKEY), NoteVerifier.from_vkey(ENOCH_VKEY)]
    opened = open_note((TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode(), keys)
    assert [s.name for s in opened.signatures] == ["PeterNeumann", "EnochRoot"]


def test_open_go_note_with_no_known_key_fails() -> None:
    with pytest.raises(VerificationError, match="no signature by a known key") as exc:
        open_note(TEXT + "\n" + PETER_SIG, NoteVerifier.from_vkey(ENOCH_VKEY))
    assert exc.value.check == "checkpoint-signature"


def test_corrupted_signature_by_known_key_rejects_the_note() -> None:
    corrupted = PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    with pytest.raises(
        VerificationError, match=r"^invalid signature for key PeterNeumann\+c74f20a3$"
    ) as exc:
        open_note(TEXT + "\n" + corrupted, NoteVerifier.from_vkey(PETER_VKEY))
    assert exc.value.check == "checkpoint-signature"


def test_duplicate_signatures_are_verified_once() -> None:
    note = TEXT + "\n" + PETER_SIG * 3 + ENOCH_SIG
    opened = open_note(note, NoteVerifier.from_vkey(PETER_VKEY))
    assert len(opened.signatures) == 1


def test_signature_count_limit() -> None:
    verifier = NoteVerifier.from_vkey(PETER_VKEY)
    open_note(TEXT + "\n" + PETER_SIG * MAX_SIGNATURES, verifier)
    with pytest.raises(MalformedProofError, match="101 signatures, at most 100"):
        open_note(TEXT + "\n" + PETER_SIG * (MAX_SIGNATURES + 1), verifier)


@pytest.mark.parametrize(
    ("note", "message"),
    [
        (TEXT, "no blank line before the signatures"),
        (TEXT + "\n", "signature block does not end in a newline"),
        (TEXT + "\n" + PETER_SIG[:-1], "signature block does not end in a newline"),
        ("\x01" + TEXT + "\n" + PETER_SIG, "control characters"),
        (b"\xff" + (TEXT + "\n" + PETER_SIG).encode(), "not valid UTF-8"),
        (
            TEXT + "\n" + "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUg=\n",
            "base64",
        ),
        (TEXT + "\n" + PETER_SIG + "Unexpected line.\n", "does not start with an em dash"),
        (TEXT + "\n" + "- PeterNeumann x08go/ZJkuBS9U=\n", "does not start with an em dash"),
        (TEXT + "\n" + "— PeterNeumann x08g\n", "has 3 bytes, want more than 4"),
        (TEXT + "\n" + "— Peter+Neumann x08go/ZJkuBS\n", "invalid key name"),
        ("first\n\nsecond\n\n" + PETER_SIG, "blank line"),
        ("\n\n" + PETER_SIG, "blank line"),
    ],
)
def test_malformed_notes_are_refused(note: str | bytes, message: str) -> None:
    with pytest.raises(MalformedProofError, match=message):
        open_note(note, NoteVerifier.from_vkey(PETER_VKEY))


def test_signed_note_round_trip_and_validation() -> None:
    note = SignedNote.from_text(TEXT + "\n" + PETER_SIG + ENOCH_SIG)
    assert SignedNote.from_text(note.to_text()) == note
    assert note.to_text() == TEXT + "\n" + PETER_SIG + ENOCH_SIG
    with pytest.raises(MalformedProofError, match="no signatures"):
        SignedNote(TEXT, ())
    with pytest.raises(MalformedProofError, match="does not end in a newline"):
        SignedNote(TEXT.rstrip("\n"), note.signatures)
    with pytest.raises(MalformedProofError, match="key hash has size 3, want 4"):
        NoteSignature("log", b"abc", b"sig")


@pytest.mark.parametrize("text", ["no newline", "a\n\nb\n", "\x00\n", "\ud800\n"])
def test_signer_refuses_invalid_texts(text: str) -> None:
    with pytest.raises(MalformedProofError, match="malformed note"):
        NoteSigner("log", _key("a")).sign(text)


class _CollidingVerifier(NoteVerifier):
    """A key whose 4-byte key hash collides with another key's under one name."""

    @property
    def key_hash(self) -> bytes:
        return b"\x00\x00\x00\x00"


def test_verifier_lists_refuse_ambiguity_and_emptiness() -> None:
    signer = NoteSigner("log", _key("a"))
    note = signer.sign("x\n").to_text()
    assert open_note(note, [signer.verifier, signer.verifier]).signatures  # duplicates are fine
    one = _CollidingVerifier("log", signer.verifier.public_key_raw)
    other = _CollidingVerifier("log", NoteSigner("log", _key("b")).verifier.public_key_raw)
    with pytest.raises(ValueError, match="ambiguous keys: two keys are named log\\+00000000"):
        open_note(note, [one, other])
    with pytest.raises(ValueError, match="at least one verifier"):
        open_note(note, [])


# --- checkpoints --------------------------------------------------------------


def _checkpoint(**changes: object) -> Checkpoint:
    fields: dict[str, object] = {
        "origin": ORIGIN,
        "size": 1042,
        "root_hash": ROOT,
        "extensions": ("Timestamp: 1732611600123456789",),
    }
    fields.update(changes)
    return Checkpoint(**fields)  # type: ignore[arg-type]


def test_checkpoint_text_round_trip() -> None:
    checkpoint = _checkpoint()
    text = checkpoint.to_text()
    assert text == (
        f"{ORIGIN}\n1042\n{base64.b64encode(ROOT).decode()}\nTimestamp: 1732611600123456789\n"
    )
    assert Checkpoint.from_text(text) == checkpoint


def test_checkpoint_timestamp_is_an_aware_utc_datetime() -> None:
    checkpoint = _checkpoint()
    assert checkpoint.timestamp_ns == 1732611600123456789
    assert checkpoint.timestamp == datetime(2024, 11, 26, 9, 0, 0, 123456, tzinfo=UTC)
    assert _checkpoint(extensions=()).timestamp is None
    assert _checkpoint(extensions=("Other: x",)).timestamp_ns is None
    assert _checkpoint(extensions=("Timestamp: 0",)).timestamp == datetime(1970, 1, 1, tzinfo=UTC)


def test_c2sp_example_checkpoint_body_parses() -> None:
    text = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    checkpoint = Checkpoint.from_text(text)
    assert (checkpoint.origin, checkpoint.size, checkpoint.extensions) == (
        "example.com/behind-the-sofa",
        20852163,
        (),
    )
    assert checkpoint.to_text() == text


_ROOT_LINE = base64.b64encode(ROOT).decode()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"{ORIGIN}\n1042\n{_ROOT_LINE}", "missing final newline"),
        (f"{ORIGIN}\n", "missing tree size"),
        (f"{ORIGIN}\n1042\n", "missing root hash"),
        (f"\n1042\n{_ROOT_LINE}\n", "invalid origin"),
        (f"{ORIGIN}\n01042\n{_ROOT_LINE}\n", "invalid tree size"),
        (f"{ORIGIN}\n-1\n{_ROOT_LINE}\n", "invalid tree size"),
        (f"{ORIGIN}\n١٠\n{_ROOT_LINE}\n", "invalid tree size"),
        (f"{ORIGIN}\n {_ROOT_LINE}\n1\n", "invalid tree size"),
        (f"{ORIGIN}\n{2**64}\n{_ROOT_LINE}\n", "invalid tree size"),
        (f"{ORIGIN}\n1042\nnot base64!\n", "invalid root hash"),
        (f"{ORIGIN}\n1042\n{base64.b64encode(ROOT[:31]).decode()}\n", "invalid root hash"),
        (f"{ORIGIN}\n1042\n{_ROOT_LINE.rstrip('=')}\n", "invalid root hash"),
        (f"{ORIGIN}\n1042\n{_ROOT_LINE}\n\n", "empty extension line"),
        (f"{ORIGIN}\n1042\n{_ROOT_LINE}\nTimestamp: 01\n", "invalid timestamp"),
        (f"{ORIGIN}\n1042\n{_ROOT_LINE}\nTimestamp: -5\n", "invalid timestamp"),
        (f"{ORIGIN}\n1042\n{_ROOT_LINE}\nTimestamp:5\n", "invalid timestamp"),
        (f"{ORIGIN}\n1042\n{_ROOT_LINE}\nTimestamp: {10**30}\n", "invalid timestamp"),
        (
            f"{ORIGIN}\n1042\n{_ROOT_LINE}\nTimestamp: 1\nTimestamp: 2\n",
            "more than one timestamp",
        ),
    ],
)
def test_checkpoint_parse_errors_name_their_field(text: str, message: str) -> None:
    with pytest.raises(MalformedProofError, match=f"^malformed checkpoint: {message}$"):
        Checkpoint.from_text(text)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"origin": ""}, "invalid origin"),
        ({"origin": "a\nb"}, "invalid origin"),
        ({"size": -1}, "invalid tree size"),
        ({"size": True}, "invalid tree size"),
        ({"size": 2**64}, "invalid tree size"),
        ({"root_hash": ROOT[:31]}, "invalid root hash"),
        ({"extensions": ("",)}, "invalid extension line"),
        ({"extensions": ("two\nlines",)}, "invalid extension line"),
    ],
)
def test_checkpoint_fields_are_validated(changes: dict[str, object], message: str) -> None:
    with pytest.raises(MalformedProofError, match=message) as exc:
        _checkpoint(**changes)
    assert exc.value.field in {"origin", "size", "root_hash", "extensions"}


# --- signed checkpoints: tampering, keys and rotation ------------------------


def _signed(signer: NoteSigner, checkpoint: Checkpoint | None = None) -> str:
    return signer.sign((checkpoint or _checkpoint()).to_text()).to_text()


def _replace_line(note: str, index: int, line: str) -> str:
    lines = note.split("\n")
    lines[index] = line
    return "\n".join(lines)


def test_signed_checkpoint_opens_and_parses() -> None:
    signer = NoteSigner(ORIGIN, _key("current"))
    opened = open_note(_signed(signer), signer.verifier)
    assert Checkpoint.from_text(opened.text) == _checkpoint()


@pytest.mark.parametrize(
    ("line", "replacement"),
    [
        (0, "shotstamp.test/other"),
        (1, "1043"),
        (2, base64.b64encode(hashlib.sha256(b"another root").digest()).decode()),
        (3, "Timestamp: 1732611600123456788"),
    ],
    ids=["origin", "size", "root", "timestamp"],
)
def test_tampered_checkpoint_fails_signature(line: int, replacement: str) -> None:
    signer = NoteSigner(ORIGIN, _key("current"))
    tampered = _replace_line(_signed(signer), line, replacement)
    with pytest.raises(VerificationError, match="invalid signature for key") as exc:
        open_note(tampered, signer.verifier)
    assert exc.value.check == "checkpoint-signature"


def test_tampered_signature_fails() -> None:
    signer = NoteSigner(ORIGIN, _key("current"))
    note = SignedNote.from_text(_signed(signer))
    bad = NoteSignature(
        ORIGIN,
        signer.key_hash,
        bytes([note.signatures[0].signature[0] ^ 1]) + note.signatures[0].signature[1:],
    )
    with pytest.raises(VerificationError, match="invalid signature for key"):
        open_note(SignedNote(note.text, (bad,)).to_text(), signer.verifier)


def test_unknown_key_is_not_trusted() -> None:
    signed = _signed(NoteSigner(ORIGIN, _key("attacker")))
    other = NoteSigner("shotstamp.test/elsewhere", _key("current")).verifier
    with pytest.raises(VerificationError, match="no signature by a known key"):
        open_note(signed, other)


def test_wrong_key_under_the_right_name_is_ignored_not_trusted() -> None:
    # A different key under the log's name has a different key hash, so its
    # signature is from an unknown key: ignored, and then nothing verified.
    signed = _signed(NoteSigner(ORIGIN, _key("attacker")))
    with pytest.raises(VerificationError, match="no signature by a known key"):
        open_note(signed, NoteSigner(ORIGIN, _key("current")).verifier)


def test_signature_claiming_a_known_key_hash_must_verify() -> None:
    trusted = NoteSigner(ORIGIN, _key("current"))
    forged = SignedNote.from_text(_signed(NoteSigner(ORIGIN, _key("attacker"))))
    relabelled = NoteSignature(ORIGIN, trusted.key_hash, forged.signatures[0].signature)
    with pytest.raises(VerificationError, match="invalid signature for key"):
        open_note(SignedNote(forged.text, (relabelled,)).to_text(), trusted.verifier)


def test_key_rotation_old_notes_verify_with_both_keys() -> None:
    old, new = NoteSigner(ORIGIN, _key("2024")), NoteSigner(ORIGIN, _key("2025"))
    assert old.key_hash != new.key_hash
    keys = [new.verifier, old.verifier]
    assert open_note(_signed(old), keys).signatures[0].key_hash == old.key_hash
    assert open_note(_signed(new), keys).signatures[0].key_hash == new.key_hash
    with pytest.raises(VerificationError):
        open_note(_signed(old), new.verifier)


def test_cosigned_note_lists_every_verified_signature() -> None:
    old, new = NoteSigner(ORIGIN, _key("2024")), NoteSigner(ORIGIN, _key("2025"))
    text = _checkpoint().to_text()
    both = SignedNote(text, old.sign(text).signatures + new.sign(text).signatures).to_text()
    opened = open_note(both, [old.verifier, new.verifier])
    assert [s.key_hash for s in opened.signatures] == [old.key_hash, new.key_hash]
    assert len(open_note(both, new.verifier).signatures) == 1
