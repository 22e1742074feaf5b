"""A service that fails to start after a reload switched the config (issue 14 leftover): the
rest of the reload is applied, the answer is non-zero naming the service (``quiesce reload``
exits 1, ``POST /api/v1/reload`` 500, a ``config_reload`` event ``failed``), and the next
reload, of the same file, starts it: it binds and serves.

Whatever can be checked before the switch is (a busy port refuses the whole reload, nothing
changed: tests/e2e/test_reload_refusals.py); what fails here is the start itself, given an
``OSError`` (EMFILE, the descriptors run out while the reload applies) as the data plane
raises it. Before, the running config already named the service, the next reload's diff
was empty, and it never listened again until a restart.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import socket
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

import quiesce.dataplane.service as service_module
from quiesce.app import App
from quiesce.config.loader import load_config, parse_config
from quiesce.core.events import EventQuery
from quiesce.state.reload import plan_reload
from tests.support.backend import Backend

AUTH = ("admin", "pw")


@functools.cache
def _hash() -> str:
    from quiesce.security import hash_password

    return hash_password("pw")


def config_text(backend: int, *, more: bool) -> str:
    extra = ""
    if more:  # a server added to web, two services added: new1 fails to start, new2 starts
        extra = f"""
      - {{name: w2, address: 127.0.0.1:{backend}}}"""
    services = "\n  www: {listen: 127.0.0.1:0, pool: web}"
    if more:
        services += "\n  new1: {listen: 127.0.0.1:0, pool: web}"
        services += "\n  new2: {listen: 127.0.0.1:0, pool: web}"
    return f"""
admin:
  listen: 127.0.0.1:0
  users: [{{name: admin, password_hash: "{_hash()}", role: admin}}]
state:
  sqlite: ./state.db
pools:
  web:
    servers:
      - {{name: w1, address: 127.0.0.1:{backend}}}{extra}
