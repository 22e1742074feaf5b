"""Live reload, the plan: what a new config file changes, sans-IO (DESIGN §6, *Config*).

:func:`plan_reload` compares the running config with the new one and returns the changes to
apply, in the order they must be applied (monitors before the pools that use them, pools
before their servers, servers before the services that route to them, deletions last), and
what the file changed but the runtime keeps: where an operator changed the same thing at
runtime (a server added, changed or deleted, a monitor defined or deleted, a pool's monitor
list, a flag set or cleared — everything the state store holds over the file), the runtime
change wins (docs/admin.md). :class:`RuntimeOverrides` is that store state, by name.

Nothing here touches a socket, the clock or the registry: the composition root
(``quiesce.app.App.reload``) validates the file, plans, and applies each change through the
registry, the admin service and the data plane.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from quiesce.config.logs import LoggingConfig
from quiesce.config.models import Config, PoolConfig, ServerConfig, ServiceConfig, TlsConfig

if TYPE_CHECKING:
    from quiesce.state.registry import Registry

# Config sections a running process cannot change: they need a restart (or an upgrade,
# ``quiesce run --takeover``, which re-reads the whole file).
RESTART_ONLY: tuple[tuple[str, Callable[[Config], object]], ...] = (
    ("admin.listen", lambda c: c.admin.listen),
    ("admin.allow_non_loopback", lambda c: c.admin.allow_non_loopback),
    ("admin.runtime_socket", lambda c: c.admin.runtime_socket),
    ("admin.runtime_tcp", lambda c: c.admin.runtime_tcp),
    ("admin.runtime_tcp_level", lambda c: c.admin.runtime_tcp_level),
    ("admin.runtime_socket_compat", lambda c: c.admin.runtime_socket_compat),
    ("admin.tls.client_ca", lambda c: c.admin.tls and c.admin.tls.client_ca),
    ("state", lambda c: c.state),
    ("limits", lambda c: c.limits),
)


@dataclass(frozen=True)
class RuntimeOverrides:
    """What the state store holds over the config file, by name (docs/admin.md,
    "Persistence and restart"): it wins over the file at start-up, and so at a reload."""

    servers: frozenset[str] = frozenset()  # "pool/server": added, changed or deleted at runtime
    monitors: frozenset[str] = frozenset()  # defined or deleted at runtime
    pool_monitors: frozenset[str] = frozenset()  # pools whose monitor list was set at runtime
    flags: frozenset[str] = frozenset()  # set or cleared at runtime
    removing: frozenset[str] = frozenset()  # "pool/server" being drained to be deleted
    # by an earlier reload (cause config), not by an operator
    deleted: frozenset[str] = frozenset()  # of ``servers``: those deleted at runtime
    removing_at_runtime: frozenset[str] = frozenset()  # being removed by an operator (API,
    # CLI, dashboard, runtime socket): the removal goes on whatever the file says


@dataclass(frozen=True)
class Change:
    """One planned change. ``kind`` names it (``server_added``, ``pool_changed``, ...),
    ``target`` what it is about (``web/w3``, ``pool web``), ``message`` the sentence shown to
    the operator, ``data`` what applying needs (a ServerConfig, the changed fields...)."""

    kind: str
    target: str
    message: str
    data: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "target": self.target, "message": self.message}


@dataclass
class ReloadPlan:
    changes: list[Change] = field(default_factory=list)
    kept: list[Change] = field(default_factory=list)  # the runtime's value wins
    warnings: list[str] = field(default_factory=list)  # needs a restart: not applied

    def add(self, kind: str, target: str, message: str, **data: Any) -> None:
        self.changes.append(Change(kind, target, message, data))

    def keep(self, kind: str, target: str, message: str) -> None:
        self.kept.append(Change(kind, target, message))

    def kinds(self) -> list[str]:
        return [c.kind for c in self.changes]


def _fields(old: Any, new: Any, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The fields of two models of one type that differ: ``{field: new value}``."""
    return {
        k: getattr(new, k)
        for k in type(new).model_fields
        if k not in exclude and getattr(old, k) != getattr(new, k)
    }


def _names(changed: Iterable[str]) -> str:
    return ", ".join(sorted(changed))


def _was_is(old: Any, new: Any, changed: Mapping[str, Any]) -> dict[str, list[Any]]:
    """``{field: [old, new]}`` of the ``changed`` fields, as JSON (a ``config_change``
    event's ``detail.changed``, as a ``server_updated``'s: the audit trail says what a field
    was before, review 14 R8)."""
    keys = set(changed)
    a, b = old.model_dump(mode="json", include=keys), new.model_dump(mode="json", include=keys)
    return {k: [a.get(k), b.get(k)] for k in sorted(keys)}


