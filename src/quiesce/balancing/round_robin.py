"""Round robin and smooth weighted round robin (nginx's algorithm)."""

from __future__ import annotations

from collections.abc import Sequence

from quiesce.balancing.base import Candidate, configured_weight


class SmoothWeighted:
    """nginx's smooth weighted round robin: each pick adds every candidate's weight to its
    running score, takes the highest and subtracts the total from it. Weights 5,1,1 give
    a a b a c a a rather than a a a a a b c. Scores are kept by name so a candidate set that
    changes between picks (a server drained, one added back) keeps the spread smooth."""

    def __init__(self) -> None:
        self._current: dict[str, float] = {}
        self._rr = 0

    def weight(self, candidate: Candidate) -> float:
        return max(0.0, candidate.effective_weight)

    def pick(self, candidates: Sequence[Candidate], key: str | None) -> Candidate | None:
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        current = self._current
        if len(current) > 4 * len(candidates) + 16:
            # Forget servers that left long ago (renamed, removed by a reload).
            names = {c.name for c in candidates}
            self._current = current = {n: v for n, v in current.items() if n in names}
        total = 0.0
        best: Candidate | None = None
        best_score = 0.0
        for c in candidates:
            w = self.weight(c)
            if w <= 0:
                continue
            score = current.get(c.name, 0.0) + w
            current[c.name] = score
            total += w
            if best is None or score > best_score:
                best, best_score = c, score
        if best is None:
            # Every weight is 0: the operator left nothing with weight, take turns anyway.
            self._rr += 1
            return candidates[self._rr % len(candidates)]
        current[best.name] = best_score - total
        return best


class RoundRobin:
    """Plain round robin: configured weights are ignored, but weight 0 and the slow-start
    factor are honoured (by falling back to smooth weighting on the factors while they
    differ)."""

    def __init__(self) -> None:
        self._next = 0
        self._smooth = _FactorWeighted()

    def pick(self, candidates: Sequence[Candidate], key: str | None) -> Candidate | None:
        n = len(candidates)
        if n <= 1:
            return candidates[0] if n else None
        for c in candidates:
            ew = c.effective_weight
            if ew <= 0 or ew != getattr(c, "weight", ew):
                return self._smooth.pick(candidates, key)
        choice = candidates[self._next % n]
        self._next += 1
        return choice


class _FactorWeighted(SmoothWeighted):
    def weight(self, candidate: Candidate) -> float:
        configured = configured_weight(candidate)
        if configured <= 0:
            return 0.0
        return max(0.0, candidate.effective_weight / configured)


class WeightedRoundRobin(SmoothWeighted):
    """``weighted_round_robin``: smooth weighted round robin on ``effective_weight``."""
