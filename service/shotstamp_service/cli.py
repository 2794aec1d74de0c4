"""`shotstamp-service`: run the service, administer its API keys and its signing keys.

    shotstamp-service --data-dir DIR serve [--host H] [--port P] [--processes N]
    shotstamp-service --data-dir DIR keys create --seller NAME [--role seller|staff]
    shotstamp-service --data-dir DIR keys list
    shotstamp-service --data-dir DIR keys revoke KEY_ID
    shotstamp-service --data-dir DIR signing-key list
    shotstamp-service --data-dir DIR signing-key rotate
    shotstamp-service --data-dir DIR anchors status [--limit N]
    shotstamp-service --data-dir DIR anchors evm-address

Exit status: 0 success, 1 the operation failed, 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from shotstamp_service import __version__
from shotstamp_service.config import Config
from shotstamp_service.files import PRIVATE_UMASK
from shotstamp_service.http.app import create_app, make_signing_keys, make_store
from shotstamp_service.http.auth import issue_key
from shotstamp_service.http.serve import serve
from shotstamp_service.log.signer import SigningKeyUnavailable
from shotstamp_service.logs import configure_logging
from shotstamp_service.records import format_time, utc_now
from shotstamp_service.store import ActiveKeyChanged, StoreError

__all__ = ["main"]

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shotstamp-service", description="shotstamp service and administration"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    data_dir_help = (
        "holds the SQLite database and signing key (env SHOTSTAMP_DATA_DIR; default ./data);"
        " SHOTSTAMP_DATABASE_URL selects PostgreSQL instead of SQLite"
    )
    parser.add_argument("--data-dir", type=Path, help=data_dir_help)
    # Also accepted after the subcommand; SUPPRESS keeps a value given before it.
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS, help=data_dir_help)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", parents=[data], help="run the HTTP service")
    serve.add_argument("--host", help="listen address (env SHOTSTAMP_HOST; default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (env SHOTSTAMP_PORT; default 8080)")
    serve.add_argument(
        "--processes",
        type=int,
        help="serving processes sharing the port and data directory"
        " (env SHOTSTAMP_PROCESSES; default one per core)",
    )

    keys = commands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(dest="key_command", required=True)
    create = key_commands.add_parser(
        "create", parents=[data], help="create a key and print it (shown once)"
    )
    create.add_argument("--seller", required=True, help="the seller (or staff member) name")
    create.add_argument("--role", choices=["seller", "staff"], default="seller")
    create.add_argument("--label", help="a note to recognise the key by in 'keys list'")
    key_commands.add_parser("list", parents=[data], help="list keys (never their secrets)")
    revoke = key_commands.add_parser("revoke", parents=[data], help="revoke a key by its id")
    revoke.add_argument("key_id")

    signing = commands.add_parser(
        "signing-key", help="the log's checkpoint signing keys (not API keys)"
    )
    signing_commands = signing.add_subparsers(dest="signing_command", required=True)
    signing_commands.add_parser(
        "list",
        parents=[data],
        help="every signing key with its validity period, as /v1/keys shows it",
    )
    signing_commands.add_parser(
        "rotate",
        parents=[data],
        help="generate a new signing key in the key directory and make it the active one; "
        "running services switch at their next seal",
    )

    anchors = commands.add_parser("anchors", help="the checkpoints' TSA and chain anchors")
    anchor_commands = anchors.add_subparsers(dest="anchor_command", required=True)
    status = anchor_commands.add_parser(
        "status", parents=[data], help="the latest anchor jobs, newest first (one JSON line each)"
    )
    status.add_argument("--limit", type=int, default=20)
    anchor_commands.add_parser(
        "evm-address",
        parents=[data],
        help="print the EVM anchor's address, to fund (creates its key file if missing)",
    )
    return parser


async def _anchors(config: Config, args: argparse.Namespace) -> int:
    if args.anchor_command == "evm-address":
        try:
            from shotstamp_service.anchors.evm import load_or_create_evm_key
        except ImportError:
            print("error: the EVM anchor needs pip install 'shotstamp[chain]'", file=sys.stderr)
            return 1
        print(load_or_create_evm_key(config.evm_key_path).address)
        return 0
    store = make_store(config)
    await store.open()
    try:
        for job in await store.list_anchor_jobs(limit=args.limit):
            print(
                json.dumps(
                    {
                        "anchor": job.anchor,
                        "type": job.kind,
                        "tree_size": job.tree_size,
                        "status": job.status,
                        "attempts": job.attempts,
                        "last_error": job.last_error,
                        "anchored_at": job.anchored_at,
                        "evidence": job.evidence,
                    }
                )
            )
        return 0
    finally:
        await store.close()


def _serve(config: Config) -> int:
    configure_logging(config.log_format, config.log_level)
    if config.processes > 1:
        from shotstamp_service.http.worker import run_processes

        try:
            run_processes(config)  # gunicorn supervises them (docs/processes.md)
        except (SigningKeyUnavailable, StoreError, OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except SystemExit as exc:  # gunicorn halts this way; 3: a worker could not start
            if exc.code not in (0, None):
                print(f"error: the serving processes stopped (gunicorn exit {exc.code});"
                      " see the log above", file=sys.stderr)
                return 1
        return 0
    # SIGTERM/SIGINT stop gracefully: stop accepting, let in-flight uploads
    # finish, seal what is pending (serve.py says how, and why not run_app).
    try:
        asyncio.run(
            serve(
                create_app(config),
                config.host,
                config.port,
                drain_timeout=config.shutdown_timeout,
                announce=lambda msg: log.info(msg.strip()),
            )
        )
    except (SigningKeyUnavailable, StoreError, OSError, ValueError) as exc:
        # At start: the signing key (missing, not the active one, unreadable, not
        # Ed25519), the database (unreachable, too new), the port (taken).
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


async def _keys(config: Config, args: argparse.Namespace) -> int:
    store = make_store(config)
    await store.open()
    try:
        if args.key_command == "create":
            seller = args.seller.strip()
            if not seller or any(c.isspace() for c in seller) or len(seller) > 100:
                print("error: --seller must be 1-100 characters without spaces", file=sys.stderr)
                return 2
            secret, record = issue_key(seller, args.role, args.label)
            await store.add_api_key(record)
            print(secret)
            return 0
        if args.key_command == "list":
            for key in await store.list_api_keys():
                print(
                    json.dumps(
                        {
                            "key_id": key.key_id,
                            "seller": key.seller,
                            "role": key.role,
                            "created_at": key.created_at,
                            "revoked_at": key.revoked_at,
                            "label": key.label,
                        }
                    )
                )
            return 0
        if args.key_command == "revoke":
            if await store.revoke_api_key(args.key_id, format_time(utc_now())):
                print(f"revoked {args.key_id}", file=sys.stderr)
                return 0
            print(f"error: no active key with id {args.key_id}", file=sys.stderr)
            return 1
        raise AssertionError(args.key_command)
    finally:
        await store.close()


async def _signing_key(config: Config, args: argparse.Namespace) -> int:
    from shotstamp_service.log.signer import key_json

    store = make_store(config)
    await store.open()
    try:
        keys = make_signing_keys(config, store)
        if args.signing_command == "list":
            for record in await keys.records():
                print(json.dumps(key_json(record)))
            return 0
        if args.signing_command == "rotate":
            # The current key must be in order before it is retired (a new log has none).
            try:
                await keys.open_for_rotation()
                record, path = await keys.rotate()
            except (SigningKeyUnavailable, ActiveKeyChanged, OSError, ValueError) as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            print(json.dumps(key_json(record)))
            print(
                f"rotated: checkpoints are now signed by {record.key_id} ({path}); "
                "replicas that do not share the key directory need a copy of that file",
                file=sys.stderr,
            )
            return 0
        raise AssertionError(args.signing_command)
    finally:
        await store.close()


def main(argv: Sequence[str] | None = None) -> int:
    os.umask(PRIVATE_UMASK)  # the data directory holds secrets: keys, webhook secrets
    args = _parser().parse_args(argv)
    config = Config.from_env(
        data_dir=args.data_dir,
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        processes=getattr(args, "processes", None),
    )
    if args.command == "serve":
        return _serve(config)
    if args.command == "signing-key":
        return asyncio.run(_signing_key(config, args))
    if args.command == "anchors":
        return asyncio.run(_anchors(config, args))
    return asyncio.run(_keys(config, args))


if __name__ == "__main__":
    sys.exit(main())
