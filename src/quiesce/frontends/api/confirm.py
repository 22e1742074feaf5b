"""Confirmed answers on a shared store: a pure ASGI middleware that holds the answer to a
request that may have changed state (any method but GET, HEAD, OPTIONS) until etcd has taken
the writes the request made (:meth:`quiesce.admin.AdminService.confirm_writes`).

Every write to etcd is a compare-and-swap on the revision this node had seen (issue 15): when
another node changed the same record first, the write loses and the change is undone here.
The caller then gets **409** ``{"error": "conflict", "detail", "current"}`` (who changed it,
when, the etcd revision and the record as it is now) instead of a 200 for a change that did
not happen; a 503 when etcd did not answer in time. A change made while the link is down
(``?local=true``) is answered at once, as before. On a node's own store (SQLite) this does
nothing: the writes it waits for are a shared store's.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from quiesce.core.errors import QuiesceError
from quiesce.store.base import ConflictError

READS = frozenset({"GET", "HEAD", "OPTIONS"})


class ConfirmWrites:
    def __init__(self, app: ASGIApp, admin: Any) -> None:
        self.app = app
        self.admin = admin  # AdminService: write_mark(), confirm_writes()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        mark = None if scope["type"] != "http" or scope["method"] in READS else self._mark()
        if mark is None:
            await self.app(scope, receive, send)
            return
        refused = False

        async def confirmed_send(message: Message) -> None:
            nonlocal refused
            if refused:
                return  # the 409 or 503 went instead
            if message["type"] == "http.response.start" and message["status"] < 400:
                try:
                    await self.admin.confirm_writes(mark)
                except QuiesceError as exc:
                    refused = True
                    await _refuse(send, exc)
                    return
            await send(message)

        await self.app(scope, receive, confirmed_send)

    def _mark(self) -> int | None:
        write_mark = getattr(self.admin, "write_mark", None)
        return None if write_mark is None else write_mark()


async def _refuse(send: Send, exc: QuiesceError) -> None:
    answer: dict[str, Any] = {"error": "conflict", "detail": exc.message}
    if isinstance(exc, ConflictError):
        answer["current"] = exc.current
    else:
        answer["error"] = "state store"
    body = json.dumps(answer, default=str).encode()
    await send(
        {
            "type": "http.response.start",
            "status": exc.status_hint,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


__all__ = ["ConfirmWrites"]
