"""The public surface: a small sorted `shotstamp.__all__`, defined in private
modules; the old module paths kept only as thin re-exports."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import shotstamp

SDK = Path(shotstamp.__file__).resolve().parent

# The whole public API: clients, what they return, the error tree, and the
# offline verification entry points (docs/sdk-api.md).
PUBLIC = [
    "APIError",
    "AnchorReport",
    "AnchorResult",
    "AsyncClient",
    "AuthError",
    "Check",
    "CheckpointInfo",
    "CheckpointWitness",
    "Client",
    "ConflictError",
    "ConsistencyProof",
    "LogKey",
    "LogKeys",
    "MalformedProofError",
    "Match",
    "NotFoundError",
    "NotSealedError",
    "ProofBundle",
    "RateLimited",
    "RegisterResult",
    "Registration",
    "RetryPolicy",
    "RootMismatchError",
    "ServerError",
    "ShotstampError",
    "TransportError",
    "ValidationError",
    "VerificationError",
    "VerifiedConsistency",
    "VerifiedProof",
    "Webhook",
    "WebhookEvent",
    "WebhookVerificationError",
    "averify_anchors",
    "verify_anchors",
    "verify_consistency_between",
    "verify_proof",
    "verify_webhook",
]

# Module paths users could import before the modules went private, with the
# names each offered then: they must keep offering exactly these.
COMPAT = {
    "anchors": [
        "ANCHOR_CHECKS",
        "ANCHOR_TYPES",
        "EVM_PAYLOAD_PREFIX",
        "AnchorEntry",
        "AnchorReport",
        "AnchorResult",
        "TimestampFacts",
        "averify_anchors",
        "check_timestamp_response",
        "evm_payload",
        "load_tsa_certificates",
        "verify_anchors",
    ],
    "canonical": ["MAX_SAFE_INTEGER", "canonical_json"],
    "checkpoint": [
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
    ],
    "client": ["AsyncClient", "Client", "RetryPolicy"],
    "config": [
        "DEFAULT_URL",
        "ENV_API_KEY",
        "ENV_CONFIG",
        "ENV_URL",
        "Settings",
        "default_config_path",
        "load_settings",
    ],
    "consistency": [
        "CONSISTENCY_CHECKS",
        "ConsistencyProof",
        "VerifiedConsistency",
        "check_extends",
        "check_tree_extends",
        "proof_path",
        "verify_consistency_between",
    ],
    "errors": [
        "APIError",
        "AuthError",
        "ConflictError",
        "MalformedProofError",
        "NotFoundError",
        "NotSealedError",
        "RateLimited",
        "RootMismatchError",
        "ServerError",
        "ShotstampError",
        "TransportError",
        "ValidationError",
        "VerificationError",
        "WebhookVerificationError",
        "error_class_for_status",
    ],
    "merkle": [
        "EMPTY_ROOT",
        "HASH_SIZE",
        "LEAF_PREFIX",
        "NODE_PREFIX",
        "consistency_proof",
        "decomp_incl_proof",
        "decompose_range",
        "hash_from_subtrees",
        "inclusion_proof",
        "inner_proof_size",
        "leaf_hash",
        "node_hash",
        "root_from_consistency_proof",
        "root_from_inclusion_proof",
        "root_hash",
        "subtree_ranges_for_consistency",
        "subtree_ranges_for_inclusion",
        "verify_consistency",
        "verify_inclusion",
    ],
    "models": [
        "Check",
        "CheckpointInfo",
        "LogKey",
        "LogKeys",
        "Match",
        "RegisterResult",
        "Registration",
        "Webhook",
    ],
    "verify": [
        "CHECKS",
        "FORMAT",
        "LEAF_FIELDS",
        "TRUSTED_CHECKS",
        "ProofBundle",
        "VerifiedProof",
        "verify_proof",
    ],
    "webhooks": [
        "DEFAULT_TOLERANCE",
        "DELIVERY_HEADER",
        "EVENT_HEADER",
        "SIGNATURE_HEADER",
        "SIGNATURE_SCHEME",
        "WebhookEvent",
        "sign_webhook",
        "verify_webhook",
    ],
    "witness": ["WITNESS_FORMAT", "CheckpointWitness"],
}
# The command-line program (`shotstamp = "shotstamp.cli:main"`) and its helpers:
# not library surface.
PROGRAM = {"cli", "_manifest", "_progress"}


def _isort_key(name: str) -> tuple[int, str]:
    # ruff's RUF022 order: CONSTANTS, then Classes, then functions.
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def _modules_on_disk() -> set[str]:
    files = {p.stem for p in SDK.glob("*.py") if p.stem != "__init__"}
    packages = {p.parent.name for p in SDK.glob("*/__init__.py")}
    return files | packages


def _private_modules() -> list[str]:
    return sorted(n for n in _modules_on_disk() if n.startswith("_") and n not in PROGRAM)


def test_package_all_is_pinned_and_sorted() -> None:
    assert shotstamp.__all__ == PUBLIC
    assert sorted(PUBLIC, key=_isort_key) == PUBLIC


@pytest.mark.parametrize("name", PUBLIC)
def test_every_exported_name_exists_and_is_defined_in_a_private_module(name: str) -> None:
    value = getattr(shotstamp, name)
    if inspect.isclass(value) or inspect.isfunction(value):
        assert value.__module__.startswith("shotstamp._"), value.__module__


def test_package_namespace_holds_nothing_public_but_all() -> None:
    public = {
        attr
        for attr, value in vars(shotstamp).items()
        if not attr.startswith("_") and not inspect.ismodule(value)
    }
    assert public == set(shotstamp.__all__)


def test_package_all_is_the_union_of_the_private_modules_alls() -> None:
    union: list[str] = []
    for name in _private_modules():
        module = importlib.import_module(f"shotstamp.{name}")
        assert isinstance(module.__all__, list), name
        union.extend(module.__all__)
        for attr in module.__all__:
            assert getattr(shotstamp, attr) is getattr(module, attr), (name, attr)
    assert len(union) == len(set(union))
    assert sorted(union, key=_isort_key) == shotstamp.__all__


def test_every_public_module_is_a_compatibility_path_or_the_program() -> None:
    public = {n for n in _modules_on_disk() if not n.startswith("_")}
    assert public == set(COMPAT) | {"cli"}


@pytest.mark.parametrize("name", sorted(COMPAT))
def test_old_module_paths_still_offer_their_names(name: str) -> None:
    module = importlib.import_module(f"shotstamp.{name}")
    assert module.__all__ == COMPAT[name]
    for attr in COMPAT[name]:
        value = getattr(module, attr)
        if attr in shotstamp.__all__:
            assert value is getattr(shotstamp, attr)
    # Thin: the module defines nothing itself, and offers nothing beyond its list.
    own = {
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == module.__name__
    }
    assert own == set()
    offered = {attr for attr in vars(module) if not attr.startswith("_")}
    assert offered == set(COMPAT[name])


def test_the_cli_entry_point_resolves() -> None:
    pyproject = tomllib.loads((SDK.parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    target = pyproject["project"]["scripts"]["shotstamp"]
    module_name, _, attr = target.partition(":")
    assert callable(getattr(importlib.import_module(module_name), attr))


def test_importing_the_sdk_pulls_in_no_heavy_dependencies() -> None:
    code = (
        "import sys, shotstamp, shotstamp.verify; "
        "print(sorted(m for m in ('numpy', 'PIL', 'imagehash') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(SDK.parent)},
    ).stdout
    assert out.strip() == "[]"
