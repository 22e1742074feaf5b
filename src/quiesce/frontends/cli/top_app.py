"""The terminal of ``quiesce top`` (Textual, the optional ``top`` extra): a table of
:func:`quiesce.frontends.cli.top_view.rows` refreshed every interval, a line for what the last
key did, and the event log under it on ``v``. Thin: the rows and lines are shaped in
``top_view``, the API calls are :class:`quiesce.frontends.cli.top.Source`'s (typed here as
:class:`TopSource`: the command imports this module, not the other way round)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Protocol

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, RichLog, Static

from quiesce.frontends.cli import top_view
from quiesce.frontends.cli.transport import ClientError


class TopSource(Protocol):
    """What the app needs of the API (:class:`quiesce.frontends.cli.top.Source`)."""

    @property
    def where(self) -> str: ...
    def rows(self) -> list[top_view.Row]: ...
    def act(self, verb: str, ref: str) -> str: ...
    def events(self) -> Iterator[str]: ...


def follow(lines: Iterator[str], write: Callable[[str], object]) -> threading.Thread:
    """``write`` each line of ``lines`` from a daemon thread (a stream blocks in a read that
    quitting need not wait for); an error is written as a line and ends it."""

    def run() -> None:
        try:
            for line in lines:
                write(line)
        except ClientError as exc:
            write(f"events: {exc.format_message()}")
        except RuntimeError:  # the app has gone
            return

    t = threading.Thread(target=run, name="quiesce-top-events", daemon=True)
    t.start()
    return t


class TopApp(App[None]):
    TITLE = "quiesce top"
    CSS = """
    #head { height: 1; background: $boost; }
    #message { height: auto; max-height: 3; color: $warning; }
    #events { height: 12; display: none; border-top: solid $accent; }
    #events.shown { display: block; }
    """
    BINDINGS = [
        Binding("d", "act('drain')", "Drain"),
        Binding("m", "act('maintenance')", "Maintenance"),
        Binding("e", "act('enable')", "Enable"),
        Binding("v", "events", "Events"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, source: TopSource, interval: float) -> None:
        super().__init__()
        self.source = source
        self.interval = interval
        self._keys: list[str] = []
        self._busy = False
        self._following = False

    def compose(self) -> ComposeResult:
        yield Static(id="head")
        yield DataTable(id="table", cursor_type="row", zebra_stripes=True)
        yield Static(id="message")
        yield RichLog(id="events", max_lines=500, wrap=False)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for label in top_view.COLUMNS:
            table.add_column(label, key=label)
        table.focus()
        self.set_interval(self.interval, self.refresh_rows)
        self.call_later(self.refresh_rows)

    async def refresh_rows(self) -> None:
        if self._busy:  # the last refresh is still reading (a slow or large API)
            return
        self._busy = True
        try:
            rows = await asyncio.to_thread(self.source.rows)
        except ClientError as exc:
            self._head(f"error: {exc.format_message()}")
            return
        except (KeyError, TypeError, ValueError) as exc:  # an answer of another shape (an
            # older or newer quiesce): say so and keep the screen, rather than crash it
            self._head(f"error: unexpected answer from the API ({type(exc).__name__}: {exc})")
            return
        finally:
            self._busy = False
        self._show(rows)
        self._head(f"updated {time.strftime('%H:%M:%S')}")

    def _head(self, state: str) -> None:
        where = f"quiesce top · {self.source.where} · {state}"
        self.query_one("#head", Static).update(Text(where))

    def _show(self, rows: list[top_view.Row]) -> None:
        table = self.query_one(DataTable)
        keys = [r.key for r in rows]
        if keys == self._keys:
            for r in rows:
                for label, cell in zip(top_view.COLUMNS, _cells(r), strict=True):
                    table.update_cell(r.key, label, cell, update_width=True)
            return
        selected = self.selected()
        table.clear()
        for r in rows:
            table.add_row(*_cells(r), key=r.key)
        first = not self._keys
        self._keys = keys
        if selected in keys:
            table.move_cursor(row=keys.index(selected))
        elif first:  # start on the first server: the keys act on servers
            servers = [i for i, r in enumerate(rows) if r.kind == "server"]
            table.move_cursor(row=servers[0] if servers else 0)

    def selected(self) -> str | None:
        table = self.query_one(DataTable)
        if not self._keys or table.cursor_row < 0 or table.cursor_row >= len(self._keys):
            return None
        return self._keys[table.cursor_row]

    async def action_act(self, verb: str) -> None:
        ref = self.selected()
        message = self.query_one("#message", Static)
        if ref is None or "/" not in ref:
            message.update("select a server (arrow keys) first: d, m and e act on a server")
            return
        message.update(f"{verb} {ref} …")
        line = await asyncio.to_thread(self.source.act, verb, ref)
        message.update(Text(line))
        await self.refresh_rows()

    def action_events(self) -> None:
        log = self.query_one("#events", RichLog)
        log.toggle_class("shown")
        if not self._following:
            self._following = True
            follow(self.source.events(), lambda line: self.call_from_thread(log.write, line))


def _cells(row: top_view.Row) -> list[Text]:
    name, status, *rest = row.cells
    bold = "bold" if row.kind == "pool" else ""
    return [
        Text(name, style=bold),
        Text(status, style=top_view.status_style(status)),
        *(Text(c, style=bold) for c in rest),
    ]


def run_top(source: TopSource, interval: float) -> None:
    TopApp(source, interval).run()


__all__ = ["TopApp", "TopSource", "follow", "run_top"]