services:{services}
"""


async def get(port: int) -> tuple[int, str]:
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.get(f"http://127.0.0.1:{port}/")
        return r.status_code, r.text


async def quiesce_reload(app: App) -> tuple[int, str]:
    """``quiesce reload`` (a quiesce CLI process) against ``app``: exit code and stderr."""
    assert app.admin_server is not None
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "quiesce",
        "reload",
        env={
            **os.environ,
            "QUIESCE_HOSTS": f"127.0.0.1:{app.admin_server.port}",
            "QUIESCE_USER": "admin",
            "QUIESCE_PASSWORD": "pw",
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, (out + err).decode()


@pytest.mark.peers  # the reload worker and the CLI are Python processes
async def test_a_service_that_failed_to_start_is_started_by_the_next_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Backend("b1") as b1:
        path = tmp_path / "quiesce.yaml"
        path.write_text(config_text(b1.port, more=False))
        app = App(load_config(path), tmp_path, config_path=path)
        await app.start()
        try:
            real = service_module.start_service
            failing = {"new1"}

            async def start_service(name: str, *args: Any, **kw: Any) -> Any:
                if name in failing:
                    raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
                return await real(name, *args, **kw)

            monkeypatch.setattr(service_module, "start_service", start_service)
            path.write_text(config_text(b1.port, more=True))
            code, said = await quiesce_reload(app)
            assert code == 1, said
            assert "service new1: not started on 127.0.0.1:0: OSError" in said, said
            assert "Too many open files" in said and "the next reload" in said, said
            # the rest applied: w2 added, new2 serves; new1 in the config, not running
            assert app.registry.pools["web"].has("w2")
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{app.admin_server.port}", auth=AUTH, timeout=30
            ) as api:
                views = {s["name"]: s for s in (await api.get("/api/v1/services")).json()}
                assert views["new2"]["running"] and not views["new1"]["running"], views
                assert (await get(views["new2"]["port"]))[0] == 200
                (event,) = app.admin.events(EventQuery(kind="config_reload"))
                assert event.to == "failed" and set(event.detail["services"]) == {"new1"}
                assert "service new2: added on 127.0.0.1:0" in event.detail["changes"]
                # the same file again, the cause gone: new1 is bound and started
                failing.clear()
                r = await api.post("/api/v1/reload")
                assert r.status_code == 200, r.text
                assert [c["kind"] for c in r.json()["changes"]] == ["service_started"], r.text
                views = {s["name"]: s for s in (await api.get("/api/v1/services")).json()}
                assert views["new1"]["running"], views
                assert await get(views["new1"]["port"]) == (200, "hello from b1\n")
                assert app.admin.events(EventQuery(kind="config_reload"))[-1].to == "applied"
                r = await api.post("/api/v1/reload")  # nothing left to do
                assert r.status_code == 200 and r.json()["changes"] == [], r.text
        finally:
            await app.stop(1.0)


@pytest.mark.peers
async def test_a_failed_start_fails_again_and_says_so_until_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cause that lasts: each reload tries again and answers 500 (never a quiet 0
    changes while the service does not listen); its listener is closed each time."""
    async with Backend("b1") as b1:
        path = tmp_path / "quiesce.yaml"
        path.write_text(config_text(b1.port, more=False))
        app = App(load_config(path), tmp_path, config_path=path)
        await app.start()
        try:
            real = service_module.start_service
            bound: list[Any] = []

            async def start_service(name: str, *args: Any, **kw: Any) -> Any:
                if name == "new1":
                    bound.extend(kw["socks"])
                    raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
                return await real(name, *args, **kw)

            monkeypatch.setattr(service_module, "start_service", start_service)
            path.write_text(config_text(b1.port, more=True))
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{app.admin_server.port}", auth=AUTH, timeout=30
            ) as api:
                for _ in range(2):
                    r = await api.post("/api/v1/reload")
                    assert r.status_code == 500, r.text
                    assert "service new1: not started" in r.text, r.text
                assert len(bound) == 2 and all(s.fileno() == -1 for s in bound)  # closed
                events = app.admin.events(EventQuery(kind="config_reload"))
                assert [e.to for e in events] == ["failed", "failed"]
                assert events[1].detail["changes"] == [
                    "service new1: not running (its start failed at an earlier reload): "
                    "started on 127.0.0.1:0"
                ]
        finally:
            await app.stop(1.0)


def test_the_plan_starts_a_service_that_does_not_run() -> None:
    """Sans-IO: a service of the running config that is not running is planned
    ``service_started`` whether the file changed it or not; running ones as before."""
    old = load_config_text(config_text(1, more=True))
    same = plan_reload(old, old, running={"www", "new2"})
    assert [(c.kind, c.target) for c in same.changes] == [("service_started", "service new1")]
    assert plan_reload(old, old).changes == []  # running: every service of old
    text = config_text(1, more=True).replace("new1: {", "new1: {grace_period: 3s, ")
    changed = load_config_text(text)
    plan = plan_reload(old, changed, running={"www", "new2"})
    assert [c.kind for c in plan.changes] == ["service_started"]
    assert plan_reload(old, changed).kinds() == ["service_changed"]


def load_config_text(text: str) -> Any:
    return parse_config(yaml.safe_load(text), "quiesce.yaml")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.peers
