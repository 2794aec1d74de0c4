"""`shotstamp`: the seller's command line.

    shotstamp register FOLDER_OR_FILES... [--out DIR] [--concurrency N]
    shotstamp check FILE [--json]
    shotstamp proof ID [-o FILE] [--no-wait]
    shotstamp keys [-o FILE]
    shotstamp evidence ID --suspect FILE -o CASE.html|CASE.pdf   (staff key)
    shotstamp verify PROOF.json --key VKEY_OR_FILE [--key ...] [--image FILE]
                     [--checkpoint TRUSTED] [--url URL]
                     [--tsa-cert PEM ...] [--chain-rpc URL ...] [--require-anchors]
    shotstamp webhooks add URL | list | remove ID
    shotstamp --version

Commands that talk to the service take `--url`, `--api-key` and `--config`
(else `SHOTSTAMP_URL`, `SHOTSTAMP_API_KEY`, `~/.config/shotstamp/config.toml`;
see `shotstamp.config`). `verify --key` falls back on `SHOTSTAMP_KEY`.

Exit status (stable; scripts depend on it):
    0  success (the proof verified; every file registered)
    1  verification failed: the output names the check that failed
    2  usage error (bad arguments, missing API key, bad config file)
    3  malformed input: a proof, key or image file cannot be read or parsed
    4  the service could not be reached or answered with an error; for
       `register`: some file was not registered or its proof not saved
    5  conflict: an image is a copy of another seller's registration
  130  interrupted (`register` resumes where it stopped when run again)
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ._anchor_bundle import AnchorResult
from ._anchors import verify_anchors
from ._checkpoint import Checkpoint, NoteVerifier, SignedNote
from ._client import AsyncClient
from ._config import Settings, load_settings
from ._consistency import ConsistencyProof
from ._exceptions import (
    APIError,
    AuthError,
    ConflictError,
    MalformedProofError,
    NotSealedError,
    ShotstampError,
    TransportError,
    VerificationError,
)
from ._manifest import (
    KEYS_NAME,
    MANIFEST_NAME,
    PROOFS_DIR,
    LogMismatch,
    Manifest,
    file_sha256,
    write_atomically,
)
from ._models import Match, RegisterResult
from ._progress import Progress
from ._verify import ProofBundle, verify_proof

__all__ = [
    "EXIT_CONFLICT",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_MALFORMED",
    "EXIT_OK",
    "EXIT_SERVICE",
    "EXIT_USAGE",
    "IMAGE_EXTENSIONS",
    "collect_images",
    "load_checkpoint_note",
    "load_verifiers",
    "main",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_MALFORMED = 3
EXIT_SERVICE = 4
EXIT_CONFLICT = 5
EXIT_INTERRUPTED = 130

# What a folder walk picks up (the formats the service decodes); files named
# explicitly are sent whatever their extension.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".tif", ".tiff"})
DEFAULT_OUT = "shotstamp-proofs"


class _UsageError(Exception):
    """Bad arguments or configuration: exit 2."""


def _version() -> str:
    try:
        return importlib.metadata.version("shotstamp")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "(not installed)"


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


def load_checkpoint_note(spec: str) -> str:
    """A signed checkpoint note from a file (the note, or a saved /v1/checkpoints
    answer) or given inline as the note's text."""
    path = Path(spec)
    if "\n" in spec and not path.exists():
        return spec
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MalformedProofError(f"cannot read checkpoint file {spec}: {exc.strerror}") from exc
    if text.lstrip().startswith("{"):
        try:
            note = json.loads(text)["note"]
        except (ValueError, KeyError, TypeError) as exc:
            raise MalformedProofError(
                f"checkpoint file {spec} is JSON but not a /v1/checkpoints answer"
            ) from exc
        if not isinstance(note, str):
            raise MalformedProofError(f"checkpoint file {spec} has no note text")
        return note
    return text


