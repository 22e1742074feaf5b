"""A node's link to the shared store and the nodes it knows, sans I/O (time is an argument).

:class:`Link` says whether this node's view of the shared state is current. The store shell
calls :meth:`Link.seen` whenever etcd answered (a watch event, a read, a write: each carries
the store's revision) and :meth:`Link.failed` when a call failed with an error. The link is

- ``up`` while the last answer is younger than ``stale_after``;
- ``stale`` when it is not and no error explains it (etcd frozen, a minority member: calls
  hang without failing);
- ``down`` when it is not and the last attempt failed (etcd unreachable), or when etcd answers
  but this node has not followed its changes for ``stale_after`` (:meth:`Link.behind`: its watch
  was lost and re-reading the prefix keeps failing; :attr:`Link.error` then says why).

``stale`` and ``down`` are both *isolated*: :meth:`Link.poll` returns ``"node_isolated"`` once
when the link stops being up and ``"node_rejoined"`` once when it is up again. A blip shorter
than ``stale_after`` changes nothing.

:class:`Members` is the table of nodes registered in the store (each under a lease): a record
put for a name not in the table is a join, a record deleted (its lease expired or revoked) a
leave.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

LinkState = Literal["up", "stale", "down"]
LinkChange = Literal["node_isolated", "node_rejoined"]


@dataclass
class Link:
    stale_after: float
    last_seen: float
    """When the store last answered (monotonic seconds)."""
    revision: int = 0
    """The highest store revision seen."""
    failing: bool = False
    error: str = ""
    isolated: bool = False
    isolated_since: float | None = None
    lagging: str = ""
    """Why this node does not follow the store's changes now, or "" (:meth:`behind`)."""
    lagging_since: float | None = None

    def seen(self, now: float, revision: int | None = None) -> None:
        self.last_seen = max(self.last_seen, now)
        if revision is not None:
            self.revision = max(self.revision, revision)
        self.failing, self.error = False, self.lagging

    def behind(self, now: float, reason: str) -> None:
        """The store may answer, but this node does not see its changes (``reason``; "": it
        does again). For ``stale_after`` nothing changes (a blip); then the link is down."""
        if reason and not self.lagging:
            self.lagging_since = now
        elif not reason:
            self.lagging_since = None
            self.error = "" if self.error == self.lagging else self.error
        self.lagging = reason
        if reason:
            self.error = reason  # it says what failed

    def failed(self, now: float, error: str) -> None:
        self.failing, self.error = True, self.lagging or error

    def lag(self, now: float) -> float:
        """Seconds since the store last answered."""
        return max(0.0, now - self.last_seen)

    def state(self, now: float) -> LinkState:
        since = self.lagging_since
        if since is not None and now - since >= self.stale_after:
            return "down"
        if self.lag(now) < self.stale_after:
            return "up"
        return "down" if self.failing else "stale"

    def poll(self, now: float) -> LinkChange | None:
        """The change of isolation since the last poll, if any (call it often)."""
        isolated = self.state(now) != "up"
        if isolated == self.isolated:
            return None
        self.isolated = isolated
        if isolated:
            self.isolated_since = min(self.last_seen, self.lagging_since or self.last_seen)
            return "node_isolated"
        return "node_rejoined"


@dataclass
class Members:
    me: str
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def put(self, name: str, record: dict[str, Any]) -> bool:
        """Store ``name``'s record; True when the node is new (a join; never this node)."""
        new = name not in self.nodes
        self.nodes[name] = record
        return new and name != self.me

    def remove(self, name: str) -> bool:
        """Forget ``name``; True when it was known (a leave; never this node)."""
        return self.nodes.pop(name, None) is not None and name != self.me

    def keep_only(self, names: set[str]) -> list[str]:
        """After a full read: forget the nodes not in ``names``; returns those that left."""
        gone = [n for n in self.nodes if n not in names]
        return [n for n in gone if self.remove(n)]


def cluster_guard(
    views: Mapping[str, Collection[str]],
    target: str,
    still_eligible: Callable[[str], bool],
    min_servers_up: int,
) -> tuple[str, int] | None:
    """``min_servers_up`` against every node's view of a pool: ``views`` maps a node to the
    servers it sees eligible (its health verdicts, as it published them); ``still_eligible``
    drops those the shared admin state took out since (a view may lag a second). Taking
    ``target`` out breaks the guard on the node that would have the fewest left: that node
    and what it would keep, or None."""
    if min_servers_up <= 0:
        return None
    worst: tuple[str, int] | None = None
    for node, eligible in sorted(views.items()):
        names = [n for n in eligible if n == target or still_eligible(n)]
        if target not in names:
            continue
        left = len(names) - 1
        if left < min_servers_up and (worst is None or left < worst[1]):
            worst = (node, left)
    return worst


def disagreements(
    verdicts: Mapping[str, Mapping[str, str]], default: str | None = None
) -> list[dict[str, Any]]:
    """The servers the nodes judge differently: ``verdicts`` maps a node to its health
    verdict per server (a server a node does not list: ``default``, or not judged there if
    None); each entry names the server and every node's verdict."""
    servers = sorted({key for per_node in verdicts.values() for key in per_node})
    out = []
    for key in servers:
        seen = {
            node: v.get(key, default)
            for node, v in sorted(verdicts.items())
            if key in v or default is not None
        }
        if len(set(seen.values())) > 1:
            out.append({"server": key, "verdicts": seen})
    return out


__all__ = ["Link", "LinkChange", "LinkState", "Members", "cluster_guard", "disagreements"]
