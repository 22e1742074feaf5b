"""MySQL / MariaDB client/server protocol framing, sans-IO: what a ``protocol: mysql`` relay
knows of a session.

The relay (quiesce.dataplane.dbrelay) copies bytes untouched and feeds every read to one
framer per direction. Both walk packets (a 3-byte little-endian length and a sequence id; a
packet of 0xFFFFFF bytes is continued by the next) and read only a packet's first bytes:

* the connection phase: the server's greeting (protocol 10, its capabilities), the client's
  handshake response (its capabilities: ``CLIENT_SSL`` in a 32-byte response is an SSL
  request, after which both ways are TLS and the session is ``opaque``), then the
  authentication exchange until the server's OK (or ERR);
* the command phase: each command the client sends (sequence id 0) is queued until its
  response ends: OK, ERR, EOF, or a result set (column count, column definitions, EOF unless
  ``CLIENT_DEPRECATE_EOF``, rows, then EOF/OK; ``SERVER_MORE_RESULTS_EXISTS`` chains another),
  a prepared statement's answer (its parameter and column definitions counted), ``LOCAL
  INFILE`` (the client's data, then OK/ERR). ``COM_STMT_CLOSE`` and
  ``COM_STMT_SEND_LONG_DATA`` have no response; ``COM_QUIT`` ends the session;
* the status flags of every OK and EOF packet: ``SERVER_STATUS_IN_TRANS`` (a transaction is
  open) and ``SERVER_STATUS_AUTOCOMMIT``.

What it cannot see (docs/database.md): ``LOCK TABLES``, ``GET_LOCK()``, temporary tables,
user variables and ``SET`` session variables live in query text it does not read; prepared
statements are seen but do not hold the session (drivers prepare again on a new
connection).

Malformed input (a first packet that is not a MySQL handshake response, a packet out of
sequence, a packet or a logical message over ``max_message``, a server packet with no command
outstanding) makes ``feed`` return an error string; the relay closes that connection only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Protocol

MAX_PACKET: Final = 0xFFFFFF  # a packet this long is continued by the next
MAX_MESSAGE: Final = 0x3FFFFFFF  # about MariaDB's largest max_allowed_packet (1 GiB)
MAX_GREETING: Final = 4096
MAX_HANDSHAKE: Final = 0x20000  # a handshake response (connection attributes: 64 KiB at most)
_INSPECT: Final = 32  # payload bytes read of a server packet (OK: 21 at most)

# server status flags (OK and EOF packets)
IN_TRANS: Final = 0x0001
AUTOCOMMIT: Final = 0x0002
MORE_RESULTS: Final = 0x0008
CURSOR_EXISTS: Final = 0x0040

# capabilities
CLIENT_PROTOCOL_41: Final = 0x200
CLIENT_SSL: Final = 0x800
CLIENT_DEPRECATE_EOF: Final = 1 << 24
MARIADB_CACHE_METADATA: Final = 1 << 4  # MariaDB's extended capabilities (bytes 28-31)

# commands
COM_QUIT: Final = 0x01
COM_QUERY: Final = 0x03
COM_FIELD_LIST: Final = 0x04
COM_STATISTICS: Final = 0x09
COM_PROCESS_INFO: Final = 0x0A
COM_CHANGE_USER: Final = 0x11
COM_BINLOG_DUMP: Final = 0x12
COM_STMT_PREPARE: Final = 0x16
COM_STMT_EXECUTE: Final = 0x17
COM_STMT_SEND_LONG_DATA: Final = 0x18
COM_STMT_CLOSE: Final = 0x19
COM_STMT_FETCH: Final = 0x1C
COM_BINLOG_DUMP_GTID: Final = 0x1E
COM_STMT_BULK_EXECUTE: Final = 0xFA
_NO_RESPONSE = frozenset((COM_STMT_SEND_LONG_DATA, COM_STMT_CLOSE))
_RESULT_SETS = frozenset((COM_QUERY, COM_STMT_EXECUTE, COM_PROCESS_INFO, COM_STMT_BULK_EXECUTE))
_STREAMS = frozenset((COM_BINLOG_DUMP, COM_BINLOG_DUMP_GTID))

# session phases
GREETING, RESPONSE, AUTH, COMMAND, CLOSED = range(5)
# what the head command's response expects next
_FIRST, _COLS, _COLS_EOF, _ROWS, _SKIP, _INFILE, _AUTH, _STREAM = range(8)


def server_shutdown() -> bytes:
    """The ERR packet ``ER_SERVER_SHUTDOWN`` (1053, SQLSTATE 08S01) the relay sends a client
    whose session it ends. Sequence id 1: the answer a client's next command waits for, so a
    driver reports error 1053 (MariaDB's own goodbye has 0, which PyMySQL reports as 2013)."""
    payload = (
        b"\xff"
        + (1053).to_bytes(2, "little")
        + b"#08S01Server shutdown in progress (quiesce: the server is in maintenance)"
    )
    return len(payload).to_bytes(3, "little") + b"\x01" + payload


GOODBYE: Final = server_shutdown()
QUIT: Final = b"\x01\x00\x00\x00\x01"  # COM_QUIT, sent to the server when the relay ends it


def _lenenc(data: bytes, p: int) -> tuple[int, int]:
    """A length-encoded integer at ``p``: its value and the position after it."""
    b = data[p]
    if b < 0xFB:
        return b, p + 1
    size = {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(b, 0)
    return int.from_bytes(data[p + 1 : p + 1 + size], "little"), p + 1 + size


def _ok_status(data: bytes, p: int, end: int) -> int | None:
    """An OK packet's status flags (header at ``p``), None if it is too short."""
    q = p + 1
    for _ in range(2):  # affected rows, last insert id
        if q >= end:
            return None
        _, q = _lenenc(data, q)
    return data[q] | data[q + 1] << 8 if q + 2 <= end else None


class Fields(Protocol):
    """A session's state as the framers change it (:class:`Session`, or the C one).

    :class:`SessionRules` declares the same fields again, on purpose: its properties read
    them, and the framers cannot take it as their session's type, as mypy refuses to let them
    assign fields of a class with ``__slots__ = ()`` (a Protocol has no slots). Folding the
    two (SessionRules as the framers' type, its ``__slots__`` hidden from mypy, or a mypy-only
    base) costs mypy's check of :class:`Session`'s own assignments against its ``__slots__``;
    a Protocol base at run time would put its metaclass and a Python ``__init__`` in front of
    the C session's."""

    phase: int
    started: bool
    status: int
    queue: list[int]
    r: int
    left: int
    server_caps: int
    deprecate_eof: bool
    cache_meta: bool
    opaque: bool
    ended: bool
    fresh: bool


class SessionRules:
    """What a session's state means (shared by :class:`Session` and the C one,
    quiesce.dataplane.dbfast)."""

    __slots__ = ()
    phase: int
    started: bool
    status: int
    queue: list[int]
    r: int
    left: int
    server_caps: int
    deprecate_eof: bool
    cache_meta: bool
    opaque: bool
    ended: bool
    fresh: bool

    @property
    def state(self) -> str:
        """``idle``, ``transaction``, ``query`` (a command outstanding, or the handshake and
        authentication) or ``tls`` (not followed): the server view's counts."""
        if self.opaque:
            return "tls"
        if self.queue or not self.started:
            return "query"
        return "transaction" if self.status & IN_TRANS else "idle"

    @property
    def autocommit(self) -> bool:
        return bool(self.status & AUTOCOMMIT)

    @property
    def done(self) -> bool:
        """Nothing more will happen on it: the client quit or the server refused it."""
        return self.ended or self.phase == CLOSED

    def closable(self) -> bool:
        """Nothing a reconnect would lose: authenticated, no transaction, no command."""
        return self.started and not self.queue and not self.status & IN_TRANS

    def goodbye(self) -> tuple[bytes, bytes]:
        """What the relay sends the client and the server when it ends the session."""
        if not self.started or self.opaque or self.ended:
            return b"", b""
        return GOODBYE, QUIT


class Session(SessionRules):
    """One connection's protocol state, shared by its two framers."""

    __slots__ = (
        "cache_meta",
        "deprecate_eof",
        "ended",
        "fresh",
        "left",
        "opaque",
        "phase",
        "queue",
        "r",
        "server_caps",
        "started",
        "status",
    )

    def __init__(self) -> None:
        self.phase = GREETING
        self.started = False  # authenticated: the command phase
        self.status = AUTOCOMMIT  # the last OK/EOF packet's status flags
        self.queue = []  # commands whose response has not ended, oldest first
        self.r = _FIRST  # what the oldest command's response expects next
        self.left = 0  # column definitions (or packets) still to come in that response
        self.server_caps = 0
        self.deprecate_eof = False
        self.cache_meta = False
        self.opaque = False  # the client asked for TLS: bytes not followed any more
        self.ended = False  # the client sent COM_QUIT
        self.fresh = True  # no command sent since the authentication (dbrelay's grace)


class _Framer:
    __slots__ = ("cont", "max", "partial", "session", "size", "skip")
    _who: str
    _inspect: int  # payload bytes read of a packet in the command phase

    def __init__(self, session: Fields, max_message: int = MAX_MESSAGE) -> None:
        self.session = session
        self.max = max_message
        self.skip = 0  # bytes of the current packet's payload still to pass over
        self.partial = b""  # a packet's head (and the bytes read of it) split by reads
        self.cont = False  # the last packet was 0xFFFFFF long: the next continues it
        self.size = 0  # the current logical message's size so far

    def walk(self, data: bytes) -> str | None:
        """One read: an error, or None. One loop for both sides and every phase, inlined
        for the command phase's packets (a method call per packet was most of the cost)."""
        s = self.session
        if s.opaque:
            return None
        if self.partial:
            data = self.partial + data
            self.partial = b""
        pos = self.skip
        if pos:
            if pos >= len(data):
                self.skip = pos - len(data)
                return None
            self.skip = 0
        n = len(data)
        limit = self.max
        inspect = self._inspect
        server = inspect > 1
        cont = self.cont
        size = self.size
        command = s.phase == COMMAND
        rows, cols, long = _ROWS, _COLS, MAX_PACKET
        while n - pos >= 4:
            length = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
            end = pos + 4 + length
            if cont:  # the rest of a long message: not read
                size += length
                if size > limit:
                    return f"{self._who} sent a message of more than {limit} bytes"
                cont = length == long
            else:
                if command:
                    need = length if length < inspect else inspect
                else:
                    head = self._need(length, data[pos + 3])
                    if isinstance(head, str):
                        return head
                    need = head
                if pos + 4 + need > n:  # read it once that much is here
                    break
                if length > limit:
                    return f"{self._who} sent a packet of {length} bytes (limit {limit})"
                size = length
                cont = length == long
                if command and server:
                    r = s.r
                    if r == rows and length and data[pos + 4] < 0xFE:
                        pass  # a row
                    elif r == cols and s.left > 1:
                        s.left -= 1  # a column definition, not the last
                    else:
                        err = self._response(data, pos + 4, length)
                        if err is not None:
                            return err
                else:
                    err = self._packet(data, pos + 4, length, data[pos + 3])
                    if err is not None:
                        return err
                    if s.opaque:
                        return None
                    command = s.phase == COMMAND
            if end >= n:
                self.skip = end - n
                self.cont = cont
                self.size = size
                return None
            pos = end
        self.partial = data[pos:]
        self.cont = cont
        self.size = size
        return None

    def _need(self, length: int, seq: int) -> int | str:
        """How many bytes of a packet's payload it must see (or an error, from its head)."""
        raise NotImplementedError

    def _packet(self, data: bytes, p: int, length: int, seq: int) -> str | None:
        raise NotImplementedError

    def _response(self, data: bytes, p: int, length: int) -> str | None:
        raise NotImplementedError


class ClientRules:
    """The client side's packets (shared by :class:`ClientFramer` and the C one,
    quiesce.dataplane.dbfast, which calls ``_need`` and ``_packet`` for what it does not
    handle itself)."""

    __slots__ = ()
    _who = "client"
    _inspect = 1  # the command byte
    session: Fields
    walk: Callable[[bytes], str | None]

    def feed(self, data: bytes) -> tuple[bytes, bytes, str | None]:
        """One read before that: (bytes to pass on, bytes to answer, an error or None), as
        quiesce.dataplane.pg's framer; a MySQL relay passes everything and answers nothing."""
        return data, b"", self.walk(data)

    def _need(self, length: int, seq: int) -> int | str:
        if self.session.phase <= RESPONSE:
            if seq != 1 or length < 32 or length > MAX_HANDSHAKE:
                return (
                    f"client does not speak MySQL (first packet: {length} bytes, sequence id {seq})"
                )
            return 32
        return min(length, 1)

    def _packet(self, data: bytes, p: int, length: int, seq: int) -> str | None:
        s = self.session
        phase = s.phase
        if phase == COMMAND:
            if seq == 0:
                if not length:
                    return "client sent an empty command"
                cmd = data[p]
                s.fresh = False
                if cmd in _NO_RESPONSE:
                    return None
                if cmd == COM_QUIT:
                    s.ended = True
                    return None
                s.queue.append(cmd)
                return None
            q = s.queue
            if q and (s.r == _INFILE or q[0] == COM_CHANGE_USER):
                return None  # LOCAL INFILE data, or COM_CHANGE_USER's authentication
            return f"client sent a packet with sequence id {seq} and no command outstanding"
        if phase <= RESPONSE:  # the handshake response (its head checked by _need)
            caps = int.from_bytes(data[p : p + 4], "little")
            if not caps & CLIENT_PROTOCOL_41:
                return "client does not speak MySQL protocol 4.1"
            if caps & CLIENT_SSL and length == 32:
                s.opaque = True  # an SSL request: TLS follows, both ways
                return None
            s.deprecate_eof = bool(caps & s.server_caps & CLIENT_DEPRECATE_EOF)
            ext = int.from_bytes(data[p + 28 : p + 32], "little")
            s.cache_meta = bool(ext & MARIADB_CACHE_METADATA)
            s.phase = AUTH
            return None
        return None  # authentication data, or after the server refused the session


class ServerRules:
    """The server side's packets (shared by :class:`ServerFramer` and the C one,
    quiesce.dataplane.dbfast, which calls ``_need``, ``_packet`` and ``_response`` for what it
    does not handle itself)."""

    __slots__ = ()
    _who = "server"
    _inspect = _INSPECT
    session: Fields

    def _need(self, length: int, seq: int) -> int | str:
        if self.session.phase == GREETING:
            if seq != 0 or length > MAX_GREETING:
                return (
                    f"server does not speak MySQL (first packet: {length} bytes, sequence id {seq})"
                )
            return length
        return min(length, _INSPECT)

    def _packet(self, data: bytes, p: int, length: int, seq: int) -> str | None:
        s = self.session
        if s.phase == COMMAND:
            return self._response(data, p, length)
        if not length:
            return "server sent an empty packet"
        b = data[p]
        if s.phase == GREETING:
            if b == 0xFF:  # refused at once (too many connections, host blocked)
                s.phase = CLOSED
                return None
            if b != 10:
                return f"server does not speak MySQL protocol 10 (first byte {b})"
            nul = data.find(b"\0", p + 1, p + length)
            q = nul + 1 + 4 + 8 + 1  # version, connection id, scramble, filler
            if nul < 0 or q + 2 > p + length:
                return "server sent a malformed greeting"
            caps = data[q] | data[q + 1] << 8
            if q + 7 <= p + length:
                caps |= (data[q + 5] | data[q + 6] << 8) << 16
            s.server_caps = caps
            s.phase = RESPONSE
            return None
        if s.phase == RESPONSE:
            if b == 0xFF:
                s.phase = CLOSED
                return None
            return "server sent a packet before the client's handshake response"
        if s.phase == AUTH:
            if b == 0x00:  # authenticated
                status = _ok_status(data, p, p + length)
                if status is not None:
                    s.status = status
                s.phase = COMMAND
                s.started = True
            elif b == 0xFF:
                s.phase = CLOSED
            return None  # auth switch (0xFE), more data (0x01): the exchange goes on
        return None

    def _response(self, data: bytes, p: int, length: int) -> str | None:
        """One packet of the oldest outstanding command's response."""
        s = self.session
        q = s.queue
        b = data[p] if length else -1
        if not q:
            if b == 0xFF:  # the server's last word before it closes (killed, timed out)
                return None
            return "server sent a packet with no command outstanding"
        r = s.r
        if r == _ROWS:
            if b == 0xFE and length < MAX_PACKET:
                self._end_of_rows(data, p, length)
            elif b == 0xFF:
                self._done()
            return None
        end = p + length
        if r == _FIRST:
            cmd = q[0]
            if b == 0xFF:
                self._done()
            elif cmd in _RESULT_SETS:
                if b == 0x00:
                    self._ok(data, p, end)
                elif b == 0xFB and cmd == COM_QUERY:
                    s.r = _INFILE
                elif b < 0:
                    return "server sent an empty packet for a result set"
                else:
                    count, after = _lenenc(data, p)
                    if s.cache_meta and cmd != COM_QUERY and after < end and not data[after]:
                        count = 0  # MariaDB: the client has the columns cached
                    s.left = count
                    s.r = _COLS if count else self._after_columns()
            elif cmd == COM_STMT_PREPARE:
                if b != 0x00 or length < 9:
                    return "server sent a malformed answer to a prepare"
                cols = data[p + 5] | data[p + 6] << 8
                params = data[p + 7] | data[p + 8] << 8
                left = cols + params
                if not s.deprecate_eof:
                    left += (cols > 0) + (params > 0)
                if left:
                    s.left = left
                    s.r = _SKIP
                else:
                    self._done()
            elif cmd in (COM_STMT_FETCH, COM_FIELD_LIST):
                s.r = _ROWS
                return self._response(data, p, length)
            elif cmd == COM_STATISTICS:
                self._done()
            elif cmd == COM_CHANGE_USER:
                if b == 0x00:
                    self._ok(data, p, end)
                else:
                    s.r = _AUTH
            elif cmd in _STREAMS:
                s.r = _STREAM
            elif b == 0xFE:
                self._eof(data, p, length)
            else:
                if b == 0x00:
                    self._ok(data, p, end)
                else:
                    self._done()
        elif r == _COLS:
            s.left -= 1
            if not s.left:
                s.r = self._after_columns()
        elif r == _COLS_EOF:
            if b == 0xFF:
                self._done()
            elif b != 0xFE:
                return "server sent no EOF after the column definitions"
            else:
                status = data[p + 3] | data[p + 4] << 8 if length >= 5 else s.status
                s.status = status
                if status & CURSOR_EXISTS:
                    self._done()  # the rows come by COM_STMT_FETCH
                else:
                    s.r = _ROWS
        elif r == _SKIP:
            s.left -= 1
            if not s.left:
                self._done()
        elif r in (_INFILE, _AUTH):
            if b == 0x00:
                self._ok(data, p, end)
            elif b == 0xFF or r == _INFILE:
                self._done()
        elif r == _STREAM and (b == 0xFF or (b == 0xFE and length < 9)):
            self._done()
        return None

    def _after_columns(self) -> int:
        return _ROWS if self.session.deprecate_eof else _COLS_EOF

    def _ok(self, data: bytes, p: int, end: int) -> None:
        status = _ok_status(data, p, end)
        if status is not None:
            self.session.status = status
            if status & MORE_RESULTS:
                self.session.r = _FIRST  # another result follows
                return
        self._done()

    def _eof(self, data: bytes, p: int, length: int) -> None:
        if length >= 5:
            self.session.status = data[p + 3] | data[p + 4] << 8
        self._done()

    def _end_of_rows(self, data: bytes, p: int, length: int) -> None:
        if self.session.deprecate_eof:
            self._ok(data, p, p + length)
            return
        if length >= 5:
            status = self.session.status = data[p + 3] | data[p + 4] << 8
            if status & MORE_RESULTS:
                self.session.r = _FIRST
                return
        self._done()

    def _done(self) -> None:
        s = self.session
        del s.queue[0]
        s.r = _FIRST
        s.left = 0


class ClientFramer(ClientRules, _Framer):
    """Client to server: the handshake response, authentication data, then commands."""

    __slots__ = ()
    typed = _Framer.walk  # one read once authenticated (the relay's common path): an error


class ServerFramer(ServerRules, _Framer):
    """Server to client: the greeting, the authentication's answers, then responses."""

    __slots__ = ()
    feed = _Framer.walk  # one read from the server: an error or None
