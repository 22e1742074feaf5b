"""The request body limit: a pure ASGI middleware, outermost, so no route, dependency or
body parser ever holds more than :data:`MAX_BODY` bytes of one request (authenticated or not).

A ``Content-Length`` over the limit is answered 413 before the body is read; a chunked body
is counted as it arrives, and past the limit the client gets 413 and the application sees a
disconnect (anything it answers after that is dropped).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY = 1 << 20  # 1 MiB


async def send_error(send: Send, status: int, error: str, detail: str, close: bool = False) -> None:
    """An ASGI answer ``{"error", "detail"}`` from a middleware (the API's error shape)."""
    body = json.dumps({"error": error, "detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _too_large(send: Send, limit: int) -> None:
    detail = f"the request body is over {limit} bytes"
    await send_error(send, 413, "payload too large", detail, close=True)


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit
        for key, value in scope["headers"]:
            if key == b"content-length" and (not value.isdigit() or int(value) > limit):
                await _too_large(send, limit)
                return
        state: dict[str, Any] = {"received": 0, "started": False, "refused": False}

        async def limited_receive() -> Message:
            if state["refused"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    state["refused"] = True
                    if not state["started"]:
                        state["started"] = True
                        await _too_large(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if state["refused"]:
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            # The application saw a disconnect (ClientDisconnect) after the 413 went out.
            if not state["refused"]:
                raise


__all__ = ["MAX_BODY", "BodyLimit"]