def _unverified_size(note: str) -> int:
    # Only to decide which proof to fetch; verify_proof checks everything.
    return Checkpoint.from_text(SignedNote.from_text(note).text).size


async def _fetch_consistency(url: str, first: int, second: int) -> ConsistencyProof:
    async with AsyncClient(url, retries=2) as client:
        return await client.consistency(first, second)


def _trusted_consistency(
    args: argparse.Namespace, bundle_text: str, trusted: str
) -> tuple[list[bytes] | None, int | None]:
    """The consistency path to pass to verify_proof, fetched if the bundle lacks it.

    Returns (path or None to use the bundle's, exit status if it cannot go on).
    """
    try:
        bundle = ProofBundle.from_json(bundle_text)
        sizes = sorted((bundle.tree_size, _unverified_size(trusted)))
    except MalformedProofError:
        return None, None  # verify_proof reports it, naming the check
    first, second = sizes
    if first == second or first == 0 or bundle.consistency_path(first, second) is not None:
        return None, None
    url = args.url or os.environ.get("SHOTSTAMP_URL")
    if not url:
        print(
            f"error: the bundle carries no consistency proof from size {first} to {second}; "
            "give --url (or SHOTSTAMP_URL) to fetch it from the service",
            file=sys.stderr,
        )
        return None, EXIT_USAGE
    try:
        return list(asyncio.run(_fetch_consistency(url, first, second)).path), None
    except (APIError, TransportError, ValueError) as exc:
        print(f"error: cannot fetch the consistency proof from {url}: {exc}", file=sys.stderr)
        return None, EXIT_SERVICE


