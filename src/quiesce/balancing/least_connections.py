"""Least connections, weighted: the lowest ``active / effective_weight`` wins."""

from __future__ import annotations

from collections.abc import Sequence

from quiesce.balancing.base import Candidate
from quiesce.balancing.round_robin import SmoothWeighted


class LeastConnections:
    """Picks the candidate with the fewest live connections per unit of weight (nginx's
    ``least_conn``). Ties — an idle pool above all — are broken by smooth weighted round
    robin, so an idle pool is spread by weight and a server under slow start gets its ramped
    share rather than nothing."""

    def __init__(self) -> None:
        self._ties = SmoothWeighted()

    def pick(self, candidates: Sequence[Candidate], key: str | None) -> Candidate | None:
        n = len(candidates)
        if n == 0:
            return None
        if n == 1:
            return candidates[0]
        best: list[Candidate] = []
        best_load = 0.0
        for c in candidates:
            w = c.effective_weight
            if w <= 0:
                continue
            load = c.active / w
            if not best or load < best_load:
                best, best_load = [c], load
            elif load == best_load:
                best.append(c)
        if not best:
            return self._ties.pick(candidates, key)
        if len(best) == 1:
            return best[0]
        return self._ties.pick(best, key)
