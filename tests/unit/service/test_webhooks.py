"""Webhooks: which destinations are allowed (delivery itself: tests/integration/service)."""

from __future__ import annotations

import pytest

from shotstamp_service.webhooks.dispatcher import (
    InvalidWebhookURL,
    _PublicResolver,
    check_webhook_url,
)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://api.localhost/hook",
        "https://10.1.2.3/hook",
        "https://192.168.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
    ],
)
def test_private_destinations_are_refused_unless_allowed(url):
    with pytest.raises(InvalidWebhookURL, match=r"localhost|private"):
        check_webhook_url(url, allow_private=False)
    assert check_webhook_url(url, allow_private=True) == url


def test_public_destinations_are_accepted():
    for url in ("https://hooks.example.com/x?y=1", "http://93.184.216.34:8443/h"):
        assert check_webhook_url(url, allow_private=False) == url


async def test_names_resolving_to_private_addresses_are_refused_at_delivery():
    class Fixed:
        def __init__(self, *hosts: str) -> None:
            self.hosts = hosts

        async def resolve(self, host, port=0, family=0):
            return [
                {
                    "hostname": host,
                    "host": h,
                    "port": port,
                    "family": family,
                    "proto": 0,
                    "flags": 0,
                }
                for h in self.hosts
            ]

        async def close(self) -> None:
            pass

    with pytest.raises(OSError, match="only to public addresses"):
        await _PublicResolver(Fixed("127.0.0.1", "10.0.0.8")).resolve("evil.example", 443)
    answers = await _PublicResolver(Fixed("10.0.0.8", "93.184.216.34")).resolve("x.example", 443)
    assert [a["host"] for a in answers] == ["93.184.216.34"]


