"""One request/response exchange, without transports: its state machine, the request
record, and the decisions about keeping a connection, pooling an upstream connection and
sending a request again (the keep-alive race).

Theory of operation
-------------------
Everything that decides where an exchange stands lives here, and none of it knows about
sockets, asyncio or which front end drives it (HTTP/1.1 today, an HTTP/2 stream later), like
h11's ``_state.py``. An exchange has two roles, each with its own state:

* the **request** (what the proxy has received from the client): ``BODY`` — the head was
  read, its body is arriving — then ``COMPLETE``: ``Request.state``, the one field every
  decision reads, moved by ``BODY_END_OF`` when the body ends (a request with no body
  starts ``COMPLETE``, as its head is read).
* the **response** (what the proxy has sent the client): ``NONE`` (nothing yet; an interim
  1xx leaves it there), ``HEAD`` (a final head is ready, not written), ``HELD`` (a chunked
  head kept back until its first chunk parses, so a broken body can still be a 502),
  ``SENT`` (bytes of it reached the client: it can no longer be taken back) and ``DONE``.

Moves are data (``RESPONSE_MOVES[event][state]``, ``REQUEST_MOVES``): :func:`step` looks
one up; a move the table does not have raises :class:`ExchangeError` and changes nothing.
``ClientConnection`` keeps the response state in one slot (``resp``) and moves it with
per-event tables made from the same data (``END_OF[resp]``: one plain dict lookup, no call,
on the per-request path; an illegal move is a KeyError there, raised before the slot
changes); :class:`Exchange` is the same machine as an object, for tests and other front
ends.

Beside its exchanges, a client connection has a state of its own (:class:`ConnState`, the
``state`` slot: ``OPEN``, ``INPUT_DONE`` after the client's EOF, ``TUNNEL`` after a 101,
``LINGERING`` after an answer that closes), moved the same way through ``CONN_MOVES``
(``CLIENT_EOF_OF``, ``SWITCH_OF``, ``LINGER_OF`` in the shell). Whether its transport is
closed is a second axis (``closed``), as it is for an upstream or an L4 connection: closing
keeps the state, so a closed tunnel still releases its server as a tunnel.

The decisions — :func:`closes_after` (does the answer say ``Connection: close``),
:func:`keeps_connection` (is the client connection reused after it), :func:`may_pool` (does
the upstream connection go back to the pool), :func:`may_resend` (the keep-alive race) —
are functions of the exchange and a few flags, also without I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Sized
from typing import Any, Protocol

from quiesce.core.queue import Waiting
from quiesce.rules.decision import RequestView

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"TRACE"})
REPLAY_LIMIT = 64 * 1024
# The keep-alive race: a reused idle upstream connection the server closed as we wrote to it
# fails at once, before any response byte. A request is resent then only when it may be sent
# twice (RFC 9110 §9.2.2: an idempotent method, or an Idempotency-Key) and the failure came
# within RACE_WINDOW seconds of the request being written: later, the server may have worked
# on it and died (a crash, not the race), and the client gets a 502.
RACE_WINDOW = 0.5


def raw_headers(raw: bytes) -> list[tuple[bytes, bytes]]:
    """The header fields of a head the C fast path accepted (so well-formed: CRLF lines,
    ``name:`` and a value without trailing whitespace)."""
    fields = []
    for line in raw.split(b"\r\n")[1:-2]:
        name, _, value = line.partition(b":")
        fields.append((name, value.lstrip(b" \t")))
    return fields


class Request:
    tried: tuple[Any, ...]
    grpc: int  # the answer's grpc-status (an h2 pool's), set by quiesce.dataplane.h2client
    __slots__ = (
        "body_since",
        "chunked",
        "cookie",
        "expect",
        "grpc",
        "head",
        "head_only",
        "headers",
        "host",
        "http10",
        "keep_alive",
        "method",
        "path",
        "pending",
        "pending_size",
        "raw",
        "replay",
        "retries",
        "state",
        "tried",
        "upgrade",
        "url",
        "waiting",
    )

    def __init__(self) -> None:
        self.body_since = 0.0  # loop time its head was read (requests with a body)
        self.state = RQ_BODY
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.replay: list[bytes] | None = None
        self.retries = 0  # sent again after its server failed (quiesce.dataplane.h1.retry)
        # ``tried``, the servers it went to, is set by its first retry only, and ``grpc`` by
        # a gRPC answer only (read with getattr)
        self.cookie: bytes | None = None
        self.host: bytes | None = None
        self.upgrade = False
        self.expect = False
        self.chunked = False
        self.head = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.method = b""
        self.url = b""
        self.http10 = False
        self.keep_alive = True
        self.head_only = False
        self.raw: bytes | None = None  # the head as received, when the C fast path read it
        self.waiting: Waiting[Any] | None = None  # its entry in its pool's queue (h1.queued)

    @property
    def complete(self) -> bool:
        """Has its body all arrived (``state`` is COMPLETE)? For readers off the
        per-request path; the shell reads ``state``."""
        return self.state is RQ_COMPLETE

    def view(self, source: str) -> RequestView:
        headers: dict[str, str] = {}
        fields = self.headers if self.raw is None else raw_headers(self.raw)
        for raw_name, raw_value in fields:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        cookies: dict[str, str] = {}
        cookie_header = headers.get("cookie")
        if cookie_header:
            for part in cookie_header.split(";"):
                k, sep, v = part.strip().partition("=")
                if sep:
                    cookies.setdefault(k, v)
        url = self.url.decode("latin-1")
        path = url.split("?", 1)[0]
        if path.startswith(("http://", "https://")):
            rest = path.split("://", 1)[1]
            path = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
        host = headers.get("host")
        if self.raw is None and self.host is not None:
            # the Host the request is forwarded with (an absolute-form target's authority)
            host = headers["host"] = self.host.decode("latin-1")
        return RequestView(
            method=self.method.decode("latin-1"),
            path=path,
            host=host,  # raw: the router normalises case, port and IPv6 brackets
            headers=headers,
            cookies=cookies,
            source=source,
        )


def resendable(req: Request) -> bool:
    """May ``req`` be sent to a server a second time (RFC 9110 §9.2.2)? An idempotent method,
    or a request that carries an ``Idempotency-Key`` (draft-ietf-httpapi-idempotency-key)."""
    if req.method in IDEMPOTENT:
        return True
    fields = req.headers if req.raw is None else raw_headers(req.raw)
    return any(name.lower() == b"idempotency-key" for name, _ in fields)


def may_resend(req: Request, reused: bool, got_byte: bool, sent_for: float) -> bool:
    """The keep-alive race, told from a server that took the request and died: resend only a
    request written to a *reused* connection that failed before any response byte, within
    ``RACE_WINDOW`` of being written (``sent_for`` seconds ago; negative: its body is still
    being sent), whose whole body is still held, and that may be sent twice."""
    return (
        reused
        and not got_byte
        and req.replay is not None
        and sent_for <= RACE_WINDOW
        and resendable(req)
    )


class ExchangeError(Exception):
    """A move the exchange machine does not allow (a bug in the front end driving it)."""


class RequestState(enum.IntEnum):
    BODY = 0
    COMPLETE = 1


class ResponseState(enum.IntEnum):
    # An IntEnum: it hashes as an int (Enum's __hash__ is a Python call per dict lookup).
    NONE = 0
    HEAD = 1
    HELD = 2
    SENT = 3
    DONE = 4


class Event(enum.Enum):
    """What happens to an exchange (request role: BODY_END; the rest: response role)."""

    BODY_END = "BODY_END"  # the last byte of the request body arrived
    HEAD = "HEAD"  # a final response head (the server's, or the proxy's own answer) is ready
    HOLD = "HOLD"  # the head is kept back until the first chunk of its body parses
    RELEASE = "RELEASE"  # a held head may go (its first chunk parsed, or a sweep passed)
    WRITE = "WRITE"  # what is ready was written to the client
    UNSEND = "UNSEND"  # a head never written is forgotten (the client gets an error instead)
    END = "END"  # the response is complete


R = ResponseState
RESPONSE_MOVES: dict[Event, dict[ResponseState, ResponseState]] = {
    Event.HEAD: {R.NONE: R.HEAD},
    Event.HOLD: {R.HEAD: R.HELD},
    Event.RELEASE: {R.HELD: R.HEAD},
    # An interim (1xx) answer is written with nothing final ready: NONE stays NONE.
    Event.WRITE: {R.NONE: R.NONE, R.HEAD: R.SENT, R.SENT: R.SENT, R.DONE: R.DONE},
    Event.UNSEND: {R.NONE: R.NONE, R.HEAD: R.NONE, R.HELD: R.NONE},
    Event.END: {R.HEAD: R.DONE, R.SENT: R.DONE},
}
REQUEST_MOVES: dict[Event, dict[RequestState, RequestState]] = {
    Event.BODY_END: {RequestState.BODY: RequestState.COMPLETE},
}
del R

RQ_BODY = RequestState.BODY
RQ_COMPLETE = RequestState.COMPLETE
# The shell's request move (a subscript; KeyError: the body cannot end twice).
BODY_END_OF = dict(REQUEST_MOVES[Event.BODY_END])


def moves(*events: Event) -> dict[ResponseState, ResponseState]:
    """The response moves of ``events`` in a row, ``{from: to}``, as a plain dict: the shell
    subscripts it (a specialised dict lookup); a missing state is an illegal move there and
    raises KeyError before anything changes (``step`` raises ExchangeError)."""
    table: dict[ResponseState, ResponseState] = {s: s for s in ResponseState}
    for event in events:
        one = RESPONSE_MOVES[event]
        table = {a: one[b] for a, b in table.items() if b in one}
    return table


# The shell's per-event tables (a subscript each; KeyError for a missing move).
HEAD_OF = moves(Event.HEAD)
HOLD_OF = moves(Event.HOLD)
RELEASE_OF = moves(Event.RELEASE)
WRITE_OF = moves(Event.WRITE)
UNSEND_OF = moves(Event.UNSEND)
END_OF = moves(Event.END)
# The C fast path's whole response at once: HEAD, WRITE, END (NONE -> DONE).
ANSWERED_OF = moves(Event.HEAD, Event.WRITE, Event.END)

# The states, as module names (a global lookup, not an attribute one, in the shell).
R_NONE = ResponseState.NONE
R_HEAD = ResponseState.HEAD
R_HELD = ResponseState.HELD
R_SENT = ResponseState.SENT
R_DONE = ResponseState.DONE
# A response has begun (HEAD, HELD, SENT or DONE): taking it back is no longer free.
STARTED = frozenset({R_HEAD, R_HELD, R_SENT, R_DONE})


def step(state: ResponseState, event: Event) -> ResponseState:
    """The response state after ``event``; ExchangeError (nothing changes) if not allowed."""
    moves = RESPONSE_MOVES.get(event)
    if moves is None or state not in moves:
        raise ExchangeError(f"{event.name} is not allowed in state {state.name}")
    return moves[state]


def moves_markdown() -> str:
    """The response moves as the Markdown table docs/dataplane.md shows (rows: events,
    columns: from-states, cells: to-states; empty: illegal)."""
    return _markdown(list(ResponseState), RESPONSE_MOVES)


def _markdown(states: list[Any], table: dict[Any, dict[Any, Any]]) -> str:
    rows = ["| event | " + " | ".join(s.name for s in states) + " |"]
    rows.append("|---" * (len(states) + 1) + "|")
    for event, moves in table.items():
        cells = [moves[s].name if s in moves else "" for s in states]
        rows.append(f"| {event.name} | " + " | ".join(cells) + " |")
    return "\n".join(rows).replace("|  |", "| |").replace("|  |", "| |") + "\n"


# The connection ------------------------------------------------------------------------------


class ConnState(enum.IntEnum):
    """What a client connection is doing, whatever its exchanges: the connection role (an
    IntEnum, like ResponseState: it hashes as an int). Whether its transport is closed is
    the other axis, ``closed``: a connection is closed in whatever state it was."""

    OPEN = 0  # reading requests and answering them
    INPUT_DONE = 1  # the client shut its side: what it sent is answered, then it closes
    TUNNEL = 2  # a 101 switched it: bytes relayed both ways (``half_closed``: whose EOF passed)
    LINGERING = 3  # answered with a close: what still comes is read and dropped, then it closes


class ConnEvent(enum.Enum):
    CLIENT_EOF = "CLIENT_EOF"  # the client shut its side with requests still to answer
    SWITCH = "SWITCH"  # the server answered 101 to an Upgrade request
    LINGER = "LINGER"  # an answer that closes was written: drain the client for a moment


C = ConnState
CONN_MOVES: dict[ConnEvent, dict[ConnState, ConnState]] = {
    ConnEvent.CLIENT_EOF: {C.OPEN: C.INPUT_DONE},
    # an Upgrade request, then the client's EOF, then the 101: still a tunnel
    ConnEvent.SWITCH: {C.OPEN: C.TUNNEL, C.INPUT_DONE: C.TUNNEL},
    # lingering again re-arms its timer; a tunnel never lingers (it has no answer to send)
    ConnEvent.LINGER: {C.OPEN: C.LINGERING, C.INPUT_DONE: C.LINGERING, C.LINGERING: C.LINGERING},
}
del C

# The shell's per-event tables, as for the response (a subscript each; KeyError: illegal).
CLIENT_EOF_OF = dict(CONN_MOVES[ConnEvent.CLIENT_EOF])
SWITCH_OF = dict(CONN_MOVES[ConnEvent.SWITCH])
LINGER_OF = dict(CONN_MOVES[ConnEvent.LINGER])
C_OPEN = ConnState.OPEN
C_INPUT_DONE = ConnState.INPUT_DONE
C_TUNNEL = ConnState.TUNNEL
C_LINGERING = ConnState.LINGERING


def conn_step(state: ConnState, event: ConnEvent) -> ConnState:
    """The connection state after ``event``; ExchangeError (nothing changes) if not allowed."""
    moves = CONN_MOVES[event]
    if state not in moves:
        raise ExchangeError(f"{event.name} is not allowed in state {state.name}")
    return moves[state]


def conn_moves_markdown() -> str:
    """The connection moves as the Markdown table docs/dataplane.md shows."""
    return _markdown(list(ConnState), CONN_MOVES)


class Exchange:
    """The machine as an object: one exchange's request and response states."""

    __slots__ = ("request", "response")

    def __init__(self, complete: bool = False) -> None:
        self.request = RequestState.COMPLETE if complete else RequestState.BODY
        self.response = ResponseState.NONE

    def process(self, event: Event) -> None:
        """Apply ``event``; an illegal one raises ExchangeError and leaves both states."""
        if event in REQUEST_MOVES:
            moves = REQUEST_MOVES[event]
            if self.request not in moves:
                raise ExchangeError(f"{event.name} is not allowed in state {self.request.name}")
            self.request = moves[self.request]
        else:
            self.response = step(self.response, event)

    @property
    def complete(self) -> bool:
        return self.request is RequestState.COMPLETE


