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
monitor ``no check``.

:class:`RuntimeCommands` does the work without I/O (``execute(line) -> answer``); the socket
shell around it is thin.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from quiesce.admin.context import CommandContext
from quiesce.config.addresses import split_address
from quiesce.core.checks import Reason
from quiesce.core.errors import QuiesceError
from quiesce.core.states import Admin, Cause, Oper, Verdict
from quiesce.state.registry import PoolRuntime, Registry, ServerRuntime

ACTOR = "runtime-socket"
CAUSE = Cause.RUNTIME_SOCKET
CONTEXT = CommandContext(ACTOR, CAUSE)
"""Every command of the socket: it has no authentication, so no user name."""
IDLE_TIMEOUT = 600.0
MAX_LINE = 64 * 1024
MAX_COMMANDS = 64  # ';'-separated commands on one line

_STAT_HEADER = (
    "pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,"
    "wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,"
    "lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,"
    "hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,"
    "cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,"
    "ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,"
    "check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,"
    "conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,"
    "srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,"
    "safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,"
    "agg_server_check_status,agg_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,"
    "h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,"
    "h2_detected_conn_protocol_errors,h2_detected_strm_protocol_errors,h2_rst_stream_resp,"
    "h2_goaway_resp,h2_open_connections,h2_backend_open_streams,h2_total_connections,"
    "h2_backend_total_streams,h1_open_connections,h1_open_streams,h1_total_connections,"
    "h1_total_streams,h1_bytes_in,h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_out"
)
STAT_FIELDS = _STAT_HEADER.split(",")
"""HAProxy 2.6's ``show stat`` columns, in order (the header line ends with a comma)."""

SERVERS_STATE_HEADER = (
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
    "srv_iweight srv_time_since_last_change srv_check_status srv_check_result "
    "srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id "
    "srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr "
    "srv_agent_port"
)

# HAProxy's help lines ("  %-40s: %s"), for the commands this socket knows.
HELP: list[tuple[str, str]] = [
    ("disable server (DEPRECATED)", "disable a server for maintenance (use 'set server' instead)"),
    ("enable server  (DEPRECATED)", "enable a disabled server (use 'set server' instead)"),
    ("get var <name>", "retrieve contents of a process-wide variable"),
    ("get weight <bk>/<srv>", "report a server's current weight"),
    ("set server <bk>/<srv> [opts]", "change a server's state, weight, address or ssl"),
    ("set var <name> <expression>", "set a process-wide variable (quiesce: a runtime flag)"),
    ("set weight <bk>/<srv>  (DEPRECATED)", "change a server's weight (use 'set server' instead)"),
    (
        "show servers state [<backend>]",
        "dump volatile server information (all or for a single backend)",
    ),
    ("show stat [desc|json|no-maint|typed|up]*", "report counters for each proxy and server"),
    ("shutdown sessions server <bk>/<srv>", "kill sessions on a server"),
]
ALWAYS = [
    ("help [<command>]", "list matching or all commands"),
    ("prompt", "toggle interactive mode with prompt"),
    ("quit", "disconnect"),
]

# HAProxy's healthcheck status codes (HCHK_STATUS_*) and their short names.
_CHECK_CODES = {"INI": 1, "L4OK": 6, "L4TOUT": 7, "L4CON": 8, "L6RSP": 11, "L7TOUT": 12}
_CHECK_CODES |= {"L7RSP": 13, "L7OK": 14, "L7STS": 16, "SOCKERR": 5}


def _help_line(usage: str, text: str) -> str:
    return f"  {usage:<40}: {text}"


class CommandError(Exception):
    """An answer that is an error message (the text is HAProxy's where HAProxy has one)."""


@dataclass
class Session:
    interactive: bool = False
    quit: bool = False