def _verify(args: argparse.Namespace) -> int:
    keys = args.key or ([os.environ["SHOTSTAMP_KEY"]] if os.environ.get("SHOTSTAMP_KEY") else [])
    if not keys:
        print(
            "error: give the log's public key with --key (a vkey string or file) or SHOTSTAMP_KEY",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        bundle_text = Path(args.proof).read_text(encoding="utf-8")
    except OSError as exc:
        print(f"error: cannot read proof {args.proof}: {exc.strerror}", file=sys.stderr)
        return EXIT_MALFORMED
    trusted: str | None = None
    consistency: list[bytes] | None = None
    if args.checkpoint is not None:
        try:
            trusted = load_checkpoint_note(args.checkpoint)
        except MalformedProofError as exc:
            print(f"error: malformed input: {exc}", file=sys.stderr)
            return EXIT_MALFORMED
        consistency, status = _trusted_consistency(args, bundle_text, trusted)
        if status is not None:
            return status
    try:
        verifiers = load_verifiers(keys)
        image = Path(args.image).read_bytes() if args.image else None
        result = verify_proof(
            bundle_text,
            keys=verifiers,
            image=image,
            trusted_checkpoint=trusted,
            consistency=consistency,
        )
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
    if result.trusted_size is not None:
        _print_trusted(result.tree_size, result.trusted_size, bool(result.extends_trusted))
    return _verify_anchors(args, bundle_text, verifiers)


def _print_trusted(tree_size: int, trusted_size: int, extends: bool) -> None:
    if extends:
        print(
            f"CONSISTENT the log of this proof (size {tree_size}) extends your "
            f"trusted checkpoint (size {trusted_size}): nothing you trusted was "
            f"rewritten."
        )
    else:
        print(
            f"CONSISTENT your trusted checkpoint (size {trusted_size}) extends the "
            f"log of this proof (size {tree_size}): the registration is in the log "
            f"you trust."
        )


def _verify_anchors(
    args: argparse.Namespace, bundle_text: str, verifiers: Sequence[NoteVerifier]
) -> int:
    """Check and report every anchor the bundle carries; the exit status of the whole."""
    rpcs = args.chain_rpc or (
        [os.environ["SHOTSTAMP_CHAIN_RPC"]] if os.environ.get("SHOTSTAMP_CHAIN_RPC") else []
    )
    try:
        report = verify_anchors(
            bundle_text,
            keys=verifiers,
            tsa_certs=args.tsa_cert or None,
            chain_rpcs=rpcs,
            timeout=args.timeout,
        )
    except ImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MalformedProofError as exc:
        print(f"error: malformed input: {exc}", file=sys.stderr)
        return EXIT_MALFORMED
    if not report.results:
        if args.require_anchors:
            print(
                "FAILED anchors: the proof carries no anchors yet (fetch it again later)",
                file=sys.stderr,
            )
            return EXIT_FAILED
        if args.tsa_cert or rpcs:
            print(
                "NO ANCHORS yet: the service anchors its checkpoints every few minutes; "
                "fetch the proof again later to get them"
            )
        return EXIT_OK
    for result in report.results:
        _print_anchor(result)
    if report.failed:
        return EXIT_FAILED
    if report.by_status("unavailable"):
        return EXIT_SERVICE
    if args.require_anchors and report.by_status("skipped"):
        return EXIT_FAILED
    return EXIT_OK


def _print_anchor(result: AnchorResult) -> None:
    label = f"anchor {result.name} ({result.type}, tree size {result.tree_size})"
    for check in result.checks:
        print(f"ok   {result.name}: {check}")
    if result.status == "verified":
        print(f"ANCHORED {label}: {result.statement}")
    elif result.status == "failed":
        assert result.error is not None
        print(f"FAILED {result.error.check}: {result.error}", file=sys.stderr)
    elif result.status == "unavailable":
        print(f"UNAVAILABLE {label}: cannot ask the chain: {result.reason}", file=sys.stderr)
    else:
        print(f"SKIPPED {label}: {result.reason}")


# -- shared plumbing for the commands that talk to the service ------------------------
def _settings(args: argparse.Namespace) -> Settings:
    try:
        settings = load_settings(url=args.url, api_key=args.api_key, config_file=args.config)
    except ValueError as exc:
        raise _UsageError(str(exc)) from exc
    return settings


def _client(args: argparse.Namespace, *, need_key: bool = True) -> AsyncClient:
    if args.retries < 0 or args.timeout <= 0:
        raise _UsageError("--retries must be >= 0 and --timeout > 0")
    settings = _settings(args)
    if need_key and not settings.api_key:
        raise _UsageError(
            "no API key: pass --api-key, set SHOTSTAMP_API_KEY, or put api_key in "
            "~/.config/shotstamp/config.toml"
        )
    return AsyncClient(
        settings.url, api_key=settings.api_key, timeout=args.timeout, retries=args.retries
    )


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _run_service_command(
    args: argparse.Namespace, command: Callable[[argparse.Namespace], Any]
) -> int:
    """Run an async command; map what it raises to the documented exit statuses."""
    try:
        code: int = asyncio.run(command(args))
        return code
    except _UsageError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except ConflictError as exc:
        _error(str(exc))
        return EXIT_CONFLICT
    except (APIError, TransportError, NotSealedError) as exc:
        print(f"error: {exc.diagnostics()}", file=sys.stderr)
        return EXIT_SERVICE
    except VerificationError as exc:
        print(f"FAILED {exc.check}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:
        raise  # stdout's reader went away (`| head`): handled in main
    except (OSError, MalformedProofError) as exc:
        _error(f"{exc}")
        return EXIT_MALFORMED


def _describe_match(match: Match) -> str:
    whose = f"yours ({match.seller})" if match.seller else "another seller's"
    kind = "exact copy" if match.exact else match.verdict
    # The explanation in words; a service too old to give one: the raw distance.
    why = f": {match.explanation}" if match.explanation else f" (distance {match.distance})"
    return (
        f"{kind} of registration {match.registration_id}, {whose}, registered "
        f"{match.received_at.isoformat()}{why}"
    )


# -- register ---------------------------------------------------------------------
def collect_images(
    paths: Iterable[str | os.PathLike[str]], *, exclude: Path | None = None
) -> list[Path]:
    """The files to register: files named as they are, folders walked for images.

    The walk is recursive and sorted, skips hidden files and folders and the
    `exclude` folder (the output directory), and keeps each file once.
    """
    found: dict[Path, None] = {}
    skip = exclude.resolve() if exclude is not None else None
    for given in paths:
        path = Path(given)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(
                    d for d in dirs if not d.startswith(".") and Path(root, d).resolve() != skip
                )
                for name in sorted(files):
                    if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                        found.setdefault(Path(root, name).resolve(), None)
        elif path.is_file():
            found.setdefault(path.resolve(), None)
        else:
            raise _UsageError(f"{given}: no such file or folder")
    return list(found)


class _Registrar:
    """One `shotstamp register` run: skip, register, save proofs, keep the manifest."""

    def __init__(self, args: argparse.Namespace, client: AsyncClient, progress: Progress) -> None:
        self.args = args
        self.client = client
        self.progress = progress
        self.out = Path(args.out)
        self.manifest = Manifest(self.out)
        self.vkeys: list[str] = []
        self.proof_slots = asyncio.Semaphore(args.concurrency)
        self.fatal: APIError | None = None
        self.proofs_pending = 0

    def report(self, record: dict[str, Any]) -> None:
        if self.args.json:
            print(json.dumps(record, ensure_ascii=False, sort_keys=True), flush=True)

    def finish(self, outcome: str, record: dict[str, Any]) -> None:
        self.report(self.manifest.append(record))
        self.progress.advance(outcome)

    async def save_proof(self, base: dict[str, Any], outcome: str) -> None:
        registration_id = str(base["id"])
        try:
            async with self.proof_slots:
                proof = await self.client.proof(registration_id, wait=True)
            # Check it before keeping it: signed by the log, for these very bytes.
            verify_proof(proof, keys=self.vkeys, image_sha256=str(base["sha256"]))
            relative = f"{PROOFS_DIR}/{registration_id}.json"
            await asyncio.to_thread(write_atomically, self.out / relative, proof.to_json())
        except NotSealedError:
            self.proofs_pending += 1
            self.progress.write(
                f"pending   {base['path']}: registration {registration_id} is not sealed yet; "
                "run again to save its proof"
            )
            self.progress.advance(outcome)
            return
        except (ShotstampError, OSError) as exc:
            self.progress.write(f"error     {base['path']}: proof of {registration_id}: {exc}")
            self.finish("error", {**base, "outcome": "error", "error": f"proof: {exc}"})
            return
        self.finish(outcome, {**base, "outcome": outcome, "proof": relative})

    async def run(self, files: list[Path]) -> None:
        keys = await self.client.keys()
        self.vkeys = keys.vkeys
        try:
            self.manifest.bind_log(keys.origin, [k.key_id for k in keys.keys], self.client.url)
        except LogMismatch as exc:
            raise _UsageError(str(exc)) from exc
        (self.out / PROOFS_DIR).mkdir(parents=True, exist_ok=True)
        write_atomically(self.out / KEYS_NAME, json.dumps(dict(keys.raw), indent=2) + "\n")

        # (1) Fingerprint the files locally (sha256), reusing the manifest's
        # hash of a file whose size and mtime have not changed.
        todo: list[Path] = []
        bases: dict[Path, dict[str, Any]] = {}
        proof_tasks: list[asyncio.Task[None]] = []
        for path in files:
            try:
                stat = path.stat()
                known = self.manifest.known_sha256(path, stat)
                sha256 = known if known else await asyncio.to_thread(file_sha256, path)
            except OSError as exc:
                self.progress.write(f"error     {path}: {exc.strerror or exc}")
                self.finish("error", {"path": str(path), "outcome": "error", "error": str(exc)})
                continue
            base = {
                "path": str(path),
                "sha256": sha256,
                "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
            }
            earlier = self.manifest.registered(sha256)
            if earlier is not None and self.manifest.proof_saved(earlier):
                self.report({**earlier, **base, "skipped": True})
                self.progress.advance("skipped")
                continue
            if earlier is not None:
                # Registered by an earlier run that stopped before its proof.
                resumed = {**base, "id": earlier["id"], "received_at": earlier.get("received_at")}
                proof_tasks.append(asyncio.create_task(self.save_proof(resumed, "existing")))
                continue
            bases[path] = base
            todo.append(path)

        # (2) Register the rest; save each proof as soon as it is sealed.
        stream = self.client.register_many(todo, concurrency=self.args.concurrency)
        try:
            async for result in stream:
                self.record(result, bases[result.path], proof_tasks)
                if isinstance(result.error, AuthError):
                    self.fatal = result.error
                    break
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        if proof_tasks:
            await asyncio.gather(*proof_tasks)

    def record(
        self, result: RegisterResult, base: dict[str, Any], proof_tasks: list[asyncio.Task[None]]
    ) -> None:
        if result.registration is not None:
            reg = result.registration
            registered = {
                **base,
                "id": reg.id,
                "received_at": reg.received_at.isoformat().replace("+00:00", "Z"),
                "outcome": result.outcome,
                "proof": None,
            }
            # Written before the proof is fetched: an interrupted run resumes from here.
            self.report(self.manifest.append(registered))
            proof_tasks.append(asyncio.create_task(self.save_proof(registered, result.outcome)))
        elif result.outcome == "conflict":
            first = result.matches[0] if result.matches else None
            self.progress.write(
                f"conflict  {result.path}: "
                + (_describe_match(first) if first else "a copy of another seller's photo")
            )
            self.finish(
                "conflict",
                {
                    **base,
                    "outcome": "conflict",
                    "matches": [dict(m.raw) for m in result.matches],
                },
            )
        else:
            self.progress.write(f"error     {result.path}: {result.error}")
            self.finish("error", {**base, "outcome": "error", "error": str(result.error)})


async def _register(args: argparse.Namespace) -> int:
    if args.concurrency < 1:
        raise _UsageError("--concurrency must be at least 1")
    files = collect_images(args.paths, exclude=Path(args.out))
    if not files:
        raise _UsageError(
            "no image files found (looked for " + ", ".join(sorted(IMAGE_EXTENSIONS)) + ")"
        )
    progress = Progress(len(files), stream=sys.stderr, enabled=False if args.no_progress else None)
    async with _client(args) as client:
        registrar = _Registrar(args, client, progress)
        try:
            await registrar.run(files)
        finally:
            registrar.manifest.close()
            progress.close()
    counts = progress.counts
    out = sys.stderr if args.json else sys.stdout
    rows = [
        ("new", counts["new"]),
        ("already yours", counts["existing"]),
        ("skipped (in manifest)", counts["skipped"]),
        ("conflicts", counts["conflict"]),
        ("errors", counts["error"]),
    ]
    if registrar.proofs_pending:
        rows.append(("proofs still pending", registrar.proofs_pending))
    print(f"shotstamp register: {len(files)} file{'' if len(files) == 1 else 's'}", file=out)
    for label, count in rows:
        print(f"  {label:<22}{count:>7}", file=out)
    print(f"  manifest: {Path(args.out) / MANIFEST_NAME}", file=out)
    if registrar.fatal is not None:
        print(f"error: {registrar.fatal.diagnostics()}", file=sys.stderr)
        return EXIT_SERVICE
    if counts["error"] or registrar.proofs_pending or progress.done < len(files):
        return EXIT_SERVICE
    if counts["conflict"]:
        return EXIT_CONFLICT
    return EXIT_OK


# -- check, proof, keys, webhooks ---------------------------------------------------
async def _check(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        result = await client.check(args.file)
    if args.json:
        print(json.dumps(dict(result.raw), indent=2))
    else:
        print(f"sha256 {result.sha256}")
        if not result.matches:
            print("no earlier registration matches this image")
        for match in result.matches:
            print(_describe_match(match))
    theirs = [m for m in result.copies if m.seller is None]
    return EXIT_CONFLICT if theirs else EXIT_OK


async def _proof(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        proof = await client.proof(args.id, wait=not args.no_wait)
    text = proof.to_json()
    if args.output in (None, "-"):
        sys.stdout.write(text)
    else:
        write_atomically(Path(args.output), text)
        print(
            f"saved the proof of {args.id} (leaf {proof.leaf_index} of {proof.tree_size}) "
            f"to {args.output}",
            file=sys.stderr,
        )
    return EXIT_OK


async def _evidence(args: argparse.Namespace) -> int:
    output = Path(args.output)
    fmt = "pdf" if output.suffix.lower() == ".pdf" else "html"
    async with _client(args) as client:
        data = await client.dispute_file(args.id, args.suspect, format=fmt)
    write_atomically(output, data)
    print(
        f"saved the dispute file for {args.id} and {args.suspect} to {args.output} "
        f"({len(data):,} bytes{'' if fmt == 'pdf' else '; it checks its proof when opened'})",
        file=sys.stderr,
    )
    return EXIT_OK


async def _keys(args: argparse.Namespace) -> int:
    async with _client(args, need_key=False) as client:
        keys = await client.keys()
    text = json.dumps(dict(keys.raw), indent=2) + "\n"
    if args.output in (None, "-"):
        sys.stdout.write(text)
    else:
        write_atomically(Path(args.output), text)
        print(f"saved {len(keys.keys)} key(s) of {keys.origin} to {args.output}", file=sys.stderr)
    return EXIT_OK


async def _webhooks(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        if args.webhook_command == "add":
            hook = await client.create_webhook(args.webhook_url)
            print(f"id      {hook.id}")
            print(f"url     {hook.url}")
            print(f"events  {', '.join(hook.events)}")
            print(f"secret  {hook.secret}")
            print("the secret is shown only now: keep it to check signatures", file=sys.stderr)
        elif args.webhook_command == "list":
            for hook in await client.webhooks():
                print(
                    f"{hook.id}  {hook.url}  {','.join(hook.events)}  {hook.created_at.isoformat()}"
                )
        else:
            await client.delete_webhook(args.webhook_id)
            print(f"removed {args.webhook_id}", file=sys.stderr)
    return EXIT_OK


def _service(command: Callable[[argparse.Namespace], Any]) -> Callable[[argparse.Namespace], int]:
    return lambda args: _run_service_command(args, command)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shotstamp",
        description="Timestamp product photos with shotstamp and verify the proofs.",
        epilog="exit status: 0 ok, 1 verification failed, 2 usage, 3 malformed input, "
        "4 service error, 5 conflict, 130 interrupted. Environment: SHOTSTAMP_URL, "
        "SHOTSTAMP_API_KEY, SHOTSTAMP_CONFIG (the service and your key), SHOTSTAMP_KEY "
        "(verify's --key), SHOTSTAMP_CHAIN_RPC (verify's --chain-rpc). "
        "'shotstamp COMMAND --help' describes each command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    service = argparse.ArgumentParser(add_help=False)
    group = service.add_argument_group("service")
    group.add_argument("--url", help="the service URL (env SHOTSTAMP_URL)")
    group.add_argument("--api-key", help="your API key (env SHOTSTAMP_API_KEY)")
    group.add_argument(
        "--config",
        help="a TOML file with url and api_key (env SHOTSTAMP_CONFIG; default "
        "~/.config/shotstamp/config.toml)",
    )
    group.add_argument(
        "--timeout", type=float, default=30.0, help="seconds per request attempt (default 30)"
    )
    group.add_argument(
        "--retries",
        type=int,
        default=4,
        help="retries of a request on 429, 503 or a dropped connection (default 4)",
    )

    register = commands.add_parser(
        "register",
        parents=[service],
        help="register photos: files, or folders walked for images",
        description="Register every image in the given files and folders (recursively), "
        "save each proof under OUT/proofs/ and record each file in "
        f"OUT/{MANIFEST_NAME}. Run it again to pick up new photos: files the "
        "manifest records as registered are skipped.",
        epilog="exit status: 0 all registered, 4 some file failed (re-run to retry), "
        "5 some file is a copy of another seller's photo, 2 usage",
    )
    register.add_argument(
        "paths",
        nargs="+",
        metavar="FOLDER_OR_FILE",
        help="image files (sent whatever their extension) and folders (walked for "
        + ", ".join(sorted(IMAGE_EXTENSIONS))
        + ")",
    )
    register.add_argument(
        "--out", "-o", default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})"
    )
    register.add_argument(
        "--concurrency", "-j", type=int, default=4, help="uploads at once (default 4)"
    )
    register.add_argument("--no-progress", action="store_true", help="never draw the progress bar")
    register.add_argument(
        "--json",
        action="store_true",
        help="print each manifest line on stdout, and the recorded line with "
        '"skipped": true for a file skipped (summary to stderr)',
    )
    register.set_defaults(run=_service(_register))

    check = commands.add_parser(
        "check",
        parents=[service],
        help="look for earlier registrations of a photo without registering it",
        description="Ask the service whether a photo (or a near-copy of it: re-encoded, "
        "resized, cropped, edited) is already registered, yours or another seller's. "
        "Nothing is registered.",
        epilog="exit status: 0 no other seller's copy, 5 a copy of another seller's photo, "
        "4 service error",
    )
    check.add_argument("file", help="the image to look up")
    check.add_argument("--json", action="store_true", help="print the service's answer as JSON")
    check.set_defaults(run=_service(_check))

    proof = commands.add_parser(
        "proof",
        parents=[service],
        help="fetch a registration's proof bundle",
        description="Fetch the proof bundle of one of your registrations (waiting for its "
        "seal, at most about a second), to keep or send; check it with 'shotstamp verify'.",
        epilog="exit status: 0 saved, 4 unknown id, not sealed (--no-wait) or service error",
    )
    proof.add_argument("id", help="the registration id")
    proof.add_argument("-o", "--output", help="write it here (default: stdout)")
    proof.add_argument(
        "--no-wait", action="store_true", help="fail (exit 4) instead of waiting for the seal"
    )
    proof.set_defaults(run=_service(_proof))

    evidence = commands.add_parser(
        "evidence",
        parents=[service],
        help="make a dispute file for a registration and a suspected copy (staff key)",
        description="Make a dispute file: the registered photo and the suspected copy, the "
        "match in words and pictures, the proof, the log's keys and every anchor, in one file "
        "anyone can check offline. Needs a staff key.",
        epilog="an .html output checks its own proof offline in any browser; a .pdf output "
        "asks the service to print it (exit 4 when it cannot)",
    )
    evidence.add_argument("id", help="the registration id")
    evidence.add_argument("--suspect", required=True, help="the suspected copy (an image file)")
    evidence.add_argument(
        "-o", "--output", required=True, help="CASE.html, or CASE.pdf for the printed form"
    )
    evidence.set_defaults(run=_service(_evidence))

    keys = commands.add_parser(
        "keys",
        parents=[service],
        help="save the log's public keys (for 'verify --key')",
        description="Save the log's public signing keys, active and retired (GET /v1/keys; "
        "no API key needed), for 'shotstamp verify --key FILE'. Get them from a source you "
        "trust, not from whoever sends you a proof.",
        epilog="exit status: 0 saved, 4 service error",
    )
    keys.add_argument("-o", "--output", help="write them here (default: stdout)")
    keys.set_defaults(run=_service(_keys))

    verify = commands.add_parser(
        "verify",
        help="verify a proof bundle offline",
        description="Check a proof bundle with the log's public keys, offline: the signed "
        "checkpoint, the record, its inclusion in the log and (--image) the photo; with "
        "--checkpoint, that the log extends one you trusted; with --tsa-cert or "
        "--chain-rpc, its anchors. Each check is printed; a failure names the one that failed.",
        epilog="exit status: 0 verified, 1 a check failed, 2 usage (no key), "
        "3 unreadable input, 4 a service or chain RPC could not be asked",
    )
    verify.add_argument("proof", help="a proof bundle (JSON) as saved by 'shotstamp proof'")
    verify.add_argument(
        "--key",
        action="append",
        help="the log's verifier key: a vkey string, a file of vkey lines, or a saved "
        "/v1/keys JSON (repeatable: keys retired by rotation still verify old proofs; "
        "env SHOTSTAMP_KEY)",
    )
    verify.add_argument("--image", help="the photo: check it is the registered file")
    verify.add_argument(
        "--checkpoint",
        help="a checkpoint of this log you already trust (a file with the signed note or a "
        "saved /v1/checkpoints answer): prove the proof's log and it are one append-only log",
    )
    verify.add_argument(
        "--url",
        help="the service (env SHOTSTAMP_URL), to fetch the consistency proof for "
        "--checkpoint when the bundle does not carry it",
    )
    verify.add_argument(
        "--tsa-cert",
        action="append",
        metavar="PEM",
        help="the root (and intermediate) certificates of a timestamp authority you trust: "
        "check the proof's RFC 3161 anchors offline (repeatable; needs shotstamp[tsa])",
    )
    verify.add_argument(
        "--chain-rpc",
        action="append",
        metavar="URL",
        help="an Ethereum JSON-RPC endpoint you trust (env SHOTSTAMP_CHAIN_RPC): check the "
        "proof's chain anchors online (repeatable: one per chain)",
    )
    verify.add_argument(
        "--require-anchors",
        action="store_true",
        help="fail (exit 1) unless the proof carries anchors and every one was checked",
    )
    verify.add_argument(
        "--timeout", type=float, default=30.0, help="seconds per chain RPC call (default 30)"
    )
    verify.set_defaults(run=_verify)

    webhooks = commands.add_parser(
        "webhooks",
        help="be told when someone uploads a copy of your photos",
        description="Manage the URLs the service POSTs a signed registration.conflict event "
        "to whenever another seller's upload is refused as a copy of one of your photos.",
        epilog="exit status: 0 done, 4 service error (an invalid URL, an unknown id)",
    )
    hook_commands = webhooks.add_subparsers(dest="webhook_command", required=True)
    add = hook_commands.add_parser(
        "add",
        parents=[service],
        help="add a webhook URL",
        description="Add a webhook; prints its id and its secret, shown only now: keep the "
        "secret to check each delivery's Shotstamp-Signature.",
    )
    add.add_argument("webhook_url", metavar="URL", help="an https URL that accepts POSTs")
    hook_commands.add_parser(
        "list",
        parents=[service],
        help="list your webhooks",
        description="List your webhooks: id, URL, events, creation time (never the secret).",
    )
    remove = hook_commands.add_parser(
        "remove",
        parents=[service],
        help="remove a webhook",
        description="Remove a webhook by its id; it gets no more deliveries.",
    )
    remove.add_argument("webhook_id", metavar="ID", help="the id 'webhooks add' or 'list' shows")
    webhooks.set_defaults(run=_service(_webhooks))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Whoever read stdout stopped; exit as a shell pipeline would, quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13  # SIGPIPE
    return code


if __name__ == "__main__":
    sys.exit(main())
