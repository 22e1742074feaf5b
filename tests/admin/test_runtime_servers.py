"""Servers added, changed and removed at runtime through AdminService (issue 14, item 2):
the registry's candidate set, events, persistence and restart precedence, bad input."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import ValidationError

from quiesce.admin import AdminService, CommandContext
from quiesce.config import parse_config
from quiesce.config.models import ServerConfig
from quiesce.core.admin import AdminRecord
from quiesce.core.clock import FakeClock
from quiesce.core.errors import GuardRefused, InvalidCommand, NotFound
from quiesce.core.events import EventQuery
from quiesce.core.states import Admin, Cause, CloseMode, Oper
from quiesce.state.registry import Registry
from quiesce.store import SqliteStore
from quiesce.store.base import SharedStore
from tests.admin.conftest import RAW, Harness, make_harness, raw_config, stop_harness

CTX = CommandContext("alice", Cause.API)


def events(h: Harness, kind: str) -> list[dict[str, object]]:
    return [e.to_dict() for e in h.store.list_events(EventQuery(kind=kind, limit=1000))]


async def test_add_server_is_a_candidate_at_once_and_one_event(h: Harness) -> None:
    before = len(h.kinds())
    server = h.service.add_server(
        "api", ServerConfig(name="a3", address="127.0.0.1:9003", weight=3), CTX
    )
    assert server.oper is Oper.UNMONITORED and server.admin.state is Admin.ENABLED
    assert server in h.registry.pools["api"].candidates
    assert server.weight == 3
    new = h.kinds()[before:]
    assert new == ["server_added"]
    (e,) = events(h, "server_added")
    assert (e["pool"], e["server"], e["actor"], e["cause"]) == ("api", "a3", "alice", "api")
    assert h.monitor_syncs >= 1


async def test_runtime_changes_are_logged_one_line_each_but_a_reloads_are_not(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """Review F3: a server added, changed or deleted by an operator is a process-log line
    (who, what); a reload's (cause config) are left to the reload's own summary lines."""
    caplog.set_level(logging.INFO, logger="quiesce")
    h.service.add_server("api", ServerConfig(name="a3", address="127.0.0.1:9003", weight=3), CTX)
    h.service.update_server("api/a3", {"weight": 5}, CTX)
    h.service.maintenance("api/a3", CTX)
    h.service.remove_server("api/a3", CTX)
    server = h.server("web/w1")
    server.connections = 1
    h.service.remove_server("web/w1", CommandContext("bob", Cause.RUNTIME_SOCKET), drain=True)
    server.connections = 0
    h.service._finish_removals()
    reload = CommandContext("root", Cause.CONFIG, "config reload")
    h.service.add_server(
        "api", ServerConfig(name="a4", address="127.0.0.1:9004"), reload, runtime=False
    )
    h.service.update_server("api/a4", {"weight": 7}, reload, runtime=False)
    h.service.remove_server("api/a4", replace(reload, force_guard=True), drain=True)
    h.service._finish_removals()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("server ")]
    assert lines[0].startswith("server added: api/a3 127.0.0.1:9003 ") and "weight=3" in lines[0]
    assert lines[0].endswith("cause=api actor=alice"), lines
    assert lines[1] == "server changed: api/a3 weight 3 -> 5 cause=api actor=alice", lines
    assert lines[2] == "server deleted: api/a3 127.0.0.1:9003 cause=api actor=alice", lines
    assert lines[3].startswith("server deleted (drained): web/w1 "), lines
    assert lines[3].endswith("cause=runtime-socket actor=bob"), lines
    assert len(lines) == 4, lines  # nothing for api/a4 (the reload)


async def test_added_server_with_pool_monitors_starts_unknown(tmp_path: Path) -> None:
    raw = raw_config()
    raw["pools"]["api"]["healthmonitors"] = ["hm"]
    h = await make_harness(tmp_path / "s.db", raw=raw)
    try:
        server = h.service.add_server("api", ServerConfig(name="a3", address="10.0.0.3:80"), CTX)
        assert server.oper is Oper.UNKNOWN
        assert server.monitors == ["hm"]
        assert server not in h.registry.pools["api"].candidates
    finally:
        await stop_harness(h)


async def test_bad_add_changes_nothing(h: Harness) -> None:
    pool = h.registry.pools["api"]
    names = [s.name for s in pool.servers]
    with pytest.raises(NotFound):
        h.service.add_server("nope", ServerConfig(name="x", address="127.0.0.1:1"), CTX)
    with pytest.raises(InvalidCommand) as exc:
        h.service.add_server("api", ServerConfig(name="a1", address="127.0.0.1:1"), CTX)
    assert exc.value.status_hint == 409 and "name" in exc.value.message
    with pytest.raises(NotFound, match="healthmonitors"):  # a 404, as in the whole API
        h.service.add_server(
            "api", ServerConfig(name="x", address="127.0.0.1:1", healthmonitors=["nope"]), CTX
        )
    with pytest.raises(ValidationError, match="address"):
        ServerConfig(name="x", address="not an address")
    assert [s.name for s in pool.servers] == names
    assert len(events(h, "admin_refused")) == 3
    assert h.store.load_servers() == {}


async def test_update_address_weight_backup(h: Harness) -> None:
    server, diff = h.service.update_server(
        "api/a1", {"address": "127.0.0.1:9101", "weight": 5}, CTX
    )
    assert diff == {"address": ("127.0.0.1:9001", "127.0.0.1:9101"), "weight": (1, 5)}
    assert (server.host, server.port, server.weight) == ("127.0.0.1", 9101, 5)
    assert ("api/a1", CloseMode.AT_BOUNDARY) in h.closes  # the old address drains
    (e,) = events(h, "server_updated")
    assert (e["from"], e["to"]) == ("127.0.0.1:9001", "127.0.0.1:9101")
    h.service.update_server("api/a2", {"backup": True}, CTX)
    assert [s.name for s in h.registry.pools["api"].candidates] == ["a1"]
    # nothing changed: no event
    h.service.update_server("api/a2", {"backup": True}, CTX)
    assert len(events(h, "server_updated")) == 2


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"address": "nowhere"}, "address"), ({"weight": 999}, "weight"), ({"name": "x"}, "name")],
)
async def test_bad_update_names_the_field_and_changes_nothing(
    h: Harness, changes: dict[str, object], field: str
) -> None:
    server = h.server("api/a1")
    before = server.config
    with pytest.raises(InvalidCommand, match=field):
        h.service.update_server("api/a1", changes, CTX)
    assert server.config is before
    assert events(h, "server_updated") == []


async def test_remove_only_in_maintenance(h: Harness) -> None:
    with pytest.raises(GuardRefused, match="Only servers in maintenance mode can be deleted"):
        h.service.remove_server("api/a1", CTX)
    assert "a1" in [s.name for s in h.registry.pools["api"].servers]
    h.service.maintenance("api/a1", CTX)
    result = h.service.remove_server("api/a1", CTX)
    assert result.changed
    assert [s.name for s in h.registry.pools["api"].servers] == ["a2"]
    assert events(h, "server_removed")[0]["actor"] == "alice"
    assert h.store.load_servers() == {"api/a1": None}
    assert "api/a1" not in h.store.load_admin()


async def test_drain_then_delete_at_zero_connections(h: Harness) -> None:
    server = h.server("web/w1")
    server.connections = 2
    result = h.service.remove_server("web/w1", CTX, drain=True)
    assert result.changed
    assert server.removing and server.admin.state is Admin.DRAIN
    assert server.status == "removing (2)"
    assert server.admin.deadline == pytest.approx(h.clock.time() + 30)  # the pool's default
    assert h.service._finish_removals() is True  # connections left: pending
    assert h.store.load_servers()["web/w1"]["removing"]["actor"] == "alice"  # type: ignore[index]
    server.connections = 0
    assert h.service._finish_removals() is False
    assert "w1" not in [s.name for s in h.registry.pools["web"].servers]
    assert events(h, "server_removed")[0]["actor"] == "alice"


async def test_drained_deletions_go_in_slices_of_the_budget_each_recorded(h: Harness) -> None:
    """Servers drained to 0 connections are deleted at most ``budget`` seconds of the admin
    clock a call (a thousand at once held the event loop ~0.1 s), the rest at the next
    call; every deletion has its event, in order, with who asked. A fake clock that moves
    1 ms a deletion: with a 2 ms budget, two a call."""
    assert isinstance(h.clock, FakeClock)
    clock = h.clock
    names = [f"x{i}" for i in range(5)]
    for name in names:
        h.service.add_server("api", ServerConfig(name=name, address="127.0.0.1:9500"), CTX)
        h.server(f"api/{name}").connections = 1
        h.service.remove_server(f"api/{name}", CTX, drain=True)
    for name in names:
        h.server(f"api/{name}").connections = 0

    def tick(event: object) -> None:
        if getattr(getattr(event, "kind", None), "value", "") == "server_removed":
            clock.advance(0.001)

    h.registry.listeners.append(tick)
    pool = h.registry.pools["api"]
    left = []
    for _ in range(3):
        more = h.service._finish_removals(0.002)
        left.append((more, h.service.removals_cut, len([s for s in pool.servers if s.removing])))
    assert left == [(True, True, 3), (True, True, 1), (False, False, 0)]
    removed = [e["server"] for e in events(h, "server_removed")]
    assert sorted(removed) == names and all(
        e["actor"] == "alice" for e in events(h, "server_removed")
    )
    assert h.service._finish_removals() is False  # no budget: all at once, as before


async def test_overrides_name_the_servers_being_removed_without_a_walk_of_every_server(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload asks ``overrides()`` first: the servers being removed come from each pool's
    own list of them, not a pass over every server (35 ms at 10,000)."""
    server = h.server("web/w1")
    server.connections = 1
    h.service.remove_server("web/w1", CTX, drain=True)

    def walked() -> None:
        raise AssertionError("overrides() walked every server")

    monkeypatch.setattr(h.registry, "servers", walked)
    rt = h.service.overrides()  # an operator's removal: theirs, not a reload's (review 14 R1)
    assert (rt.removing, rt.removing_at_runtime) == (frozenset(), frozenset({"web/w1"}))
    h.service.enable("web/w1", CTX)  # the removal cancelled
    h.service.remove_server(
        "web/w1", CommandContext("r", Cause.CONFIG, "config reload"), drain=True
    )
    rt = h.service.overrides()  # a reload's own
    assert (rt.removing, rt.removing_at_runtime) == (frozenset({"web/w1"}), frozenset())
    h.service.enable("web/w1", CTX)
    assert h.service.overrides().removing == frozenset()


