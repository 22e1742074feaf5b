"""Review 90 F10: a server deleted at runtime leaves no admin record behind.

``quiesce destroy server solo/e3 --drain`` of a server added at runtime, with a connection
held open so the drain really waits, the plain ``destroy`` of one in maintenance and
``--drain`` of one without a connection (drained and deleted at once): once
deleted, the store (etcd, and SQLite) has no admin record of it, and a restarted node logs
no ``admin state of … forgotten`` warning for it. The records an earlier version left in
etcd (a tombstone and an admin record) are deleted at the next start, without a warning.
Real etcd, a real ``quiesce run``, the CLI as a user types it."""

from __future__ import annotations

import base64
import json
import signal
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.store.test_etcd import ETCD, Etcd, node_config
from tests.support.backend import Backend, serve_in_thread
from tests.support.process import Started, quiesce_cli, run_quiesce, until

pytestmark = [
    pytest.mark.skipif(not Path(ETCD).exists(), reason="etcd server not installed"),
    pytest.mark.peers,
    pytest.mark.loopback,
]
AUTH = ("admin", "pw")
PREFIX = "/dd/"


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[Etcd]:
    server = Etcd(tmp_path / "etcd")
    server.start()
    yield server
    server.stop()


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def etcd_keys(etcd: Etcd) -> dict[str, Any]:
    """Every key under the prefix (without it) and its JSON value, through etcd's JSON
    gateway: what a restarted node reads."""
    end = PREFIX[:-1] + chr(ord(PREFIX[-1]) + 1)
    r = httpx.post(
        f"http://{etcd.endpoint}/v3/kv/range",
        json={"key": b64(PREFIX), "range_end": b64(end)},
        timeout=10,
    )
    r.raise_for_status()
    out = {}
    for kv in r.json().get("kvs", []):
        key = base64.b64decode(kv["key"]).decode()[len(PREFIX) :]
        out[key] = json.loads(base64.b64decode(kv.get("value", "")) or b"null")
    return out


