"""The postgresql monitor's sans-IO parts and config (issue 20, item 4): the verdict from
role and maintenance, and bad monitor / service settings named by their path. The probe
against a real PostgreSQL is in tests/e2e/test_postgresql.py."""

from __future__ import annotations

import pytest

from quiesce.config.loader import ConfigError, load_text
from quiesce.config.models import PostgresqlMonitor
from quiesce.core.checks import Reason
from quiesce.core.states import Verdict
from quiesce.health.probes.postgresql import classify


@pytest.mark.parametrize(
    ("role", "in_recovery", "maintenance", "expected"),
    [
        ("any", False, False, (Verdict.PASS, Reason.OK, "primary")),
        ("any", True, False, (Verdict.PASS, Reason.OK, "replica")),
        ("primary", True, False, (Verdict.FAIL, Reason.ROLE_MISMATCH, "replica, expected primary")),
        (
            "replica",
            False,
            False,
            (Verdict.FAIL, Reason.ROLE_MISMATCH, "primary, expected replica"),
        ),
        ("replica", True, False, (Verdict.PASS, Reason.OK, "replica")),
        (
            "primary",
            True,
            True,
            (Verdict.MAINTENANCE, Reason.MAINTENANCE_QUERY_MATCH, "replica: maintenance_query"),
        ),
    ],
)
def test_classify(
    role: str, in_recovery: bool, maintenance: bool, expected: tuple[Verdict, Reason, str]
) -> None:
    settings = PostgresqlMonitor.model_validate({"user": "u", "role": role})
    assert classify(settings, in_recovery, maintenance) == expected


BASE = """
healthmonitors:
  m: {MONITOR}
pools:
  db:
    healthmonitors: [m]
    servers: [{name: a, address: 127.0.0.1:5432}]
services:
  pg: {SERVICE}
"""


def config(
    monitor: str, service: str = "{listen: 127.0.0.1:0, protocol: postgresql, pool: db}"
) -> str:
    return BASE.replace("{MONITOR}", monitor).replace("{SERVICE}", service)


def test_a_good_config_loads() -> None:
    cfg = load_text(config("{type: postgresql, postgresql_monitor: {user: app, role: primary}}"))
    pm = cfg.healthmonitors["m"].postgresql_monitor
    assert pm is not None and pm.role == "primary" and pm.query == "SELECT 1"
    assert cfg.services["pg"].protocol == "postgresql"


def test_postgresql_and_mysql_services_take_a_tls_pool() -> None:
    """A postgresql service speaks a pool's tls after an SSLRequest (pgrelay), a mysql one
    after an SSL request of its own inside MySQL's handshake (mysqlrelay)."""
    text = config("{type: postgresql, postgresql_monitor: {user: app}}").replace(
        "    healthmonitors: [m]\n", "    healthmonitors: [m]\n    tls: {verify: false}\n"
    )
    assert load_text(text).pools["db"].tls is not None
    mysql = load_text(text.replace("protocol: postgresql", "protocol: mysql"))
    assert mysql.services["pg"].protocol == "mysql" and mysql.pools["db"].tls is not None


@pytest.mark.parametrize(
    ("monitor", "service", "words"),
    [
        ("{type: postgresql}", None, ["healthmonitors.m", "postgresql_monitor", "required"]),
        (
            "{type: postgresql, postgresql_monitor: {user: app, role: leader}}",
            None,
            ["healthmonitors.m.postgresql_monitor.role"],
        ),
        (
            "{type: postgresql, postgresql_monitor: {role: primary}}",
            None,
            ["postgresql_monitor.user"],
        ),
        ("{type: tcp, postgresql_monitor: {user: app}}", None, ["postgresql_monitor does not go"]),
        ("{type: mysql}", None, ["healthmonitors.m", "mysql_monitor", "required"]),
        ("{type: mysql, mysql_monitor: {user: app, role: master}}", None, ["mysql_monitor.role"]),
        ("{type: postgresql, mysql_monitor: {user: app}}", None, ["mysql_monitor does not go"]),
        (
            "{type: postgresql, postgresql_monitor: {user: app}}",
            "{listen: 127.0.0.1:0, protocol: postgresql, pool: db, max_message_size: 10}",
            ["services.pg.max_message_size"],
        ),
        (
            "{type: postgresql, postgresql_monitor: {user: app}}",
            "{listen: 127.0.0.1:0, protocol: postgresql, pool: db, "
            "rules: [{if: {sni: a.example}, then: {pool: db}}]}",
            ["services.pg.rules[0].if: sni"],
        ),
        (
            "{type: postgresql, postgresql_monitor: {user: app}}",
            "{listen: 127.0.0.1:0, protocol: mssql, pool: db}",
            ["services.pg.protocol"],
        ),
    ],
)
def test_bad_settings_are_named(monitor: str, service: str | None, words: list[str]) -> None:
    text = config(monitor) if service is None else config(monitor, service)
    with pytest.raises(ConfigError) as err:
        load_text(text)
    for word in words:
        assert word in str(err.value), str(err.value)


def test_postgresql_and_mysql_services_may_terminate_tls() -> None:
    """tls on a postgresql service is taken (an SSLRequest answered 'S'), and on a mysql one
    (TLS inside MySQL's handshake, quiesce.dataplane.mysqltls); without it quiesce warns that
    TLS is refused (postgresql) or relayed opaque (mysql), with it not."""
    from quiesce.config.loader import config_warnings

    monitor = "{type: postgresql, postgresql_monitor: {user: app}}"
    plain = load_text(config(monitor))
    assert any("without tls answers a client's SSLRequest 'N'" in w for w in config_warnings(plain))
    tls = "tls: {certificates: [{cert: a.pem, key: a.key}]}"
    cfg = load_text(
        config(monitor, f"{{listen: 127.0.0.1:0, protocol: postgresql, pool: db, {tls}}}")
    )
    assert cfg.services["pg"].tls is not None
    assert not any("SSLRequest" in w for w in config_warnings(cfg))
    mysql = "{listen: 127.0.0.1:0, protocol: mysql, pool: db}"
    opaque = "services.pg: a mysql service without tls does not terminate TLS"
    assert any(opaque in w for w in config_warnings(load_text(config(monitor, mysql))))
    cfg = load_text(config(monitor, mysql.replace("}", f", {tls}}}")))
    assert cfg.services["pg"].tls is not None
    assert not any("TLS" in w for w in config_warnings(cfg))


@pytest.mark.parametrize(
    ("value", "maintenance"),
    [
        (None, False),
        (False, False),
        (True, True),
        (0, False),
        (2, True),
        ("off", False),  # current_setting('app.maintenance'): a setting read as text
        (" OFF ", False),
        ("false", False),
        ("f", False),
        ("no", False),
        ("0", False),  # MySQL: a VARCHAR flag
        ("", False),
        (b"0", False),
        ("on", True),
        ("t", True),
        ("1", True),
        (b"1", True),
        ("upgrading the disks", True),  # a reason written in a maintenance table
    ],
)
def test_what_a_maintenance_query_result_means(value: object, maintenance: bool) -> None:
    from quiesce.health.probes.postgresql import in_maintenance

    assert in_maintenance(value) is maintenance