def plan_reload(
    old: Config,
    new: Config,
    runtime: RuntimeOverrides | None = None,
    running: Collection[str] | None = None,
    started: Config | None = None,
) -> ReloadPlan:
    """The changes that take the running process from ``old`` to ``new`` (both validated),
    leaving alone what ``runtime`` says was changed at runtime. ``running``: the services
    that run (None: all of ``old``'s); one of ``old`` that does not (its start failed at a
    reload, after the config had switched) and that ``new`` keeps is started again
    (``service_started``), even when the file did not change it. ``started``: the config
    the process started with (None: ``old``): the restart-only settings still run as it
    says, so a warning compares ``new`` with it, not with the previous file — repeated at
    every reload while the change waits, none once the file says what runs again (review
    90 F3)."""
    rt = runtime or RuntimeOverrides()
    ref = old if started is None else started
    plan = ReloadPlan()
    _monitors(plan, old, new, rt, deleted=False)
    _pools(plan, old, new, rt)
    _flags(plan, old, new, rt)
    _services(plan, old, new, old.services.keys() if running is None else running)
    _admin(plan, old, new, ref)
    _monitors(plan, old, new, rt, deleted=True)
    for name, get in RESTART_ONLY:
        if get(ref) != get(new):
            plan.warnings.append(f"{name}: changed in the file, applied at the next restart")
    return plan


def refusals(old: Config, new: Config, *, admin_listening: bool) -> list[str]:
    """Problems of a valid file that a running process still refuses to reload into
    (docs/admin.md, "Live reload"): nothing changes and the reload lists them. A file with
    no admin user and no token while the admin API listens and has some (a reload cannot
    close it: every client, this reload's caller too, would get 401 until a restart); a
    file with no service while some run (as HAProxy refuses a config with no listener: to
    stop serving, stop the process)."""
    problems: list[str] = []
    could = old.admin.users or old.admin.tokens  # started without: nobody is locked out
    if admin_listening and could and not new.admin.users and not new.admin.tokens:
        problems.append(
            "admin.users: no user and no admin.tokens: this reload would lock every client "
            f"out of the admin API (still listening on {old.admin.listen}); keep a user or "
            "a token"
        )
    if old.services and not new.services:
        problems.append(
            f"services: none in the file, {len(old.services)} running "
            f"({_names(old.services)}): a reload does not stop serving; to stop, stop "
            "quiesce (SIGTERM, systemctl stop)"
        )
    return problems


def dropped_monitors(plan: ReloadPlan) -> list[str]:
    """The monitors ``plan`` deletes (the file dropped them, none defined at runtime)."""
    return [c.target for c in plan.changes if c.kind == "monitor_removed"]


def monitors_in_use(
    dropped: Collection[str],
    servers: Mapping[str, Collection[str]],
    pools: Mapping[str, Collection[str]],
) -> list[str]:
    """A reload's problems: a monitor the new file drops that a runtime definition keeps
    using — ``servers``: the runtime servers' own monitor lists ("pool/server": names; a
    reload keeps them), ``pools``: the pools' monitor lists set at runtime. The reload is
    refused, as a file whose own servers name a monitor it does not define (review 90
    F17: it said "monitor hm: deleted", kept it, and a restart then dropped the server)."""
    problems: list[str] = []
    for name in sorted(dropped):
        users = sorted(k for k, names in servers.items() if name in names)
        where = sorted(p for p, names in pools.items() if name in names)
        if not users and not where:
            continue
        who = []
        if users:
            shown = ", ".join(users[:10]) + (f" and {len(users) - 10} more" if users[10:] else "")
            who.append(f"runtime server(s) {shown}")
        if where:
            who.append(f"the monitor list set at runtime of pool(s) {', '.join(where)}")
        problems.append(
            f"healthmonitors.{name}: removed from the file but used by {' and '.join(who)} "
            "(a reload keeps runtime definitions): keep it in the file, or detach it first "
            "(PATCH /api/v1/servers/POOL/SERVER with healthmonitors; PUT "
            "/api/v1/pools/POOL/healthmonitors)"
        )
    return problems


