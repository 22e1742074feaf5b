"""Access-log entries and their formats, sans-IO: the data plane records an entry (a plain
tuple, no formatting on the request path); :class:`Formatter` turns a batch of them into
lines (httplog, json or a template; httplog and json in C when quiesce._logfast is built,
the same bytes), and :func:`syslog_frame` wraps one line for RFC 5424.
Nothing here touches a socket, a file or a clock: time comes in as arguments.

An entry (:data:`Entry`) is a tuple, in this order:

    end, layer, client_ip, client_port, service, pool, server, method, path, status,
    bytes_in, bytes_out, queue, connect, response, total, retries, termination

``end`` is the event loop's clock at the end of the exchange (the batch's ``offset`` turns it
into wall time); times are seconds, -1 when there is none; ``method`` and ``path`` are the
request's bytes (None: L4, or a request that could not be read); ``pool`` and ``server`` a
name or None. The field names users see are quiesce.config.logs.ACCESS_FIELDS.

Termination states (two letters, HAProxy's idea with our own codes; docs/dataplane.md):
the first says what ended the exchange, the second in which phase it was.
"""

from __future__ import annotations

import time
from typing import Any

from quiesce._accel import logfast
from quiesce.config.logs import ACCESS_FIELDS

Entry = tuple[Any, ...]

# What ended the exchange (the first letter).
NORMAL = "-"  # it completed
CLIENT = "C"  # the client closed or reset its connection first
SERVER = "S"  # the server refused, reset, closed early or sent something malformed (502)
SERVER_TIMEOUT = "s"  # no connection or no response head in time (504), queue timeout (503)
CLIENT_TIMEOUT = "c"  # the client did not send its request in time (408)
PROXY = "P"  # quiesce refused the request (400, 405, 414, 431)
NO_SERVER = "M"  # no eligible server: the maintenance page (L7), the connection closed (L4)
# (MQ: after waiting hold_when_empty for one to come back)
DEADLINE = "D"  # a drain deadline was reached (the server went to maintenance)
KILLED = "K"  # an operator cut it: maintenance --force, shutdown sessions
DOWN = "H"  # the server went down with on_server_down: close
GRACE = "G"  # quiesce stopped (or handed over) and the grace period ended

# In which phase (the second letter).
REQUEST = "R"  # reading the request (its head or body)
CONNECT = "C"  # connecting to the server
HEADERS = "H"  # waiting for the response head
DATA = "D"  # sending the response (L4: relaying)
QUEUE = "Q"  # waiting in the pool's queue for a server (max_connections, hold_when_empty)
DONE = "-"  # complete

TERMINATION_CAUSES = {
    NORMAL: "the exchange completed",
    CLIENT: "the client closed or reset its connection first",
    SERVER: "the server refused, reset or closed early, or sent a malformed response",
    SERVER_TIMEOUT: "server timeout: no connection (connect_timeout) or no response head "
    "(response_timeout) in time; in the queue (sQ): no server slot in queue_timeout (503)",
    CLIENT_TIMEOUT: "client timeout: the request head or body did not arrive in time",
    PROXY: "quiesce refused the request (400, 405, 414, 431)",
    NO_SERVER: "no eligible server: the maintenance page (L7), the connection closed (L4)",
    DEADLINE: "the server's drain deadline was reached",
    KILLED: "an operator cut it: maintenance --force, shutdown sessions",
    DOWN: "the server went down and its pool has on_server_down: close",
    GRACE: "quiesce stopped or handed over, and the grace period ended",
}
TERMINATION_PHASES = {
    REQUEST: "reading the request",
    CONNECT: "connecting to the server",
    HEADERS: "waiting for the response head",
    DATA: "sending the response (L4: relaying)",
    QUEUE: "waiting in the pool's queue for a server",
    DONE: "complete",
}

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_UNSAFE = frozenset('"\\#')


_WORDS: dict[bytes, str] = {}  # paths and methods seen, escaped (bounded: cleared when full)


def _text(raw: bytes | None) -> str:
    """A request's bytes as one printable ASCII word: bytes outside it (and ``"``, ``\\``,
    ``#``) as ``#XX``, as HAProxy escapes its logs. Safe inside a JSON string as it is."""
    if raw is None:
        return "-"
    word = _WORDS.get(raw)
    if word is not None:
        return word
    s = raw.decode("latin-1")
    if not (s.isascii() and s.isprintable() and " " not in s and _UNSAFE.isdisjoint(s)):
        s = "".join(c if 0x20 < ord(c) < 0x7F and c not in _UNSAFE else f"#{ord(c):02X}" for c in s)
    if len(_WORDS) >= 4096:
        _WORDS.clear()
    _WORDS[raw] = s
    return s


