"""PostgreSQL wire framing, sans-IO: what a ``protocol: postgresql`` relay knows of a session.

The relay (quiesce.dataplane.pgrelay) still copies bytes untouched; it feeds every read to
one framer per direction, which walks the message boundaries (a type byte and an int32
length, after the untyped start-up messages) without copying or decoding message bodies,
and keeps the few facts that decide whether the connection may be closed without losing
anything (:class:`Session`):

* ``status``: the last ``ReadyForQuery`` status: ``I`` idle, ``T`` in a transaction, ``E``
  in a failed transaction;
* ``pending``: ``ReadyForQuery`` messages still owed to the client (one per ``Query``,
  ``FunctionCall``, ``Sync`` and for the start-up), and ``unsynced``: extended-protocol
  messages sent with no ``Sync`` yet — either means a query is running;
* ``listening``: a ``LISTEN`` completed (cleared by ``UNLISTEN`` and ``DISCARD ALL``; the
  command tag does not name the channel, so any ``UNLISTEN`` counts as all).

What it cannot see (docs/database.md): session advisory locks, temporary tables, ``SET``
parameters and prepared statements live inside query text or results it does not read.

Malformed input (an unknown message type, a length below 4 or above ``max_message``, a
start-up packet that is not PostgreSQL's) makes ``feed`` return an error string; the relay
closes that connection only.
"""

from __future__ import annotations

import struct
from typing import Final, Protocol

SSL_REQUEST: Final = 80877103
GSSENC_REQUEST: Final = 80877104
CANCEL_REQUEST: Final = 80877102
MAX_STARTUP: Final = 10000  # PostgreSQL's own limit on a start-up packet
MAX_MESSAGE: Final = 0x3FFFFFFF  # 1 GiB - 1: PostgreSQL's MaxAllocSize
_INSPECT_MAX: Final = 256  # a message the framer reads (ReadyForQuery, CommandComplete)

# message types (what each side may send after the start-up)
_FRONTEND_TYPES = b"QPBEDCSHFXdcfp"
_BACKEND_TYPES = b"RSKZCDTEINnst123AGHWdcVv"
_FRONT_OK = bytes(1 if t in _FRONTEND_TYPES else 0 for t in range(256))
_BACK_OK = bytes(1 if t in _BACKEND_TYPES else 0 for t in range(256))
_Q, _F, _S, _X = b"QFSX"
_EXTENDED = frozenset(b"PBEDC")  # Parse, Bind, Execute, Describe, Close: answered at Sync
_Z, _C = b"ZC"
_HEAD = struct.Struct("!BI").unpack_from  # a typed message's head: type, length

# what a relay answers an SSLRequest or GSSENCRequest with when it does not terminate TLS
NO_ENCRYPTION: Final = b"N"


def admin_shutdown() -> bytes:
    """The ``ErrorResponse`` PostgreSQL itself sends when an administrator ends a session
    (FATAL, SQLSTATE 57P01 admin_shutdown): drivers and poolers take it as "reconnect"."""
    fields = (
        b"SFATAL\0VFATAL\0C57P01\0"
        b"Mterminating connection due to administrator command\0"
        b"Dquiesce: the server is in maintenance\0\0"
    )
    return b"E" + (len(fields) + 4).to_bytes(4, "big") + fields


GOODBYE: Final = admin_shutdown()
TERMINATE: Final = b"X\0\0\0\4"  # sent to the server when the relay ends the session


class SessionRules:
    """What a session's state means (shared by :class:`Session` and the C one,
    quiesce.dataplane.dbfast)."""

    __slots__ = ()
    status: int
    pending: int
    unsynced: bool
    listening: bool
    started: bool
    cancel: bool
    ended: bool
    opaque = False  # always followed (an SSLRequest is answered N: no TLS to lose sight in)

    @property
    def state(self) -> str:
        """``idle``, ``transaction`` (in a transaction, nothing running) or ``query`` (a
        query, or the start-up and authentication, outstanding): the server view's counts."""
        if self.pending or self.unsynced or not self.started:
            return "query"
        return "idle" if self.status == 0x49 else "transaction"

    @property
    def done(self) -> bool:
        """Nothing more will happen on it: a CancelRequest, or the client sent Terminate."""
        return self.cancel or self.ended

    def goodbye(self) -> tuple[bytes, bytes]:
        """What the relay sends the client (FATAL 57P01) and the server (Terminate) when it
        ends the session."""
        return (
            GOODBYE if self.started and not self.cancel else b"",
            TERMINATE if self.started and not self.ended else b"",
        )

    def closable(self) -> bool:
        """Nothing a reconnect would lose: no transaction, no query running, no LISTEN."""
        return (
            self.started
            and not self.pending
            and not self.unsynced
            and self.status == 0x49
            and not self.listening
        )


class Session(SessionRules):
    """One connection's protocol state, shared by its two framers."""

    __slots__ = (
        "cancel",
        "ended",
        "fresh",
        "listening",
        "pending",
        "started",
        "status",
        "unsynced",
    )

    def __init__(self) -> None:
        self.status = 0x49  # b"I"
        self.pending = 0  # ReadyForQuery still owed (the start-up's included)
        self.unsynced = False  # extended-protocol messages with no Sync yet
        self.listening = False
        self.started = False  # the start-up packet passed (False: SSLRequest, …)
        self.cancel = False  # a CancelRequest connection: it carries nothing else
        self.ended = False  # the client sent Terminate
        # no query sent since the start-up: its first one may be on its way (the relay gives
        # such a session a grace before closing it idle, quiesce.dataplane.pgrelay)
        self.fresh = True


