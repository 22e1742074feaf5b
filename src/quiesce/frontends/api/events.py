"""``GET /api/v1/events`` and ``GET /api/v1/events/stream`` (Server-Sent Events): the event
log with filters, then live; the stream also carries the live series (``?series=KIND:NAME,…``,
:mod:`quiesce.state.series`), one ``series`` event a second with the newest row of each."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from quiesce.core.errors import InvalidCommand
from quiesce.core.events import Event, EventQuery
from quiesce.frontends.api.bodies import parse_since
from quiesce.frontends.api.deps import ApiError, AppLike, Read, authenticator
from quiesce.frontends.auth import SESSION_COOKIE
from quiesce.state.series import KINDS

_HEARTBEAT = 15.0  # seconds between keep-alives, and between session checks of a quiet stream
_MAX_EVENT_ID = 2**63 - 1  # SQLite's INTEGER


def _event_id(value: str, what: str) -> int:
    """An event id from a query or header: ASCII digits up to 2**63-1 (str.isdigit also takes
    "²", and int() of a huge id overflows SQLite), else 400."""
    if not (value.isascii() and value.isdigit() and len(value) <= 19):
        raise ApiError(400, "invalid query", f"{what} {value[:40]!r} is not an event id")
    n = int(value)
    if n > _MAX_EVENT_ID:
        raise ApiError(400, "invalid query", f"{what} {value!r} is not an event id (too large)")
    return n


SERIES_POLL = 0.25  # seconds between two looks for a new series tick, on a stream that asks
MAX_SERIES = 100  # KIND:NAME entries of one stream


def series_specs(value: str | None) -> list[tuple[str, str]]:
    """``server:web/web1,pool:web`` as (kind, name) pairs, or a 422 naming ``series``."""
    if value is None:
        return []
    out: list[tuple[str, str]] = []
    for item in value.split(","):
        kind, sep, name = item.strip().partition(":")
        if not sep or kind not in KINDS or not name or len(name) > 300:
            raise ApiError(
                422,
                "invalid query",
                f"series: {item.strip()[:60]!r} is not KIND:NAME (KIND one of "
                f"{', '.join(KINDS)}; a server is server:POOL/SERVER)",
            )
        out.append((kind, name))
    if len(out) > MAX_SERIES:
        raise ApiError(422, "invalid query", f"series: at most {MAX_SERIES} entries")
    return out


def events_router(app: AppLike) -> APIRouter:
    v1 = APIRouter(prefix="/api/v1")

    def now() -> float:
        return app.registry.clock.time()

    def bounds(since: str | None, until: str | None) -> tuple[float | None, float | None]:
        try:
            return (
                parse_since(since, now()) if since else None,
                parse_since(until, now()) if until else None,
            )
        except ValueError as exc:
            raise ApiError(400, "invalid query", str(exc)) from None

    def query(**filters: Any) -> EventQuery:
        try:
            return EventQuery(**filters)
        except InvalidCommand as exc:
            raise ApiError(400, "invalid query", exc.message) from None

    @v1.get("/events", tags=["events"])
    async def list_events(
        p: Read,
        pool: str | None = None,
        server: str | None = None,
        kind: str | None = None,
        since: str | None = None,
        until: str | None = None,
        after_id: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    ) -> list[dict[str, Any]]:
        wanted = query(pool=pool, server=server, kind=kind, limit=limit)
        lo, hi = bounds(since, until)
        after = None if after_id is None else _event_id(after_id, "after_id")
        events = app.admin.events(replace(wanted, since=lo, until=hi, after_id=after))
        return [e.to_dict() for e in events]

    @v1.get("/events/stream", tags=["events"])
    async def stream_events(
        request: Request,
        p: Read,
        pool: str | None = None,
        server: str | None = None,
        kind: str | None = None,
        after_id: str | None = None,
        series: Annotated[str | None, Query(max_length=30000)] = None,
    ) -> StreamingResponse:
        """Events as they happen (after the stored ones after ``after_id`` / Last-Event-ID);
        with ``series=KIND:NAME,…`` also a ``series`` event a second: the newest row of each
        (``null`` for one not in the series, or not yet)."""
        wanted = query(pool=pool, server=server, kind=kind)
        specs = series_specs(series)
        timer = getattr(app, "series", None) if specs else None
        after: int | None = None
        last = request.headers.get("last-event-id", "").strip()
        if after_id is not None:
            after = _event_id(after_id, "after_id")
        elif last:
            after = _event_id(last, "Last-Event-ID")
        stopping: asyncio.Event = request.app.state.stopping
        auth = authenticator(request)
        sid = request.cookies.get(SESSION_COOKIE) if p.via == "session" else None

        def revoked() -> bool:
            """A stream ends with what authenticated it: a dashboard session (logout, expiry,
            its user removed or changed by a reload), or Basic / Bearer credentials a reload
            removed or changed (admin.users, admin.tokens: docs/admin.md)."""
            return not auth.still_valid(p, sid)

        async def body() -> AsyncIterator[str]:
            # The admin service replays the stored events after ``after_id`` (the browser's
            # Last-Event-ID on a reconnect) before the live ones, with nothing in between.
            events = app.admin.subscribe(after).__aiter__()
            yield "retry: 2000\n\n"
            stop: asyncio.Future[Any] = asyncio.ensure_future(stopping.wait())
            reauth: asyncio.Future[Any] = asyncio.ensure_future(auth.reconfigured.wait())
            nxt: asyncio.Future[Event] = asyncio.ensure_future(anext(events))
            loop = asyncio.get_running_loop()
            store = None if timer is None else timer.store
            sent = -1 if store is None else store.now  # the next tick's row comes first
            wrote = loop.time()
            try:
                while True:
                    waiting: set[asyncio.Future[Any]] = {nxt, stop, reauth}
                    done, _ = await asyncio.wait(
                        waiting,
                        timeout=_HEARTBEAT if store is None else SERIES_POLL,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    if revoked():
                        return
                    if reauth in done:  # a reload that left these credentials valid
                        done = done - {reauth}
                        reauth = asyncio.ensure_future(auth.reconfigured.wait())
                    if nxt in done:
                        try:
                            e = nxt.result()
                        except StopAsyncIteration:
                            return
                        nxt = asyncio.ensure_future(anext(events))
                        if wanted.matches(e):
                            wrote = loop.time()
                            yield _sse(e)
                    elif stop in done:
                        return
                    if store is not None and store.now > sent:
                        sent = store.now
                        wrote = loop.time()
                        yield _series_sse(store, specs, sent)
                    elif (store is None and not done) or loop.time() - wrote >= _HEARTBEAT:
                        wrote = loop.time()
                        yield ": keep-alive\n\n"
            finally:
                stop.cancel()
                reauth.cancel()
                nxt.cancel()
                aclose: Callable[[], Awaitable[None]] | None = getattr(events, "aclose", None)
                if aclose is not None:
                    try:
                        await aclose()
                    except (RuntimeError, asyncio.CancelledError):
                        pass

        return StreamingResponse(
            body(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return v1


def _sse(e: Event) -> str:
    data = json.dumps(e.to_dict(), separators=(",", ":"))
    head = f"id: {e.id}\n" if e.id is not None else ""
    return f"{head}event: {e.kind.value}\ndata: {data}\n\n"


def _series_sse(store: Any, specs: list[tuple[str, str]], second: int) -> str:
    rows: dict[str, Any] = {}
    for kind, name in specs:
        points = store.window(kind, name, 1)
        rows[f"{kind}:{name}"] = points[-1] if points else None
    data = json.dumps({"t": second, "rows": rows}, separators=(",", ":"))
    return f"event: series\ndata: {data}\n\n"


__all__ = ["events_router", "series_specs"]
