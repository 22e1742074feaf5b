"""The config: the issue's example loads; every kind of bad config is rejected with its path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from quiesce.config import ConfigError, load_config, load_text
from quiesce.config.durations import parse_duration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "quiesce.yaml"


def test_example_loads_as_written() -> None:
    config = load_config(EXAMPLE)
    monitor = config.healthmonitors["System-HTTP"]
    assert monitor.send_interval == 1.0 and monitor.receive_timeout == 0.5
    assert monitor.http.maintenance_code == [503]
    assert monitor.http.maintenance_response == "under construction"
    pool = config.pools["web"]
    assert pool.graceful_disable_timeout == 60.0
    assert [s.name for s in pool.servers] == ["web1", "web2", "sorry"]
    assert pool.servers[2].backup and pool.servers[1].weight == 2
    www = config.services["www"]
    assert www.maintenance_page.retry_after == 120
    assert www.rules[0].then.maintenance_page is True
    with pytest.raises(ValidationError):  # frozen
        config.pools["web"].min_servers_up = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "value"),
    [("500ms", 0.5), ("1s", 1.0), ("2m", 120.0), ("1h", 3600.0), (3, 3.0), ("1.5", 1.5)],
)
def test_durations(text: object, value: float) -> None:
    assert parse_duration(text) == value


@pytest.mark.parametrize("bad", ["1x", "", "-1s", True, None, "ms"])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


BASE = """
healthmonitors:
  hm: {type: http, send_interval: 2s, receive_timeout: 1s}
pools:
  web:
    healthmonitors: [hm]
    servers:
      - {name: a, address: 127.0.0.1:8081}
services:
  www: {listen: 127.0.0.1:8080, pool: web}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_text(text)
    return info.value.problems


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "address: 127.0.0.1:8081",
            "address: 127.0.0.1:70000",
            "pools.web.servers[0].address: port 70000 is out of range",
        ),
        ("pool: web}", "pool: web, colour: red}", "services.www.colour: unknown key"),
        (
            "healthmonitors: [hm]",
            "healthmonitors: [nope]",
            "pools.web.healthmonitors[0]: no health monitor named 'nope'",
        ),
        (
            "      - {name: a, address: 127.0.0.1:8081}",
            "      - {name: a, address: 127.0.0.1:8081}\n"
            "      - {name: a, address: 127.0.0.1:8082}",
            "pools.web.servers[1].name: duplicate server name 'a' in pool 'web'",
        ),
        (
            "receive_timeout: 1s}",
            "receive_timeout: 1s, http_monitor: {maintenance_code: [500, 501, 502, 503, 504]}}",
            "healthmonitors.hm.http_monitor.maintenance_code: at most 4 maintenance codes",
        ),
        (
            "receive_timeout: 1s}",
            "receive_timeout: 1s, http_monitor: {maintenance_code: [100]}}",
            "healthmonitors.hm.http_monitor.maintenance_code: maintenance code 100 is outside",
        ),
        (
            "receive_timeout: 1s}",
            "receive_timeout: 1s, http_monitor: {maintenance_code: [600]}}",
            "maintenance code 600 is outside 101-599",
        ),
        (
            "receive_timeout: 1s",
            "receive_timeout: 2s",
            "healthmonitors.hm: receive_timeout (2s) must be below send_interval (2s)",
        ),
        (
            "listen: 127.0.0.1:8080",
            "listen: nowhere",
            "services.www.listen: 'nowhere' is not an address",
        ),
        ("pool: web}", "pool: webb}", "services.www.pool: no pool named 'webb'"),
        ("type: http,", "type: gopher,", "healthmonitors.hm.type: Input should be"),
        (
            "receive_timeout: 1s}",
            "receive_timeout: 1s, tcp_monitor: {}}",
            "tcp_monitor does not go with type http",
        ),
        # a model validator's complaint about one key, at that key's path (KeyProblem)
        (
            "pool: web}",
            "pool: web, accept_proxy: true}",
            "services.www.trusted_proxies: required with accept_proxy: true",
        ),
        (
            "pool: web}",
            "pool: web, protocol: postgresql, accept_proxy: true, trusted_proxies: [10.0.0.1]}",
            "services.www.accept_proxy: not supported on a postgresql service yet",
        ),
        (
            "healthmonitors: [hm]\n",
            "healthmonitors: [hm]\n    send_proxy: v2\n    max_idle_per_server: 8\n",
            "pools.web.max_idle_per_server: a pool with send_proxy keeps no idle connection",
        ),
        (
            "healthmonitors: [hm]\n",
            "healthmonitors: [hm]\n    send_proxy: v2\n    tls: {verify: false}\n",
            "pools.web.send_proxy: not supported with tls on the same pool yet",
        ),
    ],
)
def test_bad_config_names_the_path(old: str, new: str, expected: str) -> None:
    assert old in BASE
    found = problems(BASE.replace(old, new))
    assert any(p.startswith(expected) or expected in p for p in found), found


