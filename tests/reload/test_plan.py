"""plan_reload: the difference between two configs, sans-IO (issue 14, item 1)."""

from __future__ import annotations

from typing import Any

from quiesce.config.loader import parse_config
from quiesce.config.models import Config
from quiesce.state.reload import RuntimeOverrides, plan_reload


def cfg(**over: Any) -> Config:
    raw: dict[str, Any] = {
        "healthmonitors": {"h": {"type": "http", "send_interval": "5s"}},
        "pools": {
            "web": {
                "healthmonitors": ["h"],
                "servers": [
                    {"name": "w1", "address": "127.0.0.1:8001"},
                    {"name": "w2", "address": "127.0.0.1:8002"},
                ],
            }
        },
        "services": {"site": {"listen": "127.0.0.1:0", "pool": "web"}},
        "flags": {"promo": False},
    }
    raw.update(over)
    return parse_config(raw)


def servers(*names: str, **extra: Any) -> list[dict[str, Any]]:
    return [
        {"name": n, "address": f"127.0.0.1:80{i + 1:02d}", **extra} for i, n in enumerate(names)
    ]


def web(server_list: list[dict[str, Any]], **settings: Any) -> dict[str, Any]:
    return {"web": {"healthmonitors": ["h"], "servers": server_list, **settings}}


def test_same_config_plans_nothing() -> None:
    plan = plan_reload(cfg(), cfg())
    assert plan.changes == [] and plan.kept == [] and plan.warnings == []


def test_servers_added_removed_and_changed() -> None:
    old = cfg(pools=web(servers("w1", "w2", "w3")))
    new_servers = servers("w1", "w2", "w4")
    new_servers[1]["weight"] = 5
    plan = plan_reload(old, cfg(pools=web(new_servers)))
    by_kind = {c.kind: c for c in plan.changes}
    assert sorted(by_kind) == ["server_added", "server_changed", "server_removed"]
    assert by_kind["server_added"].target == "web/w4"
    assert by_kind["server_removed"].target == "web/w3"
    assert by_kind["server_changed"].data["changes"] == {"weight": 5}
    assert "weight 1 → 5" in by_kind["server_changed"].message


def test_runtime_changes_in_the_store_win() -> None:
    old = cfg(pools=web(servers("w1", "w2", "w3")))
    new_servers = servers("w1", "w2", "w4")
    new_servers[0]["weight"] = 9
    rt = RuntimeOverrides(servers=frozenset({"web/w1", "web/w3", "web/w4"}))
    plan = plan_reload(old, cfg(pools=web(new_servers)), rt)
    assert plan.changes == []
    assert sorted(c.target for c in plan.kept) == ["web/w1", "web/w3", "web/w4"]


def test_kept_lines_say_deleted_for_a_server_deleted_at_runtime() -> None:
    """A server deleted at runtime (a stored deletion) that the file drops too, or changes:
    its kept line says it was deleted, not "changed at runtime"; one changed at runtime
    says so."""
    old = cfg(pools=web(servers("w1", "w2", "w3")))
    new_servers = servers("w1")
    new_servers[0]["weight"] = 9
    rt = RuntimeOverrides(
        servers=frozenset({"web/w1", "web/w2", "web/w3"}), deleted=frozenset({"web/w1", "web/w2"})
    )
    plan = plan_reload(old, cfg(pools=web(new_servers)), rt)
    assert plan.changes == []
    assert {c.target: c.message for c in plan.kept} == {
        "web/w1": "web/w1: kept deleted (deleted at runtime)",
        "web/w2": "web/w2: already deleted at runtime",
        "web/w3": "web/w3: kept (added or changed at runtime)",
    }


def test_a_server_being_removed_back_in_the_file_is_restored() -> None:
    old = cfg(pools=web(servers("w1")))
    new = cfg(pools=web(servers("w1", "w2")))
    rt = RuntimeOverrides(removing=frozenset({"web/w2"}))
    assert plan_reload(old, new, rt).kinds() == ["server_restored"]
    # removed again while still draining: nothing to do
    assert plan_reload(new, old, rt).kinds() == []