class RuntimeCommands:
    """HAProxy runtime API commands against an App; ``execute`` returns the answer text."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.registry: Registry = app.registry
        self.started = self.registry.clock.time()

    # dispatch ------------------------------------------------------------------------------------

    def execute(self, line: str, session: Session | None = None) -> str:
        """The answers to one input line (``;``-separated commands), each ending with an
        empty line."""
        session = session or Session()
        out = []
        commands = _split_commands(line)
        if len(commands) > MAX_COMMANDS:
            # One line must not make the shared event loop produce megabytes of answers.
            return f"Too many commands on one line (at most {MAX_COMMANDS}).\n\n"
        for command in commands:
            words = command.split()
            if not words:
                continue
            try:
                text = self._one(words, session)
            except CommandError as exc:
                text = str(exc)
            except QuiesceError as exc:
                text = exc.message
            except (ValueError, OverflowError) as exc:  # e.g. a 5000-digit number
                text = f"Invalid argument: {str(exc)[:200]}"
            if session.quit:
                break
            out.append(text + ("\n" if text and not text.endswith("\n") else "") + "\n")
        return "".join(out)

    def _one(self, w: list[str], session: Session) -> str:
        handlers: list[tuple[list[str], Callable[[list[str]], str]]] = [
            (["show", "stat"], self.show_stat),
            (["show", "servers", "state"], self.show_servers_state),
            (["set", "server"], self.set_server),
            (["disable", "server"], lambda a: self._admin(a, "maint")),
            (["enable", "server"], lambda a: self._admin(a, "ready")),
            (["shutdown", "sessions", "server"], self.shutdown_sessions),
            (["set", "weight"], self.set_weight),
            (["get", "weight"], self.get_weight),
            (["set", "var"], self.set_var),
            (["get", "var"], self.get_var),
        ]
        if w[0] == "help":
            return self.help(w[1:])
        if w == ["prompt"]:
            session.interactive = not session.interactive
            return ""
        if w[0] in ("quit", "exit"):
            session.quit = True
            return ""
        if w[0] in ("experimental-mode", "expert-mode") and len(w) <= 2:
            return ""
        for prefix, handler in handlers:
            if w[: len(prefix)] == prefix:
                return handler(w[len(prefix) :])
        return self.unknown(w)

    # help ----------------------------------------------------------------------------------------

    def help(self, words: list[str]) -> str:
        lines = ["The following commands are valid at this level:"]
        for usage, text in HELP:
            if not words or usage.split()[: len(words)] == words[: len(usage.split())]:
                lines.append(_help_line(usage, text))
        lines += [_help_line(u, t) for u, t in ALWAYS]
        return "\n".join(lines)

    def unknown(self, words: list[str]) -> str:
        """HAProxy 2.6's answer: the commands closest to what was typed, then help/prompt/quit."""
        matches = [h for h in HELP if h[0].split()[0] == words[0]]
        if not matches:
            matches = [h for h in HELP if set(h[0].split()) & set(words)]
        lines = ["Unknown command, but maybe one of the following ones is a better match:"]
        lines += [_help_line(u, t) for u, t in matches]
        lines += [_help_line(u, t) for u, t in ALWAYS]
        return "\n".join(lines)

    # lookups -------------------------------------------------------------------------------------

    def _server(self, ref: str | None) -> ServerRuntime:
        if not ref or "/" not in ref:
            raise CommandError("Require 'backend/server'.")
        pool_name, _, name = ref.partition("/")
        pool = self.registry.pools.get(pool_name)
        if pool is None:
            raise CommandError("No such backend.")
        server = next((s for s in pool.servers if s.name == name), None)
        if server is None:
            raise CommandError("No such server.")
        return server

    # state changes -------------------------------------------------------------------------------

    def set_server(self, a: list[str]) -> str:
        if len(a) < 2:
            raise CommandError(
                "usage: set server <backend>/<server> addr | agent | agent-addr | agent-port | "
                "agent-send | check-addr | check-port | fqdn | health | ssl | state | weight"
            )
        server = self._server(a[0])
        what, args = a[1], a[2:]
        if what == "state":
            if not args or args[0] not in ("ready", "drain", "maint"):
                raise CommandError("'set server <srv> state' expects 'ready', 'drain' and 'maint'.")
            return self._admin([a[0]], args[0])
        if what == "health":
            if not args or args[0] not in ("up", "stopping", "down"):
                raise CommandError("'set server <srv> health' expects 'up', 'stopping', or 'down'.")
            return self._health(server, args[0])
        if what == "weight":
            return self.set_weight([a[0], *args])
        raise CommandError(f"'set server <srv> {what}' is not supported by quiesce.")

    def _admin(self, a: list[str], state: str) -> str:
        server = self._server(a[0] if a else None)
        admin = self.app.admin
        if state == "ready":
            admin.enable(server.key, CONTEXT)
        elif state == "drain":
            admin.drain(server.key, CONTEXT)
        else:
            admin.maintenance(server.key, CONTEXT)
        return ""

    def _health(self, server: ServerRuntime, state: str) -> str:
        """Force the operational state as HAProxy does: every monitor's track is set, and the
        next check result moves it on from there. A server with no monitor is unchanged."""
        target = Oper.UP if state == "up" else Oper.DOWN
        self.app.admin.force_health(server.key, target, CONTEXT, forced=state)
        return ""

    def shutdown_sessions(self, a: list[str]) -> str:
        server = self._server(a[0] if a else None)
        self.app.admin.shutdown_sessions(
            server.key, replace(CONTEXT, reason="shutdown sessions server")
        )
        return ""

    def set_weight(self, a: list[str]) -> str:
        server = self._server(a[0] if a else None)
        if len(a) < 2:
            raise CommandError("Require <weight> or <weight%>.")
        # HAProxy parses with strtol: a sign is allowed, then digits, then only "%".
        m = re.match(r"^([+-]?\d+)(.*)$", a[1])
        if m is None:
            raise CommandError("Empty weight string empty or preceded by garbage")
        value, rest = int(m.group(1)), m.group(2)
        relative = rest == "%"
        if rest and not relative:
            raise CommandError("Trailing garbage in weight string")
        if relative:
            if value < 0:
                raise CommandError("Relative weight must be positive.")
            weight = server.config.weight * value // 100
            if weight > 256:
                raise CommandError("Relative weight is too high.")
        else:
            weight = value
            if not 0 <= weight <= 256:
                raise CommandError("Absolute weight can only be between 0 and 256 inclusive.")
        self.app.admin.set_weight(server.key, weight, CONTEXT)
        return ""

    def get_weight(self, a: list[str]) -> str:
        server = self._server(a[0] if a else None)
        return f"{server.weight} (initial {server.config.weight})"

    # variables = runtime flags ------------------------------------------------------------------

    def set_var(self, a: list[str]) -> str:
        if not a:
            raise CommandError("Missing variable name.")
        name = a[0]
        if not name.startswith("proc."):
            raise CommandError(
                f"invalid variable name '{name}'. A variable name must be start by its scope. "
                "The scope can be 'proc', 'sess', 'txn', 'req', 'res' or 'check'"
            )
        if len(a) < 2:
            raise CommandError("Missing variable expression.")
        value = parse_expression(" ".join(a[1:]))
        self.app.admin.set_flag(name[5:], value, CONTEXT)
        return ""

    def get_var(self, a: list[str]) -> str:
        if not a:
            raise CommandError("Missing variable name.")
        name = a[0]
        if not name.startswith("proc."):
            raise CommandError(
                f"invalid variable name '{name}'. A variable name must be start by its scope. "
                "The scope can be 'proc', 'sess', 'txn', 'req', 'res' or 'check'"
            )
        flags = self.registry.flags
        if name[5:] not in flags:
            raise CommandError("Variable not found.")
        value = flags[name[5:]]
        if isinstance(value, bool):
            return f"{name}: type=bool value=<{int(value)}>"
        return f"{name}: type=str value=<{_printable(value)}>"

    # show stat -----------------------------------------------------------------------------------

    def show_stat(self, a: list[str]) -> str:
        """``show stat [{<iid>|<proxy>} <type> <sid>] [up|no-maint]`` as HAProxy 2.6 prints it."""
        words = [w for w in a if w not in ("up", "no-maint", "desc")]
        only_up, no_maint = "up" in a, "no-maint" in a
        if any(w in ("json", "typed") for w in words):
            raise CommandError("quiesce answers 'show stat' in CSV only.")
        proxy: str | None = None
        types, sid = -1, -1
        if words:
            if len(words) != 3:
                raise CommandError("Require a proxy, a type and a server id (-1 for all).")
            proxy = words[0]
            try:
                types, sid = int(words[1]), int(words[2])
            except ValueError:
                raise CommandError("The type and the server id are numbers.") from None
        rows = ["# " + ",".join(STAT_FIELDS) + ","]
        for iid, kind, name, obj in self._proxies():
            if proxy not in (None, "-1", name, str(iid)):
                continue
            if kind == "frontend":
                if types & 1:
                    rows.append(_csv(self._frontend_row(iid, name, obj)))
                continue
            pool: PoolRuntime = obj
            if types & 4:
                for s in pool.servers:
                    if sid not in (-1, s.order + 1):
                        continue
                    row = self._server_row(iid, pool, s)
                    if only_up and row["status"] not in ("UP", "no check"):
                        continue
                    if no_maint and s.admin.state is Admin.MAINTENANCE:
                        continue
                    rows.append(_csv(row))
            if types & 2:
                rows.append(_csv(self._backend_row(iid, pool)))
        return "\n".join(rows) + "\n"

    def _proxies(self) -> list[tuple[int, str, str, Any]]:
        """(iid, frontend|backend, name, object): services first, then pools, as HAProxy
        numbers proxies in config order."""
        out: list[tuple[int, str, str, Any]] = []
        iid = 2  # HAProxy's first user proxy is iid 2 (1 is internal)
        for name, svc in self.app.config.services.items():
            out.append((iid, "frontend", name, svc))
            iid += 1
        for name, pool in self.registry.pools.items():
            out.append((iid, "backend", name, pool))
            iid += 1
        return out

    def _frontend_row(self, iid: int, name: str, svc: Any) -> dict[str, object]:
        service = getattr(self.app, "services", {}).get(name)
        stats = getattr(service, "stats", None)
        responses: dict[str, int] = getattr(stats, "responses", {}) or {}
        # slim: the service's max_connections, else the global limit (HAProxy: a frontend's
        # maxconn defaults to the global one); FULL while a limit holds new connections
        limits = [getattr(service, "max_connections", None)]
        limits.append(getattr(getattr(self.app, "gate", None), "limit", None))
        slim = min((x for x in limits if isinstance(x, int) and x < sys.maxsize), default="")
        row: dict[str, object] = {
            "pxname": name,
            "svname": "FRONTEND",
            "scur": getattr(stats, "connections", 0),
            "smax": 0,
            "slim": slim,
            "stot": getattr(stats, "connections_total", 0),
            "bin": 0,
            "bout": 0,
            "dreq": 0,
            "dresp": 0,
            "ereq": 0,
            "status": "OPEN" if getattr(service, "accepting", True) else "FULL",
            "pid": 1,
            "iid": iid,
            "sid": 0,
            "type": 0,
            "rate": 0,
            "rate_lim": 0,
            "rate_max": 0,
            "req_rate": 0,
            "req_rate_max": 0,
            "req_tot": getattr(stats, "requests", 0),
            "mode": svc.protocol,
            "conn_rate": 0,
            "conn_rate_max": 0,
            "conn_tot": getattr(stats, "connections_total", 0),
        }
        row |= _hrsp(responses)
        return row

    def _server_row(self, iid: int, pool: PoolRuntime, s: ServerRuntime) -> dict[str, object]:
        now = self.registry.clock.time()
        checks = s.checks()
        last = checks[-1] if checks else None
        monitor = self.registry.monitors.get(s.monitors[0]) if s.monitors else None
        row: dict[str, object] = {
            "pxname": pool.name,
            "svname": s.name,
            "qcur": 0,
            "qmax": 0,
            "scur": s.connections,
            "smax": 0,
            "stot": s.requests_total,
            "bin": 0,
            "bout": 0,
            "dresp": 0,
            "econ": 0,
            "eresp": 0,
            "wretr": 0,
            "wredis": 0,
            "status": haproxy_status(s),
            "weight": s.weight,
            "act": 0 if s.config.backup else 1,
            "bck": 1 if s.config.backup else 0,
            "lastchg": int(now - (s.admin.since or self.started)),
            "pid": 1,
            "iid": iid,
            "sid": s.order + 1,
            "lbtot": s.requests_total,
            "type": 2,
            "rate": 0,
            "rate_max": 0,
            "hanafail": 0,
            "cli_abrt": 0,
            "srv_abrt": 0,
            "lastsess": -1,
            "qtime": 0,
            "ctime": 0,
            "rtime": 0,
            "ttime": 0,
            "addr": s.address,
            "mode": "http" if self._pool_mode(pool) == "http" else "tcp",
            "uweight": s.config.weight,
        }
        row |= _hrsp(s.responses)
        if s.monitors:
            row |= {"chkfail": 0, "chkdown": 0, "downtime": 0}
            if monitor is not None:
                row |= {
                    "check_rise": monitor.successful_checks,
                    "check_fall": monitor.failed_checks,
                    "check_health": _health(s, monitor.successful_checks, monitor.failed_checks),
                }
            if last is None:
                row |= {"check_status": "INI"}
            else:
                row |= {
                    "check_status": check_status(last.reason, last.verdict, monitor),
                    "check_code": last.status_code if last.status_code is not None else "",
                    "check_duration": round(last.latency * 1000),
                    "last_chk": last.detail or last.reason.value,
                    "check_desc": last.reason.value,
                }
        return row

    def _backend_row(self, iid: int, pool: PoolRuntime) -> dict[str, object]:
        responses: dict[str, int] = {}
        for s in pool.servers:
            for k, v in s.responses.items():
                responses[k] = responses.get(k, 0) + v
        act = sum(1 for s in pool.candidates if not s.config.backup)
        bck = sum(1 for s in pool.candidates if s.config.backup)
        row: dict[str, object] = {
            "pxname": pool.name,
            "svname": "BACKEND",
            "qcur": 0,
            "qmax": 0,
            "scur": pool.sessions,
            "smax": 0,
            "stot": sum(s.requests_total for s in pool.servers),
            "bin": 0,
            "bout": 0,
            "dreq": 0,
            "dresp": 0,
            "econ": 0,
            "eresp": 0,
            "wretr": 0,
            "wredis": 0,
            "status": "UP" if pool.available else "DOWN",
            "weight": sum(s.weight for s in pool.candidates),
            "act": act,
            "bck": bck,
            "chkdown": 0,
            "lastchg": 0,
            "downtime": 0,
            "pid": 1,
            "iid": iid,
            "sid": 0,
            "lbtot": sum(s.requests_total for s in pool.servers),
            "type": 1,
            "rate": 0,
            "rate_max": 0,
            "req_tot": sum(s.requests_total for s in pool.servers),
            "lastsess": -1,
            "mode": self._pool_mode(pool),
            "algo": _ALGOS.get(pool.config.algorithm, pool.config.algorithm),
            "uweight": sum(s.config.weight for s in pool.servers),
        }
        row |= _hrsp(responses)
        return row

    def _pool_mode(self, pool: PoolRuntime) -> str:
        for svc in self.app.config.services.values():
            if svc.pool == pool.name:
                return str(svc.protocol)
        return "http"

    # show servers state --------------------------------------------------------------------------

    def show_servers_state(self, a: list[str]) -> str:
        lines = ["1", SERVERS_STATE_HEADER]
        for iid, kind, name, obj in self._proxies():
            if kind != "backend" or (a and a[0] != name):
                continue
            pool: PoolRuntime = obj
            for s in pool.servers:
                lines.append(" ".join(str(v) for v in self._state_fields(iid, pool, s)))
        if a and a[0] not in self.registry.pools:
            raise CommandError(f"Can't find backend '{a[0]}'.")
        return "\n".join(lines) + "\n"

    def _state_fields(self, iid: int, pool: PoolRuntime, s: ServerRuntime) -> list[object]:
        now = self.registry.clock.time()
        op = {
            Oper.UP: 2,
            Oper.UNMONITORED: 2,
            Oper.MAINTENANCE: 3,
            Oper.DOWN: 0,
            Oper.UNKNOWN: 0,
        }[s.oper]
        if s.admin.state is Admin.MAINTENANCE:
            op = 0
        admin_flags = {Admin.ENABLED: 0, Admin.MAINTENANCE: 0x01, Admin.DRAIN: 0x08}[s.admin.state]
        checks = s.checks()
        last = checks[-1] if checks else None
        monitor = self.registry.monitors.get(s.monitors[0]) if s.monitors else None
        if last is None:
            chk_status, chk_result = (1, 0)
        else:
            name = check_status(last.reason, last.verdict, monitor)
            chk_status = _CHECK_CODES.get(name, 0)
            chk_result = 3 if last.verdict is Verdict.PASS else 2
        health = 0
        if monitor is not None:
            health = _health(s, monitor.successful_checks, monitor.failed_checks)
        return [
            iid,
            pool.name,
            s.order + 1,
            s.name,
            s.host,
            op,
            admin_flags,
            s.weight,
            s.config.weight,
            int(now - (s.admin.since or self.started)),
            chk_status,
            chk_result,
            health,
            6 if s.monitors else 0,
            0,
            0,
            0,
            "-",
            s.port,
            "-",
            0,
            0,
            "-",
            "-",
            0,
        ]


