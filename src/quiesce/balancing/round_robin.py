"""Round robin and smooth weighted round robin (nginx's algorithm).

Per-pick cost: nginx's smooth weighting walks every candidate, which is exact and cheap for a
small pool but O(n) per pick. Above :data:`EDF_THRESHOLD` candidates, when the candidate set
carries a ``generation`` (the pool's eligible set, :class:`quiesce.state.runtime.Members`,
counts its changes and its members' weight changes), the same weights are served by an
earliest-deadline-first scheduler (Envoy's): a heap of ``(deadline, order, candidate)``,
each pick pops the earliest and puts it back ``1 / weight`` later: O(log n) per pick, the
heap corrected for each server that changed (the set's change log: O(log n) per change),
rebuilt over the set only at the first pick or when the log was outrun. Plain round robin
checks the weights once per generation, not per pick.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Any, cast

from quiesce.balancing.base import Candidate, configured_weight

EDF_THRESHOLD = 64
"""Above this many candidates (and with a candidate set that counts its changes) weighted
picks use the EDF scheduler; at or below it, nginx's smooth weighted round robin exactly."""


def generation(candidates: Sequence[Candidate]) -> int | None:
    """The change count of a candidate set that keeps one (None for a plain list)."""
    gen = getattr(candidates, "generation", None)
    return gen if isinstance(gen, int) else None


class SmoothWeighted:
    """nginx's smooth weighted round robin: each pick adds every candidate's weight to its
    running score, takes the highest and subtracts the total from it. Weights 5,1,1 give
    a a b a c a a rather than a a a a a b c. Scores are kept by name so a candidate set that
    changes between picks (a server drained, one added back) keeps the spread smooth."""

    def __init__(self) -> None:
        self._current: dict[str, float] = {}
        self._rr = 0
        # EDF (large candidate sets): the set and generation the heap is up to date with, the
        # heap, each server's live entry, the count of stale ones and the virtual time
        self._edf_of: Sequence[Candidate] | None = None
        self._edf_gen = -1
        # entries are [deadline, order, candidate, 1/weight, live]: lists, so that a pick
        # moves the top entry in place and a change marks a server's entry stale
        self._heap: list[list[Any]] = []
        self._entries: dict[str, list[Any]] = {}
        self._stale = 0
        self._seq = 0
        self._now = 0.0

    def weight(self, candidate: Candidate) -> float:
        return max(0.0, candidate.effective_weight)

    def pick(self, candidates: Sequence[Candidate], key: str | None) -> Candidate | None:
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > EDF_THRESHOLD:
            gen = generation(candidates)
            if gen is not None:
                return self._edf_pick(candidates, gen)
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

    def _edf_pick(self, candidates: Sequence[Candidate], gen: int) -> Candidate:
        if candidates is not self._edf_of or gen != self._edf_gen:
            self._edf_update(candidates, gen)
        heap = self._heap
        while heap:
            entry = heap[0]
            if entry[4]:
                deadline = entry[0]
                self._now = deadline
                entry[0] = deadline + entry[3]
                heapq.heapreplace(heap, entry)
                return cast(Candidate, entry[2])
            heapq.heappop(heap)  # a server that left or changed weight since it was pushed
            self._stale -= 1
        # Every weight is 0: take turns anyway, as the smooth path does.
        self._rr += 1
        return candidates[self._rr % len(candidates)]

    def _edf_update(self, candidates: Sequence[Candidate], gen: int) -> None:
        """Bring the heap to this generation of the candidate set: for each server of the
        set's change log, its entry is marked stale and a new one pushed (O(log n) each);
        rebuilt over the set when there is no log to follow or stale entries pile up."""
        log: list[Candidate] | None = getattr(candidates, "log", None)
        start = getattr(candidates, "log_start", None)
        at = self._edf_gen
        if (
            candidates is not self._edf_of
            or log is None
            or not isinstance(start, int)
            or at < start
            or gen - at > len(log)
        ):
            self._edf_build(candidates, gen)
            return
        entries = self._entries
        for c in log[at - start : gen - start]:
            old = entries.pop(c.name, None)
            if old is not None:
                old[4] = False
                self._stale += 1
            if c in candidates:
                self._schedule(c, old[0] if old is not None else None)
        self._edf_gen = gen
        if self._stale > len(entries) + EDF_THRESHOLD:
            self._edf_build(candidates, gen)

    def _schedule(self, c: Candidate, deadline: float | None) -> None:
        """Push ``c``: at its old deadline if it had one, at most one period of its weight
        from now (so a weight raised takes effect at once and a change does not restart the
        spread)."""
        w = self.weight(c)
        if w <= 0:
            return
        step = 1.0 / w
        first = self._now + step
        entry = [first if deadline is None else min(deadline, first), self._seq, c, step, True]
        self._seq += 1
        self._entries[c.name] = entry
        heapq.heappush(self._heap, entry)

    def _edf_build(self, candidates: Sequence[Candidate], gen: int) -> None:
        """The heap over the whole candidate set (the first pick, after a long gap)."""
        before = {name: e[0] for name, e in self._entries.items()}
        self._heap, self._entries, self._stale = [], {}, 0
        for c in candidates:
            self._schedule(c, before.get(c.name))
        self._edf_of, self._edf_gen = candidates, gen


class RoundRobin:
    """Plain round robin: configured weights are ignored, but weight 0 and the slow-start
    factor are honoured (by falling back to smooth weighting on the factors while they
    differ)."""

    def __init__(self) -> None:
        self._next = 0
        self._smooth = _FactorWeighted()
        # the candidates whose weight is 0 or ramping, for the set and generation seen
        self._seen: Sequence[Candidate] | None = None
        self._seen_gen = -1
        self._off: set[str] = set()

    def pick(self, candidates: Sequence[Candidate], key: str | None) -> Candidate | None:
        n = len(candidates)
        if n <= 1:
            return candidates[0] if n else None
        if self._skew(candidates):
            return self._smooth.pick(candidates, key)
        choice = candidates[self._next % n]
        self._next += 1
        return choice

    def _skew(self, candidates: Sequence[Candidate]) -> bool:
        """Whether some candidate's effective weight is 0 or differs from its configured
        weight (slow start): kept per changed server from the set's change log (O(log n)
        each), a pass over the set only for a plain list or a log outrun; O(1) per pick."""
        gen = generation(candidates)
        if gen is None or candidates is not self._seen:
            self._off = {c.name for c in candidates if _off_weight(c)}
        elif gen != self._seen_gen:
            log: list[Candidate] | None = getattr(candidates, "log", None)
            start = getattr(candidates, "log_start", None)
            at = self._seen_gen
            if log is None or not isinstance(start, int) or at < start or gen - at > len(log):
                self._off = {c.name for c in candidates if _off_weight(c)}
            else:
                for c in log[at - start : gen - start]:
                    self._off.discard(c.name)
                    if c in candidates and _off_weight(c):
                        self._off.add(c.name)
        if gen is not None:
            self._seen, self._seen_gen = candidates, gen
        return bool(self._off)


def _off_weight(c: Candidate) -> bool:
    ew = c.effective_weight
    return ew <= 0 or ew != getattr(c, "weight", ew)


class _FactorWeighted(SmoothWeighted):
    def weight(self, candidate: Candidate) -> float:
        configured = configured_weight(candidate)
        if configured <= 0:
            return 0.0
        return max(0.0, candidate.effective_weight / configured)


class WeightedRoundRobin(SmoothWeighted):
    """``weighted_round_robin``: smooth weighted round robin on ``effective_weight``."""
