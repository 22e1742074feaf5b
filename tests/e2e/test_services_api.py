"""``GET /api/v1/services`` (rules with their hit counts, monitor URI state, maintenance-page
responses) and ``GET /api/v1/series/servers`` (a pool's servers' columns in one answer), the
two reads the dashboard's charts add (issue 19, item 2), against a real ``quiesce run``."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.process import BackendThread, run_quiesce, until, write_simple_config

pytestmark = [pytest.mark.peers]
AUTH = ("admin", "pw")
SHOP = """\
  shop:
    listen: 127.0.0.1:0
    pool: web
    monitor_uri: {path: /alive, fail_if: {flag: closed}}
    rules:
      - {name: api, if: {path_prefix: /api}, then: {pool: web}}
      - {if: {flag: closed}, then: maintenance_page}
"""


@pytest.fixture
def backends() -> Iterator[BackendThread]:
    with BackendThread(["b1", "b2"]) as bt:
        yield bt


def shop(api: str) -> dict[str, Any]:
    r = httpx.get(f"{api}/services", auth=AUTH)
    assert r.status_code == 200, r.text
    found: dict[str, Any] = {s["name"]: s for s in r.json()}["shop"]
    return found


def test_services_count_rules_monitor_uri_and_maintenance_pages(
    tmp_path: Path, backends: BackendThread
) -> None:
    write_simple_config(tmp_path, backends.backends, SHOP)
    proc, _, api = run_quiesce(tmp_path)
    port = int(proc.wait_for(r"service shop listening on port (\d+)").group(1))
    url = f"http://127.0.0.1:{port}"
    try:
        assert httpx.get(f"{api}/services").status_code == 401
        s = shop(api)
        assert (s["tls"], s["port"], s["pool"], s["running"]) == (False, port, "web", True)
        assert [(r["name"], r["hits"]) for r in s["rules"]] == [("api", 0), ("rules[1]", 0)]
        assert s["rules"][1]["then"] == {"maintenance_page": True}
        assert s["monitor_uri"]["state"] == "ok"
        with httpx.Client(base_url=url) as c:
            for path in ("/api/1", "/api/2", "/api/3", "/x", "/alive"):
                assert c.get(path).status_code == 200
            httpx.put(f"{api}/flags/closed", json={"value": True}, auth=AUTH).raise_for_status()
            assert c.get("/alive").status_code == 503
            assert c.get("/x").status_code == 503  # the maintenance page
        s = shop(api)
        assert [r["hits"] for r in s["rules"]] == [3, 1]
        assert s["default_hits"] == 1
        assert s["monitor_uri"] == {
            "path": "/alive",
            "state": "fail",
            "answers_200": 1,
            "answers_503": 1,
        }
        assert s["maintenance_pages"] == 1
        www = {x["name"]: x for x in httpx.get(f"{api}/services", auth=AUTH).json()}["www"]
        assert www["rules"] == [] and www["monitor_uri"] is None
    finally:
        code = proc.stop(signal.SIGTERM)
    assert code == 0, proc.output


def test_series_servers_gives_a_pools_columns_in_one_answer(
    tmp_path: Path, backends: BackendThread
) -> None:
    write_simple_config(tmp_path, backends.backends)
    proc, url, api = run_quiesce(tmp_path)
    try:

        def ticked_after(t: float) -> bool:
            r = httpx.get(f"{api}/series/servers", params={"pool": "web"}, auth=AUTH)
            return bool(r.status_code == 200 and r.json()["t"] and r.json()["t"][-1] > t)

        until(lambda: ticked_after(0), 10)  # the first tick: the baseline
        with httpx.Client() as c:
            for i in range(10):
                c.get(f"{url}x{i}").raise_for_status()
        start = time.time()
        until(lambda: ticked_after(start), 10)
        body = httpx.get(
            f"{api}/series/servers",
            params={"pool": "web", "seconds": 30, "fields": "requests,connections"},
            auth=AUTH,
        ).json()
        assert body["fields"] == ["requests", "connections"] and body["total"] == 2
        assert len(body["t"]) == 30 and set(body["servers"]) == {"b1", "b2"}
        for name in ("b1", "b2"):
            cols = body["servers"][name]
            assert set(cols) == {"requests", "connections"} and len(cols["requests"]) == 30
            one = httpx.get(
                f"{api}/series",
                params={"kind": "server", "name": f"web/{name}", "seconds": 30},
                auth=AUTH,
            ).json()
            if one["points"][-1]["t"] == body["t"][-1]:  # no tick in between
                assert cols["requests"] == [p["requests"] for p in one["points"]]
        assert sum(sum(body["servers"][n]["requests"]) for n in ("b1", "b2")) == 10
        page = httpx.get(
            f"{api}/series/servers", params={"pool": "web", "offset": 1, "limit": 1}, auth=AUTH
        ).json()
        assert list(page["servers"]) == ["b2"]
        for query, field in (
            ("pool=web&fields=requests,nope", "nope"),
            ("pool=web&limit=0", "limit"),
        ):
            r = httpx.get(f"{api}/series/servers?{query}", auth=AUTH)
            assert r.status_code == 422 and field in r.text, r.text
        r = httpx.get(f"{api}/series/servers?pool=none", auth=AUTH)
        assert r.status_code == 404 and "none" in r.text
    finally:
        code = proc.stop(signal.SIGTERM)
    assert code == 0, proc.output
