"""The access log's formats, sans-IO (quiesce.logs.access): every field of httplog, json and
a template, escaping, request ids, dates, RFC 5424 framing; the ``logging`` keys' validation
with their paths; the process log's JSON lines and event lines."""

from __future__ import annotations

import calendar
import json
import logging
import re
from pathlib import Path

import pytest

from quiesce import _accel
from quiesce.config.loader import ConfigError, parse_config
from quiesce.config.logs import ACCESS_FIELDS
from quiesce.core.events import Event, EventKind
from quiesce.logs.access import (
    TERMINATION_CAUSES,
    TERMINATION_PHASES,
    Formatter,
    iso_utc,
    syslog_frame,
)
from quiesce.logs.process import JsonFormatter, describe

# 2026-12-06 14:20:31.250 UTC, as wall time; the entries' end is on the loop's clock (100.0)
WALL = calendar.timegm((2026, 12, 6, 14, 20, 31)) + 0.25
OFFSET = WALL - 100.0


def l7(**over: object) -> tuple[object, ...]:
    e = {
        "end": 100.0,
        "layer": 7,
        "ip": "10.0.0.7",
        "port": 51234,
        "service": "web",
        "pool": "app",
        "server": "a1",
        "method": b"GET",
        "path": b"/x?y=1",
        "status": 200,
        "nin": 78,
        "nout": 312,
        "queue": 0.0,
        "connect": 0.0015,
        "response": 0.0204,
        "total": 0.125,
        "retries": 0,
        "term": "--",
    }
    e.update(over)
    return tuple(e.values())


def l4(**over: object) -> tuple[object, ...]:
    base = dict(
        layer=4, method=None, path=None, status=-1, response=-1.0, nin=10, nout=20, total=2.0
    )
    base.update(over)
    return l7(**base)


def test_httplog_l7_every_field() -> None:
    f = Formatter("httplog", "abcd1234")
    (line,) = f.format([l7()], OFFSET)
    # started at end - total: 14:20:31.250 - 0.125 s = 14:20:31.125
    assert line == (
        "10.0.0.7:51234 [06/Dec/2026:14:20:31.125] web app/a1 0/1/20/125 200 312 78 -- 0 "
        'abcd1234-1 "GET /x?y=1"'
    )


def test_httplog_l4_and_no_server() -> None:
    f = Formatter("httplog", "p")
    line4, page = f.format(
        [l4(), l7(pool=None, server=None, status=503, connect=-1.0, response=-1.0, term="M-")],
        OFFSET,
    )
    assert line4 == "10.0.0.7:51234 [06/Dec/2026:14:20:29.250] web app/a1 0/1/2000 20 10 -- 0 p-1"
    assert " web -/- 0/-1/-1/125 503 312 78 M- 0 p-2 " in page


def test_json_has_every_field_in_order() -> None:
    f = Formatter("json", "p")
    cut = l7(status=503, term="DH", retries=1, response=-1.0)
    doc = json.loads(f.format([cut], OFFSET)[0])
    assert list(doc) == list(ACCESS_FIELDS)
    assert doc == {
        "time": "2026-12-06T14:20:31.125Z",
        "layer": 7,
        "client_ip": "10.0.0.7",
        "client_port": 51234,
        "service": "web",
        "pool": "app",
        "server": "a1",
        "method": "GET",
        "path": "/x?y=1",
        "status": 503,
        "bytes_in": 78,
        "bytes_out": 312,
        "queue_ms": 0.0,
        "connect_ms": 1.5,
        "response_ms": -1,
        "total_ms": 125.0,
        "retries": 1,
        "termination": "DH",
        "request_id": "p-1",
    }


def test_json_l4_has_nulls_for_http_fields() -> None:
    doc = json.loads(Formatter("json", "p").format([l4()], OFFSET)[0])
    assert doc["layer"] == 4
    assert doc["method"] is None and doc["path"] is None and doc["status"] is None
    assert doc["response_ms"] is None and doc["total_ms"] == 2000.0


def test_template() -> None:
    f = Formatter("{client_ip} {status} {path} {total_ms:.0f} {termination} {request_id}", "r")
    assert f.format([l7(), l7(status=404)], OFFSET) == [
        "10.0.0.7 200 /x?y=1 125 -- r-1",
        "10.0.0.7 404 /x?y=1 125 -- r-2",
    ]


@pytest.mark.parametrize(
    ("raw", "httplog", "in_json"),
    [
        (b"/a b", "/a#20b", "/a#20b"),
        (b'/q"x', "/q#22x", "/q#22x"),
        (b"/\xe9t\xe9", "/#E9t#E9", "/#E9t#E9"),
        (b"/\x01", "/#01", "/#01"),
        (b"/#frag", "/#23frag", "/#23frag"),
    ],
)
def test_path_escaped_to_one_printable_word(raw: bytes, httplog: str, in_json: str) -> None:
    line = Formatter("httplog", "p").format([l7(path=raw)], OFFSET)[0]
    assert line.endswith(f'"GET {httplog}"')
    doc = json.loads(Formatter("json", "p").format([l7(path=raw)], OFFSET)[0])
    assert doc["path"] == in_json


