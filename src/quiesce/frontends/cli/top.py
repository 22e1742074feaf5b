"""``quiesce top``: a live terminal view of pools and servers over the admin API, like
``hatop`` for HAProxy. This module is the command and its I/O (the API reads of a refresh, the
actions, the event stream); the rows are shaped by :mod:`quiesce.frontends.cli.top_view` and
drawn by :mod:`quiesce.frontends.cli.top_app` (Textual, an optional extra: ``pip install
'quiesce[top]'``), imported only when the command runs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import click

from quiesce.frontends.cli import top_view
from quiesce.frontends.cli.output import event_line, segment
from quiesce.frontends.cli.transport import Api, ClientError, ClientSettings, DurationType
from quiesce.frontends.cli.transport import settings as settings_of

INSTALL_HINT = (
    "quiesce top needs the Textual library, an optional extra: pip install 'quiesce[top]' "
    "(or pip install textual)"
)
PAGE = 1000  # servers a /api/v1/series/servers request (its largest page)
ACTIONS = {"drain": "drain", "maintenance": "maintenance", "enable": "enable"}


def _path(ref: str) -> str:
    pool, _, name = ref.partition("/")
    return f"/api/v1/servers/{segment(pool)}/{segment(name)}"


class Source:
    """The API as top uses it: the reads of one refresh, the actions and the event stream,
    each on its own keep-alive connection (so a long stream never holds a refresh up); the
    calls of one connection are serialised by its lock (Textual runs them on threads)."""

    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self._reads = Api(settings)
        self._writes = Api(settings)
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()

    @property
    def where(self) -> str:
        return self._reads.base.removeprefix("http://")

    def rows(self) -> list[top_view.Row]:
        """One refresh: the pools, the servers, and the last seconds of series of each pool
        (``GET /api/v1/series``) and of its servers (``GET /api/v1/series/servers``, a page
        of 1,000 servers a request)."""
        with self._lock:
            pools = self._reads.get("/api/v1/pools")
            servers = self._reads.get("/api/v1/servers")
            series: dict[str, list[dict[str, Any]]] = {}
            for p in pools:
                name = p["name"]
                series[top_view.series_key("pool", name)] = self._pool_series(name)
                series.update(self._server_series(name))
            return top_view.rows(pools, servers, series)

    def _pool_series(self, pool: str) -> list[dict[str, Any]]:
        try:
            data = self._reads.get(
                "/api/v1/series", kind="pool", name=pool, seconds=top_view.WINDOW
            )
        except ClientError as exc:
            if exc.format_message().startswith("404"):  # before its first second: no rows yet
                return []
            raise
        points: list[dict[str, Any]] = data["points"]
        return points

    def _server_series(self, pool: str) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        offset, total = 0, 1
        while offset < total:
            try:
                page = self._reads.get(
                    "/api/v1/series/servers",
                    pool=pool,
                    seconds=top_view.WINDOW,
                    fields=",".join(top_view.SERVER_FIELDS),
                    offset=offset,
                    limit=PAGE,
                )
            except ClientError as exc:
                if exc.format_message().startswith("404"):  # a pool deleted meanwhile
                    return out
                raise
            out.update(top_view.server_points(pool, page))
            total = int(page["total"])
            offset += PAGE
        return out

    def act(self, verb: str, ref: str) -> str:
        """The CLI verbs' call (``set server S drain``, ``… maintenance``, ``enable server``),
        no guard overridden: the line to show, done or refused."""
        with self._write_lock:
            try:
                data = self._writes.send("POST", f"{_path(ref)}/{ACTIONS[verb]}", {"reason": ""})
            except ClientError as exc:
                return top_view.refused_line(verb, ref, exc.format_message())
        return top_view.done_line(ref, data)

    def events(self, last: int = 20) -> Iterator[str]:
        """The last ``last`` events, then the live ones as they come (a stream of its own)."""
        api = Api(self.settings)
        past = api.get("/api/v1/events", limit=last)
        for e in past:
            yield event_line(e)
        after = max((e["id"] for e in past if e.get("id") is not None), default=None)
        params = {} if after is None else {"after_id": after}
        import json

        for line in api.stream_lines("/api/v1/events/stream", params):
            if line.startswith("data: "):
                yield event_line(json.loads(line[6:]))

    def close(self) -> None:
        self._reads.close()
        self._writes.close()


@click.command("top")
@click.option(
    "--interval",
    default="1s",
    show_default=True,
    type=DurationType(seconds=True),
    help="How often to refresh (the series has one row a second).",
)
@click.pass_context
def top_cmd(ctx: click.Context, interval: float) -> None:
    """A live view of pools and servers (like hatop): status, sessions, req/s, errors, p99 and
    the last 30 s of traffic. Keys: arrows select a server; d drain, m maintenance, e enable
    it (as set server … drain / maintenance and enable server: a pool's guard is never
    overridden); v shows the events as they come; q quits. Needs the optional Textual
    library: pip install 'quiesce[top]'."""
    if interval < 0.1:
        raise click.BadParameter(
            f"{interval:g}s is too short: at least 100ms", param_hint="--interval"
        )
    try:
        from quiesce.frontends.cli.top_app import run_top
    except ImportError as exc:
        if exc.name is None or not exc.name.startswith(("textual", "rich")):
            raise
        raise ClientError(INSTALL_HINT) from None

    source = Source(settings_of(ctx))
    try:
        source.rows()  # unreachable or refused: say so here, before the screen is taken
        run_top(source, interval)
    finally:
        source.close()


__all__ = ["INSTALL_HINT", "Source", "top_cmd"]
