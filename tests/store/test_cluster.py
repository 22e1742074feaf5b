"""Issue 15: a node says when its link to etcd is stale, and nodes know each other through
leases. Real etcd (Debian's etcd-server) and real ``quiesce run`` processes."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dashboard.conftest import browser  # noqa: F401 (the fixture)
from tests.store.test_etcd import ETCD, Etcd, node_config
from tests.support.process import BackendThread, Started, quiesce_cli, run_quiesce, until

pytestmark = [
    pytest.mark.skipif(not Path(ETCD).exists(), reason="etcd server not installed"),
    pytest.mark.peers,
]
AUTH = ("admin", "pw")


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[Etcd]:
    server = Etcd(tmp_path / "etcd")
    server.start()
    yield server
    if server.proc is not None:
        server.proc.send_signal(signal.SIGCONT)  # never leave it frozen
    server.stop()


def start_node(
    tmp_path: Path, etcd: Etcd, prefix: str, node: str, port: int, etcd_extra: str = ""
) -> Started:
    d = tmp_path / node
    d.mkdir()
    (d / "quiesce.yaml").write_text(
        node_config(etcd, prefix, node, etcd_extra)
        + f"""pools:
  web:
    servers: [{{name: b1, address: 127.0.0.1:{port}}}]
services:
  www: {{listen: 127.0.0.1:0, pool: web}}
