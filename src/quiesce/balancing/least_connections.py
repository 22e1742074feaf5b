"""Least connections, weighted: the lowest ``active / effective_weight`` wins.

Per-pick cost: the exact rule scans every candidate (O(n)). Above
:data:`~quiesce.balancing.round_robin.EDF_THRESHOLD` candidates in a set that counts its
changes (a pool's eligible set), a pick is two choices, as Envoy's ``least_request`` does
for large host sets (power of d choices, here d = 3): the weighted scheduler's next
candidate (EDF, O(log n)) and :data:`OTHERS` drawn uniformly at random; one of those wins
only if it is strictly less loaded. An idle pool is thus spread exactly by weight, and a
loaded server mostly loses its turn to a less loaded one (approximate: it keeps a turn when
both others drawn are as loaded), without a pass over the pool or a hook on every
connection count. At or below the threshold, the exact rule.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from quiesce.balancing.base import Candidate
from quiesce.balancing.round_robin import EDF_THRESHOLD, SmoothWeighted, generation

OTHERS = 2
"""Candidates drawn at random to compare with the scheduler's in a large pool."""


class LeastConnections:
    """Picks the candidate with the fewest live connections per unit of weight (nginx's
    ``least_conn``). Ties — an idle pool above all — are broken by smooth weighted round
    robin, so an idle pool is spread by weight and a server under slow start gets its ramped
    share rather than nothing."""

    def __init__(self, seed: int = 0) -> None:
        self._ties = SmoothWeighted()
        self._random = random.Random(seed)  # not security: which of two servers to compare

    def pick(self, candidates: Sequence[Candidate], key: str | None) -> Candidate | None:
        n = len(candidates)
        if n == 0:
            return None
        if n == 1:
            return candidates[0]
        if n > EDF_THRESHOLD and generation(candidates) is not None:
            return self._two_choices(candidates, key)
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

    def _two_choices(self, candidates: Sequence[Candidate], key: str | None) -> Candidate:
        first = self._ties.pick(candidates, key)
        assert first is not None  # candidates is not empty
        w = first.effective_weight
        if w <= 0:
            return first  # every weight is 0 (the scheduler takes turns)
        best, load = first, first.active / w
        for _ in range(OTHERS):
            other = candidates[self._random.randrange(len(candidates))]
            ow = other.effective_weight
            if ow > 0 and other.active / ow < load:
                best, load = other, other.active / ow
        return best