async def test_overrides_tell_servers_deleted_at_runtime_from_those_changed(h: Harness) -> None:
    h.service.update_server("api/a1", {"weight": 4}, CTX)
    h.service.maintenance("api/a2", CTX, force=True)
    h.service.remove_server("api/a2", CTX)
    rt = h.service.overrides()
    assert {"api/a1", "api/a2"} <= rt.servers
    assert rt.deleted == frozenset({"api/a2"})


@pytest.mark.parametrize("state", ["enabled", "drain", "maintenance"])
async def test_a_cancelled_removal_puts_back_the_admin_state_it_had(h: Harness, state: str) -> None:
    """A server being removed (drained to be deleted: a reload that dropped it) and put back
    before its deletion comes back as it was: in drain with the operator's own deadline and
    record, in maintenance, or enabled (it came back enabled whatever it was)."""
    server = h.server("web/w1")
    alice = CommandContext("alice", Cause.API, "disk swap")
    if state == "drain":
        h.service.drain("web/w1", alice, timeout=600)
    elif state == "maintenance":
        h.service.maintenance("web/w1", alice)
    before = server.admin
    server.connections = 1
    config = CommandContext("reloader", Cause.CONFIG, "config reload", force_guard=True)
    h.service.remove_server("web/w1", config, drain=True)
    assert server.removing
    result = h.service.cancel_removal("web/w1", config)
    assert not server.removing
    assert server.admin.state is Admin(state)
    if state != "enabled":
        assert server.admin == before  # the operator's record: deadline, actor, reason
    assert h.service._finish_removals() is False  # the removal is gone
    assert "w1" in [s.name for s in h.registry.pools["web"].servers]
    if state != "enabled":
        assert result.message == f"web/w1: removal cancelled: {state} again"
        assert h.store.load_admin()["web/w1"] == before
        last = events(h, "admin_command") + events(h, "admin_change")
        assert max(last, key=lambda e: int(str(e["id"])))["actor"] == "reloader"
    assert "web/w1" not in h.store.load_servers()  # no "removing" record left


