"""The C framers (quiesce._dbfast through quiesce.dataplane.dbfast) against the pure-Python
ones (quiesce.dataplane.pg, quiesce.dataplane.mysql), the reference: random PostgreSQL and
MySQL conversations, with malformed and oversized messages among them, split at random
points and fed read by read to both. After every read both must return the same thing (None,
or the same error) and hold the same state; after an error the relay closes the connection,
so the conversation stops there."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quiesce.dataplane import mysql, pg

dbfast = pytest.importorskip("quiesce.dataplane.dbfast")

pytestmark = pytest.mark.one_path  # sans-IO: no HTTP head path

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Segment = tuple[str, bytes]  # ("c", bytes from the client) or ("s", from the server)


def rare(draw: st.DrawFn, n: int) -> bool:
    """True about once in ``n`` draws (hypothesis favours small integers: not 0)."""
    return draw(st.integers(0, n - 1)) == n // 2


def split(draw: st.DrawFn, segments: list[Segment]) -> list[Segment]:
    """The conversation in reads: each direction's bytes cut at random points, and runs of
    one direction's segments sometimes joined into one read."""
    reads: list[Segment] = []
    for side, data in segments:
        if reads and reads[-1][0] == side and draw(st.booleans()):
            data = reads.pop()[1] + data
        cuts = sorted(draw(st.sets(st.integers(1, max(1, len(data) - 1)), max_size=4)))
        for a, z in zip([0, *cuts], [*cuts, len(data)], strict=False):
            if a < z:
                reads.append((side, data[a:z]))
    return reads


def run(
    reads: list[Segment],
    pure: tuple[Any, Any, Any],
    fast: tuple[Any, Any, Any],
    feed: Callable[[Any, Any, str, bytes], object],
    state: Callable[[Any, Any, Any], tuple[object, ...]],
) -> None:
    for i, (side, data) in enumerate(reads):
        want = feed(pure[0], pure[1] if side == "c" else pure[2], side, data)
        got = feed(fast[0], fast[1] if side == "c" else fast[2], side, data)
        assert got == want, f"read {i} ({side}): {data!r}"
        assert state(*fast) == state(*pure), f"after read {i} ({side}): {data!r}"
        if (want[-1] if isinstance(want, tuple) else want) is not None:
            return  # an error: the relay closes the connection


# ------------------------------------------------------------------------- PostgreSQL


def pg_msg(t: bytes, body: bytes, length: int | None = None) -> bytes:
    return t + (len(body) + 4 if length is None else length).to_bytes(4, "big") + body


PG_STARTUP = (lambda body: (len(body) + 4).to_bytes(4, "big") + body)(
    (196608).to_bytes(4, "big") + b"user\0u\0\0"
)
PG_SSL = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")
PG_CANCEL = (16).to_bytes(4, "big") + (80877102).to_bytes(4, "big") + b"\1" * 8
TAGS = [b"SELECT 1\0", b"LISTEN\0", b"UNLISTEN\0", b"DISCARD ALL\0", b"BEGIN\0", b"COMMIT\0"]


@st.composite
def pg_message(draw: st.DrawFn, side: str, limit: int) -> bytes:
    types = pg._FRONTEND_TYPES if side == "c" else pg._BACKEND_TYPES
    t = draw(st.sampled_from([bytes([x]) for x in types] + [b"Z", b"C", b"?", b"\0"]))
    if t == b"Z" and side == "s":
        body = draw(st.sampled_from([b"I", b"T", b"E", b""]))
    elif t == b"C" and side == "s":
        body = draw(st.sampled_from(TAGS)) + draw(st.binary(max_size=3))
        if rare(draw, 10):
            body += b"x" * 300  # longer than the framer reads (256)
    else:
        body = draw(st.binary(max_size=40)) + b"r" * draw(st.sampled_from([0, 0, 300, 5000]))
    length = None
    if rare(draw, 30):  # a broken length
        length = draw(st.sampled_from([0, 3, limit + 1, 0xFFFFFFFF, 0x40000000]))
    return pg_msg(t, body, length)


