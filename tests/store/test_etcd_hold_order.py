"""The etcd store's hold of other nodes' server changes while this node's reload is applied
(quiesce.admin.reload_gate.RuntimeGate closed), without etcd: records fed to the watcher's
``_on_kv`` as the watch would. Held in order, servers' definitions and admin records only;
applied in that order when the gate opens, each re-checked then as on arrival (a record this
node has a write of on its way waits for it; one older than this node's acknowledged write is
skipped). tests/store/test_etcd_reload_hold.py drives the same through two nodes on etcd."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from quiesce.admin.reload_gate import RuntimeGate
from quiesce.store import EtcdStore, RemoteChange

P = "/q/"


@dataclass
class FakeAdmin:
    store: EtcdStore
    reload_applying: bool = False


def record(value: object, node: str = "A") -> bytes:
    body = {"node": node, "instance": "other", "time": 1.0, "value": value}
    return json.dumps(body).encode()


def node() -> tuple[EtcdStore, list[RemoteChange]]:
    store = EtcdStore(["127.0.0.1:1"], P, node="B")
    got: list[RemoteChange] = []
    store.set_remote_handler(got.append)
    return store, got


def feed(store: EtcdStore, rev: int, key: str, value: Any) -> None:
    store._on_kv(P + key, None if value is None else record(value), rev)


def test_server_changes_wait_for_the_gate_and_come_in_order() -> None:
    store, got = node()
    gate, admin = RuntimeGate(), FakeAdmin(store)
    gate.hold(admin)
    assert admin.reload_applying
    feed(store, 10, "servers/web/r1", {"address": "127.0.0.3:1"})
    feed(store, 11, "admin/web/r1", {"state": "enabled"})
    feed(store, 12, "flags/color", "blue")  # not a server's: applied at once
    feed(store, 13, "servers/web/r1", {"address": "127.0.0.3:2"})
    store._on_kv(P + "servers/web/s3", record(None), 14)  # a deletion (its tombstone)
    assert [(c.kind, c.name) for c in got] == [("flag", "color")]
    assert store.held == 4 and "web/r1" not in store.mirror.load_servers()
    gate.release()
    assert not admin.reload_applying and not gate.closed and store.held == 0
    assert [(c.kind, c.name) for c in got[1:]] == [
        ("server", "web/r1"),
        ("admin", "web/r1"),
        ("server", "web/r1"),
        ("server", "web/s3"),
    ]
    assert got[1].value == {"address": "127.0.0.3:1"} and got[3].value == {"address": "127.0.0.3:2"}
    assert got[4].value is None
    assert store.mirror.load_servers()["web/r1"] == {"address": "127.0.0.3:2"}
    feed(store, 15, "servers/web/r2", {"address": "127.0.0.3:3"})  # the gate open: at once
    assert got[-1].name == "web/r2"


def test_a_held_change_is_checked_again_when_the_gate_opens() -> None:
    store, got = node()
    gate, admin = RuntimeGate(), FakeAdmin(store)
    gate.hold(admin)
    feed(store, 20, "servers/web/a", {"address": "127.0.0.3:1"})
    feed(store, 21, "servers/web/b", {"address": "127.0.0.3:2"})
    # meanwhile this node writes web/a (its write on its way) and had web/b acknowledged
    # at a later revision than the held one
    store.save_server("web/a", {"address": "127.0.0.4:1"})
    store._acked[P + "servers/web/b"] = 30
    gate.release()
    assert got == []  # web/a waits for this node's write to land; web/b is older than it
    assert store._deferred[P + "servers/web/a"][0] == 20
