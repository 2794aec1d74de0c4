"""The CLI's pieces without a service: progress bar, manifest, folder walk."""

from __future__ import annotations

import io
import json
import os

import pytest

from shotstamp._manifest import MANIFEST_NAME, LogMismatch, Manifest
from shotstamp._progress import Progress
from shotstamp.cli import collect_images


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_draws_on_a_terminal_with_counts_rate_and_eta():
    clock, tty = Clock(), FakeTerminal()
    progress = Progress(10, stream=tty, clock=clock)
    assert progress.enabled
    clock.now += 2
    progress.advance("new")
    clock.now += 2
    progress.advance("conflict")
    line = progress.render(100)
    assert line.startswith("[")
    assert "2/10" in line and "new 1" in line and "conflicts 1" in line
    assert "0.5/s" in line and "ETA 0:16" in line
    assert len(progress.render(30)) <= 30
    progress.write("conflict  a.jpg: ...")
    progress.close()
    out = tty.getvalue()
    assert "\r\x1b[K" in out and "conflict  a.jpg" in out and out.endswith("\n")


def test_progress_is_silent_when_not_a_terminal():
    pipe = io.StringIO()
    progress = Progress(3, stream=pipe)
    assert not progress.enabled
    for outcome in ("new", "existing", "error"):
        progress.advance(outcome)
    progress.close()
    assert pipe.getvalue() == ""
    progress.write("error     b.jpg: unreadable")
    assert pipe.getvalue() == "error     b.jpg: unreadable\n"  # messages, no control codes
    assert progress.counts == {"new": 1, "existing": 1, "error": 1}


def test_full_bar_when_done():
    progress = Progress(2, stream=io.StringIO(), clock=Clock())
    progress.advance("new")
    progress.advance("skipped")
    bar = progress.render(80).split("]")[0]
    assert set(bar) == {"[", "="}  # full: no arrow, no gap
    assert "/s" not in progress.render(80)  # no rate from an instant


def test_manifest_round_trip_skips_a_torn_last_line(tmp_path):
    manifest = Manifest(tmp_path)
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"x")
    stat = photo.stat()
    (tmp_path / "proofs").mkdir()
    (tmp_path / "proofs" / "01A.json").write_text("{}")
    manifest.append(
        {
            "path": str(photo),
            "sha256": "aa",
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "outcome": "new",
            "id": "01A",
            "proof": "proofs/01A.json",
        }
    )
    manifest.append({"path": "/b.jpg", "sha256": "bb", "outcome": "conflict"})
    manifest.close()
    with (tmp_path / MANIFEST_NAME).open("a") as handle:
        handle.write('{"path": "/c.jpg", "sha2')  # a crash mid-line
    again = Manifest(tmp_path)
    assert again.unreadable_lines == 1
    record = again.registered("aa")
    assert record is not None and again.proof_saved(record)
    assert again.registered("bb") is None  # a conflict is tried again next time
    assert again.known_sha256(photo, stat) == "aa"
    os.utime(photo, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert again.known_sha256(photo, photo.stat()) is None  # touched: hash again
    (tmp_path / "proofs" / "01A.json").unlink()
    assert not again.proof_saved(record)
    lines = (tmp_path / MANIFEST_NAME).read_text().splitlines()
    assert all("at" in json.loads(line) for line in lines[:2])


def test_folder_walk_finds_images_recursively_once_and_skips_the_output(tmp_path):
    photos = tmp_path / "photos"
    (photos / "sub" / "deeper").mkdir(parents=True)
    (photos / ".hidden").mkdir()
    for name in ("a.JPG", "b.png", "notes.txt", "sub/c.webp", "sub/deeper/d.tiff", ".e.jpg"):
        (photos / name).write_bytes(b"x")
    (photos / ".hidden" / "f.jpg").write_bytes(b"x")
    out = photos / "out"
    (out / "proofs").mkdir(parents=True)
    (out / "proofs" / "g.jpg").write_bytes(b"x")
    explicit = tmp_path / "scan.bmp"
    explicit.write_bytes(b"x")
    found = collect_images([photos, explicit, photos / "b.png"], exclude=out)
    names = [p.relative_to(tmp_path).as_posix() for p in found]
    assert names == [
        "photos/a.JPG",
        "photos/b.png",
        "photos/sub/c.webp",
        "photos/sub/deeper/d.tiff",
        "scan.bmp",
    ]


def test_folder_walk_refuses_a_missing_path(tmp_path):
    from shotstamp.cli import _UsageError

    with pytest.raises(_UsageError, match="no such file"):
        collect_images([tmp_path / "nope"])


def test_manifest_remembers_its_log_and_refuses_another(tmp_path):
    first = Manifest(tmp_path)
    first.bind_log("shotstamp.local/log", ["aaaa"], "http://staging")
    first.close()
    # A rotation keeps the retired key listed: the same log, now known by both keys.
    rotated = Manifest(tmp_path)
    rotated.bind_log("shotstamp.local/log", ["bbbb", "aaaa"], "http://staging")
    rotated.close()
    assert Manifest(tmp_path).log == {
        "origin": "shotstamp.local/log",
        "key_ids": ["aaaa", "bbbb"],
        "url": "http://staging",
    }
    # The same origin name with other keys (the default origin of a second
    # service), or another origin: another log.
    for origin, keys in (("shotstamp.local/log", ["cccc"]), ("prod.example/log", ["aaaa"])):
        with pytest.raises(LogMismatch, match="another log"):
            Manifest(tmp_path).bind_log(origin, keys, "http://production")


def test_a_manifest_from_before_the_log_line_adopts_the_first_log(tmp_path):
    old = '{"path": "/p/a.jpg", "sha256": "ab", "outcome": "new", "id": "01X", "proof": "p"}\n'
    (tmp_path / MANIFEST_NAME).write_text(old)
    manifest = Manifest(tmp_path)
    assert manifest.log is None and manifest.by_sha256["ab"]["id"] == "01X"
    manifest.bind_log("o/log", ["k1"], "http://a")
    manifest.close()
    assert Manifest(tmp_path).log == {"origin": "o/log", "key_ids": ["k1"], "url": "http://a"}
    with pytest.raises(LogMismatch):
        Manifest(tmp_path).bind_log("o/log", ["k2"], "http://b")
