"""The production files (docker cannot run here): they parse and agree with each other."""

from __future__ import annotations

import re

import yaml

from shotstamp_service.config import ENV_VARS
from tests.kit import ROOT

DEPLOY = ROOT / "deploy"


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def replicas(doc: dict) -> dict[str, dict]:
    """The services `up` starts that run shotstamp (not the on-demand admin)."""
    return {
        name: service
        for name, service in doc["services"].items()
        if "SHOTSTAMP_DATABASE_URL" in service.get("environment", {})
        and not service.get("profiles")
    }


def test_compose_runs_postgres_two_replicas_and_a_proxy():
    doc = compose()
    services = doc["services"]
    assert services["postgres"]["image"].startswith("postgres:")
    assert "healthcheck" in services["postgres"]
    found = replicas(doc)
    assert len(found) >= 2
    for service in found.values():
        env = service["environment"]
        assert env["SHOTSTAMP_DATABASE_URL"].startswith("postgresql://")
        assert "@postgres:5432/" in env["SHOTSTAMP_DATABASE_URL"]
        # One key directory for all, mounted read-only: no replica can write a key.
        assert env["SHOTSTAMP_SIGNING_KEY_DIR"] == "/keys"
        assert "SHOTSTAMP_SIGNING_KEY_FILE" not in env
        assert service["volumes"] == ["${SIGNING_KEY_DIR:-./keys}:/keys:ro"]
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert service["build"]["dockerfile"] == "Dockerfile"
        assert set(env) <= set(ENV_VARS.values()), set(env) - set(ENV_VARS.values())
    assert (ROOT / services["proxy"]["volumes"][0].split(":")[0].replace("./", "deploy/")).exists()


def test_the_admin_writes_keys_into_the_directory_the_replicas_read():
    doc = compose()
    admin = doc["services"]["admin"]
    assert admin["profiles"] == ["admin"]  # run on demand, never started by `up`
    assert admin["entrypoint"] == ["shotstamp-service"]
    assert admin["volumes"] == ["${SIGNING_KEY_DIR:-./keys}:/keys"]  # writable
    for replica in replicas(doc).values():
        # The same database, log and keys as every replica, so a rotation reaches them.
        for name in ("SHOTSTAMP_DATABASE_URL", "SHOTSTAMP_ORIGIN", "SHOTSTAMP_SIGNING_KEY_DIR"):
            assert admin["environment"][name] == replica["environment"][name]
    assert set(admin["environment"]) <= set(ENV_VARS.values())
    example = (DEPLOY / "env.example").read_text()
    assert "SIGNING_KEY_DIR=./keys" in example and "POSTGRES_PASSWORD=" in example


def test_the_proxy_balances_over_every_replica():
    conf = (DEPLOY / "nginx.conf").read_text()
    upstream = re.search(r"upstream shotstamp \{(.*?)\}", conf, re.S)
    assert upstream is not None
    servers = set(re.findall(r"server ([\w-]+):8080", upstream.group(1)))
    assert servers == set(replicas(compose()))
    assert conf.count("{") == conf.count("}")
    assert "proxy_set_header X-Request-Id" in conf


def test_dockerfile_runs_the_service_as_a_user_with_a_health_check():
    text = (ROOT / "Dockerfile").read_text()
    assert "USER shotstamp" in text and "HEALTHCHECK" in text
    assert "useradd --system --uid 10001" in text  # the owner the key directory needs
    # asyncpg and prometheus-client come with the service extra (anchors' extras beside it).
    assert re.search(r"'\.\[service[],]", text)
