"""`shotstamp`: the seller's command line.

    shotstamp verify PROOF.json --key VKEY_OR_FILE [--key ...] [--image FILE]

Exit status (stable; scripts depend on it):
    0  success (the proof verified)
    1  verification failed: the output names the check that failed
    2  usage error
    3  malformed input: the proof or key file cannot be read or parsed
    4  the service could not be reached or answered with an error
    5  conflict: the image is a copy of another seller's registration
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .checkpoint import NoteVerifier
from .errors import MalformedProofError, ShotstampError, VerificationError
from .verify import verify_proof

__all__ = [
    "EXIT_CONFLICT",
    "EXIT_FAILED",
    "EXIT_MALFORMED",
    "EXIT_OK",
    "EXIT_SERVICE",
    "EXIT_USAGE",
    "main",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_MALFORMED = 3
EXIT_SERVICE = 4
EXIT_CONFLICT = 5


def load_verifiers(specs: Sequence[str]) -> list[NoteVerifier]:
    """Verifier keys from vkey strings, files of vkey lines, or a saved /v1/keys answer."""
    verifiers: list[NoteVerifier] = []
    for spec in specs:
        path = Path(spec)
        if "+" in spec and not path.exists():
            verifiers.append(NoteVerifier.from_vkey(spec))
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise MalformedProofError(f"cannot read key file {spec}: {exc.strerror}") from exc
        stripped = text.strip()
        if stripped.startswith("{"):
            try:
                document = json.loads(stripped)
                vkeys = [entry["vkey"] for entry in document["keys"]]
            except (ValueError, KeyError, TypeError) as exc:
                raise MalformedProofError(
                    f"key file {spec} is JSON but not a /v1/keys document"
                ) from exc
        else:
            vkeys = [line.strip() for line in stripped.splitlines() if line.strip()]
        if not vkeys:
            raise MalformedProofError(f"key file {spec} holds no keys")
        verifiers.extend(NoteVerifier.from_vkey(vkey) for vkey in vkeys)
    return verifiers


def _verify(args: argparse.Namespace) -> int:
    keys = args.key or ([os.environ["SHOTSTAMP_KEY"]] if os.environ.get("SHOTSTAMP_KEY") else [])
    if not keys:
        print(
            "error: give the log's public key with --key (a vkey string or file) "
            "or SHOTSTAMP_KEY",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        bundle_text = Path(args.proof).read_text(encoding="utf-8")
    except OSError as exc:
        print(f"error: cannot read proof {args.proof}: {exc.strerror}", file=sys.stderr)
        return EXIT_MALFORMED
    try:
        verifiers = load_verifiers(keys)
        image = Path(args.image).read_bytes() if args.image else None
        result = verify_proof(bundle_text, keys=verifiers, image=image)
    except VerificationError as exc:
        print(f"FAILED {exc.check}: {exc}", file=sys.stderr)
        # An unparseable bundle is malformed input, not a proof that failed.
        return EXIT_MALFORMED if exc.check == "format" else EXIT_FAILED
    except (MalformedProofError, ValueError) as exc:
        print(f"error: malformed input: {exc}", file=sys.stderr)
        return EXIT_MALFORMED
    except OSError as exc:
        print(f"error: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_MALFORMED
    except ShotstampError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for check in result.checks:
        print(f"ok   {check}")
    when = result.checkpoint_time.isoformat() if result.checkpoint_time else "an unstated time"
    print(
        f"VERIFIED registration {result.registration_id} (seller {result.seller}, "
        f"sha256 {result.sha256[:16]}…) was in log {result.origin} "
        f"at size {result.tree_size}, checkpoint signed {when}: "
        f"registered no later than that time."
    )
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shotstamp",
        description="Timestamp product photos with shotstamp and verify the proofs.",
        epilog="exit status: 0 ok, 1 verification failed, 2 usage, 3 malformed input, "
        "4 service error, 5 conflict",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="verify a proof bundle offline")
    verify.add_argument("proof", help="a proof bundle (JSON) as saved by 'shotstamp proof'")
    verify.add_argument(
        "--key",
        action="append",
        help="the log's verifier key: a vkey string, a file of vkey lines, or a saved "
        "/v1/keys JSON (repeatable: keys retired by rotation still verify old proofs)",
    )
    verify.add_argument("--image", help="the photo: check it is the registered file")
    verify.set_defaults(run=_verify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
