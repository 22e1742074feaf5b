"""How many client connections fit in the process's descriptors (sans-IO but for rlimit).

quiesce derives its global connection limit as HAProxy derives ``maxconn`` from
``ulimit -n``: raise the soft ``RLIMIT_NOFILE`` to the hard limit at start, take off what the
rest of the process needs (:class:`Reserve`), and halve the remainder, since each client
connection may hold an upstream connection too::

    max_connections = (RLIMIT_NOFILE - reserved) // 2

    reserved = 64                                  fixed: stdio, the event loop, logging,
                                                   the parking and check-engine epoll sets,
                                                   raw probe sockets, lazy imports, DNS
             + 3 per service                       its listening socket and two duplicates
             + 1 + 64                              the admin listener and 64 admin clients
             + (1 + 16) per runtime socket         unix and/or TCP, 16 clients each
             + 8 (SQLite) or 16 (etcd)             the state store
             + min(checks, 1000)                   one socket per (server, monitor) check in
                                                   flight (at most 1000 in flight)
             + idle upstream connections           Σ servers × max_idle_per_server of the
                                                   pools L7 services use
             + 32 + RLIMIT_NOFILE // 32            a margin (≈ 3%)

A configured ``limits.max_connections`` that needs more than the limit
(``2 × max_connections + reserved > RLIMIT_NOFILE``) refuses the start, as HAProxy 2.6
refuses a ``maxconn`` its FD limit cannot hold (``strict-limits`` is its default): running
out of descriptors is what locks operators out. docs/config.md and docs/dataplane.md say the
same; :func:`plan` is the one implementation.

Servers added at runtime (REST, CLI, runtime socket ``add server``, restored from the state
store at start) count like the file's: ``live`` (the servers each pool runs, by pool) stands
for the file's lists (quiesce.app.budget; review 14 R14: 1,230 runtime servers were counted
as the file's 10).
"""

from __future__ import annotations

import resource
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from quiesce.config.models import Config, ServerConfig
from quiesce.core.errors import QuiesceError

Live = Mapping[str, Sequence[ServerConfig]]
"""The servers each pool runs, by pool name (over the config file's lists)."""

FIXED = 64
PER_SERVICE = 3
ADMIN_CLIENTS = 64
RUNTIME_CLIENTS = 16
SQLITE = 8
ETCD = 16
MAX_CHECKS_IN_FLIGHT = 1000  # HealthManager's max_concurrency


class LimitError(QuiesceError):
    """The configured connection limit does not fit in the descriptor limit."""

    status_hint = 500


@dataclass(frozen=True, slots=True)
class Reserve:
    """Descriptors kept from the client connections, by what needs them."""

    fixed: int
    listeners: int
    admin: int
    runtime: int
    store: int
    checks: int
    idle_upstreams: int
    margin: int

    @property
    def operators(self) -> int:
        """What the admin API, the runtime socket, the store, the checks and the margin
        need: the descriptors the data plane must never take (see quiesce.dataplane.park)."""
        return self.admin + self.runtime + self.store + self.checks + self.margin

    @property
    def total(self) -> int:
        return (
            self.fixed
            + self.listeners
            + self.admin
            + self.runtime
            + self.store
            + self.checks
            + self.idle_upstreams
            + self.margin
        )


@dataclass(frozen=True, slots=True)
class Budget:
    nofile: int  # the soft RLIMIT_NOFILE the process runs with
    reserve: Reserve
    derived: int  # (nofile - reserved) // 2
    max_connections: int  # the limit in force: configured, else derived
    configured: bool  # limits.max_connections was set

    @property
    def data_plane_ceiling(self) -> int:
        """Descriptor numbers from here up are the operators' (RLIMIT_NOFILE - their part)."""
        return self.nofile - self.reserve.operators

    def cause(self) -> str:
        """What sets the limit, for the "connection limit reached" warning (review 90 F14:
        it said limits.max_connections when none was set)."""
        if self.configured:
            return "limits.max_connections"
        r = self.reserve
        return (
            f"derived, limits.max_connections not set: (RLIMIT_NOFILE {self.nofile} - "
            f"{r.total} reserved, {r.idle_upstreams} of them for idle upstream connections "
            "to the pools' servers) / 2"
        )

    def describe(self) -> str:
        r = self.reserve
        return (
            f"{r.total} reserved of RLIMIT_NOFILE {self.nofile}: fixed {r.fixed}, listeners "
            f"{r.listeners}, admin {r.admin}, runtime socket {r.runtime}, store {r.store}, "
            f"health checks {r.checks}, idle upstream connections {r.idle_upstreams}, "
            f"margin {r.margin}"
        )


def _servers(config: Config, name: str, live: Live | None) -> Sequence[ServerConfig]:
    if live is not None and name in live:
        return live[name]
    return config.pools[name].servers


def check_pairs(config: Config, live: Live | None = None, cap: int | None = None) -> int:
    """(server, monitor) pairs checked: pool monitors plus each server's own; counted up
    to ``cap`` only (a runtime add re-plans: a pool's monitors times its servers settle most
    pools without a walk of the servers)."""
    n = 0
    for name, pool in config.pools.items():
        servers = _servers(config, name, live)
        monitors = set(pool.healthmonitors)
        n += len(servers) * len(monitors)
        if cap is not None and n >= cap:
            return n
        for server in servers:
            if server.healthmonitors:
                n += len(set(server.healthmonitors) - monitors)
    return n


