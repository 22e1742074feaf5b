"""The ``logging`` section: the access log (one line per L7 request and per L4 connection)
and the process log (stderr). Its fields and syslog addresses are named here, below every
user of them: the models validate a template against :data:`ACCESS_FIELDS`, and
quiesce.logs formats and sends with the same names (docs/dataplane.md, "Access log")."""

from __future__ import annotations

import os
import socket
import string
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from quiesce.config.addresses import split_address

ACCESS_FIELDS: dict[str, str] = {
    "time": "when the request (L4: the connection) began, UTC, ISO 8601 with milliseconds",
    "layer": "7 (an HTTP request) or 4 (a TCP connection)",
    "client_ip": "the client's address",
    "client_port": "the client's port",
    "service": "the service (listener) name",
    "pool": "the pool the request went to, `-` when none (a rule's answer, a bad request)",
    "server": "the server that served it, `-` when none",
    "method": "the request method (escaped), `-` for L4 and a request that could not be read",
    "path": "the request target as sent (escaped), `-` for L4",
    "status": "the status sent to the client, -1 when none was (a cut, L4)",
    "bytes_in": "bytes read from the client for this request (L4: the connection)",
    "bytes_out": "bytes written to the client for this request (L4: the connection)",
    "queue_ms": "time waiting in the pool's queue for a server (max_connections, hold_when_empty)",
    "connect_ms": "time to connect to the server; 0 on a reused connection, -1 when none",
    "response_ms": "request sent to response head received (L7), -1 when no head came",
    "total_ms": "request received (L4: accepted) to the end of the exchange",
    "retries": "how many times the request (L4: connection) was sent again after a failure",
    "termination": "two letters: who ended the exchange, and in which phase (docs/dataplane.md)",
    "request_id": "a process-unique id: the process's random prefix and a sequence number",
}
"""Every field of an access-log entry, in the JSON format's order, with what it holds
(docs/dataplane.md renders this table)."""

# A field of the template format only (and a json key on the lines that have one): not in
# every entry, so not in ACCESS_FIELDS (every json line's keys, in order)
EXTRA_FIELDS: dict[str, str] = {
    "grpc_status": "a gRPC call's grpc-status (0 OK ... 16) from an h2 pool's server, `-` when "
    "the answer had none; json lines carry it as `grpc_status` when there is one",
}

_SAMPLE = {
    "grpc_status": 0,
    "time": "2026-12-06T14:20:31.123Z",
    "layer": 7,
    "client_ip": "127.0.0.1",
    "client_port": 50000,
    "service": "web",
    "pool": "app",
    "server": "a1",
    "method": "GET",
    "path": "/",
    "status": 200,
    "bytes_in": 78,
    "bytes_out": 120,
    "queue_ms": 0,
    "connect_ms": 0.1,
    "response_ms": 1.2,
    "total_ms": 1.5,
    "retries": 0,
    "termination": "--",
    "request_id": "5f3a9c1e-1",
}


def access_format(value: str) -> str:
    if value in ("httplog", "json"):
        return value
    names = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
    if not names:
        raise ValueError(
            f"{value!r} is neither httplog, json nor a template naming {{fields}} "
            f"(fields: {', '.join(ACCESS_FIELDS)})"
        )
    for name in names:
        if name not in ACCESS_FIELDS and name not in EXTRA_FIELDS:
            raise ValueError(
                f"unknown field {{{name}}} in the template (fields: {', '.join(ACCESS_FIELDS)})"
            )
    try:
        value.format_map(_SAMPLE)
    except (ValueError, IndexError, KeyError) as exc:
        raise ValueError(f"the template cannot be formatted: {exc}") from None
    return value


def parse_syslog(value: str) -> tuple[str, str, int]:
    """``udp://HOST:PORT`` or ``HOST:PORT`` (RFC 5424 over UDP), ``unix:PATH`` or an
    absolute ``PATH`` (a datagram unix socket such as /dev/log). Returns ``("udp", host,
    port)`` or ``("unix", path, 0)``; raises ValueError."""
    text = value.strip()
    if text.startswith("unix:") or text.startswith("/"):
        path = text[5:] if text.startswith("unix:") else text
        if not path:
            raise ValueError(f"{value!r}: unix: needs a socket path (unix:/dev/log)")
        return "unix", path, 0
    if text.startswith("udp://"):
        text = text[6:]
    elif "://" in text:
        raise ValueError(f"{value!r}: syslog goes over udp://HOST:PORT or unix:PATH")
    host, port = split_address(text)
    if port == 0:
        raise ValueError(f"{value!r}: port 0 is not a syslog port (514 is the usual one)")
    return "udp", host, port


def syslog_address(value: str | None) -> str | None:
    if value is not None:
        parse_syslog(value)
    return value


def log_path(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise ValueError("an empty path (a file, or stdout)")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AccessLogConfig(_Model):
    # httplog (HAProxy-like), json, or a template such as "{client_ip} {status} {path}"
    format: Annotated[str, AfterValidator(access_format)] = "httplog"
    # a file (relative to the config file), or stdout; neither path nor syslog: stdout
    path: Annotated[str | None, AfterValidator(log_path)] = None
    # udp://HOST:PORT, HOST:PORT, unix:PATH or /PATH (RFC 5424)
    syslog: Annotated[str | None, AfterValidator(syslog_address)] = None
    # the share of requests logged, 0..1 (1: all)
    sample: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0


class ProcessLogConfig(_Model):
    format: Literal["text", "json"] = "text"
    level: Literal["debug", "info", "warning", "error"] = "info"


class LoggingConfig(_Model):
    # no access section: no access log
    access: AccessLogConfig | None = None
    process: ProcessLogConfig = ProcessLogConfig()


def logging_problems(cfg: LoggingConfig, base_dir: Path) -> list[str]:
    """What ``quiesce check`` can tell of the access log's destinations on this machine (a
    file's directory, a syslog socket or host), in the words ``quiesce run`` uses when it
    opens them (quiesce.logs.sink)."""
    access = cfg.access
    if access is None:
        return []
    problems: list[str] = []
    if access.path not in (None, "stdout"):
        p = Path(access.path)
        p = p if p.is_absolute() else base_dir / p
        problem = _open_problem(p)
        if problem is not None:
            problems.append(f"logging.access.path: cannot open {p}: {problem}")
    if access.syslog is not None:
        kind, host, port = parse_syslog(access.syslog)
        where = f"logging.access.syslog: cannot reach {access.syslog}"
        if kind == "unix":
            if not Path(host).exists():
                problems.append(f"{where}: No such file or directory")
        else:
            try:
                socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            except OSError as exc:
                problems.append(f"{where}: {exc.strerror or exc}")
    return problems


def _open_problem(path: Path) -> str | None:
    """Why ``quiesce run`` could not open ``path`` (the same open, quiesce.logs.sink), or
    None; a file this open creates is removed again (check leaves nothing behind)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
    created = False
    try:
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o640)
            created = True
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    if created:
        path.unlink(missing_ok=True)
    return None