_ALGOS = {
    "round_robin": "roundrobin",
    "weighted_round_robin": "roundrobin",
    "least_connections": "leastconn",
    "source_ip_hash": "source",
}


def haproxy_status(s: ServerRuntime) -> str:
    if s.admin.state is Admin.MAINTENANCE:
        return "MAINT"
    if s.admin.state is Admin.DRAIN:
        return "DRAIN"
    return {
        Oper.MAINTENANCE: "NOLB",
        Oper.UP: "UP",
        Oper.DOWN: "DOWN",
        Oper.UNKNOWN: "DOWN",
        Oper.UNMONITORED: "no check",
    }[s.oper]


def check_status(reason: Reason, verdict: Verdict, monitor: Any) -> str:
    layer7 = monitor is not None and monitor.type in ("http", "https")
    if verdict is Verdict.PASS:
        return "L7OK" if layer7 else "L4OK"
    return {
        Reason.TIMEOUT: "L7TOUT" if layer7 else "L4TOUT",
        Reason.CONNECTION_REFUSED: "L4CON",
        Reason.CONNECTION_RESET: "L4CON",
        Reason.CONNECTION_ERROR: "L4CON",
        Reason.PORT_UNREACHABLE: "L4CON",
        Reason.HOST_UNREACHABLE: "L4CON",
        Reason.RESPONSE_CODE_MISMATCH: "L7STS",
        Reason.MAINTENANCE_RESPONSE_CODE_MATCH: "L7STS",
        Reason.PAYLOAD_CONTENT_MISMATCH: "L7RSP",
        Reason.MAINTENANCE_PAYLOAD_CONTENT_MATCH: "L7RSP",
        Reason.MALFORMED_RESPONSE: "L7RSP",
        Reason.TLS_ERROR: "L6RSP",
    }.get(reason, "SOCKERR")


