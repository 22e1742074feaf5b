"""Traffic counters: HAProxy's ``bin``/``bout`` and its per-server time averages (``show stat``
``ctime``, ``rtime``, ``ttime``), kept as HAProxy keeps them: a running average over about the
last 1024 requests (HAProxy's ``swrate``: each new sample takes 1/1024 of the sum's weight),
updated once per request.

A server's :class:`Traffic` record (``ServerRuntime.traffic``; a service has one too, for its
bytes) keeps the client bytes, ``bytes_in`` and ``bytes_out``, and, in seconds, the decayed
sums ``rtime_sum`` and ``ttime_sum`` (``sum * DECAY + sample`` per timed request) with
``timed``, the requests timed. The data plane adds a request with one call, :func:`account`
(``quiesce._httpfast``'s, in C, when it is built: the cheapest place, a call instead of seven
attribute updates per request; else the pure twin below).

The average is the sum divided by the weight of ``timed`` samples,
``(1 - DECAY**timed) / (1 - DECAY)``: the plain mean of the first samples, HAProxy's
``sum / 1024`` once there are many (HAProxy 2.6 divides by 1024 from the first sample, so its
averages climb slowly after a start; later versions divide by the samples seen, as here).

Connect times are 0 for a request on a reused connection, which is most of them: rather
than add a 0 to a third sum per request, a connect adds its time to ``ctime_sum`` decayed
lazily, as of the sample count ``ctime_at`` (:func:`connected`), and the reader decays it to
``timed``. Sans-IO.

The response time of an answered request also goes into the server's latency histogram
(:data:`LATENCY`, made by its first timed request, forgotten by :mod:`quiesce.state.series`
with the server): one dict lookup, one bisect
over :data:`BOUNDS` (:func:`bucket`) and an add, inline on the keep-alive fast path
(``quiesce.dataplane.h1.response``), through :func:`account_timed` elsewhere.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from quiesce import _accel

SAMPLES = 1024  # HAProxy's TIME_STATS_SAMPLES
DECAY = 1.0 - 1.0 / SAMPLES  # quiesce/_ext/httpfast.c has the same


class PyTraffic:
    """A server's or a service's traffic (the pure twin of ``quiesce._httpfast.Traffic``)."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "ctime_at",
        "ctime_sum",
        "rtime_sum",
        "timed",
        "ttime_sum",
    )

    def __init__(self) -> None:
        self.bytes_in = 0
        self.bytes_out = 0
        self.timed = 0
        self.ctime_at = 0
        self.rtime_sum = 0.0
        self.ttime_sum = 0.0
        self.ctime_sum = 0.0


def py_account(server: Any, service: Any, nin: int, nout: int, rtime: float, ttime: float) -> None:
    """One request's client bytes to ``service`` and ``server`` (None: no server), and, when
    ``rtime`` >= 0 (the server answered), its response and total times (s) to the server's
    running sums."""
    service.bytes_in += nin
    service.bytes_out += nout
    if server is not None:
        server.bytes_in += nin
        server.bytes_out += nout
        if rtime >= 0.0:
            server.timed += 1
            server.rtime_sum = server.rtime_sum * DECAY + rtime
            server.ttime_sum = server.ttime_sum * DECAY + ttime


_c = _accel.httpfast
Traffic: Callable[[], Any] = PyTraffic if _c is None else _c.Traffic
NO_TRAFFIC: Any = Traffic()
"""The zeros a server reads as its traffic before its first request (``ServerRuntime.traffic``;
its own record is made by the first write, ``new_traffic``): shared, never written."""
account: Callable[[Any, Any, int, int, float, float], None] = (
    py_account if _c is None else _c.account
)

# Latency histograms (quiesce.state.series): a server's traffic record -> bucket counts, the
# bucket of a time t the first bound >= t (the last one: above every bound). Upper bounds in
# seconds, 4 per octave from ~31 µs to ~137 s.
BOUNDS: tuple[float, ...] = tuple(2.0 ** (k / 4) for k in range(-60, 30))
# A server's histogram is made by its first timed request (:func:`new_latency`): a server
# without traffic has none (its 91 counts would be most of its memory, issue 21); the series
# forgets those of servers deleted.
LATENCY: dict[Any, list[int]] = {}
latency_of = LATENCY.get
bucket: Callable[[float], int] = partial(bisect_left, BOUNDS)  # a time's bucket


def new_latency(server: Any) -> list[int]:
    """The latency histogram of a server's traffic record, made empty if it has none."""
    return LATENCY.setdefault(server, [0] * (len(BOUNDS) + 1))


def account_timed(
    server: Any, service: Any, nin: int, nout: int, rtime: float, ttime: float
) -> None:
    """:func:`account`, and the response time in the server's latency histogram."""
    account(server, service, nin, nout, rtime, ttime)
    if rtime >= 0.0 and server is not None:
        (latency_of(server) or new_latency(server))[bucket(rtime)] += 1


def connected(traffic: Any, seconds: float) -> None:
    """A new connection to a server took ``seconds`` to establish (counted with the request
    that opened it, the next one timed)."""
    at = traffic.timed + 1
    traffic.ctime_sum = traffic.ctime_sum * DECAY ** max(0, at - traffic.ctime_at) + seconds
    traffic.ctime_at = at


def _weight(n: int) -> float:
    return (1.0 - DECAY**n) * SAMPLES


def sums(traffic: Any) -> tuple[float, float, float, float]:
    """(weight, connect, response, total): the decayed sums of a server's samples and their
    weight, in seconds (all 0 before the first timed request)."""
    n = traffic.timed
    if n <= 0:
        return 0.0, 0.0, 0.0, 0.0
    ctime = traffic.ctime_sum * DECAY ** max(0, n - traffic.ctime_at)
    return _weight(n), ctime, traffic.rtime_sum, traffic.ttime_sum


def averages_ms(servers: Iterable[Any]) -> tuple[int, int, int]:
    """HAProxy's ``ctime``, ``rtime``, ``ttime`` in whole milliseconds: of one server, or of a
    pool (its servers' windows together, each weighted by its samples: HAProxy keeps a
    separate window per backend, which this approximates)."""
    w = c = r = t = 0.0
    for s in servers:
        sw, sc, sr, st = sums(s.traffic)
        w += sw
        c += sc
        r += sr
        t += st
    if w <= 0.0:
        return 0, 0, 0
    k = 1000.0 / w
    return round(c * k), round(r * k), round(t * k)


__all__ = [
    "BOUNDS",
    "DECAY",
    "LATENCY",
    "NO_TRAFFIC",
    "SAMPLES",
    "PyTraffic",
    "Traffic",
    "account",
    "account_timed",
    "averages_ms",
    "bucket",
    "connected",
    "latency_of",
    "new_latency",
    "py_account",
    "sums",
]
