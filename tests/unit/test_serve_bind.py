"""Where the server listens: loopback decided by address (ipaddress + name resolution)."""

from __future__ import annotations

import logging

import pytest

from deepcritic.serve.config import ServeConfig
from deepcritic.serve.server import check_bind, is_loopback


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.1",
        "127.0.0.2",
        "127.255.255.254",
        "::1",
        "[::1]",
        "localhost",
        "LOCALHOST",
        "::ffff:127.0.0.1",
    ],  # fmt: skip
)
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host",
    [
        "0.0.0.0",
        "::",
        "10.0.0.5",
        "128.0.0.1",
        "::ffff:10.0.0.1",
        "no-such-host.invalid",
        "127.0.0.1.evil.invalid",
        " ",
    ],  # fmt: skip
)
def test_other_hosts_are_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_default_is_loopback_and_other_binds_are_explicit(caplog: pytest.LogCaptureFixture) -> None:
    assert is_loopback(ServeConfig().host)
    with caplog.at_level(logging.WARNING):
        check_bind(ServeConfig(host="127.1"))
        assert not caplog.records
        check_bind(ServeConfig(host="0.0.0.0"))
    assert "binding 0.0.0.0" in caplog.text
    with pytest.raises(ValueError, match="host is empty"):
        ServeConfig(host="")
