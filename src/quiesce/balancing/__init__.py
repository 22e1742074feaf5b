"""Balancing algorithms, a registry of sans-IO classes named as the config names them.

=====================  ================================================================
``round_robin``        each candidate in turn (configured weights ignored; weight 0 and
                       slow start honoured)
``weighted_round_robin``  smooth weighted round robin, nginx-style (EDF, Envoy-style,
                          above 64 candidates)
``least_connections``  fewest live connections per unit of weight; ties rotate (power of
                       three choices above 64 candidates)
``source_ip_hash``     multi-probe consistent hash of the client address on a ring
                       (O(log n)): stable, and removing a server moves only its share
=====================  ================================================================
"""

from __future__ import annotations

from collections.abc import Callable

from quiesce.balancing.base import Algorithm, Candidate
from quiesce.balancing.least_connections import LeastConnections
from quiesce.balancing.round_robin import RoundRobin, WeightedRoundRobin
from quiesce.balancing.source_hash import SourceIpHash

ALGORITHMS: dict[str, Callable[[], Algorithm]] = {
    "round_robin": RoundRobin,
    "weighted_round_robin": WeightedRoundRobin,
    "least_connections": LeastConnections,
    "source_ip_hash": SourceIpHash,
}


def make_algorithm(name: str) -> Algorithm:
    try:
        return ALGORITHMS[name]()
    except KeyError:
        raise ValueError(f"unknown balancing algorithm {name!r}") from None


__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "Candidate",
    "LeastConnections",
    "RoundRobin",
    "SourceIpHash",
    "WeightedRoundRobin",
    "make_algorithm",
]
