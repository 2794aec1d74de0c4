"""The `shotstamp` command, run as a process against a real service process."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from shotstamp import verify_proof
from tests.kit import imagegen
from tests.kit.processes import free_port, run


@pytest.fixture(scope="module")
def env(service_process, tmp_path_factory):
    """What a seller's shell has: the URL and key in the environment, no config file."""
    home = tmp_path_factory.mktemp("home")
    return {
        "SHOTSTAMP_URL": service_process.url,
        "SHOTSTAMP_API_KEY": service_process.key("acme"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
    }


def catalogue(root: Path, seeds: range) -> list[Path]:
    (root / "shoes" / "red").mkdir(parents=True, exist_ok=True)
    paths = []
    for i, seed in enumerate(seeds):
        folder = root / "shoes" / "red" if i % 2 else root
        path = folder / f"p{seed}.jpg"
        path.write_bytes(imagegen.jpeg(seed, size=(320, 240)))
        paths.append(path)
    (root / "README.txt").write_text("not a photo")
    return paths


def manifest_lines(out: Path) -> list[dict]:
    return [
        json.loads(line) for line in (out / "shotstamp-manifest.jsonl").read_text().splitlines()
    ]


def summary(stdout: str) -> dict[str, int]:
    rows = {}
    for line in stdout.splitlines():
        label, _, count = line.strip().rpartition(" ")
        if count.isdigit():
            rows[label.strip()] = int(count)
    return rows


def test_register_a_folder_then_resume_and_verify_every_proof(env, tmp_path):
    photos = tmp_path / "catalogue"
    files = catalogue(photos, range(501, 507))
    out = tmp_path / "out"
    first = run("shotstamp", "register", str(photos), "--out", str(out), "-j", "3", env=env)
    assert first.returncode == 0, first.stderr
    assert summary(first.stdout) == {
        "new": 6,
        "already yours": 0,
        "skipped (in manifest)": 0,
        "conflicts": 0,
        "errors": 0,
    }
    assert "\r" not in first.stderr and "\x1b" not in first.stderr  # not a terminal: no bar
    lines = manifest_lines(out)
    final = {line["path"]: line for line in lines if line.get("proof")}
    assert set(final) == {str(p.resolve()) for p in files}
    proofs = sorted((out / "proofs").iterdir())
    assert len(proofs) == 6
    log_keys = json.loads((out / "keys.json").read_text())
    for record in list(final.values())[2:]:
        verify_proof(
            (out / record["proof"]).read_text(),
            keys=[k["vkey"] for k in log_keys["keys"]],
            image=record["path"],
        )
    for record in list(final.values())[:2]:  # and a couple as a dispute desk would
        verified = run(
            "shotstamp",
            "verify",
            str(out / record["proof"]),
            "--key",
            str(out / "keys.json"),
            "--image",
            record["path"],
            env=env,
        )
        assert verified.returncode == 0, verified.stderr
        assert record["id"] in verified.stdout

    # A re-run with two new photos registers only those.
    files += catalogue(photos, range(507, 509))[-2:]
    again = run("shotstamp", "register", str(photos), "--out", str(out), env=env)
    assert again.returncode == 0, again.stderr
    assert summary(again.stdout)["new"] == 2
    assert summary(again.stdout)["skipped (in manifest)"] == 6

    # A proof lost (or never fetched: the run was interrupted) is fetched again,
    # and the registration is not repeated.
    victim = proofs[0]
    registration_id = victim.stem
    victim.unlink()
    resumed = run("shotstamp", "register", str(photos), "--out", str(out), env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert summary(resumed.stdout)["already yours"] == 1
    assert summary(resumed.stdout)["skipped (in manifest)"] == 7
    assert (out / "proofs" / f"{registration_id}.json").exists()

    # Without the manifest, the service itself says "already yours": no duplicates.
    fresh = run("shotstamp", "register", str(photos), "--out", str(tmp_path / "o2"), env=env)
    assert fresh.returncode == 0
    assert summary(fresh.stdout)["already yours"] == 8 and summary(fresh.stdout)["new"] == 0


def test_register_reports_conflicts_and_errors_with_exit_statuses(service_process, env, tmp_path):
    original = imagegen.jpeg(520)
    owner = tmp_path / "owner.jpg"
    owner.write_bytes(original)
    assert (
        run("shotstamp", "register", str(owner), "-o", str(tmp_path / "a"), env=env).returncode == 0
    )
    thief_env = {**env, "SHOTSTAMP_API_KEY": service_process.key("thief")}
    stolen = tmp_path / "stolen.jpg"
    stolen.write_bytes(imagegen.recompressed_copy(original, scale=0.5))
    mine = tmp_path / "mine.jpg"
    mine.write_bytes(imagegen.jpeg(521))
    result = run(
        "shotstamp",
        "register",
        str(stolen),
        str(mine),
        "-o",
        str(tmp_path / "t"),
        "--json",
        env=thief_env,
    )
    assert result.returncode == 5, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    conflict = next(r for r in records if r["outcome"] == "conflict")
    assert conflict["path"] == str(stolen.resolve())
    assert conflict["matches"][0]["verdict"] == "copy"
    assert "seller" not in conflict["matches"][0]
    assert "conflict" in result.stderr and str(stolen.resolve()) in result.stderr
    # The conflict line says why in words, not as an engine distance.
    assert "re-saved or resized" in result.stderr and "(distance" not in result.stderr
    assert summary(result.stderr)["conflicts"] == 1 and summary(result.stderr)["new"] == 1

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"%PDF-1.4 not a photo")
    result = run("shotstamp", "register", str(broken), "-o", str(tmp_path / "b"), env=env)
    assert result.returncode == 4
    assert summary(result.stdout)["errors"] == 1
    assert "415" in result.stderr


def test_check_proof_and_keys(service_process, env, tmp_path):
    photo = tmp_path / "lamp.jpg"
    photo.write_bytes(imagegen.jpeg(530))
    unseen = run("shotstamp", "check", str(photo), env=env)
    assert unseen.returncode == 0 and "no earlier registration" in unseen.stdout
    out = tmp_path / "out"
    assert run("shotstamp", "register", str(photo), "-o", str(out), env=env).returncode == 0
    (record,) = [r for r in manifest_lines(out) if r.get("proof")]

    mine = run("shotstamp", "check", str(photo), env=env)
    assert mine.returncode == 0 and "yours (acme)" in mine.stdout
    assert "The very same file" in mine.stdout and "distance" not in mine.stdout
    thief_env = {**env, "SHOTSTAMP_API_KEY": service_process.key("thief2")}
    theirs = run("shotstamp", "check", str(photo), "--json", env=thief_env)
    assert theirs.returncode == 5
    assert json.loads(theirs.stdout)["matches"][0]["registration_id"] == record["id"]
    assert json.loads(theirs.stdout)["matches"][0]["distance"] == 0  # kept for tools

    saved = tmp_path / "proof.json"
    fetched = run("shotstamp", "proof", record["id"], "-o", str(saved), env=env)
    assert fetched.returncode == 0, fetched.stderr
    assert json.loads(saved.read_text()) == json.loads((out / record["proof"]).read_text())
    to_stdout = run("shotstamp", "proof", record["id"], env=env)
    assert json.loads(to_stdout.stdout)["leaf"]["id"] == record["id"]
    assert run("shotstamp", "proof", "01NOSUCH", env=env).returncode == 4

    keys_file = tmp_path / "keys.json"
    public = {k: v for k, v in env.items() if k != "SHOTSTAMP_API_KEY"}  # keys are public
    assert run("shotstamp", "keys", "-o", str(keys_file), env=public).returncode == 0
    ok = run(
        "shotstamp", "verify", str(saved), "--key", str(keys_file), "--image", str(photo), env=env
    )
    assert ok.returncode == 0 and "VERIFIED" in ok.stdout
    other = tmp_path / "other.jpg"
    other.write_bytes(imagegen.jpeg(531))
    bad = run(
        "shotstamp", "verify", str(saved), "--key", str(keys_file), "--image", str(other), env=env
    )
    assert bad.returncode == 1 and "FAILED image" in bad.stderr


def test_config_file_flags_and_usage_errors(service_process, env, tmp_path):
    photo = tmp_path / "cup.jpg"
    photo.write_bytes(imagegen.jpeg(540))
    bare = {
        "HOME": env["HOME"],
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "SHOTSTAMP_URL": "",
        "SHOTSTAMP_API_KEY": "",
    }
    missing = run("shotstamp", "check", str(photo), env=bare)
    assert missing.returncode == 2 and "no API key" in missing.stderr

    config = tmp_path / "xdg" / "shotstamp" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'url = "{service_process.url}"\napi_key = "{env["SHOTSTAMP_API_KEY"]}"\n')
    assert run("shotstamp", "check", str(photo), env=bare).returncode == 0
    # Flags win over the file: a wrong key on the command line is used, and refused.
    refused = run("shotstamp", "check", str(photo), "--api-key", "ss_000000000000_x", env=bare)
    assert refused.returncode == 4 and "401" in refused.stderr
    named = tmp_path / "other.toml"
    named.write_text('api_key = "x"\ncolour = "blue"\n')
    bad = run("shotstamp", "check", str(photo), "--config", str(named), env=bare)
    assert bad.returncode == 2 and "unknown settings colour" in bad.stderr

    down = run(
        "shotstamp", "check", str(photo), "--url", f"http://127.0.0.1:{free_port()}", env=bare
    )
    assert down.returncode == 4 and "cannot connect" in down.stderr
    assert run("shotstamp", "register", str(tmp_path / "nope"), env=bare).returncode == 2
    assert run("shotstamp", "register", env=bare).returncode == 2
    assert run("shotstamp", "register", str(photo), "-j", "0", env=bare).returncode == 2