def idle_upstreams(config: Config, live: Live | None = None) -> int:
    """The most idle upstream connections the L7 services can keep for reuse."""
    return sum(idle_by_pool(config, live).values())


def idle_by_pool(config: Config, live: Live | None = None) -> dict[str, int]:
    """:func:`idle_upstreams` per pool (servers × ``max_idle_per_server``)."""
    used: set[str] = set()
    for svc in config.services.values():
        if svc.protocol != "http":
            continue
        used.add(svc.pool)
        if svc.fallback_pool:
            used.add(svc.fallback_pool)
        for rule in svc.rules:
            if rule.then.pool:
                used.add(rule.then.pool)
    pools = config.pools
    return {
        p: len(_servers(config, p, live)) * pools[p].max_idle_per_server for p in used if p in pools
    }


def reserve_for(config: Config, nofile: int, live: Live | None = None) -> Reserve:
    admin = config.admin
    runtime = (1 + RUNTIME_CLIENTS) * (bool(admin.runtime_socket) + bool(admin.runtime_tcp))
    return Reserve(
        fixed=FIXED,
        listeners=PER_SERVICE * len(config.services),
        admin=1 + ADMIN_CLIENTS,
        runtime=runtime,
        store=ETCD if config.state.etcd is not None else SQLITE,
        checks=min(check_pairs(config, live, MAX_CHECKS_IN_FLIGHT), MAX_CHECKS_IN_FLIGHT),
        idle_upstreams=idle_upstreams(config, live),
        margin=32 + nofile // 32,
    )


def plan(config: Config, nofile: int, live: Live | None = None) -> Budget:
    """The connection limit for ``config`` under a soft RLIMIT_NOFILE of ``nofile``; raises
    LimitError when it cannot hold (a configured limit too high, or no room at all).
    ``live``: the servers the pools run (runtime ones too) in place of the file's lists."""
    reserve = reserve_for(config, nofile, live)
    derived = (nofile - reserve.total) // 2
    configured = config.limits.max_connections
    if configured is None:
        if derived < 1:
            raise LimitError(
                f"RLIMIT_NOFILE {nofile} leaves no descriptor for client connections "
                f"({reserve.total} reserved: {_parts(reserve)}); raise it (ulimit -n, "
                f"systemd LimitNOFILE=) or lower {_idle_hint(config, nofile, reserve, live)}"
            )
        return Budget(nofile, reserve, derived, derived, False)
    needed = 2 * configured + reserve.total
    if needed > nofile:
        hint = f"null derives {derived}" if derived >= 1 else "the limit is too low for any"
        raise LimitError(
            f"limits.max_connections: {configured} client connections need {needed} "
            f"descriptors (2 × {configured} + {reserve.total} reserved: {_parts(reserve)}) but "
            f"RLIMIT_NOFILE is {nofile}; raise it (ulimit -n, systemd LimitNOFILE=) or lower "
            f"limits.max_connections ({hint})"
        )
    return Budget(nofile, reserve, derived, configured, True)


def _idle_hint(config: Config, nofile: int, reserve: Reserve, live: Live | None) -> str:
    """The setting to lower, named for the pool that reserves the most idle connections,
    and the largest value that leaves half of what is left to the clients (review F9: a
    10,000-server pool at the default 64 reserves 640,000 descriptors)."""
    by_pool = idle_by_pool(config, live)
    if not by_pool or max(by_pool.values()) == 0:
        return "pools.*.max_idle_per_server"
    name = max(by_pool, key=lambda p: by_pool[p])
    pool = config.pools[name]
    servers, idle = len(_servers(config, name, live)), pool.max_idle_per_server
    others = reserve.total - by_pool[name]
    fits = max(0, (nofile - others) // 2 // servers)
    return (
        f"pools.{name}.max_idle_per_server ({servers} server(s) × {idle} = {by_pool[name]} "
        f"reserved; {fits} or less fits here with half the rest for clients; "
        "docs/admin.md, Running at scale)"
    )


def _parts(r: Reserve) -> str:
    return (
        f"fixed {r.fixed}, listeners {r.listeners}, admin {r.admin}, runtime socket {r.runtime}, "
        f"store {r.store}, health checks {r.checks}, idle upstream connections "
        f"{r.idle_upstreams}, margin {r.margin}"
    )


def raise_nofile() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (as HAProxy does at start); returns
    the soft limit in force afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = _nr_open(soft)
    if hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError):
            pass
    return soft


def _nr_open(fallback: int) -> int:
    """The kernel's ceiling for RLIMIT_NOFILE (an unlimited hard limit is not settable)."""
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except (OSError, ValueError):
        return max(fallback, 1 << 20)


def listen_backlog(wanted: int) -> int:
    """The backlog the kernel really gives a listener asking for ``wanted``
    (``net.core.somaxconn`` caps it)."""
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            return max(1, min(wanted, int(f.read())))
    except (OSError, ValueError):
        return wanted