def test_every_problem_listed_at_once() -> None:
    text = (
        BASE.replace("127.0.0.1:8081", "127.0.0.1:70000")
        .replace("[hm]", "[nope]")
        .replace("pool: web}", "pool: webb, colour: red}")
    )
    found = problems(text)
    assert len(found) == 4, found


def test_yaml_syntax_error_has_a_line() -> None:
    found = problems("pools: {web: [}")
    assert found[0].startswith("(yaml) line 1")


@pytest.mark.peers
def test_quiesce_check_command(tmp_path: Path) -> None:
    good = subprocess.run(
        [sys.executable, "-m", "quiesce", "check", "-c", str(EXAMPLE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert good.returncode == 0, good.stderr
    bad_file = tmp_path / "bad.yaml"
    bad_file.write_text(BASE.replace("127.0.0.1:8081", "127.0.0.1:70000"))
    bad = subprocess.run(
        [sys.executable, "-m", "quiesce", "check", "-c", str(bad_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1
    assert "pools.web.servers[0].address: port 70000 is out of range" in bad.stderr


@pytest.mark.peers
def test_quiesce_passwd_reads_stdin_and_verifies() -> None:
    from quiesce.security import verify_password

    out = subprocess.run(
        [sys.executable, "-m", "quiesce", "passwd"],
        input="s3cret\n",
        capture_output=True,
        text=True,
        check=True,
    )
    hashed = out.stdout.strip()
    assert hashed.startswith("scrypt$")
    assert verify_password("s3cret", hashed) and not verify_password("other", hashed)
    empty = subprocess.run(
        [sys.executable, "-m", "quiesce", "passwd"],
        input="\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert empty.returncode != 0 and "empty" in empty.stderr


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "quiesce.yaml"
    path.write_text(text)
    return path


def file_problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return info.value.problems


def test_missing_page_file_is_a_config_error(tmp_path: Path) -> None:
    text = BASE.replace("pool: web}", "pool: web, maintenance_page: {file: nope.html}}")
    found = file_problems(tmp_path, text)
    assert found[0].startswith("services.www.maintenance_page.file: no such file")
    (tmp_path / "nope.html").write_text("<p>back soon</p>")
    assert load_config(tmp_path / "quiesce.yaml").services["www"].maintenance_page.file


def test_two_listeners_on_one_address(tmp_path: Path) -> None:
    text = BASE + "admin: {listen: 127.0.0.1:8080}\n"
    assert file_problems(tmp_path, text) == [
        "admin.listen: 127.0.0.1:8080 is already the address of services.www.listen"
    ]


def test_min_servers_up_above_pool_size(tmp_path: Path) -> None:
    text = BASE.replace(
        "    healthmonitors: [hm]\n", "    healthmonitors: [hm]\n    min_servers_up: 7\n"
    )
    assert file_problems(tmp_path, text) == [
        "pools.web.min_servers_up: 7 is more than the 1 server(s) of the pool"
    ]


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    text = BASE.replace(
        "    healthmonitors: [hm]\n", "    healthmonitors: [hm]\n    healthmonitors: []\n"
    )
    found = file_problems(tmp_path, text)
    assert "duplicate key 'healthmonitors'" in found[0] and found[0].startswith("(yaml) line")


@pytest.mark.peers
def test_placeholder_hash_is_a_warning_not_an_error(tmp_path: Path) -> None:
    text = BASE + "admin: {users: [{name: ops, password_hash: plain, role: admin}]}\n"
    path = write(tmp_path, text)
    out = subprocess.run(
        [sys.executable, "-m", "quiesce", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0
    assert "warning: admin.users[0].password_hash: not a hash" in out.stderr
    assert "'ops' cannot log in" in out.stderr


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "healthmonitors: [hm]\n",
            "healthmonitors: [hm]\n    algorithm: fastest\n",
            "pools.web.algorithm: Input should be 'round_robin'",
        ),
        (
            "healthmonitors: [hm]\n",
            "healthmonitors: [hm]\n    mode: hot_standby\n",
            "pools.web.mode: Input should be 'balanced' or 'active_standby'",
        ),
        (
            "healthmonitors: [hm]\n",
            "healthmonitors: [hm]\n    on_server_down: kill\n",
            "pools.web.on_server_down: Input should be 'leave' or 'close'",
        ),
        (
            "healthmonitors: [hm]\n",
            "healthmonitors: [hm]\n    persistence: {type: ssl_id}\n",
            "pools.web.persistence.type: Input should be 'cookie' or 'source_ip'",
        ),
        (
            "healthmonitors: [hm]\n",
            "healthmonitors: [hm]\n    slow_start: soon\n",
            "pools.web.slow_start: 'soon' is not a duration",
        ),
        (
            "healthmonitors: [hm]\n",
            "healthmonitors: [hm]\n    graceful_disable_timeout: -5\n",
            "pools.web.graceful_disable_timeout: duration -5 is negative",
        ),
        (
            "healthmonitors: [hm]\n",
            "healthmonitors: [hm]\n    min_health_monitors_up: 2\n",
            "pools.web: min_health_monitors_up (2) is more than the 1 monitors attached",
        ),
        (
            "address: 127.0.0.1:8081}",
            "address: 127.0.0.1:8081, weight: 300}",
            "pools.web.servers[0].weight: Input should be less than or equal to 256",
        ),
        (
            "receive_timeout: 1s}",
            "receive_timeout: 1s, monitor_port: 65536}",
            "healthmonitors.hm.monitor_port: Input should be less than or equal to 65535",
        ),
    ],
)
def test_bad_pool_and_monitor_values(old: str, new: str, expected: str) -> None:
    assert old in BASE
    found = problems(BASE.replace(old, new, 1))
    assert any(p.startswith(expected) for p in found), found


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("state: {etcd: {endpoints: []}}", "state.etcd.endpoints: List should have at least 1"),
        ("state: {etcd: {endpoints: [nowhere]}}", "state.etcd.endpoints[0]: 'nowhere' is not"),
        (
            "state: {etcd: {endpoints: ['127.0.0.1:2379'], stale_after: 100ms}}",
            "state.etcd.stale_after: Input should be greater than or equal to 0.2",
        ),
        (
            "state: {etcd: {endpoints: ['127.0.0.1:2379'], lease_ttl: 1}}",
            "state.etcd.lease_ttl: Input should be greater than or equal to 2",
        ),
        ("state: {event_retention: {rows: 5}}", "state.event_retention.rows: Input should be"),
        ("state: {event_retention: {age: forever}}", "state.event_retention.age: 'forever'"),
        (
            "admin: {users: [{name: a, password_hash: x, role: root}]}",
            "admin.users[0].role: Input should be 'admin' or 'read_only'",
        ),
        ("admin: {runtime_tcp: 'localhost'}", "admin.runtime_tcp: 'localhost' is not an address"),
        ("admin: {login_failures_per_minute: 0}", "admin.login_failures_per_minute: Input should"),
    ],
)
def test_bad_admin_and_state_values(section: str, expected: str) -> None:
    found = problems(BASE + section + "\n")
    assert any(p.startswith(expected) for p in found), found


@pytest.mark.peers
def test_quiesce_check_opens_the_access_log_as_run_does(tmp_path: Path) -> None:
    """``quiesce check`` refuses an access-log path ``quiesce run`` cannot open (/proc takes
    no new file, even for root, where a write-permission test says yes), and leaves no file
    behind for one it can."""

    def check(path: Path) -> subprocess.CompletedProcess[str]:
        cfg = tmp_path / "q.yaml"
        cfg.write_text(BASE + f"logging:\n  access:\n    path: {path}\n")
        return subprocess.run(
            [sys.executable, "-m", "quiesce", "check", "-c", str(cfg)],
            capture_output=True,
            text=True,
            check=False,
        )

    bad = check(Path("/proc/quiesce-check.log"))
    assert bad.returncode == 1
    assert "logging.access.path: cannot open /proc/quiesce-check.log" in bad.stderr
    good = check(tmp_path / "a.log")
    assert good.returncode == 0, good.stderr
    assert not (tmp_path / "a.log").exists()


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "{}\n", "---\n"])
def test_an_empty_file_is_refused(text: str) -> None:
    # `quiesce check` and a reload of an empty or truncated file: refused, not a config of
    # nothing (a reload of it would remove every service, pool and admin user)
    with pytest.raises(ConfigError) as info:
        load_text(text, "q.yaml")
    assert info.value.problems == ["(top): the file is empty: nothing to serve"]