@st.composite
def pg_conversation(draw: st.DrawFn, limit: int) -> list[Segment]:
    first = draw(st.sampled_from([PG_STARTUP, PG_SSL + PG_STARTUP, PG_CANCEL, b"GET / HTTP"]))
    segments: list[Segment] = [("c", first)]
    segments.append(("s", pg_msg(b"R", b"\0" * 4) + pg_msg(b"Z", b"I")))
    for _ in range(draw(st.integers(0, 12))):
        side = draw(st.sampled_from("cs"))
        msgs = draw(st.lists(pg_message(side, limit), min_size=1, max_size=4))
        segments.append((side, b"".join(msgs)))
    return split(draw, segments)


def pg_feed(session: Any, framer: Any, side: str, data: bytes) -> object:
    return framer.feed(data)


def pg_state(s: Any, f: Any, b: Any) -> tuple[object, ...]:
    fields = (s.status, s.pending, s.unsynced, s.listening, s.started, s.cancel, s.ended)
    return (
        *fields,
        s.fresh,
        s.state,
        s.closable(),
        s.done,
        s.goodbye(),
        f.partial,
        f.skip,
        b.partial,
        b.skip,
    )


@SETTINGS
@given(st.sampled_from([300, 6000, pg.MAX_MESSAGE]).flatmap(pg_conversation))
def test_postgresql_c_framer_agrees_with_the_python_one(reads: list[Segment]) -> None:
    for limit in (300, pg.MAX_MESSAGE):  # 300: oversized messages among the random ones
        s1, s2 = pg.Session(), dbfast.PgSession()
        run(
            reads,
            (s1, pg.FrontendFramer(s1, limit), pg.BackendFramer(s1, limit)),
            (s2, dbfast.PgFrontendFramer(s2, limit), dbfast.PgBackendFramer(s2, limit)),
            pg_feed,
            pg_state,
        )


# ------------------------------------------------------------------------- MySQL