class _Framer:
    __slots__ = ("max", "partial", "session", "skip")
    _ok: bytes  # the message types this side may send
    _who: str

    def __init__(self, session: Session, max_message: int = MAX_MESSAGE) -> None:
        self.session = session
        self.max = max_message
        self.skip = 0  # bytes of the current message's body still to pass over
        self.partial = b""  # a message head (or a message the framer reads) split by reads

    def typed(self, data: bytes) -> str | None:
        """One read of typed messages: the end of a message a previous read began, then
        whole ones, then the head of the next (kept)."""
        if self.partial:
            data = self.partial + data
            self.partial = b""
        skip = self.skip
        if skip:
            if skip >= len(data):
                self.skip = skip - len(data)
                return None
            self.skip = 0
        if self.session.cancel:
            return f"{self._who} sent more after a CancelRequest"
        return self._walk(data, skip)

    def _walk(self, data: bytes, pos: int) -> str | None:
        """Walk typed messages from ``pos``; keep what a read split. One loop for both sides
        (inlined: a method call per message was most of the cost, BENCHMARKS.md)."""
        ok = self._ok
        front = ok is _FRONT_OK
        s = self.session
        head = _HEAD
        n = len(data)
        limit = self.max
        while n - pos >= 5:
            t, length = head(data, pos)
            if not ok[t] or length < 4 or length > limit:
                return self._bad(t, length)
            end = pos + 1 + length
            if front:
                if t in (_Q, _S, _F):
                    s.pending += 1
                    s.fresh = False
                    if t == _S:
                        s.unsynced = False
                elif t in _EXTENDED:
                    s.unsynced = True
                    s.fresh = False
                elif t == _X:
                    s.ended = True
            elif (t in (_Z, _C)) and length <= _INSPECT_MAX:
                if end > n:  # read it once it is whole (a few bytes at most)
                    self.partial = data[pos:]
                    return None
                if t == _Z:
                    if length > 4:
                        s.status = data[pos + 5]
                    if s.pending:
                        s.pending -= 1
                elif data.startswith(b"LISTEN", pos + 5):
                    s.listening = True
                elif data.startswith((b"UNLISTEN", b"DISCARD ALL"), pos + 5):
                    s.listening = False
            if end >= n:
                self.skip = end - n
                return None
            pos = end
        self.partial = data[pos:]
        return None

    def _bad(self, t: int, length: int) -> str:
        if not self._ok[t]:
            return f"{self._who} sent an unknown message type {bytes([t])!r}"
        return f"{self._who} sent a message of type {bytes([t])!r} with length {length}"


class _StartFields(Protocol):
    started: bool
    cancel: bool
    pending: int


class _Front(Protocol):
    """A client-side framer (:class:`FrontendFramer`, or the C one): what the start-up
    needs of it."""

    partial: bytes
    skip: int

    @property
    def session(self) -> _StartFields: ...

    def typed(self, data: bytes) -> str | None: ...


def front_feed(f: _Front, data: bytes) -> tuple[bytes, bytes, str | None]:
    """One read from the client: (bytes to pass on to the server, bytes to answer the client
    with, an error or None). Past the start-up, ``data`` passes unchanged."""
    if f.session.started:
        return data, b"", f.typed(data)
    return _startup(f, data)


def _startup(f: _Front, data: bytes) -> tuple[bytes, bytes, str | None]:
    """The untyped messages: SSLRequest / GSSENCRequest (answered ``N`` here, not passed on),
    CancelRequest, StartupMessage; then the typed messages after them."""
    if f.partial:
        data = f.partial + data
        f.partial = b""
    s = f.session
    forward: list[bytes] = []
    reply = b""
    pos = 0
    n = len(data)
    while not s.started:
        if n - pos < 8:
            f.partial = data[pos:]
            return b"".join(forward), reply, None
        length = int.from_bytes(data[pos : pos + 4], "big")
        code = int.from_bytes(data[pos + 4 : pos + 8], "big")
        if code in (SSL_REQUEST, GSSENC_REQUEST):
            if length != 8:
                return b"", b"", f"client sent an encryption request of length {length}"
            reply += NO_ENCRYPTION
            pos += 8
            continue
        if code == CANCEL_REQUEST:
            if length != 16:
                return b"", b"", f"client sent a CancelRequest of length {length}"
            s.cancel = True
        elif code >> 16 != 3:
            return b"", b"", f"client does not speak PostgreSQL 3 (start-up code {code:#x})"
        elif length < 8 or length > MAX_STARTUP:
            return b"", b"", f"client sent a start-up packet of length {length}"
        else:
            s.pending = 1  # answered by the first ReadyForQuery
        s.started = True
        end = pos + length
        forward.append(data[pos:end] if end < n else data[pos:])
        if end >= n:
            f.skip = end - n
            return b"".join(forward), reply, None
        pos = end
    rest = data[pos:]
    forward.append(rest)
    return b"".join(forward), reply, f.typed(rest)


class FrontendFramer(_Framer):
    """Client to server: the start-up messages, then typed messages."""

    __slots__ = ()
    _ok = _FRONT_OK
    _who = "client"

    feed = front_feed


class BackendFramer(_Framer):
    """Server to client: typed messages from the first byte (the relay never passes an
    SSLRequest on, so the server never answers one)."""

    __slots__ = ()

    _ok = _BACK_OK
    _who = "server"

    feed = _Framer.typed  # one read from the server: an error or None