def cli(node: Started, *args: str) -> str:
    port = int(node.api.split(":")[2].split("/")[0])
    done = quiesce_cli(port, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def servers(node: Started) -> list[str]:
    r = httpx.get(f"{node.api}/pools/solo", auth=AUTH, timeout=10)
    assert r.status_code == 200, r.text
    return [s["name"] for s in r.json()["servers"]]


def etcd_put(etcd: Etcd, key: str, value: object) -> None:
    body = {"node": "old", "instance": "0ld0ld0ld0ld", "time": 1.0, "value": value}
    r = httpx.post(
        f"http://{etcd.endpoint}/v3/kv/put",
        json={"key": b64(PREFIX + key), "value": b64(json.dumps(body))},
        timeout=10,
    )
    r.raise_for_status()


def write_config(root: Path, state: str, address: str) -> None:
    (root / "quiesce.yaml").write_text(
        state
        + f"""pools:
  solo:
    servers: [{{name: a1, address: "{address}"}}]
services:
  www: {{listen: 127.0.0.1:0, pool: solo}}
"""
    )


def sqlite_head() -> str:
    from quiesce.security import hash_password

    return f"""
admin:
  listen: 127.0.0.1:0
  users: [{{name: admin, password_hash: "{hash_password("pw")}", role: admin}}]
state: {{sqlite: ./state.db}}
"""


@pytest.mark.parametrize("store", ["etcd", "sqlite"])
def test_a_deleted_runtime_server_leaves_no_admin_record(
    tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    etcd: Etcd | None = request.getfixturevalue("etcd") if store == "etcd" else None

    def admin_keys() -> list[str]:
        if etcd is None:
            with sqlite3.connect(tmp_path / "state.db") as db:
                return sorted(k for (k,) in db.execute("SELECT key FROM admin"))
        return sorted(k[len("admin/") :] for k in etcd_keys(etcd) if k.startswith("admin/"))

    def deleted() -> bool:  # the deletions have landed in etcd
        assert etcd is not None
        keys = etcd_keys(etcd)
        return all(
            f"servers/solo/{n}" in keys and keys[f"servers/solo/{n}"]["value"] is None
            for n in ("e3", "e4", "e5")
        )

    with serve_in_thread(Backend("f"), Backend("e")) as (f, e):
        head = sqlite_head() if etcd is None else node_config(etcd, PREFIX, "a")
        write_config(tmp_path, head, f.address)
        node = run_quiesce(tmp_path)
        try:
            for name in ("e3", "e4"):
                cli(node, "create", "server", f"solo/{name}", e.address)
            # a1 and e4 in maintenance: the held request goes to e3
            cli(node, "set", "server", "solo/a1", "maintenance")
            cli(node, "set", "server", "solo/e4", "maintenance")
            held: list[int] = []
            client = threading.Thread(
                target=lambda: held.append(httpx.get(f"{node.www}hold", timeout=60).status_code)
            )
            client.start()
            try:
                e.wait_holding(1)
                out = cli(node, "destroy", "server", "solo/e3", "--drain", "--timeout", "infinite")
                assert "deleted once drained" in out, out
                assert "e3" in servers(node)  # draining: its connection is open
                if etcd is not None:  # its drain is in etcd: the other nodes drain it too
                    until(lambda: "solo/e3" in admin_keys(), 30)
            finally:
                e.release()
                client.join(30)
            assert held == [200]
            until(lambda: "e3" not in servers(node), 30)
            # the plain destroy of a server in maintenance; --drain of one with no connection
            assert "deleted" in cli(node, "destroy", "server", "solo/e4")
            cli(node, "create", "server", "solo/e5", e.address)
            out = cli(node, "destroy", "server", "solo/e5", "--drain")
            assert "drained and deleted" in out, out
            assert servers(node) == ["a1"]
            if etcd is not None:
                # on etcd a deleted server keeps a tombstone: the other nodes delete their
                # copy by it; its admin record is deleted after it
                until(deleted, 30)
                until(lambda: admin_keys() == ["solo/a1"], 30)
        finally:
            assert node.proc.stop(signal.SIGTERM) == 0
        assert admin_keys() == ["solo/a1"]
        node = run_quiesce(tmp_path)  # reads the store back
        try:
            assert servers(node) == ["a1"]
            assert "forgotten" not in node.proc.output, node.proc.output
        finally:
            node.proc.stop(signal.SIGTERM)


def test_admin_records_an_earlier_version_left_are_deleted_at_start(
    tmp_path: Path, etcd: Etcd
) -> None:
    """etcd as an earlier version left it after ``destroy --drain`` of solo/old: its
    tombstone and its drain record. A start deletes the record, without a warning (the
    tombstone says the server is deleted on every node); a record of a server the file
    lacks and nobody deleted (a config rolled out node by node) is still forgotten here
    only, with the warning, and stays in etcd for the nodes that have the server."""
    record = {"state": "drain", "since": 1.0, "actor": "admin", "cause": "cli", "reason": ""}
    etcd_put(etcd, "servers/solo/old", None)
    etcd_put(etcd, "admin/solo/old", record)
    etcd_put(etcd, "admin/solo/elsewhere", {**record, "state": "maintenance"})
    with serve_in_thread(Backend("f")) as (f,):
        write_config(tmp_path, node_config(etcd, PREFIX, "a"), f.address)
        node = run_quiesce(tmp_path)
        try:
            until(lambda: "admin/solo/old" not in etcd_keys(etcd), 30)
            out = node.proc.output
            assert "solo/old" not in out, out
            assert "admin state of solo/elsewhere (maintenance) forgotten: no such server" in out
            assert "1 admin record(s) of server(s) deleted at runtime removed" in out, out
            keys = etcd_keys(etcd)
            assert keys["servers/solo/old"]["value"] is None  # the tombstone stays
            assert keys["admin/solo/elsewhere"]["value"]["state"] == "maintenance"
        finally:
            assert node.proc.stop(signal.SIGTERM) == 0


def test_a_server_another_node_still_drains_loses_its_admin_record_once_deleted(
    tmp_path: Path, etcd: Etcd
) -> None:
    """``destroy --drain`` on node A of a server only node B has a connection to: A deletes
    it at once (tombstone, then its admin record deleted), B drains its connection first;
    the record's deletion reaching B meanwhile changes nothing there (still draining, no
    error), and once B deleted it too etcd has no admin record of it."""
    with serve_in_thread(Backend("f"), Backend("e")) as (f, e):
        nodes = []
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            write_config(tmp_path / name, node_config(etcd, PREFIX, name), f.address)
            nodes.append(run_quiesce(tmp_path / name))
        a, b = nodes
        try:
            cli(a, "create", "server", "solo/e3", e.address)
            cli(a, "set", "server", "solo/a1", "maintenance")
            until(lambda: "e3" in servers(b), 30)
            held: list[int] = []
            client = threading.Thread(
                target=lambda: held.append(httpx.get(f"{b.www}hold", timeout=60).status_code)
            )
            client.start()
            try:
                e.wait_holding(1)
                out = cli(a, "destroy", "server", "solo/e3", "--drain", "--timeout", "infinite")
                assert "drained and deleted" in out, out
                # A's deletion reached B: e3 draining there, its record deleted from etcd
                until(lambda: "admin/solo/e3" not in etcd_keys(etcd), 30)
                r = httpx.get(f"{b.api}/servers/solo/e3", auth=AUTH, timeout=10)
                assert r.status_code == 200, r.text
                assert r.json()["admin"] == "drain", r.json()
            finally:
                e.release()
                client.join(30)
            assert held == [200]
            until(lambda: "e3" not in servers(b), 30)
            assert "Traceback" not in a.proc.output + b.proc.output
        finally:
            for node in (a, b):
                assert node.proc.stop(signal.SIGTERM) == 0
        keys = etcd_keys(etcd)
        assert keys["servers/solo/e3"]["value"] is None
        assert [k for k in keys if k.startswith("admin/")] == ["admin/solo/a1"]
        b = run_quiesce(tmp_path / "b")
        try:
            assert servers(b) == ["a1"]
            assert "forgotten" not in b.proc.output, b.proc.output
        finally:
            b.proc.stop(signal.SIGTERM)