def _health(s: ServerRuntime, rise: int, fall: int) -> int:
    """HAProxy's one rise/fall counter: 0..rise+fall-1, up from ``fall`` on."""
    if s.oper in (Oper.UP, Oper.MAINTENANCE):
        return rise + fall - 1
    return 0


def _hrsp(responses: dict[str, int]) -> dict[str, object]:
    return {
        "hrsp_1xx": responses.get("1xx", 0),
        "hrsp_2xx": responses.get("2xx", 0),
        "hrsp_3xx": responses.get("3xx", 0),
        "hrsp_4xx": responses.get("4xx", 0),
        "hrsp_5xx": responses.get("5xx", 0),
        "hrsp_other": responses.get("other", 0),
    }


def _csv(row: dict[str, object]) -> str:
    """One row in HAProxy's CSV: no quoting (HAProxy never quotes), trailing comma."""
    return ",".join(_field(row.get(f, "")) for f in STAT_FIELDS) + ","


def _field(value: object) -> str:
    return str(value).replace(",", " ").replace("\n", " ")


_EXPR = re.compile(r"^\s*(bool|str|int|sint)\((.*)\)\s*$")


def parse_expression(text: str) -> bool | str:
    """HAProxy's sample expressions for ``set var``: ``bool(true)``, ``str(x)``, ``int(5)``."""
    m = _EXPR.match(text)
    if m is None:
        fetch = text.strip().split("(")[0]
        raise CommandError(f"unknown fetch method '{fetch}'")
    kind, arg = m.group(1), m.group(2).strip()
    if kind == "bool":
        if arg.lower() in ("1", "true"):
            return True
        if arg.lower() in ("0", "false"):
            return False
        raise CommandError(f"failed to parse bool '{arg}'")
    if kind in ("int", "sint"):
        if not re.fullmatch(r"-?\d+", arg):
            raise CommandError(f"failed to parse integer '{arg}'")
        return str(int(arg))
    if len(arg) >= 2 and arg[0] == arg[-1] and arg[0] in "\"'":
        arg = arg[1:-1]
    return arg


