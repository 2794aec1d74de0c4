"""`shotstamp.checkpoint`, kept for compatibility: the old module path (docs/sdk-api.md)."""

from shotstamp._checkpoint import (
    ALG_ED25519,
    MAX_SIGNATURES,
    TIMESTAMP_PREFIX,
    Checkpoint,
    NoteSignature,
    NoteSigner,
    NoteVerifier,
    SignedCheckpoint,
    SignedNote,
    format_vkey,
    key_hash,
    open_checkpoint,
    open_note,
    verifiers_from,
)

__all__ = [
    "ALG_ED25519",
    "MAX_SIGNATURES",
    "TIMESTAMP_PREFIX",
    "Checkpoint",
    "NoteSignature",
    "NoteSigner",
    "NoteVerifier",
    "SignedCheckpoint",
    "SignedNote",
    "format_vkey",
    "key_hash",
    "open_checkpoint",
    "open_note",
    "verifiers_from",
]