def _ms(seconds: float) -> int:
    return int(seconds * 1000.0) if seconds >= 0.0 else -1


def _fms(seconds: float) -> float:
    return round(seconds * 1000.0, 3) if seconds >= 0.0 else -1


class Formatter:
    """Entries to lines, in one of the formats: ``httplog``, ``json`` or a template
    (``str.format`` fields named in ACCESS_FIELDS). ``prefix`` starts each request id; the
    ids count on from 1 in the order entries are formatted."""

    __slots__ = ("_second", "_stamp", "fmt", "prefix", "seq")

    def __init__(self, fmt: str, prefix: str) -> None:
        self.fmt = fmt
        self.prefix = prefix
        self.seq = 0
        self._second = -1
        self._stamp = ("", "")

    def _stamps(self, wall: float) -> tuple[str, str]:
        """The httplog and ISO dates of ``wall`` (seconds since the epoch, UTC)."""
        second = int(wall)
        if second != self._second:
            t = time.gmtime(second)
            self._second = second
            self._stamp = (
                f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
                f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}",
                f"{t.tm_year}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
                f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}",
            )
        return self._stamp

    def format(self, entries: list[Entry], offset: float) -> list[str]:
        """The lines of ``entries`` (no newline); ``offset`` is wall time minus the event
        loop's clock, so ``end + offset`` is an entry's wall-clock end."""
        fmt = self.fmt
        if fmt == "httplog" or fmt == "json":
            return self._lines(entries, offset, fmt == "json")
        return self._template(entries, offset)

    def format_bytes(self, entries: list[Entry], offset: float) -> bytes:
        """The lines of ``entries``, each followed by a newline, encoded: from quiesce._logfast
        (C) for httplog and json when it is built (the same bytes, about a tenth of the
        CPU: BENCHMARKS.md, "Access log"), else from :meth:`format`."""
        fmt = self.fmt
        # (an entry of 19, a gRPC call's: quiesce._logfast reads 18, the Python path all)
        if FAST is not None and (fmt == "httplog" or fmt == "json") and _plain(entries):
            data: bytes
            data, self.seq = FAST.format(entries, offset, fmt == "json", self.prefix, self.seq)
            return data
        return ("\n".join(self.format(entries, offset)) + "\n").encode()

    def fields(self, e: Entry, offset: float) -> dict[str, Any]:
        """One entry as the fields users see (ACCESS_FIELDS), its request id assigned."""
        self.seq += 1
        start = e[0] + offset - max(e[15], 0.0)
        ms = int((start % 1.0) * 1000.0)
        iso = self._stamps(start)[1]
        l4 = e[1] == 4
        return {
            "time": f"{iso}.{ms:03d}Z",
            "layer": e[1],
            "client_ip": e[2],
            "client_port": e[3],
            "service": e[4],
            "pool": e[5] or "-",
            "server": e[6] or "-",
            "method": _text(e[7]),
            "path": "-" if l4 or e[8] is None else _text(e[8]),
            "status": e[9],
            "bytes_in": e[10],
            "bytes_out": e[11],
            "queue_ms": _fms(e[12]),
            "connect_ms": _fms(e[13]),
            "response_ms": _fms(e[14]),
            "total_ms": _fms(e[15]),
            "retries": e[16],
            "termination": e[17],
            "request_id": f"{self.prefix}-{self.seq:x}",
            "grpc_status": e[18] if len(e) > 18 else "-",
        }

    # One unpacking of the entry (its order: the module docstring) and one %-format per line:
    # the fastest way found (f-strings with conditional parts took 45% longer, json.dumps of
    # a dict three times as long). Names are [A-Za-z0-9_.:-], method and path escaped to
    # printable ASCII without '"' or '\\' (_text): nothing else needs escaping in json.

    def _lines(self, entries: list[Entry], offset: float, json: bool) -> list[str]:
        """httplog or json lines (the Python twin of quiesce._logfast)."""
        words = _WORDS
        prefix = self.prefix
        seq = self.seq
        second = self._second
        date = self._stamp[json]
        out: list[str] = []
        add = out.append
        for e in entries:
            end, layer, ip, port, service, pool, server, method, path, status, nin, nout, tw, tc, tr, tt, retries, term = e if len(e) == 18 else e[:18]  # fmt: skip  # noqa: E501
            seq += 1
            start = end + offset - (tt if tt > 0.0 else 0.0)
            if int(start) != second:
                date = self._stamps(start)[json]
                second = self._second
            ms = (start - second) * 1000.0
            pool = pool or "-"
            server = server or "-"
            w = tw * 1000.0 if tw >= 0.0 else -1
            c = tc * 1000.0 if tc >= 0.0 else -1
            t = tt * 1000.0 if tt >= 0.0 else -1
            if layer == 4:
                add(
                    _JSON4 % (date, ms, ip, port, service, pool, server, nin, nout, w, c, t, retries, term, prefix, seq)  # noqa: E501
                    if json
                    else _TCPLOG % (ip, port, date, ms, service, pool, server, w, c, t, nout, nin, term, retries, prefix, seq)  # noqa: E501
                )  # fmt: skip
                continue
            r = tr * 1000.0 if tr >= 0.0 else -1
            m = words.get(method) or _text(method)
            u = words.get(path) or _text(path)
            line = (
                _JSON7 % (date, ms, ip, port, service, pool, server, m, u, status, nin, nout, w, c, r, t, retries, term, prefix, seq)  # noqa: E501
                if json
                else _HTTPLOG % (ip, port, date, ms, service, pool, server, w, c, r, t, status, nout, nin, term, retries, prefix, seq, m, u)  # noqa: E501
            )  # fmt: skip
            if json and len(e) > 18:  # a gRPC call's grpc-status (quiesce.dataplane.h2client)
                line = f'{line[:-1]},"grpc_status":{e[18]:d}}}'
            add(line)
        self.seq = seq
        return out

    def _template(self, entries: list[Entry], offset: float) -> list[str]:
        fmt = self.fmt
        return [fmt.format_map(self.fields(e, offset)) for e in entries]


