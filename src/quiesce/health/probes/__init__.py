"""Probe types, one I/O shell each over the classifiers in :mod:`quiesce.health.classify`.

:data:`PROBERS` maps a monitor ``type`` to its implementation (uvicorn's config-maps-names
pattern); ``http``, ``https`` and ``tcp`` share one :class:`StreamProber` (one TLS context
cache), so :func:`group` names the instance a type uses.
"""

from __future__ import annotations

from collections.abc import Callable

from quiesce.core.clock import Clock
from quiesce.health.probes.base import Prober, Target
from quiesce.health.probes.grpc import GrpcProber
from quiesce.health.probes.mysql import MysqlProber
from quiesce.health.probes.postgresql import PostgresqlProber
from quiesce.health.probes.raw import HalfOpenProber, IcmpProber
from quiesce.health.probes.stream import StreamProber
from quiesce.health.probes.udp import UdpProber

PROBERS: dict[str, Callable[[Clock], Prober]] = {
    "stream": StreamProber,
    "udp": UdpProber,
    "tcp_half_open": HalfOpenProber,
    "icmp": IcmpProber,
    "postgresql": PostgresqlProber,
    "mysql": MysqlProber,
    "grpc": GrpcProber,
}


def group(kind: str) -> str:
    """The :data:`PROBERS` entry that checks monitors of type ``kind``."""
    return "stream" if kind in ("tcp", "http", "https") else kind


def make_prober(kind: str, clock: Clock) -> Prober:
    try:
        return PROBERS[group(kind)](clock)
    except KeyError:
        raise ValueError(f"unknown monitor type {kind!r}") from None


__all__ = [
    "PROBERS",
    "GrpcProber",
    "HalfOpenProber",
    "IcmpProber",
    "PostgresqlProber",
    "Prober",
    "StreamProber",
    "Target",
    "UdpProber",
    "group",
    "make_prober",
]