async def test_drain_delete_respects_min_servers_up(h: Harness) -> None:
    # web has min_servers_up 2 and four servers: take two out, the third is refused
    h.service.maintenance("web/w1", CTX)
    h.service.maintenance("web/w2", CTX)
    with pytest.raises(GuardRefused):
        h.service.remove_server("web/w3", CTX, drain=True)
    assert not h.server("web/w3").removing
    assert h.server("web/w3").admin.state is Admin.ENABLED
    forced = CommandContext("alice", Cause.API, force_guard=True)
    h.service.remove_server("web/w3", forced, drain=True)
    h.service._finish_removals()
    assert "w3" not in [s.name for s in h.registry.pools["web"].servers]


async def test_enable_cancels_a_pending_removal(h: Harness) -> None:
    server = h.server("web/w1")
    server.connections = 1
    h.service.remove_server("web/w1", CTX, drain=True)
    h.service.enable("web/w1", CTX)
    assert not server.removing
    server.connections = 0
    h.service._finish_removals()
    assert server in h.registry.pools["web"].servers
    assert "web/w1" not in h.store.load_servers()


async def test_runtime_servers_survive_a_restart_over_the_file(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    clock = FakeClock()
    h = await make_harness(db, clock)
    h.service.add_server("api", ServerConfig(name="a3", address="127.0.0.1:9003"), CTX)
    h.service.maintenance("api/a3", CTX)
    h.service.update_server("api/a1", {"address": "127.0.0.1:9100", "weight": 7}, CTX)
    h.service.maintenance("api/a2", CTX)
    h.service.remove_server("api/a2", CTX)
    w1 = h.server("web/w1")
    w1.connections = 1
    h.service.remove_server("web/w1", CTX, drain=True)
    h.store.close()  # as a kill -9 would leave it: no stop
    h2 = await make_harness(db, clock)
    try:
        api = h2.registry.pools["api"]
        assert [s.name for s in api.servers] == ["a1", "a3"]
        assert h2.server("api/a1").address == "127.0.0.1:9100"
        assert h2.server("api/a1").weight == 7
        assert h2.server("api/a3").admin.state is Admin.MAINTENANCE
        # the drain-then-delete resumed: 0 connections after a restart, so deleted at once
        assert h2.server("web/w1").removing
        h2.service._finish_removals()
        assert "w1" not in [s.name for s in h2.registry.pools["web"].servers]
        summary = events(h2, "startup")[-1]["detail"]
        assert summary["servers"] == {"added": 1, "changed": 1, "deleted": 1}  # type: ignore[index]
    finally:
        await stop_harness(h2)


async def test_a_drained_removal_deleted_at_once_writes_no_drain_record(h: Harness) -> None:
    """A server with no connection removed with ``drain``: both events, in order, with who
    asked, and the store as after any deletion (a tombstone, no admin record); the drain's
    admin record and "removing" definition, deleted in the same call, are never written."""
    writes: list[tuple[str, str, object]] = []
    for name in ("save_admin", "save_server"):
        real = getattr(h.store, name)

        def spy(key: str, data: object, _real: object = real, _name: str = name) -> None:
            writes.append((_name, key, data))
            _real(key, data)  # type: ignore[operator]

        setattr(h.store, name, spy)
    result = h.service.remove_server("web/w1", CTX, drain=True)
    assert result.changed and result.message == "web/w1: drained and deleted"
    assert writes == [("save_server", "web/w1", None)]  # the tombstone alone
    assert [
        (e["kind"], e["actor"]) for e in events(h, "admin_change") + events(h, "server_removed")
    ] == [("admin_change", "alice"), ("server_removed", "alice")]
    await h.service.durable()
    assert h.store.load_servers() == {"web/w1": None}
    assert "web/w1" not in h.store.load_admin()
    # nothing of the removal is kept for it (a reload's thousand were kept alive, each)
    assert not h.service._removals and not h.service._before_removal


async def test_a_drained_removal_not_deleted_after_all_writes_its_drain(h: Harness) -> None:
    """The drain's writes are held back only while its deletion follows: a server that got
    a connection meanwhile (here from a listener of the drain's event) stays, removing, and
    its drain is stored as any pending removal's (a restart resumes it)."""
    server = h.server("web/w1")

    def busy(event: object) -> None:
        if getattr(getattr(event, "kind", None), "value", "") == "admin_change":
            server.connections = 1

    h.registry.listeners.append(busy)
    result = h.service.remove_server("web/w1", CTX, drain=True)
    h.registry.listeners.remove(busy)
    assert server.removing and server in h.registry.pools["web"].servers
    assert result.message.startswith("web/w1: enabled → drain") and result.message.endswith(
        "; deleted once drained"
    )
    await h.service.durable()
    assert h.store.load_admin()["web/w1"].state is Admin.DRAIN
    assert h.store.load_servers()["web/w1"]["removing"]["actor"] == "alice"  # type: ignore[index]


class _SharedSqlite(SqliteStore):
    """A SQLite store that says it is shared with other nodes (as the etcd store is)."""

    connected = True

    def set_remote_handler(self, handler: object) -> None:
        self.handler = handler

    def drop_admin(self, key: str) -> None:
        self.delete_admin(key)

    async def flush(self, timeout: float | None = None) -> bool:
        return True

    @property
    def pending(self) -> int:
        return 0

    def mark(self) -> int:
        return 0

    async def confirm(self, mark: int, timeout: float | None = None) -> None:
        return None


async def test_a_drained_removal_on_a_shared_store_writes_its_drain(tmp_path: Path) -> None:
    """Other nodes drain a server by its admin record before they delete it (their own
    connections to it): on a shared store the drain of a server deleted at once is still
    written, then its deletion."""
    registry = Registry(parse_config(RAW), FakeClock())
    store = _SharedSqlite(tmp_path / "state.db")
    await store.open()
    assert isinstance(store, SharedStore)
    service = AdminService(registry, store, registry.clock)
    await service.start()
    try:
        writes: list[tuple[str, str]] = []
        real = store.save_admin

        def spy(key: str, record: AdminRecord) -> None:
            writes.append((key, record.state.value))
            real(key, record)

        store.save_admin = spy  # type: ignore[method-assign]
        service.remove_server("web/w1", CTX, drain=True)
        assert writes == [("web/w1", "drain")]
        assert "w1" not in [s.name for s in registry.pools["web"].servers]
    finally:
        await service.stop()
        store.close()
