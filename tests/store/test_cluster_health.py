"""Issue 15, case 7: health views shared and min_servers_up checked against the cluster's
view. Two ``quiesce run`` nodes on a real etcd; B's config points b2 at a closed port, so its
health checks say b2 is down while A's say up. A then refuses to put b1 in maintenance: B
would be left with no eligible server."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dashboard.conftest import browser  # noqa: F401 (the fixture)
from tests.store.test_cluster import AUTH, cluster, events, run_cli
from tests.store.test_etcd import ETCD, Etcd, _free_port, node_config
from tests.support.process import BackendThread, Started, run_quiesce, until

pytestmark = [
    pytest.mark.skipif(not Path(ETCD).exists(), reason="etcd server not installed"),
    pytest.mark.peers,
]


def start(tmp_path: Path, etcd: Etcd, prefix: str, name: str, b1: int, b2: int) -> Started:
    d = tmp_path / name
    d.mkdir()
    (d / "quiesce.yaml").write_text(
        node_config(etcd, prefix, name, ", lease_ttl: 3")
        + f"""healthmonitors:
  hm: {{type: tcp, send_interval: 0.5s, receive_timeout: 0.3s, successful_checks: 1,
        failed_checks: 1}}
pools:
  web:
    min_servers_up: 1
    healthmonitors: [hm]
    servers:
      - {{name: b1, address: 127.0.0.1:{b1}}}
      - {{name: b2, address: 127.0.0.1:{b2}}}
services:
  www: {{listen: 127.0.0.1:0, pool: web}}
"""
    )
    return run_quiesce(d)


@pytest.fixture
def nodes(tmp_path: Path, etcd: Etcd) -> Iterator[tuple[Started, Started]]:
    prefix = f"/quiesce-test/{uuid.uuid4().hex[:8]}/"
    with BackendThread(["b1", "b2"]) as backends:
        b1, b2 = (b.port for b in backends.backends)
        a = start(tmp_path, etcd, prefix, "A", b1, b2)
        b = start(tmp_path, etcd, prefix, "B", b1, _free_port())  # B: b2 never answers
        try:
            yield a, b
        finally:
            for n in (a, b):
                n.proc.stop()


def differ(node: Started) -> list[dict[str, Any]]:
    return list(cluster(node)["disagreements"])


def test_the_guard_counts_the_node_that_sees_the_fewest(nodes: tuple[Started, Started]) -> None:
    a, b = nodes
    want = [{"server": "web/b2", "verdicts": {"A": "up", "B": "down"}}]
    until(lambda: differ(a) == want and differ(b) == want, 15)
    view = cluster(a)
    assert view["health"] == {"A": {}, "B": {"web/b2": "down"}}  # up or unmonitored: not listed
    shown = run_cli(a, "show", "cluster")
    assert "health differs: web/b2: up on A, down on B" in shown.stdout, shown
    # A alone would allow it (b2 is up here); B would be left with nothing
    r = httpx.post(f"{a.api}/servers/web/b1/maintenance", json={}, auth=AUTH, timeout=10)
    assert r.status_code == 409, r.text
    detail = r.json()["detail"]
    assert "leave 0 eligible server(s) on node B" in detail and "min_servers_up 1" in detail
    refused = events(a, "admin_refused")[-1]
    assert refused["server"] == "b1" and "node B" in refused["detail"]["error"]
    done = run_cli(a, "set", "server", "web/b1", "maintenance")
    assert done.returncode == 1 and "node B" in done.stderr, done
    assert httpx.get(f"{a.api}/servers/web/b1", auth=AUTH).json()["admin"] == "enabled"
    # b2 is not B's to count on: A may take it out
    assert httpx.post(f"{a.api}/servers/web/b2/drain", json={}, auth=AUTH).status_code == 200
    assert httpx.post(f"{a.api}/servers/web/b2/enable", json={}, auth=AUTH).status_code == 200
    # the override works as for the node's own guard
    forced = run_cli(a, "set", "server", "web/b1", "maintenance", "--force-guard")
    assert forced.returncode == 0, forced.stderr
    until(lambda: httpx.get(f"{b.api}/servers/web/b1", auth=AUTH).json()["admin"] == "maintenance")
    assert httpx.post(f"{a.api}/servers/web/b1/enable", json={}, auth=AUTH).status_code == 200
    # a node that is gone does not count: its health record goes with its lease
    b.proc.p.send_signal(signal.SIGKILL)
    until(lambda: differ(a) == [] and "B" not in cluster(a)["health"], 10)
    r = httpx.post(f"{a.api}/servers/web/b1/maintenance", json={}, auth=AUTH, timeout=10)
    assert r.status_code == 200, r.text


@pytest.mark.browser
def test_the_dashboard_says_where_health_differs(
    nodes: tuple[Started, Started],
    browser: Any,  # noqa: F811 (the fixture imported above)
) -> None:
    from playwright.sync_api import expect

    a, _ = nodes
    page = browser.new_page()
    try:
        page.goto(a.api.removesuffix("/api/v1") + "/")
        page.get_by_label("User").fill("admin")
        page.get_by_label("Password").fill("pw")
        page.get_by_role("button", name="Log in").click()
        expect(page.locator("#live")).to_contain_text("live")
        box = page.locator("#cluster-health")
        expect(box).to_contain_text("web/b2: down on node B (up on A)", timeout=15000)
        expect(page.locator("#cluster-banner")).to_be_hidden()  # the link is fine
    finally:
        page.close()