FAST = logfast  # quiesce._logfast, or None: the Python formatter (tests switch it)


def _plain(entries: list[Entry]) -> bool:
    """No entry carries a grpc-status (each has the 18 members quiesce._logfast reads)."""
    return max(map(len, entries), default=18) == 18


_HTTPLOG = '%s:%d [%s.%03d] %s %s/%s %d/%d/%d/%d %d %d %d %s %d %s-%x "%s %s"'
_TCPLOG = "%s:%d [%s.%03d] %s %s/%s %d/%d/%d %d %d %s %d %s-%x"
_JSON_HEAD = (
    '{"time":"%s.%03dZ","layer":LAYER,"client_ip":"%s","client_port":%d,"service":"%s",'
    '"pool":"%s","server":"%s",'
)
_JSON_TAIL = (
    '"bytes_in":%d,"bytes_out":%d,"queue_ms":%.3f,"connect_ms":%.3f,"response_ms":RESPONSE,'
    '"total_ms":%.3f,"retries":%d,"termination":"%s","request_id":"%s-%x"}'
)
_JSON7 = (
    _JSON_HEAD.replace("LAYER", "7")
    + '"method":"%s","path":"%s","status":%d,'
    + _JSON_TAIL.replace("RESPONSE", "%.3f")
)
_JSON4 = (
    _JSON_HEAD.replace("LAYER", "4")
    + '"method":null,"path":null,"status":null,'
    + _JSON_TAIL.replace("RESPONSE", "null")
)


def syslog_frame(line: str, iso_now: str, hostname: str, pid: int) -> bytes:
    """One RFC 5424 message: facility local0, severity info (``<134>``), version 1, the
    time, host, app name ``quiesce``, process id, message id ``access``, no structured data,
    and the line."""
    return f"<134>1 {iso_now} {hostname} quiesce {pid} access - {line}".encode()


def iso_utc(wall: float) -> str:
    """``wall`` (seconds since the epoch) as RFC 3339 UTC with milliseconds."""
    t = time.gmtime(wall)
    return (
        f"{t.tm_year}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:"
        f"{t.tm_sec:02d}.{int((wall % 1.0) * 1000):03d}Z"
    )


__all__ = [
    "ACCESS_FIELDS",
    "TERMINATION_CAUSES",
    "TERMINATION_PHASES",
    "Entry",
    "Formatter",
    "iso_utc",
    "syslog_frame",
]
