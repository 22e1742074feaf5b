"""Restart-only settings are warned about against what runs, not against the previous file
(review 90 F3): a file moving ``admin.listen`` was warned about once, the next reload of the
same file said nothing though the change still waited for a restart, and a file put back to
what runs was warned about falsely. Now every reload while the change waits repeats the
warning, and a file that says what runs gives none."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from quiesce.config.loader import parse_config
from quiesce.state.reload import plan_reload
from tests.api.harness import ADMIN, config_dict
from tests.reload.test_runtime_budget import start, url

LISTEN = "admin.listen: changed in the file, applied at the next restart"
SOCKET = "admin.runtime_socket: changed in the file, applied at the next restart"
STATE = "state: changed in the file, applied at the next restart"


def data(listen: str = "127.0.0.1:0", sock: str = "rt.sock", db: str = "state.db") -> Any:
    d = config_dict(runtime_socket=sock)
    d["admin"]["listen"] = listen
    d["state"] = {"sqlite": db}
    return d


def test_the_plan_compares_restart_only_settings_with_the_started_config() -> None:
    started = parse_config(data())
    moved = parse_config(data(listen="127.0.0.1:18998"))
    # the second reload of the moved file: the previous file is the same, what runs is not
    plan = plan_reload(moved, moved, started=started)
    assert plan.warnings == [LISTEN]
    # the file put back: it says what runs, no warning though the previous file differs
    assert plan_reload(moved, started, started=started).warnings == []
    # without ``started``: the previous file, as before (a start, tests of one reload)
    assert plan_reload(started, moved).warnings == [LISTEN]


def test_admin_tls_turned_on_is_warned_until_a_restart() -> None:
    started = parse_config(data())
    tls = data()
    tls["admin"]["tls"] = {"cert": "a.pem", "key": "a.key"}
    on = parse_config(tls)
    assert "admin.tls: turned on or off, applied at the next restart" in (
        plan_reload(started, on, started=started).warnings
    )
    again = plan_reload(on, on, started=started)
    assert "admin.tls: turned on or off, applied at the next restart" in again.warnings
    assert "tls_changed" not in again.kinds()  # no TLS runs: no certificate to reload
    assert plan_reload(on, started, started=started).warnings == []


async def reload(client: httpx.AsyncClient, base: str) -> list[str]:
    r = await client.post(f"{base}/api/v1/reload", auth=ADMIN)
    assert r.status_code == 200, r.text
    warnings: list[str] = r.json()["warnings"]
    return warnings


@pytest.mark.loopback
async def test_a_pending_restart_only_change_is_warned_at_every_reload(tmp_path: Path) -> None:
    app = await start(tmp_path, json.dumps(data()))
    path = tmp_path / "quiesce.yaml"
    try:
        base = url(app)
        async with httpx.AsyncClient(timeout=30) as client:
            path.write_text(json.dumps(data(listen="127.0.0.1:18997", sock="rt2.sock")))
            assert await reload(client, base) == [LISTEN, SOCKET]
            assert await reload(client, base) == [LISTEN, SOCKET]  # was: [] (still pending)
            path.write_text(json.dumps(data(db="state2.db")))  # listen, socket back; state
            assert await reload(client, base) == [STATE]  # was: listen and socket too
            path.write_text(json.dumps(data()))  # what runs
            assert await reload(client, base) == []  # was: [STATE] (compared with the last)
            assert app.admin_server.port != 18997  # (the admin API never moved)
    finally:
        await app.stop(1.0)
