"""Without PostgreSQL its tests skip on a developer's machine but fail where required (CI)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.kit import ROOT

ONE_TEST = (
    "tests/integration/service/test_postgres_store.py"
    "::test_a_schema_newer_than_this_release_is_refused"
)


def run_without_postgres(require: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SHOTSTAMP_TEST_DATABASE_URL"}
    env.update(SHOTSTAMP_PG_BINDIR="/nonexistent", SHOTSTAMP_REQUIRE_POSTGRES=require)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", ONE_TEST],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("require", "outcome", "status"), [("1", "1 error", 1), ("", "1 skipped", 0)]
)
def test_a_missing_server_fails_only_when_required(require, outcome, status):
    result = run_without_postgres(require)
    assert result.returncode == status, result.stdout
    assert outcome in result.stdout
    assert "PostgreSQL" in result.stdout