"""
    )
    return run_quiesce(d)


def cluster(node: Started) -> dict[str, Any]:
    r = httpx.get(f"{node.api}/cluster", auth=AUTH, timeout=5)
    assert r.status_code == 200, r.text
    return dict(r.json())


def events(node: Started, kind: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{node.api}/events", params={"kind": kind}, auth=AUTH, timeout=5)
    assert r.status_code == 200, r.text
    return list(r.json())


def cli(node: Started, *args: str) -> str:
    done = run_cli(node, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def run_cli(node: Started, *args: str) -> subprocess.CompletedProcess[str]:
    return quiesce_cli(int(node.api.rsplit(":", 1)[1].removesuffix("/api/v1")), *args)


class Load:
    """Requests one after the other through the data plane, in a thread; counts failures."""

    def __init__(self, url: str) -> None:
        self.url, self.ok, self.failed = url, 0, []  # type: ignore[var-annotated]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self.stop.is_set():
                try:
                    r = client.get(self.url)
                    if r.status_code == 200:
                        self.ok += 1
                    else:
                        self.failed.append(r.status_code)
                except httpx.HTTPError as exc:
                    self.failed.append(repr(exc))
                time.sleep(0.01)

    def end(self) -> None:
        self.stop.set()
        self.thread.join(10)


def test_frozen_etcd_is_reported_stale_and_back_up_while_requests_are_served(
    tmp_path: Path, etcd: Etcd
) -> None:
    stale_after = 1.5
    prefix = f"/quiesce-test/{uuid.uuid4().hex[:8]}/"
    with BackendThread(["b1"]) as backends:
        node = start_node(
            tmp_path, etcd, prefix, "A", backends.backends[0].port, ", stale_after: 1.5s"
        )
        try:
            until(lambda: cluster(node)["link"] == "up" and cluster(node)["nodes"], 10)
            view = cluster(node)
            assert (view["node"], view["store"], view["stale_after"]) == ("A", "etcd", 1.5)
            assert [n["name"] for n in view["nodes"]] == ["A"] and view["nodes"][0]["self"]
            assert view["revision"] > 0 and view["lag_seconds"] < stale_after
            metrics = httpx.get(node.api.replace("/api/v1", "/metrics"), auth=AUTH).text
            assert "quiesce_store_up 1.0" in metrics
            load = Load(node.www)
            try:
                until(lambda: load.ok > 10)
                assert etcd.proc is not None
                etcd.proc.send_signal(signal.SIGSTOP)
                frozen = time.monotonic()
                until(lambda: cluster(node)["link"] == "stale", stale_after + 3)
                noticed = time.monotonic() - frozen
                print(f"frozen etcd: stale after {noticed:.2f} s (stale_after {stale_after} s)")
                assert noticed <= stale_after + 1, noticed
                view = cluster(node)
                assert view["lag_seconds"] >= stale_after
                metrics = httpx.get(node.api.replace("/api/v1", "/metrics"), auth=AUTH).text
                assert "quiesce_store_up 0.0" in metrics
                lag = [ln for ln in metrics.splitlines() if ln.startswith("quiesce_store_lag")]
                assert float(lag[0].split()[1]) >= stale_after
                shown = cli(node, "show", "cluster")
                assert "stale" in shown and "A (this node)" in shown
                until(lambda: events(node, "node_isolated"), 5)
                # a change of shared state is refused (503) unless asked for this node only
                r = httpx.post(f"{node.api}/servers/web/b1/maintenance", json={}, auth=AUTH)
                assert r.status_code == 503, r.text
                assert "stale" in r.json()["detail"] and "?local=true" in r.json()["detail"]
                r = httpx.put(f"{node.api}/flags/f", params={"local": "maybe"}, json={"value": 1})
                assert r.status_code in (400, 401)
                r = httpx.put(
                    f"{node.api}/flags/f", params={"local": "maybe"}, json={"value": "x"}, auth=AUTH
                )
                assert r.status_code == 400 and "local" in r.json()["detail"], r.text
                refused = run_cli(node, "set", "flag", "color", "blue")
                assert refused.returncode == 1 and "--local" in refused.stderr, refused
                cli(node, "set", "flag", "color", "blue", "--local")
                r = httpx.get(f"{node.api}/flags", auth=AUTH)
                assert r.json()["color"] == "blue" and "f" not in r.json()
                change = events(node, "flag_change")[-1]
                assert (change["to"], change["detail"].get("local")) == ("blue", True)
                assert httpx.get(f"{node.api}/servers/web/b1", auth=AUTH).json()["admin"] == (
                    "enabled"
                )
                served_while_frozen = load.ok
                until(lambda: load.ok > served_while_frozen + 20)
                etcd.proc.send_signal(signal.SIGCONT)
                until(lambda: cluster(node)["link"] == "up", stale_after + 3)
                until(lambda: events(node, "node_rejoined"), 5)
                until(lambda: load.ok > served_while_frozen + 40)
            finally:
                load.end()
            assert load.failed == [] and load.ok > 40
            isolated = events(node, "node_isolated")[-1]
            assert isolated["detail"]["node"] == "A" and "stale" in isolated["reason"]
            assert "answers again" in events(node, "node_rejoined")[-1]["reason"]
        finally:
            assert node.proc.stop() == 0, node.proc.output


def test_three_nodes_know_each_other_and_a_killed_one_leaves(tmp_path: Path, etcd: Etcd) -> None:
    ttl = 3
    prefix = f"/quiesce-test/{uuid.uuid4().hex[:8]}/"
    nodes: dict[str, Started] = {}
    with BackendThread(["b1"]) as backends:
        port = backends.backends[0].port
        try:
            for name in ("A", "B", "C"):
                nodes[name] = start_node(tmp_path, etcd, prefix, name, port, f", lease_ttl: {ttl}")
            a, b, c = nodes["A"], nodes["B"], nodes["C"]

            def names(n: Started) -> list[str]:
                return [m["name"] for m in cluster(n)["nodes"]]

            for n in (a, b, c):
                until(lambda n=n: names(n) == ["A", "B", "C"], 10)
            until(lambda: {e["detail"]["peer"] for e in events(a, "node_joined")} == {"B", "C"})
            listed = cli(a, "list", "nodes")
            assert "A (this node)" in listed and "B" in listed and "C" in listed
            c_view = next(m for m in cluster(a)["nodes"] if m["name"] == "C")
            assert c_view["listeners"]["www"] > 0 and c_view["listeners"]["admin"] > 0
            assert c_view["version"] and c_view["heartbeat_age"] < ttl
            c.proc.p.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            for n in (a, b):
                until(lambda n=n: "C" not in names(n), ttl + 4)
            took = time.monotonic() - killed
            print(f"kill -9: node_left on both others after {took:.2f} s (lease_ttl {ttl} s)")
            assert took <= ttl + 2, took  # the lease's TTL, plus a probe turn or two
            for n in (a, b):
                left = [e for e in events(n, "node_left") if e["detail"]["peer"] == "C"]
                assert len(left) == 1 and "lease" in left[0]["reason"]
            # a clean stop leaves at once: its lease is revoked
            assert b.proc.stop() == 0, b.proc.output
            stopped = time.monotonic()
            until(lambda: names(a) == ["A"], ttl)
            assert time.monotonic() - stopped < ttl
            assert {e["detail"]["peer"] for e in events(a, "node_left")} == {"B", "C"}
        finally:
            for name, n in nodes.items():
                n.proc.stop(signal.SIGKILL if name == "C" else signal.SIGTERM)


class EtcdCluster:
    """Three etcd members on loopback, one cluster."""

    def __init__(self, root: Path) -> None:
        self.members = [Etcd(root / f"m{i}") for i in range(3)]

    def start(self) -> None:
        peers = ",".join(f"m{i}=http://127.0.0.1:{m.peer_port}" for i, m in enumerate(self.members))
        procs = []
        for i, m in enumerate(self.members):
            c, p = f"http://127.0.0.1:{m.client_port}", f"http://127.0.0.1:{m.peer_port}"
            procs.append(
                subprocess.Popen(
                    [
                        *(ETCD, "--data-dir", str(m.data_dir), "--name", f"m{i}"),
                        *("--listen-client-urls", c, "--advertise-client-urls", c),
                        *("--listen-peer-urls", p, "--initial-advertise-peer-urls", p),
                        *("--initial-cluster", peers, "--initial-cluster-state", "new"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for m, proc in zip(self.members, procs, strict=True):
            m.proc = proc

        def healthy() -> bool:
            try:
                return all(
                    b'"true"' in httpx.get(f"http://{m.endpoint}/health", timeout=1).content
                    for m in self.members
                )
            except httpx.HTTPError:
                return False

        until(healthy, 20)

    def stop(self) -> None:
        for m in self.members:
            if m.proc is not None:
                m.proc.send_signal(signal.SIGCONT)
            m.stop()


def test_a_node_on_a_minority_member_says_it_is_stale(tmp_path: Path) -> None:
    """Two of three members frozen: the node's member has no quorum, its reads hang."""
    cluster3 = EtcdCluster(tmp_path / "etcd")
    cluster3.start()
    prefix = f"/quiesce-test/{uuid.uuid4().hex[:8]}/"
    try:
        with BackendThread(["b1"]) as backends:
            port = backends.backends[0].port
            node = start_node(tmp_path, cluster3.members[0], prefix, "A", port, ", stale_after: 2s")
            try:
                until(lambda: cluster(node)["link"] == "up" and cluster(node)["nodes"], 10)
                load = Load(node.www)
                try:
                    until(lambda: load.ok > 10)
                    for m in cluster3.members[1:]:
                        assert m.proc is not None
                        m.proc.send_signal(signal.SIGSTOP)
                    cut = time.monotonic()
                    until(lambda: cluster(node)["link"] != "up", 2 + 3)
                    noticed = time.monotonic() - cut
                    print(f"minority member: {cluster(node)['link']} after {noticed:.2f} s")
                    assert noticed <= 2 + 1
                    assert cluster(node)["link"] in ("stale", "down")
                    r = httpx.put(f"{node.api}/flags/f", json={"value": "x"}, auth=AUTH)
                    assert r.status_code == 503, r.text
                    until(lambda: events(node, "node_isolated"), 5)
                    for m in cluster3.members[1:]:
                        assert m.proc is not None
                        m.proc.send_signal(signal.SIGCONT)
                    until(lambda: cluster(node)["link"] == "up", 15)
                    until(lambda: events(node, "node_rejoined"), 5)
                    r = httpx.put(f"{node.api}/flags/f", json={"value": "x"}, auth=AUTH)
                    assert r.status_code == 200, r.text
                finally:
                    load.end()
                assert load.failed == [] and load.ok > 10
            finally:
                assert node.proc.stop() == 0, node.proc.output
    finally:
        cluster3.stop()


