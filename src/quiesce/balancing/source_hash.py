"""Consistent source-address hashing: multi-probe consistent hashing (Appleton and O'Reilly,
Google, 2015) on a ring kept up to date per changed server.

Theory of operation
-------------------
Each server puts ``weight`` points on a ring of 64-bit positions (a stable hash of its name
and the point's number). A client address is hashed to :data:`PROBES` positions; each probe
finds the next point clockwise, and the client goes to the owner of the nearest one (the
smallest gap between a probe and its point). Every point wins about the same share of
clients whatever the gaps between points (a probe lands within ``d`` before a given point
with probability ``d``), so shares follow the weights closely with
:data:`POINTS_PER_WEIGHT` points per unit of weight (100 servers: the most loaded at 1.11
times its share), where a plain ring needs a hundred points or more for as much.

It is *consistent*: a server that leaves takes its points away, and only the clients whose
nearest point was one of them move (every other client's nearest point is still there, and
no gap shrank); a server that joins takes only the clients whose nearest point is now one of
its own; a weight change moves clients to or from that server only. The mapping is a pure
function of the client address and the eligible servers with their weights, so every node
of a cluster, and a restarted process, maps a client to the same server. Slow start scales
a ramping server's gaps by ``1 / factor``: its share grows with the factor, and the clients
that move are the ones it takes.

Cost: a pick is one hash and :data:`PROBES` binary searches, O(log n), whatever the pool's
size. The ring follows the eligible set's change log (:class:`quiesce.state.runtime.Members`:
``generation``, ``log``): a server that changed has its points taken out and put back,
O(weight x log n). It is built over the whole set only at the first pick from each set (a
pool's primaries, its backups: the other set's ring is kept while the pool serves from one;
CPU: 0.08 s for 10,000 servers of weights 1-4, 1.2 s for 100,000, a stall of the loop at
that pick, BENCHMARKS.md). When the log was outrun (more changes than the set has members
between two picks) the set is compared with the ring and only the servers that changed are
hashed. The ring is a sorted list of blocks (positions and owners side by side), so a
point goes in or out in O(log n) plus a block's length.

Before issue 21 this was weighted rendezvous hashing: every pick scored every candidate
(O(n)). Both are consistent and weighted; the mapping itself differs, so after an upgrade
from a version with rendezvous hashing every client may map to another server, once.
"""

from __future__ import annotations

import hashlib
import struct
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

from quiesce.balancing.base import Candidate, configured_weight
from quiesce.balancing.round_robin import generation

PROBES = 21
"""Probes per client address: 21 gives a peak-to-mean load of about 1.05 (the paper's)."""
POINTS_PER_WEIGHT = 2
"""Points a server puts on the ring per unit of weight: each point's share depends a little
on the gap before it, and more points average that out. Measured with 100 servers of equal
weight and 200,000 clients: one point, the least loaded server at 0.43 of its share (5% of
them under 0.70) and the most at 1.11; two points, 0.52 (5% under 0.82) and 1.11; four,
0.79 (0.91) and 1.07, for twice the memory and the build time of two. HAProxy's consistent
hash (a plain ring, 16 points per unit of weight) spreads about +-25%."""
BLOCK = 512
"""A block of the ring is split in two past twice this many points."""
_MASK = (1 << 64) - 1
_INDEX = (1 << 24) - 1  # a server's index in a build: up to 16 million servers


_EIGHT = struct.Struct(">8Q")


def positions(name: str, count: int) -> list[int]:
    """The ring positions of a server's first ``count`` points (eight per hash: a 64-byte
    digest of the name and a block number, cut in eight)."""
    out: list[int] = []
    block = 0
    while len(out) < count:
        digest = hashlib.blake2b(f"{name}\0{block}".encode(), digest_size=64).digest()
        out += _EIGHT.unpack(digest)
        block += 1
    return out[:count]


def points_of(candidate: Candidate) -> int:
    """How many points a candidate puts on the ring: its weight (0: none)."""
    weight = configured_weight(candidate)
    if weight <= 0 or candidate.effective_weight <= 0:
        return 0
    return max(1, round(weight * POINTS_PER_WEIGHT))


