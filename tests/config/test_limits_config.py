"""The connection limits and the body timeout in the config (issue 12, items 3 and 5):
``limits.max_connections``, ``services.NAME.max_connections``,
``services.NAME.client_body_timeout``. Bad values get a clear ``quiesce check`` error
naming the key; good ones reach the models."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from quiesce.config.loader import load_text
from tests.support.process import quiesce_check

pytestmark = pytest.mark.peers

BASE = """
pools:
  web:
    servers:
      - {name: a, address: 127.0.0.1:8081}
services:
  www: {listen: 127.0.0.1:8080, pool: web}
"""


def check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    return quiesce_check(tmp_path / "quiesce.yaml", text)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "0 is below 1 (a whole number ≥ 1, or null)"),
        ("-5", "-5 is below 1 (a whole number ≥ 1, or null)"),
        ("many", "'many' is not a number of connections (a whole number ≥ 1, or null)"),
        ('"500"', "'500' is not a number of connections"),
        ("2.5", "2.5 is not a number of connections"),
        ("true", "True is not a number of connections"),
    ],
)
def test_quiesce_check_refuses_a_bad_max_connections(
    tmp_path: Path, value: str, message: str
) -> None:
    text = BASE + f"limits: {{max_connections: {value}}}\n"
    text = text.replace("pool: web}", f"pool: web, max_connections: {value}}}")
    out = check(tmp_path, text)
    assert out.returncode == 1, out.stdout
    assert f"limits.max_connections: {message}" in out.stderr
    assert f"services.www.max_connections: {message}" in out.stderr


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "must be above 0 (null: no limit)"),
        ("-1s", "'-1s' is not a duration"),
        ("soon", "'soon' is not a duration"),
    ],
)
def test_quiesce_check_refuses_a_bad_client_body_timeout(
    tmp_path: Path, value: str, message: str
) -> None:
    out = check(tmp_path, BASE.replace("pool: web}", f"pool: web, client_body_timeout: {value}}}"))
    assert out.returncode == 1, out.stdout
    assert f"services.www.client_body_timeout: {message}" in out.stderr


def test_good_limits_are_accepted(tmp_path: Path) -> None:
    text = BASE.replace("pool: web}", "pool: web, max_connections: 100, client_body_timeout: 30s}")
    out = check(tmp_path, text + "limits: {max_connections: 5000}\n")
    assert out.returncode == 0, out.stderr
    config = load_text(text + "limits: {max_connections: 5000}\n")
    assert config.limits.max_connections == 5000
    assert config.services["www"].max_connections == 100
    assert config.services["www"].client_body_timeout == 30.0


def test_defaults_derived_limit_no_service_limit_body_timeout_five_minutes() -> None:
    config = load_text(BASE)
    assert config.limits.max_connections is None
    assert config.services["www"].max_connections is None
    assert config.services["www"].client_body_timeout == 300.0
    nulls = load_text(
        BASE.replace("pool: web}", "pool: web, max_connections: null, client_body_timeout: null}")
        + "limits: {max_connections: null}\n"
    )
    assert nulls.limits.max_connections is None
    assert nulls.services["www"].client_body_timeout is None