@pytest.mark.browser
def test_the_dashboard_shows_a_banner_while_etcd_is_frozen(
    tmp_path: Path,
    etcd: Etcd,
    browser: Any,  # noqa: F811 (the fixture imported above)
) -> None:
    from playwright.sync_api import expect

    prefix = f"/quiesce-test/{uuid.uuid4().hex[:8]}/"
    with BackendThread(["b1"]) as backends:
        port = backends.backends[0].port
        node = start_node(tmp_path, etcd, prefix, "A", port, ", stale_after: 1s")
        page = browser.new_page()
        try:
            admin = node.api.removesuffix("/api/v1")
            page.goto(admin + "/")
            page.get_by_label("User").fill("admin")
            page.get_by_label("Password").fill("pw")
            page.get_by_role("button", name="Log in").click()
            expect(page.locator("#live")).to_contain_text("live")
            banner = page.locator("#cluster-banner")
            expect(banner).to_be_hidden()
            assert etcd.proc is not None
            etcd.proc.send_signal(signal.SIGSTOP)
            expect(banner).to_be_visible(timeout=8000)  # the event, or the 3 s poll
            expect(banner).to_contain_text("has not heard from etcd")
            expect(banner).to_contain_text("stale")
            etcd.proc.send_signal(signal.SIGCONT)
            expect(banner).to_be_hidden(timeout=10000)
        finally:
            page.close()
            assert node.proc.stop() == 0, node.proc.output
