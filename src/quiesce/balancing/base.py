"""The balancing interface: sans-IO algorithms that pick one candidate.

An algorithm instance belongs to one pool and may keep state between picks (a round-robin
cursor, smooth weighted round-robin's current weights). It is handed the candidates of this
moment — already filtered to eligible servers, with backups only when no primary is eligible,
and with slow-start applied to ``effective_weight`` — and returns one of them.

Every algorithm honours ``effective_weight`` where weights make sense: a candidate with weight
0 is never picked while another has weight, and a server ramping up under slow start gets a
share that grows with its factor (plain round robin compares ``effective_weight`` with
``weight`` to find that factor, so configured weights do not skew it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Candidate(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def effective_weight(self) -> float:
        """Configured (or runtime) weight times the slow-start factor; 0 means never picked
        while another candidate has weight."""
        ...

    @property
    def active(self) -> int:
        """Live connections (least_connections counts these)."""
        ...


class Algorithm(Protocol):
    def pick(self, candidates: Sequence[Candidate], key: str | None) -> Candidate | None:
        """Pick one of ``candidates`` (None only when it is empty). ``key`` is the hash key
        (client address for source_ip_hash)."""
        ...


def configured_weight(candidate: Candidate) -> float:
    """The weight before slow start (``weight`` when the candidate has one)."""
    weight = getattr(candidate, "weight", None)
    return float(weight) if isinstance(weight, int | float) else candidate.effective_weight
