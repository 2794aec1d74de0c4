"""The production files (docker cannot run here): they parse and agree with each other."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from shotstamp_service.config import ENV_VARS

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def replicas(doc: dict) -> dict[str, dict]:
    return {
        name: service
        for name, service in doc["services"].items()
        if "SHOTSTAMP_DATABASE_URL" in service.get("environment", {})
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
        # One key for all, from a secret every replica mounts.
        assert env["SHOTSTAMP_SIGNING_KEY_FILE"] == "/run/secrets/signing_key"
        assert service["secrets"][0]["target"] == "signing_key"
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert service["build"]["dockerfile"] == "Dockerfile"
        assert set(env) <= set(ENV_VARS.values()), set(env) - set(ENV_VARS.values())
    assert "signing_key" in doc["secrets"]
    assert (ROOT / services["proxy"]["volumes"][0].split(":")[0].replace("./", "deploy/")).exists()


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
    assert "useradd --system --uid 10001" in text  # the owner the key secret needs
    assert "'.[service]'" in text  # asyncpg and prometheus-client come with the extra
