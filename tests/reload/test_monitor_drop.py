"""A monitor the config file drops while a runtime definition still uses it (review 90 F17):
the reload said "monitor hm: deleted", kept it, and blamed "pool(s) solo"; a restart with
the same file then dropped the runtime server ("not restored: no health monitor named
'hm'"). Now the reload is refused (422, nothing changed) naming the runtime server, as a
file whose own servers name a monitor it does not define; the restart keeps the server,
without the lost monitor, and says so at WARNING; a DELETE of the monitor names the server."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest

from quiesce.app import App
from tests.api.harness import ADMIN, config_dict
from tests.reload.test_runtime_budget import start, url


def text(monitor: str = "hm") -> str:
    data = config_dict()
    data["state"] = {"sqlite": "state.db"}
    data["healthmonitors"] = {monitor: {"type": "tcp", "send_interval": "60s"}}
    data["pools"] = {
        "web": {
            "healthmonitors": [monitor],
            "servers": [{"name": "w1", "address": "127.0.0.1:18601"}],
        },
        "solo": {"servers": [{"name": "a", "address": "127.0.0.1:18602"}]},
    }
    data["services"] = {"www": {"listen": "127.0.0.1:0", "pool": "web"}}
    return json.dumps(data)


async def p1_uses_hm(client: httpx.AsyncClient, app: App) -> None:
    base = url(app)
    r = await client.post(
        f"{base}/api/v1/pools/solo/servers",
        json={"name": "p1", "address": "127.0.0.1:18603"},
        auth=ADMIN,
    )
    assert r.status_code == 201, r.text
    r = await client.patch(
        f"{base}/api/v1/servers/solo/p1", json={"healthmonitors": ["hm"]}, auth=ADMIN
    )
    assert r.status_code == 200, r.text


@pytest.mark.loopback
async def test_a_reload_dropping_a_monitor_a_runtime_server_uses_is_refused(
    tmp_path: Path,
) -> None:
    app = await start(tmp_path, text())
    try:
        base = url(app)
        async with httpx.AsyncClient(timeout=30) as client:
            await p1_uses_hm(client, app)
            # the DELETE of the monitor names the pool and the server that use it
            r = await client.delete(f"{base}/api/v1/healthmonitors/hm", auth=ADMIN)
            assert r.status_code == 409, r.text
            assert "pool(s) web and server(s) solo/p1" in r.json()["detail"], r.text

            (tmp_path / "quiesce.yaml").write_text(text("hm2"))  # the file renames hm
            r = await client.post(f"{base}/api/v1/reload", auth=ADMIN)
            assert r.status_code == 422, r.text
            problems = r.json()["problems"]
            assert any(
                p.startswith("healthmonitors.hm: removed from the file but used by runtime ")
                and "solo/p1" in p
                for p in problems
            ), problems
            # nothing changed
            assert set(app.registry.monitors) == {"hm"}
            assert app.registry.pools["web"].pool_monitors == ["hm"]
            assert app.config.pools["web"].healthmonitors == ["hm"]
            r = await client.get(f"{base}/api/v1/healthmonitors/hm2", auth=ADMIN)
            assert r.status_code == 404, r.text

            # p1 detached: the same file reloads, hm really deleted
            r = await client.patch(
                f"{base}/api/v1/servers/solo/p1", json={"healthmonitors": []}, auth=ADMIN
            )
            assert r.status_code == 200, r.text
            r = await client.post(f"{base}/api/v1/reload", auth=ADMIN)
            assert r.status_code == 200, r.text
            assert "monitor hm: deleted" in [c["message"] for c in r.json()["changes"]]
            assert not r.json()["warnings"], r.text
            assert set(app.registry.monitors) == {"hm2"}
    finally:
        await app.stop(1.0)


@pytest.mark.loopback
async def test_a_restart_keeps_the_runtime_server_of_a_dropped_monitor_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = await start(tmp_path, text())
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            await p1_uses_hm(client, app)
    finally:
        await app.stop(1.0)
    caplog.set_level(logging.WARNING, logger="quiesce")
    app = await start(tmp_path, text("hm2"))  # the file dropped hm while stopped
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            r = await client.get(f"{url(app)}/api/v1/servers/solo/p1", auth=ADMIN)
            assert r.status_code == 200, r.text  # was: 404, the server dropped
        p1 = app.registry.find_server("solo/p1")
        assert p1.config.healthmonitors == [] and p1.runtime_defined
        warned = [
            r.getMessage()
            for r in caplog.records
            if r.levelno == logging.WARNING and "solo/p1" in r.getMessage()
        ]
        assert any("restored without health monitor(s) hm" in m for m in warned), warned
        assert not any("forgotten" in m or "not restored" in m for m in warned), warned
    finally:
        await app.stop(1.0)
