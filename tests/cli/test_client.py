"""The maxctrl-style client end to end against a running API (CliRunner in a worker thread,
so the API keeps serving in the test's event loop)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from click.testing import CliRunner, Result

from quiesce.admin import CommandContext
from quiesce.core.events import EventQuery
from quiesce.core.states import Cause, CloseMode
from quiesce.main import main
from tests.api.harness import config_dict, running

pytestmark = pytest.mark.peers


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Any]:
    async with running(tmp_path) as a:
        yield a


def host(app: Any) -> str:
    return app.admin_server.url.split("://", 1)[1]


async def cli(app: Any, *args: str, input: str | None = None, **env: str) -> Result:
    environ = {"QUIESCE_HOSTS": host(app), "QUIESCE_USER": "admin", "QUIESCE_PASSWORD": "admin-pw"}
    environ.update(env)
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, main, list(args), input=input, env=environ)


def ok(r: Result) -> str:
    assert r.exit_code == 0, r.output
    return r.stdout


def failed(r: Result) -> str:
    assert r.exit_code != 0, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("quiesce: "), r.stderr
    return lines[0]


async def test_list_and_show(app: Any) -> None:
    out = ok(await cli(app, "list", "servers"))
    assert "│ app/a1" in out and "unmonitored" in out and out.startswith("┌")
    data = json.loads(ok(await cli(app, "--json", "list", "servers")))
    assert {f"{s['pool']}/{s['name']}" for s in data} >= {"app/a1", "web/web1"}
    assert "NO SERVER AVAILABLE" in ok(await cli(app, "list", "pools"))
    assert "System-HTTP" in ok(await cli(app, "list", "monitors"))
    assert "maintenance_mode" in ok(await cli(app, "list", "flags"))
    assert "│ Administrative     │ enabled" in ok(await cli(app, "show", "server", "a1"))
    assert "app/shared" in ok(await cli(app, "show", "pool", "app"))
    shown = json.loads(ok(await cli(app, "--json", "show", "monitor", "System-HTTP")))
    assert shown["http_monitor"]["maintenance_code"] == [503]
    # durations and sizes with their units (issue 19, item 5); --json keeps the numbers
    monitors = ok(await cli(app, "list", "monitors"))
    assert re.search(r"│ System-HTTP +│ http +│ 10s +│ 4s +│", monitors), monitors
    assert shown["send_interval"] == 10.0
    monitor = ok(await cli(app, "show", "monitor", "System-HTTP"))
    assert re.search(r"│ send_interval +│ 10s +│", monitor), monitor
    assert re.search(r"│ receive_timeout +│ 4s +│", monitor), monitor
    assert re.search(
        r"│ graceful_disable_timeout +│ 1m +│", ok(await cli(app, "show", "pool", "app"))
    )
    server = ok(await cli(app, "show", "server", "a1"))
    assert re.search(r"│ Bytes in / out +│ 0 B / 0 B +│", server), server
    # --json after the verb means the same as before it (the README shows it there).
    after = json.loads(ok(await cli(app, "list", "servers", "--json")))
    assert {f"{s['pool']}/{s['name']}" for s in after} == {f"{s['pool']}/{s['name']}" for s in data}
    assert json.loads(ok(await cli(app, "show", "server", "a1", "--json")))["name"] == "a1"


async def test_credentials_and_errors(app: Any) -> None:
    line = failed(await cli(app, "list", "servers", QUIESCE_PASSWORD="wrong"))
    assert "401" in line
    assert "403" in failed(
        await cli(
            app, "set", "server", "a1", "drain", QUIESCE_USER="viewer", QUIESCE_PASSWORD="viewer-pw"
        )
    )
    r = await cli(app, "--user", "viewer", "--password", "viewer-pw", "list", "servers")
    ok(r)
    r = await cli(app, "--token", "deploy-token-0123456789", "set", "server", "a1", "drain")
    ok(r)
    assert app.registry.find_server("app/a1").admin.actor == "deploy"
    assert "several pools" in failed(await cli(app, "set", "server", "shared", "drain"))
    assert "no server named" in failed(await cli(app, "show", "server", "zz"))
    assert "cannot reach" in failed(await cli(app, "--hosts", "127.0.0.1:1", "list", "servers"))
    assert "404" in failed(await cli(app, "show", "monitor", "Nope"))


async def test_other_hosts_are_tried(app: Any) -> None:
    ok(await cli(app, "--hosts", f"127.0.0.1:1,{host(app)}", "list", "pools"))


async def test_set_clear_disable_enable(app: Any) -> None:
    a1 = app.registry.find_server("app/a1")
    out = ok(
        await cli(
            app, "set", "server", "app/a1", "maintenance", "--reason", "kernel", "--for", "10m"
        )
    )
    assert "disabled" in out
    assert (a1.admin.state.value, a1.admin.reason, a1.admin.actor) == (
        "maintenance",
        "kernel",
        "admin",
    )
    assert a1.admin.expires is not None
    event = app.admin.events(EventQuery(server="a1", kind="admin_change"))[-1]
    assert (event.cause, event.actor) == ("cli", "admin")
    ok(await cli(app, "clear", "server", "a1", "maintenance"))
    assert a1.admin.state.value == "enabled"
    ok(await cli(app, "set", "server", "a1", "drain", "--timeout", "30s"))
    assert a1.admin.deadline is not None
    ok(await cli(app, "clear", "server", "a1", "drain"))
    ok(await cli(app, "disable", "server", "a1", "--graceful", "--timeout", "1m"))
    assert a1.admin.state.value == "drain"
    ok(await cli(app, "enable", "server", "a1"))
    ok(await cli(app, "disable", "server", "a1"))
    assert a1.admin.state.value == "maintenance"
    # Usage errors exit 2 (as cli.md says) and change nothing.
    for args, message in (
        (("set", "server", "a2", "drain", "--force"), "--force applies to maintenance"),
        (("set", "server", "a2", "maintenance", "--timeout", "5s"), "--timeout applies to drain"),
        (
            ("set", "server", "a2", "maintenance", "--for", "1m", "--until", "2030-01-01"),
            "--for or --until",
        ),
        (("disable", "server", "a2", "--timeout", "2s"), "--timeout applies with --graceful"),
        (("set", "server", "a2", "sleep"), "'sleep' is not one of"),
    ):
        r = await cli(app, *args)
        assert r.exit_code == 2 and message in r.stderr, (args, r.stderr)
    assert app.registry.find_server("app/a2").admin.state.value == "enabled"


async def test_guard_refusal_exits_non_zero(app: Any) -> None:
    ok(await cli(app, "set", "server", "a1", "maintenance"))
    ok(await cli(app, "set", "server", "app/shared", "maintenance"))
    line = failed(await cli(app, "set", "server", "a2", "maintenance"))
    assert "409" in line and "min_servers_up" in line
    assert line.endswith("(override with --force-guard)")  # the CLI's own way to override
    # the refusal itself names no flag: it reaches the dashboard and the event log too
    refused = ok(await cli(app, "events", "--kind", "admin_refused"))
    assert "below min_servers_up" in refused and "--force" not in refused
    assert "force_guard" not in refused
    for bad in ("app/a1/x", "/a1", "app/"):
        assert "is not POOL/SERVER" in failed(await cli(app, "set", "server", bad, "maintenance"))
    ok(await cli(app, "set", "server", "a2", "maintenance", "--force-guard"))


async def test_flags(app: Any) -> None:
    ok(await cli(app, "set", "flag", "maintenance_mode", "true"))
    assert app.registry.flags["maintenance_mode"] is True
    ok(await cli(app, "set", "flag", "banner", "blue sky"))
    assert app.registry.flags["banner"] == "blue sky"
    ok(await cli(app, "clear", "flag", "banner"))
    assert "banner" not in app.registry.flags
    assert "404" in failed(await cli(app, "clear", "flag", "banner"))


@pytest.mark.parametrize("name", ["a?b", "x/../y", "bad name!", "héllo", "a#b"])
async def test_a_flag_name_is_never_read_as_another_path(app: Any, name: str) -> None:
    """The name is one escaped path segment: the API refuses it as a name (422), instead of
    the client setting flag ``a`` for ``a?b``, crashing on non-ASCII or blaming the network."""
    before = dict(app.registry.flags)
    out = failed(await cli(app, "set", "flag", name, "true"))
    if "/" in name:  # the server decodes %2F before routing: no such route
        assert "404" in out, out
    else:
        assert "422" in out and "not a flag name" in out, out
    assert app.registry.flags == before


async def test_event_reasons_keep_their_unicode(app: Any) -> None:
    ok(await cli(app, "set", "server", "a1", "drain", "--reason", "deploy → v2"))
    out = ok(await cli(app, "events", "--server", "app/a1"))
    assert 'reason="deploy → v2"' in out


async def test_events(app: Any) -> None:
    ok(await cli(app, "set", "server", "a1", "drain", "--reason", "deploy 42"))
    out = ok(await cli(app, "events", "--server", "app/a1"))
    assert 'admin_change app/a1 enabled → drain cause=cli actor=admin reason="deploy 42"' in out
    lines = ok(await cli(app, "events", "--json", "--kind", "admin_change")).splitlines()
    assert json.loads(lines[-1])["to"] == "drain"


async def test_events_follow(app: Any) -> None:
    env = {"QUIESCE_HOSTS": host(app), "QUIESCE_USER": "admin", "QUIESCE_PASSWORD": "admin-pw"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "quiesce",
        "events",
        "--follow",
        "--json",
        "--kind",
        "admin_change",
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )
    try:
        assert proc.stdout is not None
        # ready when the stream is open: the API has a subscriber
        async with asyncio.timeout(20):
            while app.admin.bus.subscribers == 0:
                await asyncio.sleep(0.02)
        app.admin.drain("app/a2", CommandContext(actor="someone", cause=Cause.API))
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        event = json.loads(line)
        assert (event["server"], event["to"], event["actor"]) == ("a2", "drain", "someone")
    finally:
        proc.terminate()
        await proc.wait()


async def test_wait_shows_connections_until_zero(app: Any) -> None:
    a1 = app.registry.find_server("app/a1")
    a1.connections = 2
    task = asyncio.ensure_future(cli(app, "set", "server", "a1", "drain", "--wait"))
    async with asyncio.timeout(20):
        while a1.admin.state.value != "drain":
            await asyncio.sleep(0.01)
    a1.connections = 0
    r = await asyncio.wait_for(task, 20)
    assert r.exit_code == 0, r.output
    assert "app/a1: drained: no connection left after" in r.stdout
    assert "2/2 connection(s) left" in r.stderr and "0/2 connection(s) left" in r.stderr


async def test_maintenance_wait_ends_in_its_own_maintenance_not_someone_elses(app: Any) -> None:
    """Review F12: ``maintenance --wait`` with nobody else acting ended "put in maintenance
    by admin meanwhile", as if someone else had; a drain that someone puts in maintenance
    while it waits still says so."""
    a1 = app.registry.find_server("app/a1")
    a1.connections = 2
    task = asyncio.ensure_future(cli(app, "set", "server", "a1", "maintenance", "--wait"))
    async with asyncio.timeout(20):
        while a1.admin.state.value != "maintenance":
            await asyncio.sleep(0.01)
    a1.connections = 0
    r = await asyncio.wait_for(task, 20)
    assert r.exit_code == 0, r.output
    end = r.stdout.strip().splitlines()[-1]
    assert "app/a1: in maintenance: no connection left after" in end, end
    assert "meanwhile" not in r.stdout, r.stdout
    ok(await cli(app, "clear", "server", "a1", "maintenance"))

    a1.connections = 1
    task = asyncio.ensure_future(cli(app, "set", "server", "a1", "drain", "--wait"))
    async with asyncio.timeout(20):
        while a1.admin.state.value != "drain":
            await asyncio.sleep(0.01)
    ok(await cli(app, "set", "server", "a1", "maintenance", "--reason", "other"))
    a1.connections = 0
    r = await asyncio.wait_for(task, 20)
    assert r.exit_code == 0, r.output
    assert "put in maintenance by" in r.stdout and "meanwhile" in r.stdout, r.stdout


async def test_wait_reports_what_the_deadline_closed(app: Any) -> None:
    a1 = app.registry.find_server("app/a1")
    a1.connections = 3

    def close(server: Any, mode: CloseMode) -> None:
        if mode is CloseMode.ALL:
            server.connections = 0

    app.registry.close_handlers.append(close)
    r = await cli(app, "set", "server", "a1", "drain", "--timeout", "300ms", "--wait")
    assert r.exit_code == 0, r.output
    end = r.stdout.strip().splitlines()[-1]
    assert "app/a1: drain deadline reached after" in end, end
    assert "3 connection(s) closed; now in maintenance (status: disabled)" in end, end
    assert a1.admin.state.value == "maintenance"
    # clear server … drain undoes the drain, maintenance included: the deadline put it there
    out = ok(await cli(app, "clear", "server", "a1", "drain"))
    assert "drain deadline had moved it to maintenance; cleared that" in out
    assert a1.admin.state.value == "enabled"


async def test_clear_drain_leaves_someone_elses_maintenance(app: Any) -> None:
    ok(await cli(app, "set", "server", "a1", "maintenance", "--reason", "disk"))
    line = failed(await cli(app, "clear", "server", "a1", "drain"))
    assert "not draining" in line and "quiesce clear server app/a1 maintenance" in line
    assert app.registry.find_server("app/a1").admin.state.value == "maintenance"


async def test_global_options_after_the_verb(app: Any) -> None:
    env = {"QUIESCE_HOSTS": "127.0.0.1:1", "QUIESCE_USER": "", "QUIESCE_PASSWORD": ""}
    creds = ["--user", "admin", "--password", "admin-pw"]
    out = ok(await cli(app, "list", "servers", "--hosts", host(app), *creds, **env))
    assert "app/a1" in out
    ok(
        await cli(
            app,
            "set",
            "server",
            "a1",
            "drain",
            "--hosts",
            host(app),
            "-u",
            "admin",
            "-p",
            "admin-pw",
            "-t",
            "5s",
            "--timeout",
            "1m",
            **env,
        )
    )
    assert app.registry.find_server("app/a1").admin.deadline is not None  # drain's --timeout
    ok(
        await cli(
            app,
            "show",
            "server",
            "a1",
            "--hosts",
            host(app),
            "--token",
            "deploy-token-0123456789",
            "--timeout",
            "2s",
            "--no-tls-verify-server-cert",
            **env,
        )
    )
    for args in (("events",), ("configure", "healthmonitor", "System-HTTP")):
        r = await cli(app, *args, "--hosts", host(app), *creds, input="exit\n", **env)
        assert r.exit_code in (0, 1) and "cannot reach" not in r.stderr, r.stderr
    # after the verb wins over the environment, and a bad value is a usage error
    assert "cannot reach http://127.0.0.1:1" in failed(
        await cli(app, "list", "pools", "--hosts", "127.0.0.1:1")
    )
    r = await cli(app, "list", "pools", "--timeout", "soon")
    assert r.exit_code == 2 and "soon" in r.stderr


async def test_durations_take_units(app: Any, tmp_path: Path) -> None:
    a1 = app.registry.find_server("app/a1")
    ok(await cli(app, "set", "server", "a1", "maintenance", "--for", "90s"))
    assert a1.admin.expires is not None
    ok(await cli(app, "disable", "server", "a2", "--graceful", "--timeout", "infinite"))
    ok(await cli(app, "enable", "server", "a2"))
    for args in (
        ("set", "server", "a2", "drain", "--timeout", "5 parsecs"),
        ("set", "server", "a2", "maintenance", "--for", "tomorrow"),
        ("disable", "server", "a2", "--graceful", "--timeout", "never"),
    ):
        r = await cli(app, *args)
        assert r.exit_code == 2 and "is not a duration" in r.stderr, (args, r.stderr)
    assert app.registry.find_server("app/a2").admin.state.value == "enabled"
    # the server verb too: quiesce run --grace 5s (checked before the config is read)
    runner = CliRunner()
    missing = str(tmp_path / "missing.yaml")
    r = await asyncio.to_thread(runner.invoke, main, ["run", "--grace", "5s", "-c", missing])
    assert r.exit_code == 1 and "cannot read" in r.stderr, r.stderr
    r = await asyncio.to_thread(runner.invoke, main, ["run", "--grace", "5y", "-c", missing])
    assert r.exit_code == 2 and "'5y' is not a duration" in r.stderr, r.stderr


async def test_401_hints_at_credentials(app: Any) -> None:
    line = failed(await cli(app, "list", "servers", QUIESCE_USER="", QUIESCE_PASSWORD=""))
    assert "401" in line and "--user" in line and "QUIESCE_USER" in line
    line = failed(await cli(app, "list", "servers", QUIESCE_PASSWORD="wrong"))
    assert "401" in line and "user 'admin'" in line and "QUIESCE_PASSWORD" in line


async def test_events_show_weight_changes(app: Any) -> None:
    ctx = CommandContext(actor="ops", cause=Cause.API)
    app.admin.set_weight("web/web2", 5, ctx)
    out = ok(await cli(app, "events", "--server", "web/web2"))
    assert "weight 2 → 5" in out, out


async def test_tls_and_client_certificate(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(tmp_path / "server.pem")
    )
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    client = ca.issue_cert("cli@example.com")
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "client.crt"))
    client.private_key_pem.write_to_path(str(tmp_path / "client.key"))
    tls = {"cert": "server.pem", "key": "server.pem", "client_ca": "ca.pem"}
    async with running(tmp_path, config_dict(tls=tls)) as app:
        args = ["--secure", "--tls-ca-cert", str(tmp_path / "ca.pem")]
        full = [
            *args,
            "--tls-cert",
            str(tmp_path / "client.crt"),
            "--tls-key",
            str(tmp_path / "client.key"),
        ]
        ok(await cli(app, *full, "set", "server", "a1", "drain"))
        assert app.registry.find_server("app/a1").admin.state.value == "drain"
        assert "cannot reach" in failed(await cli(app, *args, "list", "servers"))
        env = {
            "QUIESCE_SECURE": "1",
            "QUIESCE_TLS_CA_CERT": str(tmp_path / "ca.pem"),
            "QUIESCE_TLS_CERT": str(tmp_path / "client.crt"),
            "QUIESCE_TLS_KEY": str(tmp_path / "client.key"),
        }
        ok(await cli(app, "list", "servers", **env))


async def test_control_characters_in_reasons_are_escaped(app: Any) -> None:
    reason = "ok\x1b]0;pwned\x07\nFAKE 12:00 web/web1 enabled by admin"
    ok(await cli(app, "set", "server", "a1", "maintenance", "--reason", reason))
    for args in (("list", "servers"), ("show", "server", "a1")):
        out = ok(await cli(app, *args))
        assert "\x1b" not in out and "\x07" not in out, args
        assert "\\x1b]0;pwned\\x07\\nFAKE" in out, args
        assert not any(line.startswith("FAKE") for line in out.splitlines())


def test_help_says_how_reload_and_run_are_driven() -> None:
    """``reload --help``: through the admin API, credentials as the other verbs, and what does
    the same; ``run --help``: the signals and --takeover; the README's global options are
    ``quiesce --help``'s."""
    runner = CliRunner()
    reload_help = runner.invoke(main, ["reload", "--help"]).output
    for said in ("admin API", "--hosts", "QUIESCE_USER", "--token", "kill -HUP", "runtime socket"):
        assert said in reload_help, said
    run_help = " ".join(runner.invoke(main, ["run", "--help"]).output.split())
    for said in ("SIGHUP reloads", "SIGUSR1 reopens the access log", "--takeover"):
        assert said in run_help, said
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    start = readme.index("(global options")
    listed = set(re.findall(r"`(--[a-z-]+)`", readme[start : readme.index("variables):", start)]))
    shown = set(re.findall(r"(--[a-z-]+)", runner.invoke(main, ["--help"]).output))
    assert shown - {"--help", "--version", "--no-tls-verify-server-cert"} <= listed