def test_pools_monitors_and_their_order() -> None:
    old = cfg()
    new = cfg(
        healthmonitors={"t": {"type": "tcp"}},
        pools={
            "web": {
                "healthmonitors": ["t"],
                "algorithm": "least_connections",
                "servers": servers("w1", "w2"),
            },
            "api": {"servers": servers("a1")},
        },
    )
    kinds = plan_reload(old, new).kinds()
    # a monitor is added before the pool that uses it, deleted after the pool let it go
    assert kinds.index("monitor_added") < kinds.index("pool_monitors")
    assert kinds.index("pool_monitors") < kinds.index("monitor_removed")
    assert "pool_changed" in kinds and "pool_added" in kinds
    back = plan_reload(new, old).kinds()
    assert "pool_removed" in back


def test_runtime_monitors_and_pool_monitors_win() -> None:
    new = cfg(
        healthmonitors={"h": {"type": "http", "send_interval": "9s"}},
        pools=web(servers("w1", "w2"), healthmonitors=[]),
    )
    rt = RuntimeOverrides(monitors=frozenset({"h"}), pool_monitors=frozenset({"web"}))
    plan = plan_reload(cfg(), new, rt)
    assert plan.changes == []
    assert sorted(c.kind for c in plan.kept) == ["monitor_changed", "pool_monitors"]


def test_flags_unless_set_at_runtime() -> None:
    new = cfg(flags={"promo": True, "beta": "on"})
    assert sorted(plan_reload(cfg(), new).kinds()) == ["flag_set", "flag_set"]
    rt = RuntimeOverrides(flags=frozenset({"promo"}))
    plan = plan_reload(cfg(), new, rt)
    assert [c.target for c in plan.changes] == ["flag beta"]
    assert [c.target for c in plan.kept] == ["flag promo"]
    assert plan_reload(cfg(), cfg(flags={})).kinds() == ["flag_cleared"]


def test_services_added_changed_rebound_removed() -> None:
    old = cfg(
        services={
            "site": {"listen": "127.0.0.1:8080", "pool": "web"},
            "old": {"listen": "127.0.0.1:8081", "pool": "web"},
            "raw": {"listen": "127.0.0.1:8082", "pool": "web"},
        }
    )
    new = cfg(
        services={
            "site": {"listen": "127.0.0.1:8080", "pool": "web", "client_idle_timeout": "5s"},
            "raw": {"listen": "127.0.0.1:8083", "pool": "web", "protocol": "tcp"},
            "new": {"listen": "127.0.0.1:8084", "pool": "web"},
        }
    )
    plan = plan_reload(old, new)
    assert {c.target: c.kind for c in plan.changes} == {
        "service site": "service_changed",
        "service raw": "service_rebound",
        "service new": "service_added",
        "service old": "service_removed",
    }


def test_a_retired_listener_says_what_happens_to_its_connections() -> None:
    """Review 14 R7: "(the old listener finishes what it carries)" for a tcp listener, whose
    keep-alive clients were then cut mid-response at its grace period."""
    old = cfg(
        services={
            "site": {"listen": "127.0.0.1:8080", "pool": "web"},
            "raw": {"listen": "127.0.0.1:8082", "pool": "web", "protocol": "tcp"},
            "db": {"listen": "127.0.0.1:8083", "pool": "web", "grace_period": "30s"},
            "pg": {"listen": "127.0.0.1:8084", "pool": "web", "protocol": "postgresql"},
        }
    )
    new = cfg(
        services={
            "site": {"listen": "127.0.0.1:8080", "pool": "web", "protocol": "tcp"},
            "raw": {"listen": "127.0.0.1:8082", "pool": "web"},
        }
    )
    said = {c.target: c.message for c in plan_reload(old, new).changes}
    assert "finishes what it carries" not in str(said)
    assert said["service raw"].endswith(
        "(the old listener relays its connections on for its grace_period, 10s, then closes "
        "them, even mid-response: a tcp relay has no request boundary to stop at)"
    ), said
    assert said["service site"].endswith(
        "(the old listener answers the requests in flight and the next one of each keep-alive "
        "connection (Connection: close) within its grace_period, 10s; then closes what is left)"
    ), said
    assert "removed (stops accepting; it answers the requests in flight" in said["service db"]
    assert "within its grace_period, 30s;" in said["service db"], said
    assert said["service pg"].endswith(
        "removed (stops accepting; it ends each session at its next transaction boundary "
        "within its grace_period, 10s; then closes what is left)"
    ), said


