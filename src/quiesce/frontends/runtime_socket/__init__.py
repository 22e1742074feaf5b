"""The runtime socket: the part of HAProxy's runtime API (stats socket) deploy tooling uses.

Theory of operation
-------------------
Scripts written for HAProxy talk to this socket unchanged: same commands, same answers,
same formats (taken from HAProxy 2.6's own output, see docs/cli.md). A pool is a backend
(``pxname``), a server is a server (``svname``), a service is a frontend.

- One command per connection (``echo "show stat" | socat stdio UNIX:quiesce.sock``), or
  several separated by ``;`` on one line, or interactive mode after ``prompt`` (a ``> ``
  prompt after every answer, until ``quit`` or the client closes). Every answer ends with an
  empty line, as HAProxy's do.
- State changes go through :class:`quiesce.admin.AdminService` like every other front end,
  with actor and cause ``runtime-socket``, so they are audited and persisted.
- ``set var proc.NAME bool(true)|str(x)|int(n)`` sets the runtime flag NAME, and ``get var
  proc.NAME`` reads it (flags hold booleans and strings: ``int(n)`` is stored as the string).

Mapping of the displayed state to HAProxy's ``status`` column: admin maintenance ``MAINT``,
admin drain ``DRAIN``, "down for maintenance" (a monitor saw the server's maintenance
signal, HAProxy's ``disable-on-404``) ``NOLB``, up ``UP``, down or unknown ``DOWN``, no
monitor ``no check``, ejected by passive outlier detection ``DOWN (ejected)`` (stopped in
``show servers state``, as HAProxy's ``observe`` with ``on-error mark-down``).

Modules: :mod:`.commands` parses a line and runs each command (:class:`RuntimeCommands`,
``execute(line) -> answer``, no I/O); :mod:`.stats` renders ``show stat`` (HAProxy's CSV) and
``show servers state``; :mod:`.server` is the thin socket shell around them.
"""

from quiesce.frontends.runtime_socket.commands import (
    ACTOR,
    CAUSE,
    CONTEXT,
    MAX_COMMANDS,
    RuntimeCommands,
    Session,
    parse_expression,
)
from quiesce.frontends.runtime_socket.errors import CommandError
from quiesce.frontends.runtime_socket.server import (
    IDLE_TIMEOUT,
    MAX_LINE,
    RuntimeSocket,
    runtime_socket_path,
    start_runtime_socket,
)
from quiesce.frontends.runtime_socket.stats import (
    SERVERS_STATE_HEADER,
    STAT_FIELDS,
    haproxy_status,
)
from quiesce.frontends.runtime_socket.takeover import Handover, Listening, TakeoverError

__all__ = [
    "ACTOR",
    "CAUSE",
    "CONTEXT",
    "IDLE_TIMEOUT",
    "MAX_COMMANDS",
    "MAX_LINE",
    "SERVERS_STATE_HEADER",
    "STAT_FIELDS",
    "CommandError",
    "Handover",
    "Listening",
    "RuntimeCommands",
    "RuntimeSocket",
    "Session",
    "TakeoverError",
    "haproxy_status",
    "parse_expression",
    "runtime_socket_path",
    "start_runtime_socket",
]