def test_webhooks_commands(env):
    added = run("shotstamp", "webhooks", "add", "https://hooks.example.com/shotstamp", env=env)
    assert added.returncode == 0, added.stderr
    fields = dict(line.split(None, 1) for line in added.stdout.splitlines())
    assert fields["secret"].startswith("whsec_")
    listed = run("shotstamp", "webhooks", "list", env=env)
    assert fields["id"] in listed.stdout and "whsec_" not in listed.stdout
    assert run("shotstamp", "webhooks", "add", "ftp://x.example", env=env).returncode == 4
    assert run("shotstamp", "webhooks", "remove", fields["id"], env=env).returncode == 0
    assert fields["id"] not in run("shotstamp", "webhooks", "list", env=env).stdout
    assert run("shotstamp", "webhooks", "remove", fields["id"], env=env).returncode == 4


def test_the_progress_bar_is_drawn_on_a_terminal(env, tmp_path):
    import pty
    import subprocess

    from tests.kit.processes import command

    photos = tmp_path / "p"
    catalogue(photos, range(550, 553))
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [*command("shotstamp"), "register", str(photos), "-o", str(tmp_path / "o")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=follower,
        env={**os.environ, **env},
    )
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    proc.wait(timeout=60)
    os.close(leader)
    assert proc.returncode == 0
    text = seen.decode()
    assert "\r\x1b[K[" in text and "3/3" in text and "new 3" in text


