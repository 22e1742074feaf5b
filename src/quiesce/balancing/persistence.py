"""Persistence state kept by the balancer box: the ``source_ip`` sticky table (client address
-> server name until an expiry, per pool). Sans-IO: time is an argument. Cookie persistence
needs no table: the cookie carries the server's token (:func:`sticky_token`)."""

from __future__ import annotations

import hashlib


def sticky_token(key: str) -> str:
    """The value of a persistence cookie naming the server ``key`` (``POOL/SERVER``): opaque
    and stable across restarts and nodes."""
    return hashlib.blake2s(key.encode(), digest_size=8).hexdigest()


class StickyTable:
    """source_ip persistence: client address -> (server name, expiry), per pool."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[str, float]] = {}
        self._writes = 0

    def get(self, ip: str, now: float) -> str | None:
        entry = self._entries.get(ip)
        if entry is None:
            return None
        if entry[1] < now:
            del self._entries[ip]
            return None
        return entry[0]

    def put(self, ip: str, server: str, now: float, timeout: float) -> None:
        self._entries[ip] = (server, now + timeout)
        self._writes += 1
        if self._writes >= 10_000:
            self._writes = 0
            self.purge(now)

    def purge(self, now: float) -> None:
        for k in [k for k, v in self._entries.items() if v[1] < now]:
            del self._entries[k]

    def __len__(self) -> int:
        return len(self._entries)