async def test_a_busy_port_refuses_the_reload_then_the_same_file_binds_and_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The brief's case, as an operator meets it: a new listener on a port another program
    holds (a plain socket) refuses the whole reload before anything changes (422, the port
    named; w2 not added), as HAProxy keeps its old process; the port freed, the same file
    applies and the listener serves. Then the retry of a service whose start failed meets a
    busy port the same way: refused, and started once the port is free."""
    async with Backend("b1") as b1:
        path = tmp_path / "quiesce.yaml"
        path.write_text(config_text(b1.port, more=False))
        app = App(load_config(path), tmp_path, config_path=path)
        await app.start()
        port = free_port()
        fixed = config_text(b1.port, more=True).replace(
            "new1: {listen: 127.0.0.1:0", f"new1: {{listen: 127.0.0.1:{port}"
        )
        try:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{app.admin_server.port}", auth=AUTH, timeout=30
            ) as api:
                busy = socket.socket()
                busy.bind(("127.0.0.1", port))
                busy.listen()
                path.write_text(fixed)
                r = await api.post("/api/v1/reload")
                assert r.status_code == 422, r.text
                assert r.json()["problems"] == [
                    f"services.new1.listen: cannot listen on 127.0.0.1:{port}: [Errno 98] error "
                    f"while attempting to bind on address ('127.0.0.1', {port}): address already "
                    "in use"
                ], r.text
                assert not app.registry.pools["web"].has("w2") and set(app.services) == {"www"}
                busy.close()
                r = await api.post("/api/v1/reload")
                assert r.status_code == 200, r.text
                assert await get(port) == (200, "hello from b1\n")

                # new1 stops at a reload that re-binds it elsewhere and fails to start there
                real = service_module.start_service

                async def start_service(name: str, *args: Any, **kw: Any) -> Any:
                    if name == "new1":
                        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
                    return await real(name, *args, **kw)

                monkeypatch.setattr(service_module, "start_service", start_service)
                other = free_port()
                path.write_text(fixed.replace(f"127.0.0.1:{port}", f"127.0.0.1:{other}"))
                assert (await api.post("/api/v1/reload")).status_code == 500
                assert "new1" not in app.services
                monkeypatch.setattr(service_module, "start_service", real)
                busy = socket.socket()
                busy.bind(("127.0.0.1", other))
                busy.listen()
                r = await api.post("/api/v1/reload")  # the retry binds first: refused
                assert r.status_code == 422 and f"127.0.0.1:{other}" in r.text, r.text
                assert "new1" not in app.services
                busy.close()
                r = await api.post("/api/v1/reload")
                assert r.status_code == 200, r.text
                assert [c["kind"] for c in r.json()["changes"]] == ["service_started"]
                assert await get(other) == (200, "hello from b1\n")
        finally:
            await app.stop(1.0)


@pytest.mark.peers
async def test_a_service_that_cannot_take_its_new_settings_keeps_serving_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """www's new context cannot be made (its page or certificate unreadable meanwhile): the
    reload answers 500 naming it, www serves with its previous settings, and the next
    reload (every service is reconfigured at each one) gives it the new ones."""
    async with Backend("b1") as b1:
        path = tmp_path / "quiesce.yaml"
        path.write_text(config_text(b1.port, more=False))
        app = App(load_config(path), tmp_path, config_path=path)
        await app.start()
        try:
            real = service_module.make_context

            def make_context(name: str, *args: Any, **kw: Any) -> Any:
                if name == "www":
                    raise PermissionError(errno.EACCES, "Permission denied", "page.html")
                return real(name, *args, **kw)

            monkeypatch.setattr(service_module, "make_context", make_context)
            path.write_text(
                config_text(b1.port, more=False).replace(
                    "pool: web}", "pool: web, grace_period: 3s}"
                )
            )
            www = app.services["www"]
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{app.admin_server.port}", auth=AUTH, timeout=30
            ) as api:
                r = await api.post("/api/v1/reload")
                assert r.status_code == 500, r.text
                assert "service www: serves with its previous settings: PermissionError" in r.text
                assert app.services["www"] is www and www.config.grace_period == 10.0
                assert await get(www.port) == (200, "hello from b1\n")
                monkeypatch.setattr(service_module, "make_context", real)
                r = await api.post("/api/v1/reload")
                assert r.status_code == 200 and r.json()["changes"] == [], r.text
                assert www.config.grace_period == 3.0
        finally:
            await app.stop(1.0)
