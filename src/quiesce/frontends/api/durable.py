"""Durable answers: a pure ASGI middleware that holds the answer to a request that may have
changed state (any method but GET, HEAD, OPTIONS) until the state store has committed what
was written meanwhile (:meth:`quiesce.admin.AdminService.durable`). The SQLite store commits
on a writer thread (:mod:`quiesce.store.sqlite_writer`); without this wait, a ``kill -9``
right after the answer could lose the change the caller was told was made.

The wait is before the answer's head and again before its last body part (a streamed
answer, a drain that waits, writes while it runs). A write that cannot be committed turns
the answer into a 503 that says so: the change is applied in memory but not recorded.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from quiesce.frontends.api.limits import send_error
from quiesce.store.base import StoreError

READS = frozenset({"GET", "HEAD", "OPTIONS"})


class Durable:
    def __init__(self, app: ASGIApp, admin: Any) -> None:
        self.app = app
        self.admin = admin  # AdminService: writes, durable()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in READS:
            await self.app(scope, receive, send)
            return
        admin = self.admin
        state: dict[str, Any] = {"mark": admin.writes, "failed": False}

        async def durable_send(message: Message) -> None:
            if state["failed"]:
                return  # the 503 was sent instead
            kind = message["type"]
            last = kind == "http.response.body" and not message.get("more_body", False)
            if (kind == "http.response.start" or last) and admin.writes != state["mark"]:
                try:
                    await admin.durable()
                except StoreError as exc:
                    if kind == "http.response.start":
                        state["failed"] = True
                        await _unrecorded(send, exc)
                        return
                    raise
                state["mark"] = admin.writes
            await send(message)

        await self.app(scope, receive, durable_send)


async def _unrecorded(send: Send, exc: StoreError) -> None:
    detail = f"the change is applied but could not be recorded: {exc.message}"
    await send_error(send, 503, "state store", detail)


__all__ = ["Durable"]