class Ring:
    """Positions on the ring and their owners, sorted, in blocks (see the module's theory)."""

    def __init__(self) -> None:
        self._pos: list[list[int]] = []
        self._own: list[list[Candidate]] = []
        self._maxes: list[int] = []  # each block's last position
        self.points = 0

    @classmethod
    def build(cls, keys: list[int], owners: list[Candidate]) -> Ring:
        """From ``position << 24 | owner's index`` for every point: one sort of integers."""
        keys.sort()
        ring = cls()
        for start in range(0, len(keys), BLOCK):
            chunk = keys[start : start + BLOCK]
            ring._pos.append([k >> 24 for k in chunk])
            ring._own.append([owners[k & _INDEX] for k in chunk])
            ring._maxes.append(ring._pos[-1][-1])
        ring.points = len(keys)
        return ring

    def add(self, position: int, owner: Candidate) -> None:
        if not self._maxes:
            self._pos, self._own, self._maxes = [[position]], [[owner]], [position]
            self.points = 1
            return
        k = min(bisect_left(self._maxes, position), len(self._maxes) - 1)
        pos, own = self._pos[k], self._own[k]
        i = bisect_left(pos, position)
        while i < len(pos) and pos[i] == position and own[i].name < owner.name:
            i += 1  # the same position twice (2^-64): ordered by name, not by arrival
        pos.insert(i, position)
        own.insert(i, owner)
        self._maxes[k] = pos[-1]
        self.points += 1
        if len(pos) > 2 * BLOCK:
            self._pos.insert(k + 1, pos[BLOCK:])
            self._own.insert(k + 1, own[BLOCK:])
            del pos[BLOCK:], own[BLOCK:]
            self._maxes[k] = pos[-1]
            self._maxes.insert(k + 1, self._pos[k + 1][-1])

    def remove(self, position: int, name: str) -> None:
        k = bisect_left(self._maxes, position)
        while k < len(self._maxes):
            pos, own = self._pos[k], self._own[k]
            i = bisect_left(pos, position)
            while i < len(pos) and pos[i] == position:
                if own[i].name == name:
                    del pos[i], own[i]
                    self.points -= 1
                    if pos:
                        self._maxes[k] = pos[-1]
                    else:
                        del self._pos[k], self._own[k], self._maxes[k]
                    return
                i += 1
            if i < len(pos):
                return
            k += 1

    def nearest(self, key: str, scale: dict[str, float]) -> Candidate | None:
        """The owner of the point nearest after one of the key's probes (gaps of a ramping
        server divided by its factor)."""
        maxes = self._maxes
        if not maxes:
            return None
        digest = hashlib.blake2b(key.encode(), digest_size=16).digest()
        h1 = int.from_bytes(digest[:8], "big")
        h2 = int.from_bytes(digest[8:], "big") | 1
        blocks, owners, last = self._pos, self._own, len(maxes)
        best: Candidate | None = None
        best_gap = float("inf")
        for n in range(PROBES):
            probe = (h1 + n * h2) & _MASK
            k = bisect_left(maxes, probe)
            if k == last:  # past the last point: the ring wraps to the first
                k = i = 0
            else:
                i = bisect_left(blocks[k], probe)
            owner = owners[k][i]
            gap: float = (blocks[k][i] - probe) & _MASK
            if scale:
                gap /= scale.get(owner.name, 1.0)
            if gap < best_gap:
                best, best_gap = owner, gap
        return best

    def nearest_of(
        self, key: str, scale: dict[str, float], allowed: set[Candidate]
    ) -> Candidate | None:
        """:meth:`nearest` over the points of ``allowed`` only (a retry excluding servers):
        the answer of a ring of those servers alone."""
        if not self._maxes:
            return None
        digest = hashlib.blake2b(key.encode(), digest_size=16).digest()
        h1 = int.from_bytes(digest[:8], "big")
        h2 = int.from_bytes(digest[8:], "big") | 1
        best: Candidate | None = None
        best_gap = float("inf")
        for n in range(PROBES):
            probe = (h1 + n * h2) & _MASK
            k = bisect_left(self._maxes, probe)
            i = 0 if k == len(self._maxes) else bisect_left(self._pos[k], probe)
            k %= len(self._maxes)
            for _ in range(self.points):  # walk on past the points of excluded servers
                if i == len(self._pos[k]):
                    k, i = (k + 1) % len(self._maxes), 0
                owner = self._own[k][i]
                if owner in allowed:
                    gap: float = (self._pos[k][i] - probe) & _MASK
                    if scale:
                        gap /= scale.get(owner.name, 1.0)
                    if gap < best_gap:
                        best, best_gap = owner, gap
                    break
                i += 1
        return best


