"""Database sessions per server by state (issue 20): what ``show server``, the API's server
view and the metrics count as ``idle``, ``transaction``, ``query`` and ``tls``.

A database relay (quiesce.dataplane.dbrelay: ``postgresql``, ``mysql``) registers its session
here while it is bound to a server; the counts are taken when asked, by walking that server's
sessions, so the request path pays one set add and one discard per connection, nothing per
message.
"""

from __future__ import annotations

from typing import Protocol
from weakref import WeakKeyDictionary

STATES = ("idle", "transaction", "query")
# a session the relay cannot follow (a MySQL client that asked for TLS): counted as well, and
# listed only when there is one (no postgresql session is ever in it)
OPAQUE = "tls"


class SessionLike(Protocol):
    @property
    def state(self) -> str:
        """One of STATES, or OPAQUE."""
        ...


_LIVE: WeakKeyDictionary[object, set[SessionLike]] = WeakKeyDictionary()


def track(server: object, session: SessionLike) -> None:
    live = _LIVE.get(server)
    if live is None:
        live = _LIVE[server] = set()
    live.add(session)


def untrack(server: object, session: SessionLike) -> None:
    live = _LIVE.get(server)
    if live is not None:
        live.discard(session)


def session_counts(server: object) -> dict[str, int] | None:
    """``{"idle": n, "transaction": n, "query": n}`` (and ``"tls": n`` when there is one)
    for a server that a database service ever sent a session to; None for any other."""
    live = _LIVE.get(server)
    if live is None:
        return None
    out = dict.fromkeys(STATES, 0)
    for session in live:
        state = session.state
        out[state] = out.get(state, 0) + 1
    return out
