"""Runtime objects: one :class:`ServerRuntime` per pool member (both axes, live counters, recent
checks) and one :class:`PoolRuntime` per pool (its servers, candidate set, algorithm, primary).
The registry (:mod:`quiesce.state.registry`) is the only writer of their state axes; the data
plane's connection table keeps their live counters. Sans-IO."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from quiesce.balancing import Algorithm, make_algorithm
from quiesce.balancing.persistence import sticky_token
from quiesce.config.models import HealthMonitor, PoolConfig, ServerConfig
from quiesce.core.admin import AdminRecord
from quiesce.core.checks import CheckResult
from quiesce.core.errors import NotFound
from quiesce.core.events import Event
from quiesce.core.oper import MonitorTrack, Thresholds
from quiesce.core.pool import Member, slow_start_factor
from quiesce.core.states import Admin, CloseMode, Oper
from quiesce.core.status import is_eligible, status_text
from quiesce.state.traffic import Traffic

LAST_CHECKS = 10


EventListener = Callable[[Event], None]
CloseHandler = Callable[["ServerRuntime", CloseMode], None]


@dataclass(eq=False)
class ServerRuntime:
    pool: str
    config: ServerConfig
    order: int
    monitors: list[str]
    tracks: dict[str, MonitorTrack] = field(default_factory=dict)
    oper: Oper = Oper.UNKNOWN
    admin: AdminRecord = field(default_factory=AdminRecord)
    last_checks: dict[str, deque[CheckResult]] = field(default_factory=dict)
    eligible_since: float | None = None
    weight: int = 1
    # Live counters, kept by the data plane's connection table.
    connections: int = 0
    requests_in_flight: int = 0
    requests_total: int = 0
    responses: dict[str, int] = field(default_factory=dict)
    # Traffic (HAProxy's bin/bout and ctime/rtime/ttime), kept by the data plane: the client
    # bytes of its requests (L4: connections) and the running sums of their times
    # (quiesce.state.traffic).
    traffic: Any = field(default_factory=Traffic)
    # Check counters for HAProxy's show stat (chkfail, chkdown, lastchg, downtime), kept by
    # the registry; health_checks False: results are ignored (HAProxy's "disable health").
    health_checks: bool = True
    checks_failed: int = 0
    went_down: int = 0
    oper_since: float | None = None
    down_since: float | None = None
    downtime: float = 0.0
    # Drain-then-delete (issue 14): deleted at 0 connections or at the drain deadline.
    removing: bool = False
    # Added or changed at runtime: the stored definition wins over the config file's.
    runtime_defined: bool = False

    def __post_init__(self) -> None:
        self.weight = self.config.weight
        for m in self.monitors:
            self.tracks.setdefault(m, MonitorTrack())
            self.last_checks.setdefault(m, deque(maxlen=LAST_CHECKS))
        if not self.monitors:
            self.oper = Oper.UNMONITORED

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def bytes_in(self) -> int:
        """Bytes received from the clients of its requests (HAProxy's ``bin``)."""
        return int(self.traffic.bytes_in)

    @property
    def bytes_out(self) -> int:
        """Bytes sent to the clients of its requests (HAProxy's ``bout``)."""
        return int(self.traffic.bytes_out)

    @property
    def key(self) -> str:
        return f"{self.pool}/{self.config.name}"

    @property
    def host(self) -> str:
        return self.config.host

    @property
    def port(self) -> int:
        return self.config.port

    @property
    def address(self) -> str:
        return self.config.address

    @property
    def eligible(self) -> bool:
        return is_eligible(self.admin.state, self.oper)

    @property
    def persistable(self) -> bool:
        """May still receive sessions stuck to it by persistence (drain allows them)."""
        return self.admin.state is not Admin.MAINTENANCE and self.oper in (
            Oper.UP,
            Oper.UNMONITORED,
        )

    @property
    def status(self) -> str:
        if self.removing:
            return f"removing ({self.connections})"
        return status_text(self.admin.state, self.oper, self.connections)

    # Balancing candidate protocol -------------------------------------------------------
    effective_weight: float = 1.0

    @property
    def active(self) -> int:
        return self.connections

    def member(self) -> Member:
        return Member(
            self.name,
            self.admin.state,
            self.oper,
            self.config.backup,
            self.config.priority,
            self.order,
        )

    def checks(self) -> list[CheckResult]:
        out = [r for q in self.last_checks.values() for r in q]
        out.sort(key=lambda r: r.at)
        return out[-LAST_CHECKS:]


class PoolRuntime:
    def __init__(self, name: str, config: PoolConfig, monitors: dict[str, HealthMonitor]) -> None:
        self.name = name
        self.config = config
        self.pool_monitors: list[str] = list(config.healthmonitors)
        self.servers: list[ServerRuntime] = []
        for i, sc in enumerate(config.servers):
            names = [*config.healthmonitors, *sc.healthmonitors]
            self.servers.append(ServerRuntime(name, sc, i, names))
        self._by_name = {s.name: s for s in self.servers}
        self._next_order = len(self.servers)
        # (eligible, sessions) as a batch of changes began (Registry.deferring): events of
        # the batch carry these instead of a count over every server per event
        self.frozen_counts: tuple[int, int] | None = None
        self.algorithm: Algorithm = make_algorithm(config.algorithm)
        self.primary: str | None = None
        self.candidates: list[ServerRuntime] = []
        self.available = False
        self.monitor_configs = monitors

    def add(self, config: ServerConfig) -> ServerRuntime:
        """A new member at the end of the pool (its order after every other), with the
        pool's monitors and its own."""
        order = self._next_order
        self._next_order += 1
        names = [
            *self.pool_monitors,
            *(m for m in config.healthmonitors if m not in self.pool_monitors),
        ]
        server = ServerRuntime(self.name, config, order, names)
        self.servers.append(server)
        self._by_name[server.name] = server
        return server

    def has(self, name: str) -> bool:
        return name in self._by_name

    def remove(self, server: ServerRuntime) -> None:
        self.servers.remove(server)
        del self._by_name[server.name]

    def server(self, name: str) -> ServerRuntime:
        try:
            return self._by_name[name]
        except KeyError:
            raise NotFound(f"pool {self.name!r} has no server {name!r}") from None

    def members(self) -> list[Member]:
        return [s.member() for s in self.servers]

    @property
    def eligible_count(self) -> int:
        if self.frozen_counts is not None:
            return self.frozen_counts[0]
        return sum(1 for s in self.servers if s.eligible)

    @property
    def sessions(self) -> int:
        if self.frozen_counts is not None:
            return self.frozen_counts[1]
        return sum(s.connections for s in self.servers)

    def thresholds(self, monitor: str) -> Thresholds:
        m = self.monitor_configs.get(monitor)
        if m is None:
            return Thresholds()
        return Thresholds(m.successful_checks, m.failed_checks)

    def refresh_weights(self, now: float) -> None:
        period = self.config.slow_start
        for s in self.candidates:
            s.effective_weight = s.weight * slow_start_factor(s.eligible_since, now, period)

    def pick(
        self,
        client: str | None,
        now: float,
        exclude: Sequence[ServerRuntime] = (),
        sticky: str | None = None,
    ) -> ServerRuntime | None:
        """The server for a new connection or request: a sticky server that may still take
        persistent sessions, else the algorithm's choice among the candidates."""
        if sticky is not None:
            s = self._by_name.get(sticky)
            if (
                s is not None
                and s.persistable
                and s not in exclude
                and (self.config.mode != "active_standby" or s.name == self.primary)
            ):
                return s
        pool: Sequence[ServerRuntime] = self.candidates
        if exclude:
            pool = [s for s in pool if s not in exclude]
        if not pool:
            return None
        if self.config.slow_start > 0:
            self.refresh_weights(now)
        choice = self.algorithm.pick(pool, client)
        return choice if isinstance(choice, ServerRuntime) else None

    def sticky_token(self, server: ServerRuntime) -> str:
        """The value of a persistence cookie naming ``server`` (opaque, stable)."""
        return sticky_token(server.key)

    def from_sticky_token(self, token: str) -> str | None:
        for s in self.servers:
            if sticky_token(s.key) == token:
                return s.name
        return None


__all__ = ["LAST_CHECKS", "CloseHandler", "EventListener", "PoolRuntime", "ServerRuntime"]
