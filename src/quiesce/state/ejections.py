"""Passive ejections in the registry (issue 17, item 4): the data plane reports that a
server's run of failures reached its threshold (:meth:`Ejections.outlier_tripped`, from the
counts of :mod:`quiesce.core.outlier`); the registry checks the pool's limits, takes the server
out of its eligible sets like any other change, emits ``server_ejected`` (or, once per run,
``ejection_refused``), and :meth:`Registry.tick` returns it when its time is over
(``server_returned``). Ejections are not persisted: a restart starts every server afresh, as
Envoy does. Sans-IO."""

from __future__ import annotations

import heapq
from itertools import count
from typing import TYPE_CHECKING

from quiesce.core.clock import Clock
from quiesce.core.events import Event, EventKind
from quiesce.core.outlier import refusal
from quiesce.core.states import Cause
from quiesce.state.events import make_event
from quiesce.state.runtime import PoolRuntime, ServerRuntime


class Ejections:
    """The registry's passive ejections; :class:`~quiesce.state.registry.Registry` supplies
    the rest."""

    clock: Clock
    pools: dict[str, PoolRuntime]
    # when ejections end: (until, sequence, server), a heap; an entry is stale once the
    # server is back, gone or ejected again (see _returning)
    _returns: list[tuple[float, int, ServerRuntime]]
    _return_seq = count()

    if TYPE_CHECKING:

        def emit(self, event: Event) -> None: ...
        def _emit_all(self, events: list[Event]) -> None: ...
        def _changed(
            self, pool: PoolRuntime, server: ServerRuntime, now: float, emit: bool = True
        ) -> list[Event]: ...

    def outlier_tripped(self, server: ServerRuntime, detail: dict[str, object]) -> None:
        """A run of failures of ``server``'s reached its threshold (the data plane's report):
        eject it, unless the pool's max_ejection_percent or min_servers_up says no."""
        track = server.outlier
        pool = self.pools.get(server.pool)
        if track is None or track.ejected_until is not None or pool is None:
            return
        rule = track.tripped()
        if rule is None:
            return
        if not server.eligible:
            # out another way (down, drained, in maintenance): the monitors and operators
            # rule there, and its failures meanwhile (a drain deadline's 503s) do not count
            track.forget_runs()
            return
        policy = track.policy
        why = refusal(
            len(pool.ejected),
            len(pool.servers),
            policy.max_ejection_percent,
            pool.eligible_count - 1,
            pool.config.min_servers_up,
        )
        detail = {"rule": rule, "count": max(track.fives, track.connect_failures), **detail}
        if why is not None:
            if not track.refused:  # one event per run, not one per failed request
                track.refused = True
                self._passive(EventKind.EJECTION_REFUSED, pool, server, None, why, detail)
            return
        now = self.clock.time()
        before = server.status
        duration = track.eject(now)
        until = now + duration
        pool.ejected[server] = None
        heapq.heappush(self._returns, (until, next(self._return_seq), server))
        pending = self._changed(pool, server, now)
        detail.update(ejection_time=duration, until=until, times_ejected=track.times)
        why = f"{rule}: {detail['count']} in a row, out for {duration:g}s"
        self._passive(EventKind.SERVER_EJECTED, pool, server, before, why, detail)
        self._emit_all(pending)

    def end_ejection(
        self, server: ServerRuntime, cause: Cause, actor: str | None, reason: str | None
    ) -> bool:
        """An operator ends ``server``'s ejection early (``enable server``, the runtime
        socket's ``set server ... state ready``): it returns now, as at the end of its time,
        the event naming who. Its runs start afresh; its ejection count is kept, so a next
        ejection lasts longer (Envoy's ``/hosts`` uneject keeps it too). False when it was not
        ejected."""
        track = server.outlier
        if track is None or track.ejected_until is None or server.pool not in self.pools:
            return False
        self._return(server, self.clock.time(), cause, actor, reason or "ejection ended")
        return True

    def _return(
        self,
        server: ServerRuntime,
        now: float,
        cause: Cause = Cause.PASSIVE,
        actor: str | None = None,
        reason: str = "ejection over",
    ) -> None:
        track = server.outlier
        assert track is not None
        pool = self.pools[server.pool]
        before = server.status
        track.restore(now)
        pool.ejected.pop(server, None)
        pending = self._changed(pool, server, now)
        detail: dict[str, object] = {"times_ejected": track.times}
        self._passive(EventKind.SERVER_RETURNED, pool, server, before, reason, detail, cause, actor)
        self._emit_all(pending)

    def _passive(
        self,
        kind: EventKind,
        pool: PoolRuntime,
        server: ServerRuntime,
        before: str | None,
        reason: str,
        detail: dict[str, object],
        cause: Cause = Cause.PASSIVE,
        actor: str | None = None,
    ) -> None:
        """An event of passive outlier detection (``before``: the status it left, if any;
        ``cause``, ``actor``: an operator's, when one ended the ejection)."""
        after = None if before is None else server.status
        self.emit(
            make_event(
                self.clock,
                kind,
                pool,
                server=server.name,
                from_=before,
                to=after,
                cause=cause.value,
                actor=actor,
                reason=reason,
                detail=detail,
            )
        )

    def _returning(self, server: ServerRuntime, at: float) -> bool:
        """The return (``at``, ``server``) still stands: the server is in its pool and
        ejected until then."""
        pool = self.pools.get(server.pool)
        track = server.outlier
        return (
            pool is not None
            and pool.server_or_none(server.name) is server
            and track is not None
            and track.ejected_until == at
        )

    def _fire_returns(self, now: float) -> None:
        """Return every server whose ejection is over at ``now`` (from Registry.tick)."""
        returns = self._returns
        while returns and returns[0][0] <= now:
            at, _, server = heapq.heappop(returns)
            if self._returning(server, at):
                self._return(server, now)

    def _next_return(self) -> float | None:
        returns = self._returns
        while returns and not self._returning(returns[0][2], returns[0][0]):
            heapq.heappop(returns)
        return returns[0][0] if returns else None


__all__ = ["Ejections"]