def test_version_and_every_command_and_argument_described():
    import argparse
    import importlib.metadata

    from shotstamp.cli import _parser

    shown = run("shotstamp", "--version")
    assert shown.returncode == 0
    assert shown.stdout.strip() == f"shotstamp {importlib.metadata.version('shotstamp')}"

    def walk(parser: argparse.ArgumentParser, name: str):
        yield name, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, child in action.choices.items():
                    yield from walk(child, f"{name} {sub}")

    for name, parser in walk(_parser(), "shotstamp"):
        assert parser.description, f"{name} has no description"
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"{name} {action.dest} has no help"
    verify_help = run("shotstamp", "verify", "--help").stdout
    assert "SHOTSTAMP_KEY" in verify_help
    assert "SHOTSTAMP_KEY" in run("shotstamp", "--help").stdout


def test_one_file_and_json_lines_for_files_skipped(env, tmp_path):
    photo = tmp_path / "vase.jpg"
    photo.write_bytes(imagegen.jpeg(560))
    out = tmp_path / "out"
    first = run("shotstamp", "register", str(photo), "-o", str(out), env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[0] == "shotstamp register: 1 file"
    again = run("shotstamp", "register", str(photo), "-o", str(out), "--json", env=env)
    assert again.returncode == 0, again.stderr
    (line,) = [json.loads(text) for text in again.stdout.splitlines()]
    registered = [r for r in manifest_lines(out) if r.get("proof")][-1]
    assert line["skipped"] is True
    assert {k: line[k] for k in ("path", "sha256", "id", "proof", "outcome")} == {
        k: registered[k] for k in ("path", "sha256", "id", "proof", "outcome")
    }
    assert summary(again.stderr)["skipped (in manifest)"] == 1
    # The manifest records the file twice: registered, then its proof saved.
    assert [r["outcome"] for r in manifest_lines(out) if r.get("path")] == ["new", "new"]


def test_an_output_folder_of_one_service_is_refused_by_another(
    service_process, env, tmp_path_factory, tmp_path
):
    from tests.kit.processes import start_service

    photos = tmp_path / "catalogue"
    catalogue(photos, range(570, 573))
    out = tmp_path / "out"
    staging = run("shotstamp", "register", str(photos), "-o", str(out), env=env)
    assert staging.returncode == 0, staging.stderr
    keys_before = (out / "keys.json").read_text()

    production = start_service(tmp_path_factory.mktemp("production") / "data")
    try:
        prod_env = {
            **env,
            "SHOTSTAMP_URL": production.url,
            "SHOTSTAMP_API_KEY": production.key("acme"),
        }
        refused = run("shotstamp", "register", str(photos), "-o", str(out), env=prod_env)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "another log" in refused.stderr and production.url in refused.stderr
        assert (out / "keys.json").read_text() == keys_before  # the folder is untouched
        # Nothing was registered there; another folder registers everything.
        for photo in sorted(photos.rglob("*.jpg")):
            looked = run("shotstamp", "check", str(photo), env=prod_env)
            assert "no earlier registration" in looked.stdout
        fresh = run(
            "shotstamp", "register", str(photos), "-o", str(tmp_path / "prod"), env=prod_env
        )
        assert fresh.returncode == 0 and summary(fresh.stdout)["new"] == 3

        # A manifest written before the log line adopts the first service it meets.
        manifest = out / "shotstamp-manifest.jsonl"
        old = [line for line in manifest.read_text().splitlines() if '"log"' not in line]
        manifest.write_text("\n".join(old) + "\n")
        adopted = run("shotstamp", "register", str(photos), "-o", str(out), env=env)
        assert adopted.returncode == 0 and summary(adopted.stdout)["skipped (in manifest)"] == 3
        assert (
            run("shotstamp", "register", str(photos), "-o", str(out), env=prod_env).returncode == 2
        )
    finally:
        production.stop()