def _printable(text: str) -> str:
    """Control characters escaped: a value must never end an answer (an empty line) early."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _split_commands(line: str) -> list[str]:
    """``;`` separates commands; ``\\;`` is a literal semicolon (HAProxy's escaping)."""
    out, cur, i = [], "", 0
    while i < len(line):
        c = line[i]
        if c == "\\" and i + 1 < len(line) and line[i + 1] == ";":
            cur += ";"
            i += 2
            continue
        if c == ";":
            out.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    out.append(cur)
    return [c.strip() for c in out]


# --- the sockets ----------------------------------------------------------------------------------


class RuntimeSocket:
    def __init__(self, app: Any) -> None:
        self.commands = RuntimeCommands(app)
        self.servers: list[asyncio.AbstractServer] = []
        self.path: Path | None = None
        self.port: int | None = None
        self._conns: set[asyncio.Task[None]] = set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
        session = Session()
        try:
            while True:
                try:
                    raw = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT)
                except ValueError:  # the line is longer than MAX_LINE
                    writer.write(f"Line too long (at most {MAX_LINE} bytes).\n\n".encode())
                    with contextlib.suppress(ConnectionError):
                        await writer.drain()
                    break
                except (TimeoutError, ConnectionError):
                    break
                if not raw:
                    break
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                was_interactive = session.interactive
                answer = self.commands.execute(line, session) if line.strip() else ""
                if session.interactive and not session.quit:
                    answer += "> "
                elif was_interactive and not session.quit and not answer:
                    answer = "\n"
                writer.write(answer.encode())
                await writer.drain()
                if session.quit or not session.interactive:
                    break
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if task is not None:
                self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def start(self, path: Path | None, tcp: str | None) -> None:
        try:
            if path is not None:
                if path.exists() and stat.S_ISSOCK(path.stat().st_mode):
                    path.unlink()
                old = os.umask(0o177)  # the socket is created 0600, like HAProxy's "mode 600"
                try:
                    server = await asyncio.start_unix_server(
                        self._handle, path=str(path), limit=MAX_LINE
                    )
                finally:
                    os.umask(old)
                self.servers.append(server)
                self.path = path
            if tcp is not None:
                from quiesce.frontends.api.server import is_loopback

                host, port = split_address(tcp)
                if not is_loopback(host):
                    raise OSError(
                        f"admin.runtime_tcp {tcp}: the runtime socket has no authentication "
                        "and listens on loopback only"
                    )
                server = await asyncio.start_server(self._handle, host, port, limit=MAX_LINE)
                self.servers.append(server)
                self.port = server.sockets[0].getsockname()[1]
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        for task in list(self._conns):
            task.cancel()
        for server in self.servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self.servers = []
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.path = None


async def start_runtime_socket(app: Any) -> RuntimeSocket:
    """Listen on ``admin.runtime_socket`` (relative to the config's directory) and on
    ``admin.runtime_tcp`` when set (loopback only)."""
    admin = app.config.admin
    path: Path | None = None
    if admin.runtime_socket:
        path = Path(admin.runtime_socket)
        if not path.is_absolute():
            path = Path(getattr(app, "base_dir", ".")) / path
    sock = RuntimeSocket(app)
    await sock.start(path, admin.runtime_tcp)
    return sock


__all__ = [
    "STAT_FIELDS",
    "RuntimeCommands",
    "RuntimeSocket",
    "Session",
    "haproxy_status",
    "parse_expression",
    "start_runtime_socket",
]