def pk(seq: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes([seq]) + payload


def greeting(caps: int) -> bytes:
    body = b"\x0a" + b"10.11.19-MariaDB\0" + b"\1\0\0\0" + b"abcdefgh\0"
    body += (caps & 0xFFFF).to_bytes(2, "little") + b"\x2d" + b"\2\0"
    body += (caps >> 16).to_bytes(2, "little") + b"\x15" + b"\0" * 10 + b"ijklmnopqrst\0"
    return pk(0, body)


def handshake(caps: int, ext: int, ssl: bool) -> bytes:
    body = caps.to_bytes(4, "little") + b"\0\0\0\1" + b"\x2d" + b"\0" * 19
    body += ext.to_bytes(4, "little")
    if not ssl:
        body += b"app\0" + b"\x14" + b"p" * 20 + b"mysql_native_password\0"
    return pk(1, body)


def status_packet(head: int, status: int) -> bytes:
    if head == 0x00:  # OK: affected rows, insert id (sometimes 3-byte encoded), status
        return b"\0" + b"\xfc\x01\x00" + b"\0" + status.to_bytes(2, "little") + b"\0\0"
    return b"\xfe\0\0" + status.to_bytes(2, "little")  # EOF


COMMANDS = [
    0x03,
    0x03,
    0x03,
    0x17,
    0x17,
    0x17,
    0x16,
    0x0E,
    0x01,
    0x19,
    0x18,
    0x1C,
    0x04,
    0x11,
    0x09,
]
COMMANDS += [0x0A, 0x12, 0xFA, 0x02]
STATUS = st.sampled_from([0x0002, 0x0003, 0x0001, 0x000A, 0x0009, 0x0042, 0x0000, 0xFFFF])


def likely(cmd: int) -> list[str]:
    """The answers a command mostly gets (any other one now and then)."""
    if cmd in (0x03, 0x17, 0x0A, 0xFA):
        return ["rows", "rows", "rows", "ok", "err"]
    if cmd == 0x16:
        return ["prepare", "prepare", "err"]
    if cmd in (0x1C, 0x04):
        return ["rows", "eof", "err"]
    return ["ok", "ok", "err", "eof"]


@st.composite
def mysql_response(draw: st.DrawFn, deprecate_eof: bool, cmd: int) -> bytes:
    """One command's answer, or something else a server may (or must not) send."""
    kinds = ["ok", "err", "eof", "rows", "prepare", "infile", "junk"]
    kind = draw(st.sampled_from(kinds if rare(draw, 10) else likely(cmd)))
    seq = draw(st.integers(0, 255))
    if kind == "ok":
        return pk(1, status_packet(0x00, draw(STATUS)))
    if kind == "err":
        return pk(1, b"\xff\x15\x04#28000denied")
    if kind == "eof":
        return pk(1, status_packet(0xFE, draw(STATUS)))
    if kind == "prepare":
        cols, params = draw(st.integers(0, 3)), draw(st.integers(0, 3))
        out = pk(1, b"\0\1\0\0\0" + cols.to_bytes(2, "little") + params.to_bytes(2, "little"))
        for _ in range(cols + params + 2 * (not deprecate_eof)):
            out += pk(2, b"\3def" + b"c" * 20)
        return out
    if kind == "infile":
        return pk(1, b"\xfbdata.csv")
    if kind == "junk":
        return pk(seq, draw(st.binary(max_size=12)))
    cols = draw(st.sampled_from([1, 2, 3, 0xFC]))
    head = bytes([cols]) if cols < 0xFB else b"\xfc\x02\x00"
    if draw(st.booleans()):
        head += b"\0"  # MariaDB: metadata follows (or not, with cached metadata)
    out = pk(1, head)
    for _ in range(cols if cols < 0xFB else 2):
        out += pk(2, b"\3def\6sbtest" + b"c" * draw(st.integers(0, 30)))
    if not deprecate_eof:
        out += pk(3, status_packet(0xFE, draw(STATUS)))
    for _ in range(draw(st.integers(0, 4))):
        out += pk(4, b"\0" + b"v" * draw(st.integers(0, 60)))
    end = 0x00 if deprecate_eof else 0xFE
    out += pk(
        5,
        (b"\xfe" + status_packet(0, draw(STATUS))[1:])
        if end == 0
        else status_packet(end, draw(STATUS)),
    )
    return out


@st.composite
def mysql_conversation(draw: st.DrawFn) -> list[Segment]:
    server_caps = draw(st.sampled_from([0x200 | 0x800 | (1 << 24), 0x200 | 0x800, 0x200]))
    caps = draw(st.sampled_from([0x200 | (1 << 24), 0x200, 0x200 | (1 << 24), 0x200 | 0x800]))
    caps = 0 if rare(draw, 20) else caps  # not protocol 4.1
    ssl = bool(caps & 0x800) and draw(st.booleans())
    ext = draw(st.sampled_from([0, 1 << 4]))
    deprecate_eof = bool(caps & server_caps & (1 << 24))
    first = draw(st.sampled_from(["greeting"] * 8 + ["refused", "junk"]))
    hello = {
        "greeting": greeting(server_caps),
        "refused": pk(0, b"\xff\x10\x04Too many connections"),
        "junk": b"HTTP/1.1 400 Bad Request\r\n",
    }[first]
    segments: list[Segment] = [("s", hello), ("c", handshake(caps, ext, ssl))]
    if ssl:
        segments.append(("c", b"\x16\x03\x01\x02\x00" + b"\x01" * 40))
    auth = draw(st.sampled_from(["ok", "ok", "ok", "switch", "err"]))
    if auth == "switch":
        segments += [
            ("s", pk(2, b"\xfemysql_native_password\0" + b"s" * 20)),
            ("c", pk(3, b"a" * 20)),
        ]
        segments.append(("s", pk(4, status_packet(0, draw(STATUS)))))
    else:
        segments.append(
            ("s", pk(2, status_packet(0, draw(STATUS)) if auth == "ok" else b"\xff\x15\x04"))
        )
    for _ in range(draw(st.integers(0, 12))):
        cmd = draw(st.sampled_from(COMMANDS))
        payload = bytes([cmd]) + draw(st.binary(max_size=30))
        seq = draw(st.integers(1, 3)) if rare(draw, 30) else 0
        segments.append(("c", pk(0, b"") if rare(draw, 40) else pk(seq, payload)))
        if cmd in (0x18, 0x19, 0x01):
            continue
        if cmd == 0x03 and rare(draw, 6):  # LOCAL INFILE: data, then OK
            segments += [("s", pk(1, b"\xfbdata.csv")), ("c", pk(2, b"1,2\n") + pk(3, b""))]
            segments.append(("s", pk(4, status_packet(0, draw(STATUS)))))
            continue
        segments.append(("s", draw(mysql_response(deprecate_eof, cmd))))
    return split(draw, segments)


def mysql_feed(session: Any, framer: Any, side: str, data: bytes) -> object:
    if side == "s":
        return framer.feed(data)
    return framer.typed(data) if session.started else framer.feed(data)


def mysql_state(s: Any, c: Any, b: Any) -> tuple[object, ...]:
    fields = (s.phase, s.started, s.status, list(s.queue), s.r, s.left, s.server_caps)
    flags = (s.deprecate_eof, s.cache_meta, s.opaque, s.ended, s.fresh)
    views = (s.state, s.closable(), s.done, s.goodbye(), s.autocommit)
    framers = (c.partial, c.skip, c.cont, c.size, b.partial, b.skip, b.cont, b.size)
    return (*fields, *flags, *views, *framers)


@SETTINGS
@given(mysql_conversation())
def test_mysql_c_framer_agrees_with_the_python_one(reads: list[Segment]) -> None:
    for limit in (40, mysql.MAX_MESSAGE):  # 40: oversized packets among the random ones
        s1, s2 = mysql.Session(), dbfast.MysqlSession()
        run(
            reads,
            (s1, mysql.ClientFramer(s1, limit), mysql.ServerFramer(s1, limit)),
            (s2, dbfast.MysqlClientFramer(s2, limit), dbfast.MysqlServerFramer(s2, limit)),
            mysql_feed,
            mysql_state,
        )


def test_a_long_mysql_message_is_refused_the_same_over_its_limit() -> None:
    """A 0xFFFFFF packet continued by the next: the logical message's size is checked
    across packets, by both."""
    for limit in (0x1000000, 0x2000000):
        outs = []
        for trio in (
            (lambda s: (s, mysql.ClientFramer(s, limit), mysql.ServerFramer(s, limit)))(
                mysql.Session()
            ),
            dbfast.mysql_framers(limit),
        ):
            s, c, _b = trio
            s.phase, s.started = mysql.COMMAND, True
            long = pk(0, b"\x03" + b"x" * (0xFFFFFF - 1))
            outs.append((c.typed(long[:1000]), c.typed(long[1000:]), c.typed(pk(1, b"y" * 100))))
            outs[-1] += (list(s.queue), c.cont, c.size, c.skip)
        assert outs[0] == outs[1]
    assert outs[0][2] is None  # 0x2000000: within the limit


def test_the_c_framers_are_used_unless_quiesce_pure() -> None:
    from quiesce import _accel
    from quiesce.dataplane import mysqlrelay, pgrelay

    assert _accel.dbfast is not None or _accel.PURE
    if not _accel.PURE:
        assert pgrelay._framers is dbfast.pg_framers
        assert mysqlrelay._framers is dbfast.mysql_framers


def test_a_framer_whose_init_did_not_run_is_refused_not_crashed_on() -> None:
    for cls, method in ((dbfast.PgBackendFramer, "typed"), (dbfast.MysqlServerFramer, "walk")):
        framer = cls.__new__(cls)
        assert framer.partial == b""
        with pytest.raises(RuntimeError, match="not initialised"):
            getattr(framer, method)(b"Z\0\0\0\5I")
    with pytest.raises(TypeError):
        dbfast.PgBackendFramer(dbfast.MysqlSession())  # a framer takes its own session