def test_users_tokens_and_restart_only_sections() -> None:
    h = "scrypt$16384$8$1$c2FsdA$aGFzaA"
    old = cfg(admin={"users": [{"name": "ann", "password_hash": h}]})
    new = cfg(
        admin={
            "listen": "127.0.0.1:9901",
            "users": [{"name": "bob", "password_hash": h, "role": "admin"}],
            "tokens": [{"name": "ci", "token_hash": h}],
        }
    )
    plan = plan_reload(old, new)
    assert sorted(plan.kinds()) == ["tokens_changed", "users_changed"]
    assert "added bob; removed ann" in plan.changes[0].message
    assert plan.warnings == ["admin.listen: changed in the file, applied at the next restart"]


def test_logging_changes_are_counted_and_named() -> None:
    """A reload that changes only ``logging`` applies it (quiesce.logs.reconfigure): the
    plan counts it, so the summary does not say 0 changes."""
    base = cfg(logging={"access": {"path": "a.log"}})

    def messages(new: Config) -> list[str]:
        return [c.message for c in plan_reload(base, new).changes]

    assert messages(cfg(logging={"access": {"path": "b.log", "format": "json"}})) == [
        "logging: access.format, access.path changed"
    ]
    assert messages(cfg(logging={"access": {"path": "a.log"}, "process": {"format": "json"}})) == [
        "logging: process.format changed"
    ]
    assert messages(cfg()) == ["logging: access log turned off"]
    assert [c.kind for c in plan_reload(cfg(), base).changes] == ["logging_changed"]
    assert plan_reload(base, cfg(logging={"access": {"path": "a.log"}})).changes == []


def test_servers_the_new_file_shares_with_the_running_one_are_not_compared(
    monkeypatch: Any,
) -> None:
    """A reload's new config holds the running config's own ServerConfig objects for the
    servers the file did not change (the worker sends back only the others): the plan
    takes those as unchanged by identity, without a field-by-field ``==`` each (30 ms of
    a pool of 10,000); a server equal but not the same object is still compared."""
    from quiesce.config.models import ServerConfig

    old = cfg(pools=web(servers(*(f"w{i}" for i in range(1, 51)))))
    pool = old.pools["web"]
    fresh = ServerConfig(name="w51", address="127.0.0.1:8151")
    new = old.model_copy(
        update={"pools": {"web": pool.model_copy(update={"servers": [*pool.servers, fresh]})}}
    )
    compared: list[str] = []
    original = ServerConfig.__eq__

    def counting(self: ServerConfig, other: object) -> Any:
        compared.append(self.name)
        return original(self, other)

    monkeypatch.setattr(ServerConfig, "__eq__", counting)
    plan = plan_reload(old, new)
    assert [(c.kind, c.target) for c in plan.changes] == [("server_added", "web/w51")]
    assert compared == []  # w51 is new: nothing to compare it with either
    copy = pool.servers[0].model_copy()  # equal, another object: compared, unchanged
    new = old.model_copy(
        update={"pools": {"web": pool.model_copy(update={"servers": [copy, *pool.servers[1:]]})}}
    )
    assert plan_reload(old, new).changes == [] and compared == ["w1"]