class SourceIpHash:
    """``source_ip_hash``: the module's multi-probe ring; a connection without a client
    address (a Unix socket) takes turns."""

    def __init__(self) -> None:
        self._rr = 0
        self._ring = Ring()
        self._of: Sequence[Candidate] | None = None  # the candidate set the ring follows
        self._gen = -1
        self._count: dict[str, int] = {}  # points on the ring, by server name
        self._held: dict[str, Candidate] = {}  # the object that holds them
        self._scale: dict[str, float] = {}  # slow-start factor of ramping servers (< 1)
        # the other set's ring (a pool's primaries and its backups): kept, not rebuilt, when
        # the pool switches back
        self._parked: tuple[Any, ...] | None = None

    def pick(self, candidates: Sequence[Candidate], key: str | None) -> Candidate | None:
        if not candidates:
            return None
        if key is None:
            self._rr += 1
            return candidates[self._rr % len(candidates)]
        gen = generation(candidates)
        if gen is None:
            choice = self._pick_from_list(candidates, key)
        else:
            if candidates is not self._of or gen != self._gen:
                self._update(candidates, gen)
            choice = self._ring.nearest(key, self._scale)
        if choice is None:  # every weight is 0: take turns anyway
            self._rr += 1
            return candidates[self._rr % len(candidates)]
        return choice

    def _pick_from_list(self, candidates: Sequence[Candidate], key: str) -> Candidate | None:
        """A plain list: the candidate set the ring follows less some servers (a retry's
        exclusions) is answered from the ring; anything else gets a ring of its own."""
        of, held = self._of, self._held
        if (
            of is not None
            and generation(of) == self._gen
            and len(candidates) <= len(of)
            and all(held.get(c.name) is c or not points_of(c) for c in candidates)
        ):
            return self._ring.nearest_of(key, self._scale, set(candidates))
        ring, scale = _ring_of(candidates)
        return ring.nearest(key, scale)

    def _update(self, candidates: Sequence[Candidate], gen: int) -> None:
        """Bring the ring to this generation of the set: each server of the change log has
        its points taken out and put back (O(weight x log n)); built over the set when there
        is no log to follow."""
        log: list[Candidate] | None = getattr(candidates, "log", None)
        start = getattr(candidates, "log_start", None)
        if candidates is not self._of:
            here = (self._of, self._gen, self._ring, self._count, self._held, self._scale)
            parked, self._parked = self._parked, here if self._of is not None else None
            if parked is not None and parked[0] is candidates:
                (self._of, self._gen, self._ring, self._count, self._held, self._scale) = parked
        at = self._gen
        if candidates is not self._of:
            self._ring, self._scale = _ring_of(candidates)
            self._count, self._held = {}, {}
            for c in candidates:
                if n := points_of(c):
                    self._count[c.name], self._held[c.name] = n, c
        elif log is None or not isinstance(start, int) or at < start or gen - at > len(log):
            # the log was outrun (a burst between two picks): compare with the set, and
            # hash only the servers that changed (a flap that ends where it began: none)
            seen = set()
            for c in candidates:
                seen.add(c.name)
                if self._stale(c):
                    self._replace(c, True)
            for name in [n for n in self._held if n not in seen]:
                self._replace(self._held[name], False)
        else:
            for c in dict.fromkeys(log[at - start : gen - start]):  # each server once
                self._replace(c, c in candidates)
        self._of, self._gen = candidates, gen

    def _stale(self, c: Candidate) -> bool:
        """Whether the ring holds ``c`` otherwise than it is now."""
        n = points_of(c)
        if not n:
            return c.name in self._held
        return (
            self._held.get(c.name) is not c
            or self._count[c.name] != n
            or self._scale.get(c.name, 1.0) != _factor(c)
        )

    def _replace(self, c: Candidate, present: bool) -> None:
        """``c`` joined, left or changed weight: its points out and in again; a ramping
        server whose points stay (slow start moved its factor) only gets its new scale."""
        ring, name = self._ring, c.name
        had = self._count.pop(name, 0)
        held = self._held.pop(name, None)
        self._scale.pop(name, None)
        n = points_of(c) if present else 0
        if held is not c:  # the same name may come back as a new object: all points anew
            at = positions(name, max(had, n))
            for position in at[:had]:
                ring.remove(position, name)
            for position in at[:n]:
                ring.add(position, c)
        elif n != had:  # a weight change: only the points beyond the smaller count
            at = positions(name, max(had, n))
            for position in at[n:had]:
                ring.remove(position, name)
            for position in at[had:n]:
                ring.add(position, c)
        if n:
            self._count[name], self._held[name] = n, c
            factor = _factor(c)
            if factor < 1.0:
                self._scale[name] = factor


def _factor(c: Candidate) -> float:
    configured = configured_weight(c)
    return 1.0 if configured <= 0 else max(0.0, min(1.0, c.effective_weight / configured))


def _ring_of(candidates: Sequence[Candidate]) -> tuple[Ring, dict[str, float]]:
    keys: list[int] = []
    owners: list[Candidate] = []
    scale: dict[str, float] = {}
    for c in candidates:
        n = points_of(c)
        if n:
            index = len(owners)
            owners.append(c)
            keys += [p << 24 | index for p in positions(c.name, n)]
            factor = _factor(c)
            if factor < 1.0:
                scale[c.name] = factor
    return Ring.build(keys, owners), scale


__all__ = ["PROBES", "Ring", "SourceIpHash", "points_of", "positions"]