# Decisions ------------------------------------------------------------------------------------


class _Service(Protocol):
    @property
    def closing(self) -> bool: ...


class Closing(Protocol):
    """What :func:`closes_after` reads of a client connection."""

    @property
    def boundary_close(self) -> bool: ...  # the table's AT_BOUNDARY: close at the next one
    @property
    def state(self) -> ConnState: ...  # INPUT_DONE: the client shut its side
    @property
    def queue(self) -> Sized | None: ...  # requests queued behind this one
    @property
    def ctx(self) -> _Service: ...  # closing: the service is shutting down


def closes_after(conn: Closing, req: Request) -> bool:
    """Does the answer to ``req`` close the client connection (``Connection: close``)? When
    the connection is to close at its next boundary anyway (the table's AT_BOUNDARY, the
    client's EOF with nothing more queued, the service shutting down), the client does not
    keep it alive (HTTP/1.0, ``Connection: close``), it asks to upgrade (unless it switches),
    or its body has not all arrived (the rest is read and dropped). ``ClientConnection``
    has it as its ``closing_after`` method: one call, on the per-request path."""
    return (
        conn.boundary_close
        or (conn.state is C_INPUT_DONE and not conn.queue)
        or not req.keep_alive
        or conn.ctx.closing
        or req.upgrade
        or req.state is RQ_BODY
    )


def keeps_connection(req: Request, close_sent: bool, closed: bool, client_done: bool) -> bool:
    """Is the client connection reused after the answer to ``req``? Not when the answer said
    close, the request is not complete, the connection is gone, or the client sent its EOF
    with nothing more queued (``client_done``)."""
    return not close_sent and req.state is RQ_COMPLETE and not closed and not client_done


def may_pool(
    keep_alive: bool, close_delimited: bool, up_closed: bool, req: Request, draining: bool
) -> bool:
    """Does the upstream connection go back to the keep-alive pool after this response? The
    server must keep it (``keep_alive``), the response must have had a length (not ended by
    the close), the request must have been sent whole, must not have asked to upgrade (a server
    that did not switch may still be reading what it expected), and the connection or service
    must not be closing (``draining``)."""
    return (
        keep_alive
        and not close_delimited
        and not up_closed
        and req.state is RQ_COMPLETE
        and not req.upgrade
        and not draining
    )
