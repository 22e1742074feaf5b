"""Addresses a config may not take (found by a review driving quiesce as a new user): a
server on port 0, and the unauthenticated runtime TCP listener off loopback. Both are config
errors naming the field, at `quiesce check` as at start-up, not a traceback at `run`."""

from __future__ import annotations

import pytest

from quiesce.config.loader import ConfigError, load_text

BASE = """
pools:
  web:
    servers:
      - {name: a, address: %s}
services:
  www: {listen: 127.0.0.1:0, pool: web}
"""


def test_a_listener_may_take_port_0_a_server_may_not() -> None:
    assert load_text(BASE % "127.0.0.1:8081").services["www"].listen == "127.0.0.1:0"
    with pytest.raises(ConfigError) as err:
        load_text(BASE % "127.0.0.1:0")
    assert any("pools.web.servers[0].address" in p and "port 0" in p for p in err.value.problems)


@pytest.mark.parametrize("listen", ["127.0.0.1:9999", "[::1]:9999", "localhost:9999"])
def test_runtime_tcp_on_loopback_is_accepted(listen: str) -> None:
    text = BASE % "127.0.0.1:8081" + f"admin:\n  runtime_tcp: '{listen}'\n"
    assert load_text(text).admin.runtime_tcp == listen


@pytest.mark.parametrize("listen", ["0.0.0.0:9999", "192.0.2.1:9999", "example.com:9999"])
def test_runtime_tcp_off_loopback_is_a_config_error(listen: str) -> None:
    text = BASE % "127.0.0.1:8081" + f"admin:\n  runtime_tcp: '{listen}'\n"
    with pytest.raises(ConfigError) as err:
        load_text(text)
    assert any("admin.runtime_tcp" in p and "loopback" in p for p in err.value.problems)


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("999.1.1.1:80", "'999.1.1.1' is not an IPv4 address"),
        ("1.2.3:80", "'1.2.3' is not an IPv4 address"),  # the resolver: 1.2.0.3, another host
        ("<img src=x onerror=alert(1)>:80", "is neither an IP address nor a host name"),
        ("a b:80", "'a b' is neither an IP address nor a host name"),
        ("http://10.0.0.1:80", "without a scheme"),
    ],
)
def test_a_server_address_is_an_ip_address_or_a_host_name(address: str, words: str) -> None:
    """Review 14 R2: the file, like the API, took any host (a typo became another host or a
    server that failed every connection, and took traffic in an unmonitored pool)."""
    with pytest.raises(ConfigError) as err:
        load_text(BASE % f"'{address}'")
    problems = [p for p in err.value.problems if "pools.web.servers[0].address" in p]
    assert problems and words in problems[0], err.value.problems


@pytest.mark.parametrize(
    "address", ["10.0.0.1:80", "[::1]:80", "db-1.internal:5432", "my_app:8080", "db.example.:5432"]
)
def test_host_names_and_ip_addresses_are_taken(address: str) -> None:
    assert load_text(BASE % f"'{address}'").pools["web"].servers[0].address == address