def monitor_problems(plan: ReloadPlan, registry: Registry, rt: RuntimeOverrides) -> list[str]:
    """:func:`monitors_in_use` over the registry: the runtime servers' own monitor lists and
    the pools' lists set at runtime (walked only when the plan drops some monitor)."""
    dropped = dropped_monitors(plan)
    if not dropped:
        return []
    servers = {
        s.key: s.config.healthmonitors
        for pool in registry.pools.values()
        for s in pool.servers
        if s.config.healthmonitors and s.key in rt.servers and s.key not in rt.deleted
    }
    pools = {p: registry.pools[p].pool_monitors for p in rt.pool_monitors if p in registry.pools}
    return monitors_in_use(dropped, servers, pools)


def _monitors(
    plan: ReloadPlan, old: Config, new: Config, rt: RuntimeOverrides, *, deleted: bool
) -> None:
    if deleted:  # after the pools: a monitor is deleted once nothing uses it
        for name in old.healthmonitors.keys() - new.healthmonitors.keys():
            if name in rt.monitors:
                plan.keep("monitor_removed", name, f"monitor {name}: kept (defined at runtime)")
            else:
                plan.add("monitor_removed", name, f"monitor {name}: deleted")
        return
    for name, monitor in new.healthmonitors.items():
        before = old.healthmonitors.get(name)
        if before == monitor:
            continue
        kind = "monitor_added" if before is None else "monitor_changed"
        if name in rt.monitors:
            plan.keep(kind, name, f"monitor {name}: kept (changed at runtime)")
            continue
        what = "added" if before is None else f"changed ({_names(_fields(before, monitor))})"
        plan.add(kind, name, f"monitor {name}: {what}", monitor=monitor)


def _pools(plan: ReloadPlan, old: Config, new: Config, rt: RuntimeOverrides) -> None:
    for name, pool in new.pools.items():
        before = old.pools.get(name)
        if before is None:
            plan.add(
                "pool_added",
                f"pool {name}",
                f"pool {name}: added with {len(pool.servers)} server(s)",
                pool=name,
                config=pool,
            )
            continue
        changed = _fields(before, pool, frozenset({"servers", "healthmonitors"}))
        if changed:
            plan.add(
                "pool_changed",
                f"pool {name}",
                f"pool {name}: {_names(changed)} changed",
                pool=name,
                config=pool,
                changed=changed,
                detail={"changed": _was_is(before, pool, changed)},
            )
        if before.healthmonitors != pool.healthmonitors:
            target = f"pool {name}"
            if name in rt.pool_monitors:
                plan.keep("pool_monitors", target, f"{target}: monitors kept (set at runtime)")
            else:
                plan.add(
                    "pool_monitors",
                    target,
                    f"{target}: monitors {before.healthmonitors} → {pool.healthmonitors}",
                    pool=name,
                    monitors=list(pool.healthmonitors),
                )
        _servers(plan, name, before, pool, rt)
    for name in old.pools.keys() - new.pools.keys():
        plan.add("pool_removed", f"pool {name}", f"pool {name}: removed", pool=name)


def _servers(
    plan: ReloadPlan, pool: str, old: PoolConfig, new: PoolConfig, rt: RuntimeOverrides
) -> None:
    before: dict[str, ServerConfig] = {s.name: s for s in old.servers}
    after: dict[str, ServerConfig] = {s.name: s for s in new.servers}
    for name, server in after.items():
        previous = before.get(name)
        # ``is`` first: a reload's new file shares the running file's objects for the
        # servers it did not change (quiesce.app.reload), and a model's ``==`` compares
        # field by field (~3 µs: 30 ms of a pool of 10,000)
        same = previous is server or (previous is not None and previous == server)
        if same and (not rt.removing or f"{pool}/{name}" not in rt.removing):
            continue  # (a removal at runtime goes on, the file unchanged: nothing to say)
        key = f"{pool}/{name}"
        if key in rt.removing_at_runtime:
            kind = "server_added" if previous is None else "server_changed"
            plan.keep(kind, key, f"{key}: kept (being removed at runtime)")
            continue
        if key in rt.servers:
            kind = "server_added" if previous is None else "server_changed"
            if key in rt.deleted:
                plan.keep(kind, key, f"{key}: kept deleted (deleted at runtime)")
            else:
                plan.keep(kind, key, f"{key}: kept (added or changed at runtime)")
            continue
        if key in rt.removing:  # removed by an earlier reload, back in the file: keep it
            plan.add(
                "server_restored",
                key,
                f"{key}: back in the file, its removal is cancelled",
                pool=pool,
                config=server,
            )
        elif previous is None:
            plan.add(
                "server_added", key, f"{key}: added at {server.address}", pool=pool, config=server
            )
        else:
            changes = _fields(previous, server, frozenset({"name"}))
            text = ", ".join(f"{k} {getattr(previous, k)!r} → {v!r}" for k, v in changes.items())
            plan.add("server_changed", key, f"{key}: {text}", pool=pool, name=name, changes=changes)
    for name in before.keys() - after.keys():
        key = f"{pool}/{name}"
        if key in rt.removing_at_runtime:
            plan.keep("server_removed", key, f"{key}: kept (being removed at runtime)")
        elif key in rt.deleted:
            plan.keep("server_removed", key, f"{key}: already deleted at runtime")
        elif key in rt.servers:
            plan.keep("server_removed", key, f"{key}: kept (added or changed at runtime)")
        elif key not in rt.removing:
            plan.add("server_removed", key, f"{key}: removed (drained first)", pool=pool, name=name)