def test_bad_request_has_no_method_or_path() -> None:
    e = l7(method=None, path=None, pool=None, server=None, status=400, term="PR", total=0.0)
    line = Formatter("httplog", "p").format([e], OFFSET)[0]
    assert line.endswith(' 400 312 78 PR 0 p-1 "- -"')


def test_date_cache_follows_the_second() -> None:
    f = Formatter("httplog", "p")
    a, b = f.format([l7(total=0.0), l7(end=101.0, total=0.0)], OFFSET)
    assert "[06/Dec/2026:14:20:31.250]" in a and "[06/Dec/2026:14:20:32.250]" in b


def test_syslog_frame_is_rfc5424() -> None:
    frame = syslog_frame("a line", iso_utc(WALL), "host1", 42).decode()
    assert frame == "<134>1 2026-12-06T14:20:31.250Z host1 quiesce 42 access - a line"
    assert re.fullmatch(r"<\d+>1 \S+ \S+ \S+ \d+ \S+ - .+", frame)


def test_every_termination_letter_documented() -> None:
    assert set(TERMINATION_CAUSES) == set("-CSscPMDKHG")
    assert set(TERMINATION_PHASES) == set("RCHDQ-")


# --- the logging keys ------------------------------------------------------------------------

BASE = {
    "pools": {"p": {"servers": [{"name": "a", "address": "127.0.0.1:8081"}]}},
    "services": {"web": {"listen": "127.0.0.1:0", "pool": "p"}},
}


def problems(logging_: object, **service: object) -> list[str]:
    raw = {**BASE, "logging": logging_}
    raw["services"] = {"web": {**BASE["services"]["web"], **service}}  # type: ignore[index]
    with pytest.raises(ConfigError) as exc:
        parse_config(raw)
    return exc.value.problems


@pytest.mark.parametrize(
    ("logging_", "expected"),
    [
        ({"access": {"format": "{status} {nope}"}}, "logging.access.format: unknown field {nope}"),
        ({"access": {"format": "plain"}}, "logging.access.format: 'plain' is neither httplog"),
        ({"access": {"format": "{status:d}x{path:d}"}}, "logging.access.format: the template"),
        ({"access": {"syslog": "tcp://h:514"}}, "logging.access.syslog: 'tcp://h:514': syslog"),
        ({"access": {"syslog": "h:0"}}, "logging.access.syslog: 'h:0': port 0"),
        ({"access": {"syslog": "unix:"}}, "logging.access.syslog: 'unix:': unix: needs"),
        ({"access": {"path": " "}}, "logging.access.path: an empty path"),
        ({"access": {"sample": 1.5}}, "logging.access.sample: Input should be less than"),
        ({"access": {"sample": -0.1}}, "logging.access.sample: Input should be greater"),
        ({"access": {"colour": "red"}}, "logging.access.colour: unknown key"),
        ({"process": {"format": "xml"}}, "logging.process.format: Input should be 'text' or"),
        ({"process": {"level": "loud"}}, "logging.process.level: Input should be 'debug'"),
    ],
)
def test_bad_logging_keys_named_with_their_path(logging_: object, expected: str) -> None:
    found = problems(logging_)
    assert any(p.startswith(expected) for p in found), found


def test_access_log_switch_is_a_boolean() -> None:
    found = problems({}, access_log="sometimes")
    assert any(p.startswith("services.web.access_log:") for p in found), found


def test_good_logging_keys() -> None:
    raw = {
        **BASE,
        "logging": {
            "access": {"format": "json", "path": "a.log", "syslog": "udp://[::1]:514", "sample": 0},
            "process": {"format": "json", "level": "debug"},
        },
    }
    config = parse_config(raw)
    assert config.logging.access is not None and config.logging.access.sample == 0
    assert parse_config(BASE).logging.access is None  # no section: no access log
    assert parse_config(BASE).services["web"].access_log is True


# --- the process log -------------------------------------------------------------------------


def test_event_line() -> None:
    e = Event(
        time=0.0,
        kind=EventKind.OPER_CHANGE,
        pool="p",
        server="a",
        from_="up",
        to="down",
        cause="health",
        reason="connection refused",
        eligible=0,
    )
    assert describe(e) == (
        "oper_change p/a up -> down (connection refused) cause=health eligible=0"
    )


def test_json_process_line() -> None:
    record = logging.LogRecord("quiesce", logging.WARNING, "x", 1, "limit %d", (5,), None)
    record.created = WALL
    doc = json.loads(JsonFormatter().format(record))
    assert doc == {
        "time": "2026-12-06T14:20:31.250Z",
        "level": "warning",
        "logger": "quiesce",
        "message": "limit 5",
    }


