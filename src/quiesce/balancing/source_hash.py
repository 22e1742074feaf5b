"""Consistent source-address hashing (weighted rendezvous hashing).

Each (key, server) pair gets a pseudo-random score from a stable hash; the highest score wins.
Removing a server therefore moves only the keys it had won (every other key keeps its winner),
and adding one takes only the keys it now wins — consistent hashing without a ring to rebuild.
Weights use the logarithmic method (score = -w / ln(u)), so a server of weight 2 wins twice
the share of one of weight 1, and slow start ramps a server's share with its factor.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

from quiesce.balancing.base import Candidate

_SCALE = float(1 << 64)


def _unit(key: str, name: str) -> float:
    """A stable uniform number in (0, 1) for the pair."""
    digest = hashlib.blake2b(f"{key}\0{name}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / _SCALE


class SourceIpHash:
    def __init__(self) -> None:
        self._rr = 0

    def pick(self, candidates: Sequence[Candidate], key: str | None) -> Candidate | None:
        if not candidates:
            return None
        if key is None:
            self._rr += 1
            return candidates[self._rr % len(candidates)]
        best: Candidate | None = None
        best_score = -math.inf
        for c in candidates:
            w = c.effective_weight
            if w <= 0:
                continue
            score = -w / math.log(_unit(key, c.name))
            if score > best_score:
                best, best_score = c, score
        return best if best is not None else candidates[0]