def _flags(plan: ReloadPlan, old: Config, new: Config, rt: RuntimeOverrides) -> None:
    for name in sorted(old.flags.keys() | new.flags.keys()):
        a, b = old.flags.get(name), new.flags.get(name)
        if a == b and type(a) is type(b):
            continue
        target = f"flag {name}"
        kind = "flag_cleared" if b is None else "flag_set"
        if name in rt.flags:
            plan.keep(kind, target, f"{target}: kept (set or cleared at runtime)")
        elif b is None:
            plan.add(kind, target, f"{target}: cleared", flag=name)
        else:
            plan.add(kind, target, f"{target}: {a!r} → {b!r}", flag=name, value=b)


def _kind(svc: ServiceConfig) -> str:
    """``http``, ``tcp``, ``http+tls``, ``tcp+tls``, ``tcp+sni``, ``…+proxy``: how
    connections start."""
    return (
        svc.protocol
        + ("+tls" if svc.tls is not None else "")
        + ("+sni" if svc.sni_routing else "")
        + ("+proxy" if svc.accept_proxy else "")
    )


def _services(plan: ReloadPlan, old: Config, new: Config, running: Collection[str]) -> None:
    pages_changed = old.pages != new.pages
    if pages_changed:
        plan.add(
            "pages_changed", "pages", f"pages: {_names(_diff_keys(old.pages, new.pages))} changed"
        )
    for name, svc in new.services.items():
        before = old.services.get(name)
        target = f"service {name}"
        if before is None:
            plan.add("service_added", target, f"{target}: added on {svc.listen}", service=name)
        elif name not in running:  # bound and started as an added one (review of issue 14)
            plan.add(
                "service_started",
                target,
                f"{target}: not running (its start failed at an earlier reload): started on "
                f"{svc.listen}",
                service=name,
            )
        elif before.listen != svc.listen or _kind(before) != _kind(svc):
            # TLS, SNI routing or accept_proxy on or off: its connections start another way
            plan.add(
                "service_rebound",
                target,
                f"{target}: {_kind(before)} on {before.listen} → {_kind(svc)} on {svc.listen} "
                f"({_retiring(before, 'the old listener')})",
                service=name,
            )
        elif before != svc:
            changed = _fields(before, svc)
            plan.add(
                "service_changed",
                target,
                f"{target}: {_names(changed)} changed (new requests)",
                service=name,
                detail={"changed": _was_is(before, svc, changed)},
            )
    for name in old.services.keys() - new.services.keys():
        target = f"service {name}"
        plan.add(
            "service_removed",
            target,
            f"{target}: removed (stops accepting; {_retiring(old.services[name], 'it')})",
            service=name,
        )


def _retiring(svc: ServiceConfig, who: str) -> str:
    """What happens to the connections of a listener a reload retires (review 14 R7: "the
    old listener finishes what it carries" read as "nothing is cut" for a tcp listener,
    whose keep-alive clients were cut mid-response at the grace period)."""
    grace = f"{svc.grace_period:g}s"
    if svc.protocol == "http":
        return (
            f"{who} answers the requests in flight and the next one of each keep-alive "
            f"connection (Connection: close) within its grace_period, {grace}; then closes "
            "what is left"
        )
    if svc.protocol != "tcp":  # postgresql, mysql: quiesce.dataplane.dbrelay
        return (
            f"{who} ends each session at its next transaction boundary within its "
            f"grace_period, {grace}; then closes what is left"
        )
    return (
        f"{who} relays its connections on for its grace_period, {grace}, then closes them, "
        "even mid-response: a tcp relay has no request boundary to stop at"
    )


def _diff_keys(a: Mapping[str, Any], b: Mapping[str, Any]) -> set[str]:
    return {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}