def test_docs_list_every_field_and_code() -> None:
    """docs/dataplane.md's tables are these, row for row (so docs and names agree)."""
    docs = (Path(__file__).parents[2] / "docs" / "dataplane.md").read_text()
    fields = docs.split("<!-- access-fields:")[1].split("<!-- /access-fields -->")[0]
    rows = [f"| `{k}` | {v} |" for k, v in ACCESS_FIELDS.items()]
    assert [r for r in fields.splitlines() if r.startswith("| `")] == rows
    codes = docs.split("<!-- termination-codes:")[1].split("<!-- /termination-codes -->")[0]
    rows = [
        f"| `{k}` | {v} |" for t in (TERMINATION_CAUSES, TERMINATION_PHASES) for k, v in t.items()
    ]
    found = [r for r in codes.splitlines() if r.startswith("| `")]
    assert sorted(found) == sorted(rows) and len(found) == len(rows)


def test_check_sees_destinations_that_cannot_be_opened(tmp_path: Path) -> None:
    from quiesce.config.logs import LoggingConfig, logging_problems

    def problems(**access: object) -> list[str]:
        return logging_problems(LoggingConfig.model_validate({"access": access}), tmp_path)

    (tmp_path / "dir").mkdir()
    assert problems(path="a.log") == [] and problems(path="stdout") == []
    assert problems(path="dir/a.log", syslog="udp://127.0.0.1:514") == []
    assert problems(path="nowhere/a.log") == [
        f"logging.access.path: cannot open {tmp_path}/nowhere/a.log: No such file or directory"
    ]
    assert problems(path="dir") == [
        f"logging.access.path: cannot open {tmp_path}/dir: Is a directory"
    ]
    assert problems(syslog=f"unix:{tmp_path}/no.sock") == [
        f"logging.access.syslog: cannot reach unix:{tmp_path}/no.sock: No such file or directory"
    ]
    assert not (tmp_path / "a.log").exists()  # check opens nothing


def test_opening_a_destination_that_cannot_be_opened_names_the_key(tmp_path: Path) -> None:
    """What quiesce run and a reload meet when a destination went away after the check."""
    from quiesce.config.logs import AccessLogConfig
    from quiesce.logs.sink import LogError, open_destinations

    with pytest.raises(LogError, match=r"^logging\.access\.path: cannot open .*nowhere/a\.log"):
        open_destinations(AccessLogConfig(path="nowhere/a.log"), tmp_path)


# --- the C formatter (quiesce._logfast) ------------------------------------------------------


def _entries() -> list[tuple[object, ...]]:
    """Entries with every kind of value: L7 and L4, no server, cut exchanges, hostile paths
    and methods (control bytes, quotes, backslashes, '#', bytes above 0x7F, empty), big
    counters and times, a second boundary."""
    hostile = [b"/", b'/q"x\\y', b"/\x00\x1f\x7f\x80\xff", b"/#a b", b"", b"/" + bytes(range(256))]
    out: list[tuple[object, ...]] = []
    for i, path in enumerate(hostile):
        out.append(l7(path=path, end=100.0 + i * 0.4, total=0.0004 * i, connect=-1.0 + i))
        out.append(l7(method=b'GE"T\r\n', path=path, status=502, term="SH", retries=3))
    out += [
        l7(method=None, path=None, pool=None, server=None, status=400, term="PR", total=0.0),
        l7(pool="", server="", status=-1, response=-1.0, queue=1.23456, nin=2**40, nout=0),
        l7(end=1e6 + 0.9995, total=12345.6789, response=0.0005, connect=0.0015),
        l4(),
        l4(pool=None, server=None, term="M-", total=0.0, connect=-1.0),
        l7(ip="::1", port=65535, service="a.b_c-d:e", term="KD"),
    ]
    return out


@pytest.mark.skipif(_accel.logfast is None, reason="quiesce._logfast is not built")
@pytest.mark.parametrize("fmt", ["httplog", "json"])
def test_c_formatter_writes_the_python_formatters_bytes(
    fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quiesce.logs import access

    entries = _entries()
    c = Formatter(fmt, "abc")
    fast = c.format_bytes(entries[:5], OFFSET) + c.format_bytes(entries[5:], OFFSET)
    monkeypatch.setattr(access, "FAST", None)
    py = Formatter(fmt, "abc")
    assert fast == py.format_bytes(entries, OFFSET)
    assert c.seq == py.seq == len(entries)
    lines = fast.decode().split("\n")
    assert len(lines) == len(entries) + 1 and lines[-1] == ""
    for line in lines[:-1]:
        assert line.isascii() and line.isprintable()  # nothing hostile gets through raw
        if fmt == "json":
            json.loads(line)


def test_template_escapes_method_and_path_as_httplog_does() -> None:
    """A template line is one line too: a hostile method or path (token characters such as
    '#', or bytes a lenient parser let through) is escaped as in httplog and json."""
    f = Formatter('{method} "{path}"', "p")
    (line,) = f.format([l7(method=b'G#"\r\nT', path=b'/"\x00\n')], OFFSET)
    assert line == 'G#23#22#0D#0AT "/#22#00#0A"'
