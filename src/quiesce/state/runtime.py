"""Runtime objects: one :class:`ServerRuntime` per pool member (both axes, live counters, recent
checks) and one :class:`PoolRuntime` per pool (its servers, candidate set, algorithm, primary).
The registry (:mod:`quiesce.state.registry`) is the only writer of their state axes; the data
plane's connection table keeps their live counters. Sans-IO."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import count
from typing import Any, Never, overload

from sortedcontainers import SortedKeyList  # type: ignore[import-untyped]

from quiesce.balancing import Algorithm, make_algorithm
from quiesce.balancing.persistence import sticky_token
from quiesce.config.models import HealthMonitor, PoolConfig, ServerConfig
from quiesce.core.admin import AdminRecord
from quiesce.core.checks import CheckResult
from quiesce.core.errors import NotFound
from quiesce.core.events import Event
from quiesce.core.oper import Thresholds
from quiesce.core.outlier import OutlierTrack
from quiesce.core.pool import Member, slow_start_factor, slow_start_next
from quiesce.core.queue import PoolQueue
from quiesce.core.retry import InFlight
from quiesce.core.states import Admin, CloseMode, Oper
from quiesce.core.status import is_eligible, status_text
from quiesce.state.recent import LAST_CHECKS, Checks, Recent, Tracks
from quiesce.state.traffic import NO_TRAFFIC, Traffic

RAMP_BUDGET = 64
"""Slow-start steps a pick applies at most (:meth:`PoolRuntime.refresh_weights`): when
10,000 servers come back together, their steps are spread over the picks, not one turn."""


class _NoCounts(dict[Any, int]):
    """Empty counts, read-only: the one ``responses`` and ``grpc_statuses`` of every server
    that has none yet (two empty dicts took 128 bytes a server)."""

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> Never:
        raise TypeError("NO_COUNTS is shared: give the server a dict of its own to count")

    __setitem__ = setdefault = update = __ior__ = _refuse


NO_COUNTS: dict[Any, int] = _NoCounts()


AT_START = AdminRecord()
"""The admin record of every server that none was set for (frozen: a change replaces it;
88 bytes a server otherwise, issue 21)."""

EventListener = Callable[[Event], None]
CloseHandler = Callable[["ServerRuntime", CloseMode], None]


class ErrorCounts:
    """A server's rarely written counters (retries, redispatches, conn_errors, resp_errors,
    srv_aborts), made by the first of them (issue 21: five slots in every ServerRuntime took
    40 bytes a server; one slot, None until a server's first error, 8). The server reads
    them as its own attributes (0 before)."""

    __slots__ = ("conn_errors", "redispatches", "resp_errors", "retries", "srv_aborts")

    def __init__(self) -> None:
        self.retries = self.redispatches = 0
        self.conn_errors = self.resp_errors = self.srv_aborts = 0


@dataclass(eq=False, slots=True, weakref_slot=True)
class ServerRuntime:
    # slots (issue 21): an instance dict of these 30-odd fields took 1.6 KiB per server
    pool: str
    config: ServerConfig
    order: int
    monitors: list[str]  # replaced, never changed in place: servers may share the list
    oper: Oper = Oper.UNKNOWN
    admin: AdminRecord = AT_START
    # each monitor's last results and track (Checks: 48 bytes for one monitor, a dict 184)
    last_checks: Checks = field(default_factory=Checks)
    eligible_since: float | None = None
    weight: int = 1
    # Live counters, kept by the data plane's connection table (``connections`` through its
    # property below, which keeps the pool's session count in step).
    _connections: int = 0
    requests_in_flight: int = 0
    requests_total: int = 0
    # Answers by class, and gRPC answers by grpc-status code (an h2 pool's,
    # quiesce.dataplane.h2client; -1: a value that is not a number): NO_COUNTS, shared, until
    # the first one (the writer replaces it: ``if counts is NO_COUNTS``; issue 21)
    responses: dict[str, int] = field(default_factory=lambda: NO_COUNTS)
    grpc_statuses: dict[int, int] = field(default_factory=lambda: NO_COUNTS)
    # Rare counters, read and written as attributes (properties below) but kept in one
    # ErrorCounts made by the first of them (None before; issue 21): ``retries``, requests
    # sent again after this server failed them (HAProxy's wretr), and of those
    # ``redispatches``, the ones sent to another server (wredis): quiesce.dataplane.retrying;
    # requests failed by this server, counted only as they fail (nothing on success):
    # ``conn_errors``, connects that failed for good (HAProxy's econ), ``resp_errors``,
    # responses it closed, cut, garbled or never sent in time (eresp; quiesce.dataplane.h1,
    # quiesce.dataplane.tcp), and of those ``srv_aborts``, the data transfers it aborted: a
    # response body cut short, an L4 reset (srv_abrt)
    errors: ErrorCounts | None = None
    # Traffic (HAProxy's bin/bout and ctime/rtime/ttime), kept by the data plane: the client
    # bytes of its requests (L4: connections) and the running sums of their times
    # (quiesce.state.traffic). None until its first request (issue 21: 72 bytes a server
    # that never served): readers take ``traffic`` (the shared zero record before), the
    # writers ``own_traffic or new_traffic()``.
    own_traffic: Any = None
    # Check counters for HAProxy's show stat (chkfail, chkdown, lastchg, downtime), kept by
    # the registry; health_checks False: results are ignored (HAProxy's "disable health").
    health_checks: bool = True
    checks_failed: int = 0
    went_down: int = 0
    oper_since: float | None = None
    down_since: float | None = None
    downtime: float = 0.0
    # Drain-then-delete (issue 14): deleted at 0 connections or at the drain deadline
    # (``removing``, a property below: the pool keeps the list of those, for the timer).
    _removing: bool = False
    # Added or changed at runtime: the stored definition wins over the config file's.
    runtime_defined: bool = False
    # Incremental pool state (quiesce.state.poolstate): the pool's sorted set of eligible
    # servers this one is in (None: not eligible), its sort key there, and the pool's
    # running totals it adds its connections to.
    listed: Members | None = field(default=None, repr=False)
    rank: int = 0  # order, priority first (poolstate.rank)
    tally: PoolTally = field(default_factory=lambda: PoolTally(), repr=False)
    # Passive outlier detection (quiesce.core.outlier): its runs and ejection, when the pool
    # has outlier_detection (None: off, nothing counted on the request path).
    outlier: OutlierTrack | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.weight = self.config.weight
        if self.monitors and not self.last_checks:
            self.last_checks = Checks(Recent(m) for m in self.monitors)
        else:
            for m in self.monitors:
                self.last_checks.setdefault(m, Recent(m))
        if not self.monitors:
            self.oper = Oper.UNMONITORED

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def tracks(self) -> Tracks:
        """Each monitor's track of this server, by monitor: kept in its ``last_checks``
        (one dict per server, not two: issue 21)."""
        return Tracks(self.last_checks)

    @property
    def connections(self) -> int:
        """Live connections (busy ones), set by the data plane's connection table."""
        return self._connections

    @connections.setter
    def connections(self, n: int) -> None:
        t = self.tally
        was = self._connections
        t.sessions += n - was
        self._connections = n
        if n:
            if not was and t.moved is not None:  # busy again: the live series samples it
                t.moved.add(self)
        elif self._removing:  # drained: the admin timer may delete it (PoolTally.drained)
            t.drained[self] = None

    @property
    def removing(self) -> bool:
        """Being drained to be deleted (``DELETE …?drain=true``, a reload)."""
        return self._removing

    @removing.setter
    def removing(self, on: bool) -> None:
        self._removing = on
        t = self.tally
        if on:
            if self not in t.removing:
                t.removing[self] = next(_ASKED)
            if not self._connections:
                t.drained[self] = None
        else:
            t.removing.pop(self, None)
            t.drained.pop(self, None)

    @property
    def retries(self) -> int:
        e = self.errors
        return 0 if e is None else e.retries

    @retries.setter
    def retries(self, value: int) -> None:
        e = self.errors
        if e is None:
            e = self.errors = ErrorCounts()
        e.retries = value

    @property
    def redispatches(self) -> int:
        e = self.errors
        return 0 if e is None else e.redispatches

    @redispatches.setter
    def redispatches(self, value: int) -> None:
        e = self.errors
        if e is None:
            e = self.errors = ErrorCounts()
        e.redispatches = value

    @property
    def conn_errors(self) -> int:
        e = self.errors
        return 0 if e is None else e.conn_errors

    @conn_errors.setter
    def conn_errors(self, value: int) -> None:
        e = self.errors
        if e is None:
            e = self.errors = ErrorCounts()
        e.conn_errors = value

    @property
    def resp_errors(self) -> int:
        e = self.errors
        return 0 if e is None else e.resp_errors

    @resp_errors.setter
    def resp_errors(self, value: int) -> None:
        e = self.errors
        if e is None:
            e = self.errors = ErrorCounts()
        e.resp_errors = value

    @property
    def srv_aborts(self) -> int:
        e = self.errors
        return 0 if e is None else e.srv_aborts

    @srv_aborts.setter
    def srv_aborts(self, value: int) -> None:
        e = self.errors
        if e is None:
            e = self.errors = ErrorCounts()
        e.srv_aborts = value

    @property
    def traffic(self) -> Any:
        """Its :class:`~quiesce.state.traffic.Traffic` record to read: the shared zeros
        (``NO_TRAFFIC``, never written) before its first request."""
        t = self.own_traffic
        return NO_TRAFFIC if t is None else t

    def new_traffic(self) -> Any:
        """Its Traffic record to write, made on first use: the data plane's writers take
        ``server.own_traffic or server.new_traffic()`` (an attribute read a request)."""
        t = self.own_traffic
        if t is None:
            t = self.own_traffic = Traffic()
        return t

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
    def ejected(self) -> bool:
        """Out of balancing for a while by passive outlier detection."""
        o = self.outlier
        return o is not None and o.ejected_until is not None

    @property
    def eligible(self) -> bool:
        return is_eligible(self.admin.state, self.oper, self.ejected)

    @property
    def persistable(self) -> bool:
        """May still receive sessions stuck to it by persistence (drain allows them; an
        ejection does not: the server is failing its clients)."""
        return (
            self.admin.state is not Admin.MAINTENANCE
            and self.oper in (Oper.UP, Oper.UNMONITORED)
            and not self.ejected
        )

    @property
    def status(self) -> str:
        if self.removing:
            return f"removing ({self.connections})"
        return status_text(self.admin.state, self.oper, self.connections, self.ejected)

    # Balancing candidate protocol -------------------------------------------------------
    # A plain attribute (read on every pick): set it with :meth:`reweigh`, which tells the
    # eligible set it is in, so that the balancing algorithms see the change.
    effective_weight: float = 1.0

    def reweigh(self, w: float) -> None:
        """Set ``effective_weight``; a change bumps the ``generation`` of the eligible set
        this server is in (the algorithms redo what they derive from it once per change)."""
        if w != self.effective_weight:
            self.effective_weight = w
            if self.listed is not None:
                self.listed.touch(self)

    @property
    def active(self) -> int:
        return self._connections

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


class Members(Sequence["ServerRuntime"]):
    """Servers kept sorted by a key, added and removed in O(log n) (a sorted list of lists,
    sortedcontainers): a pool's servers in config order, its eligible sets by rank.

    ``generation`` counts the changes of the set and of its members' effective weights, and
    ``log`` holds the servers of the latest changes (``log[k]`` took the generation from
    ``log_start + k`` to the next; at most as many as members, then it starts over), so a
    balancing algorithm corrects what it derives from the candidates (an EDF heap) for the
    servers that changed, not per pick and not over the set (quiesce.balancing.round_robin).
    """

    __slots__ = ("_items", "generation", "log", "log_start")

    def __init__(self, key: Callable[[ServerRuntime], Any]) -> None:
        self._items = SortedKeyList(key=key)
        self.generation = 0
        self.log: list[ServerRuntime] = []
        self.log_start = 0

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return len(self._items) > 0

    def __iter__(self) -> Iterator[ServerRuntime]:
        return iter(self._items)

    @overload
    def __getitem__(self, index: int) -> ServerRuntime: ...

    @overload
    def __getitem__(self, index: slice) -> list[ServerRuntime]: ...

    def __getitem__(self, index: int | slice) -> ServerRuntime | list[ServerRuntime]:
        item: ServerRuntime | list[ServerRuntime] = self._items[index]
        return item

    def __contains__(self, item: object) -> bool:
        return isinstance(item, ServerRuntime) and item in self._items

    def __repr__(self) -> str:
        return f"Members({list(self._items)!r})"

    def add(self, server: ServerRuntime) -> None:
        self._items.add(server)
        self.touch(server)

    def remove(self, server: ServerRuntime) -> None:
        self._items.remove(server)
        self.touch(server)

    def touch(self, server: ServerRuntime) -> None:
        """``server`` joined, left or changed its effective weight: one more generation."""
        self.generation += 1
        log = self.log
        log.append(server)
        if len(log) > max(64, len(self._items)):
            log.clear()
            self.log_start = self.generation

    def clear(self) -> None:
        self._items.clear()
        self.generation += 1
        self.log.clear()
        self.log_start = self.generation


_ASKED = count()  # PoolTally.removing's numbers


class PoolTally:
    """A pool's running totals, kept as its servers change (read by every event)."""

    __slots__ = ("drained", "moved", "reader", "removing", "sessions")

    def __init__(self) -> None:
        self.sessions = 0
        # the servers being drained to be deleted, in the order they were asked (the
        # number of each: its place in that order)
        self.removing: dict[ServerRuntime, int] = {}
        # of those, the ones that were at 0 connections once since the admin timer last
        # looked (it deletes only those: AdminService._finish_removals)
        self.drained: dict[ServerRuntime, None] = {}
        # the servers whose connections went from 0 up, or that got a check result, since
        # the live series' tick took the set (one set.add a request at most: the tick
        # samples these and the ones busy at the last tick, quiesce.state.series); made by
        # the one SeriesStore that reads it, ``reader`` (None: none does, nothing kept)
        self.moved: set[ServerRuntime] | None = None
        self.reader: object = None


def _rank(server: ServerRuntime) -> int:
    return server.rank


def _order(server: ServerRuntime) -> int:
    return server.order


class PoolRuntime:
    def __init__(self, name: str, config: PoolConfig, monitors: dict[str, HealthMonitor]) -> None:
        self.name = name
        self.config = config
        self.pool_monitors: list[str] = list(config.healthmonitors)
        # In config order (new ones last); added and removed in O(log n).
        self.servers = Members(_order)
        self.tally = PoolTally()
        # one monitor-name list per combination, shared by the servers that have it (never
        # changed in place: replaced; 72 bytes a server otherwise)
        shared: dict[tuple[str, ...], list[str]] = {}
        for i, sc in enumerate(config.servers):
            names = [*config.healthmonitors, *sc.healthmonitors]
            names = shared.setdefault(tuple(names), names)
            self.servers.add(ServerRuntime(name, sc, i, names, tally=self.tally))
        self._by_name = {s.name: s for s in self.servers}
        self._tokens: dict[str, str] | None = None
        self._next_order = len(self.servers)
        # (eligible, sessions) as a batch of changes began (Registry.deferring): events of
        # the batch carry these instead of a count over every server per event
        self.frozen_counts: tuple[int, int] | None = None
        self.algorithm: Algorithm = make_algorithm(config.algorithm)
        self.primary: str | None = None
        # The eligible servers, primaries and backups, sorted by rank (config order; priority
        # first in active-standby): kept per change by quiesce.state.poolstate, never rebuilt
        # on a server's change. ``candidates`` is one of them, or the elected primary alone.
        self.primaries = Members(_rank)
        self.backups = Members(_rank)
        self.candidates: Sequence[ServerRuntime] = self.primaries
        self.available = False
        self.monitor_configs = monitors
        # requests waiting for a server (max_connections, hold_when_empty): the data plane's
        # (quiesce.dataplane.waiting), here so that show stat and /metrics read its counters
        self.queue: PoolQueue[Any] = PoolQueue()
        # requests (L4: connections) no server took: none eligible (the maintenance page) or
        # the queue's deadline; HAProxy adds these to its BACKEND's econ (the data plane's
        # queue shells count them: quiesce.dataplane.h1.queued, quiesce.dataplane.tcpqueue)
        self.conn_errors = 0
        # its requests retrying now, their places in the retry budget (quiesce.core.retry)
        self.retrying = InFlight()
        # passive outlier detection: the servers ejected now (quiesce.core.outlier)
        self.ejected: dict[ServerRuntime, None] = {}
        self.track_outliers()
        # slow start: (next step, sequence, server) of the ramping servers, a heap; an entry
        # stands while it is the server's latest (``_ramping``: the server's sequence)
        self._ramp: list[tuple[float, int, ServerRuntime]] = []
        self._ramping: dict[ServerRuntime, int] = {}
        self._ramp_seq = count()

    def track_outliers(self) -> None:
        """Give each server an outlier track when the pool has ``outlier_detection`` (new
        settings for the ones it has), or take them away (then none is ejected)."""
        od = self.config.outlier_detection
        if od is None:
            for s in self.servers:
                s.outlier = None
            self.ejected.clear()
            return
        policy = od.policy()
        for s in self.servers:
            if s.outlier is None:
                s.outlier = OutlierTrack(policy)
            else:
                s.outlier.set_policy(policy)

    def add(self, config: ServerConfig) -> ServerRuntime:
        """A new member at the end of the pool (its order after every other), with the
        pool's monitors and its own."""
        order = self._next_order
        self._next_order += 1
        names = [
            *self.pool_monitors,
            *(m for m in config.healthmonitors if m not in self.pool_monitors),
        ]
        server = ServerRuntime(self.name, config, order, names, tally=self.tally)
        od = self.config.outlier_detection
        if od is not None:
            server.outlier = OutlierTrack(od.policy())
        self.servers.add(server)
        self._by_name[server.name] = server
        if self._tokens is not None:
            self._tokens[sticky_token(server.key)] = server.name
        return server

    def has(self, name: str) -> bool:
        return name in self._by_name

    def remove(self, server: ServerRuntime) -> None:
        """Forget ``server`` (already out of the eligible sets: poolstate.unplace)."""
        self.servers.remove(server)
        del self._by_name[server.name]
        if self._tokens is not None:
            self._tokens.pop(sticky_token(server.key), None)
        self.tally.sessions -= server.connections
        self.tally.removing.pop(server, None)
        self.tally.drained.pop(server, None)
        if self.tally.moved is not None:
            self.tally.moved.discard(server)
        self.ejected.pop(server, None)
        server.tally = PoolTally()
        server.tally.sessions = server.connections

    def server_or_none(self, name: str | None) -> ServerRuntime | None:
        return self._by_name.get(name) if name is not None else None

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
        return len(self.primaries) + len(self.backups)

    @property
    def sessions(self) -> int:
        if self.frozen_counts is not None:
            return self.frozen_counts[1]
        return self.tally.sessions

    def removing(self) -> list[ServerRuntime]:
        """The servers being drained to be deleted (not a pass over the pool)."""
        return list(self.tally.removing)

    def thresholds(self, monitor: str) -> Thresholds:
        m = self.monitor_configs.get(monitor)
        if m is None:
            return Thresholds()
        return Thresholds(m.successful_checks, m.failed_checks)

    def ramp(self, server: ServerRuntime, now: float) -> None:
        """``server`` was placed with its slow-start weight of ``now``: its next step is due
        when :func:`~quiesce.core.pool.slow_start_next` says (none: it is at full weight)."""
        at = slow_start_next(server.eligible_since, now, self.config.slow_start)
        if at is None:
            self._ramping.pop(server, None)
            return
        seq = self._ramping[server] = next(self._ramp_seq)
        heapq.heappush(self._ramp, (at, seq, server))

    def clear_ramps(self) -> None:
        """Forget every step scheduled (the pool is placed anew: :func:`poolstate.rebuild`)."""
        self._ramp.clear()
        self._ramping.clear()

    def refresh_weights(self, now: float) -> None:
        """The slow-start steps due by ``now`` (each pick asks): O(1) when none is due, else
        O(log n) a step and at most :data:`RAMP_BUDGET` of them (the rest at the next picks),
        never a pass over the candidates."""
        heap, ramping = self._ramp, self._ramping
        period = self.config.slow_start
        for _ in range(RAMP_BUDGET):
            if not heap or heap[0][0] > now:
                return
            _, seq, s = heapq.heappop(heap)
            if ramping.get(s) != seq:
                continue  # placed again since: a later entry stands
            del ramping[s]
            if s.listed is None:
                continue  # no longer eligible (or deleted)
            s.reweigh(s.weight * slow_start_factor(s.eligible_since, now, period))
            self.ramp(s, now)

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
        tokens = self._tokens
        if tokens is None:  # built at the first cookie, then kept by add and remove
            tokens = self._tokens = {sticky_token(s.key): s.name for s in self.servers}
        return tokens.get(token)


__all__ = [
    "LAST_CHECKS",
    "NO_COUNTS",
    "CloseHandler",
    "EventListener",
    "PoolRuntime",
    "PoolTally",
    "Recent",
    "ServerRuntime",
]