def _admin(plan: ReloadPlan, old: Config, new: Config, started: Config) -> None:
    a, b = old.admin, new.admin
    if a.users != b.users:
        plan.add("users_changed", "admin.users", f"admin.users: {_who(a.users, b.users)}")
    if a.tokens != b.tokens:
        plan.add("tokens_changed", "admin.tokens", f"admin.tokens: {_who(a.tokens, b.tokens)}")
    if a.login_failures_per_minute != b.login_failures_per_minute:
        plan.add(
            "admin_changed",
            "admin.login_failures_per_minute",
            f"admin.login_failures_per_minute: {a.login_failures_per_minute} → "
            f"{b.login_failures_per_minute}",
        )
    if (started.admin.tls is None) != (b.tls is None):  # against what runs (review 90 F3)
        plan.warnings.append("admin.tls: turned on or off, applied at the next restart")
    elif b.tls is not None and _cert(a.tls or started.admin.tls) != _cert(b.tls):
        plan.add("tls_changed", "admin.tls", "admin.tls: certificate reloaded")
    if old.metrics != new.metrics:
        plan.add(
            "metrics_changed",
            "metrics",
            f"metrics: {_names(_fields(old.metrics, new.metrics))} changed",
        )
    _logging(plan, old.logging, new.logging)


def _logging(plan: ReloadPlan, a: LoggingConfig, b: LoggingConfig) -> None:
    """The access log's destinations and format, the process log's: applied by the reload
    (quiesce.logs.reconfigure), so counted and named like any change."""
    if a == b:
        return
    changed = [f"process.{k}" for k in _fields(a.process, b.process)]
    turned = ""
    if a.access is None or b.access is None:
        turned = "access log turned " + ("on" if a.access is None else "off")
    else:
        changed += [f"access.{k}" for k in _fields(a.access, b.access)]
    parts = ([f"{_names(changed)} changed"] if changed else []) + ([turned] if turned else [])
    plan.add("logging_changed", "logging", "logging: " + "; ".join(parts))


def tls_files(config: Config) -> dict[str, str]:
    """Every certificate, key and CA file a reload re-reads (docs/tls.md: also when the
    config text did not change), by the field naming it: ``{"admin.tls.cert": path, …}``."""
    files: dict[str, str] = {}
    if config.admin.tls is not None:
        files["admin.tls.cert"] = config.admin.tls.cert
        files["admin.tls.key"] = config.admin.tls.key
    for name, svc in config.services.items():
        if svc.tls is None:
            continue
        for i, pair in enumerate(svc.tls.certificates):
            files[f"services.{name}.tls.certificates[{i}].cert"] = pair.cert
            files[f"services.{name}.tls.certificates[{i}].key"] = pair.key
        if svc.tls.client_ca is not None:
            files[f"services.{name}.tls.client_ca"] = svc.tls.client_ca
    for name, pool in config.pools.items():
        if pool.tls is None:
            continue
        for key in ("ca", "client_cert", "client_key"):
            if (path := getattr(pool.tls, key)) is not None:
                files[f"pools.{name}.tls.{key}"] = path
    return files


def renewed(
    plan: ReloadPlan,
    before: Mapping[str, tuple[str, str]],
    now: Mapping[str, tuple[str, str]],
) -> None:
    """The files of :func:`tls_files` (``before``: the running config's, ``now``: the new
    one's, each ``field: (path, digest of its content)``) the new config names where the
    running one did, and whose content changed on disk: a renewed certificate, which the
    reload re-reads, planned as a change of its own (review 14 R8: it was "0 change(s)", no
    event, although new handshakes got the new certificate)."""
    for name in sorted(before.keys() & now.keys()):
        (path, was), (path_now, digest) = before[name], now[name]
        if path == path_now and was != digest:
            plan.add(
                "tls_renewed",
                name.rpartition(".")[0],
                f"{name}: {path} changed on disk, re-read (new handshakes)",
            )


def _cert(tls: TlsConfig | None) -> tuple[str, str] | None:
    return None if tls is None else (tls.cert, tls.key)


def _who(old: list[Any], new: list[Any]) -> str:
    a = {u.name: u for u in old}
    b = {u.name: u for u in new}
    parts = []
    if added := sorted(b.keys() - a.keys()):
        parts.append("added " + ", ".join(added))
    if removed := sorted(a.keys() - b.keys()):
        parts.append("removed " + ", ".join(removed))
    if changed := sorted(n for n in a.keys() & b.keys() if a[n] != b[n]):
        parts.append("changed " + ", ".join(changed))
    return "; ".join(parts) or "reordered"


__all__ = [
    "RESTART_ONLY",
    "Change",
    "ReloadPlan",
    "RuntimeOverrides",
    "plan_reload",
    "refusals",
    "renewed",
    "tls_files",
]
