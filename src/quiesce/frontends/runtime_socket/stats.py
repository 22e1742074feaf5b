"""``show stat`` and ``show servers state`` as HAProxy 2.6 prints them.

A pool is a backend, a server a server, a service a frontend; proxies are numbered in config
order from iid 2 (services first, then pools), as HAProxy numbers them. Columns that quiesce
does not measure are 0 or empty, never invented.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from quiesce.core.checks import Reason
from quiesce.core.states import Admin, Oper, Verdict
from quiesce.frontends.haproxy_check import haproxy_check_status, is_layer7
from quiesce.frontends.runtime_socket.errors import CommandError
from quiesce.frontends.runtime_socket.haproxy_fields import (
    NATURE,
    ORIGIN,
    SCOPE,
    STAT_TAGS,
    STAT_TAGS_BY_KIND,
)
from quiesce.state.registry import PoolRuntime, Registry, ServerRuntime
from quiesce.state.traffic import averages_ms

SLICE = 500  # show stat, show servers state: server lines a part of the answer has at most

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

# HAProxy 2.6's healthcheck statuses (enum hchk_status: codes in "show servers state") and
# their descriptions (check_desc in "show stat").
CHECK_CODES = {
    "UNK": 0, "INI": 1, "START": 2, "CHECKED": 3, "HANA": 4, "SOCKERR": 5, "L4OK": 6,
    "L4TOUT": 7, "L4CON": 8, "L6OK": 9, "L6TOUT": 10, "L6RSP": 11, "L7TOUT": 12, "L7RSP": 13,
    "L7OKD": 14, "L7OK": 15, "L7OKC": 16, "L7STS": 17,
}  # fmt: skip
CHECK_DESC = {
    "UNK": "Unknown", "INI": "Initializing", "START": "Started", "CHECKED": "Checked",
    "HANA": "Health analyze", "SOCKERR": "Socket error", "L4OK": "Layer4 check passed",
    "L4TOUT": "Layer4 timeout", "L4CON": "Layer4 connection problem",
    "L6OK": "Layer6 check passed", "L6TOUT": "Layer6 timeout",
    "L6RSP": "Layer6 invalid response", "L7TOUT": "Layer7 timeout",
    "L7RSP": "Layer7 invalid response", "L7OKD": "Layer7 check passed",
    "L7OK": "Layer7 check passed", "L7OKC": "Layer7 check conditionally passed",
    "L7STS": "Layer7 wrong status",
}  # fmt: skip
# srv_check_result (enum chk_result) and srv_check_state (CHK_ST_CONFIGURED | CHK_ST_ENABLED)
_RESULT = {Verdict.FAIL: 2, Verdict.PASS: 3, Verdict.MAINTENANCE: 4}
_CHK_CONFIGURED, _CHK_ENABLED = 0x2, 0x4

# The trailing module counters (ssl, h2, h1): HAProxy prints them for frontends and backends.
_MODULE_FIELDS = STAT_FIELDS[STAT_FIELDS.index("-") + 1 :]
_OBJ_TYPE = {"F": "Frontend", "B": "Backend", "S": "Server"}
# typed and json number the fields without the "-" separator column of the CSV header
_TYPED_FIELDS = [(pos, name) for pos, name in enumerate(f for f in STAT_FIELDS if f != "-")]


class _SetEmpty(str):
    """A field HAProxy sets to an empty string: empty in the CSV, listed by typed and json."""


@dataclass
class Row:
    """One ``show stat`` line: its kind (F, B, S), proxy id, server id and its fields; a
    field that is absent is printed empty, as HAProxy does for fields it does not set."""

    kind: str
    iid: int
    sid: int
    fields: dict[str, object]


def _atoi(text: str) -> int:
    """C's atoi, as HAProxy reads the numbers of ``show stat``: leading blanks and a sign,
    then digits; anything else ends the number (no digit: 0)."""
    m = re.match(r"\s*([+-]?\d{1,18})", text)
    return int(m.group(1)) if m else 0


class Stats:
    """``show stat`` and ``show servers state`` against an App (its registry, config and
    services)."""

    def __init__(self, app: Any, started: float) -> None:
        self.app = app
        self.registry: Registry = app.registry
        self.started = started

    # show stat -----------------------------------------------------------------------------------

    def show_stat(self, a: list[str]) -> str:
        """``show stat [{<iid>|<proxy>} <type> <sid>] [typed|json|up|no-maint|desc]*``, as
        HAProxy 2.6 parses it: the three filter words only when all three are there (then
        the options follow them), numbers read with atoi (so ``abc`` is 0)."""
        return "".join(self.show_stat_parts(a))

    def show_stat_parts(self, a: list[str]) -> Iterator[str]:
        """:meth:`show_stat`'s answer in parts: the header line (or json's ``[``), then the
        lines of at most :data:`SLICE` servers a part, each part made when it is asked for
        (the runtime socket sends one and gives the loop back before the next, as HAProxy
        streams it: issue 21). A bad filter raises at the first part."""
        iid, types, sid = -1, -1, -1
        options = a
        if len(a) >= 3:
            iid = next((i for i, _, name, _ in self._proxies() if name == a[0]), 0)
            if not iid:
                iid = _atoi(a[0])
            if not iid:
                raise CommandError("No such proxy.")
            types, sid = _atoi(a[1]), _atoi(a[2])
            options = a[3:]
        only_up, no_maint = "up" in options, "no-maint" in options
        write: Callable[[Row], str]
        if "json" in options:
            write, sep = _json_row, ","
            yield "["
        elif "typed" in options:
            write, sep = _typed_row, ""
            yield ""
        else:
            write, sep = lambda r: _csv(r) + "\n", ""
            yield "# " + ",".join(STAT_FIELDS) + ",\n"
        rows: list[Row] = []
        first = True

        def out() -> str:
            nonlocal first
            text = ("" if first else sep) + sep.join(write(r) for r in rows)
            first = False
            rows.clear()
            return text

        for p_iid, kind, name, obj in self._proxies():
            if iid != -1 and p_iid != iid:
                continue
            if kind == "frontend":
                if types & 1:
                    rows.append(self._frontend_row(p_iid, name, obj))
                continue
            pool: PoolRuntime = obj
            if types & 4:
                for s in list(pool.servers):
                    if sid != -1 and s.order + 1 != sid:
                        continue
                    if no_maint and s.admin.state is Admin.MAINTENANCE:
                        continue
                    row = self._server_row(p_iid, pool, s)
                    if only_up and row.fields["status"] not in ("UP", "no check"):
                        continue
                    rows.append(row)
                    if len(rows) >= SLICE:
                        yield out()
            if types & 2:
                rows.append(self._backend_row(p_iid, pool))
        if rows:
            yield out()
        if "json" in options:
            yield "]\n"

    def proxies(self) -> list[tuple[int, str, str, Any]]:
        return self._proxies()

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

    def frontend_limit(self, name: str) -> int | None:
        """A frontend's maxconn: the service's max_connections, else the global limit
        (HAProxy: a frontend's maxconn defaults to the global one); None when unknown."""
        service = getattr(self.app, "services", {}).get(name)
        limits = [getattr(service, "max_connections", None)]
        limits.append(getattr(getattr(self.app, "gate", None), "limit", None))
        known = [x for x in limits if isinstance(x, int) and x < sys.maxsize]
        return min(known) if known else None

    def _frontend_row(self, iid: int, name: str, svc: Any) -> Row:
        service = getattr(self.app, "services", {}).get(name)
        stats = getattr(service, "stats", None)
        responses: dict[str, int] = getattr(stats, "responses", {}) or {}
        http = svc.protocol == "http"
        conns = getattr(stats, "connections_total", 0)
        limit = self.frontend_limit(name)
        f: dict[str, object] = {
            "pxname": name,
            "svname": "FRONTEND",
            "scur": getattr(stats, "connections", 0),
            "smax": 0,
            "slim": "" if limit is None else limit,
            "stot": conns,
            "bin": getattr(stats, "bytes_in", 0),
            "bout": getattr(stats, "bytes_out", 0),
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
        }
        if http:
            f |= _hrsp(responses)
        f |= {
            "req_rate": 0,
            "req_rate_max": 0,
            "req_tot": getattr(stats, "requests", 0) if http else "",
            "comp_in": 0,
            "comp_out": 0,
            "comp_byp": 0,
            "comp_rsp": 0,
            "mode": svc.protocol,
            "conn_rate": 0,
            "conn_rate_max": 0,
            "conn_tot": conns,
            "intercepted": 0,
            "dcon": 0,
            "dses": 0,
            "wrew": 0,
            "cache_lookups": 0,
            "cache_hits": 0,
            "eint": 0,
            "-": "-",
        }
        f |= dict.fromkeys(_MODULE_FIELDS, 0)
        return Row("F", iid, 0, f)

    def _server_row(self, iid: int, pool: PoolRuntime, s: ServerRuntime) -> Row:
        now = self.registry.clock.time()
        http = self._pool_mode(pool) == "http"
        f: dict[str, object] = {
            "pxname": pool.name,
            "svname": s.name,
            "qcur": 0,  # the queue is the pool's (BACKEND row): none per server
            "qmax": 0,
            "scur": s.connections,
            "smax": 0,
            "slim": "" if s.config.max_connections is None else s.config.max_connections,
            "stot": s.requests_total,
            "bin": s.bytes_in,
            "bout": s.bytes_out,
            "dresp": 0,
            "econ": s.conn_errors,  # connects that failed for good (retried ones: wretr)
            "eresp": s.resp_errors,  # responses closed, cut, garbled or timed out
            "wretr": s.retries,  # sent again after this server failed them (pools.X.retries)
            "wredis": s.redispatches,  # of those, sent to another server
            "status": haproxy_status(s),
            "weight": s.weight,
            "act": 0 if s.config.backup else 1,
            "bck": 1 if s.config.backup else 0,
            "lastchg": self.lastchg(s, now),
            "pid": 1,
            "iid": iid,
            "sid": s.order + 1,
            "lbtot": s.requests_total,
            "type": 2,
            "rate": 0,
            "rate_max": 0,
        }
        monitor = self.registry.monitors.get(s.monitors[0]) if s.monitors else None
        if s.monitors and s.health_checks:
            checks = s.checks()
            last = checks[-1] if checks else None
            down = s.downtime + (now - s.down_since if s.down_since is not None else 0)
            f |= {"chkfail": s.checks_failed, "chkdown": s.went_down, "downtime": int(down)}
            name = "INI"
            if last is not None:
                name = haproxy_check_status(last.reason, last.verdict, is_layer7(monitor))
            f["check_status"] = name
            if last is not None:
                if name.startswith("L7") and last.status_code is not None:
                    f["check_code"] = last.status_code
                f["check_duration"] = round(last.latency * 1000)
                f["last_chk"] = _SetEmpty("")  # HAProxy: set, and empty for a pass
                if last.verdict is not Verdict.PASS:
                    f["last_chk"] = last.detail or _LAST_CHK.get(last.reason, last.reason.value)
            f["check_desc"] = CHECK_DESC[name]
            if monitor is not None:
                rise, fall = monitor.successful_checks, monitor.failed_checks
                f |= {"check_rise": rise, "check_fall": fall}
                f["check_health"] = _health(s, rise, fall)
        if http:
            f |= _hrsp(s.responses)
        ctime, rtime, ttime = averages_ms((s,))
        f |= {
            "req_tot": sum(s.responses.values()) if http else "",
            "cli_abrt": 0,
            "srv_abrt": s.srv_aborts,  # bodies cut short, L4 resets (also in eresp)
            "lastsess": -1,
            "qtime": 0,
            "ctime": ctime,
            "rtime": rtime,
            "ttime": ttime,
            "addr": s.address,
            "mode": "http" if http else "tcp",
            "wrew": 0,
            "connect": 0,
            "reuse": 0,
            "srv_icur": 0,
            "qtime_max": 0,
            "ctime_max": 0,
            "rtime_max": 0,
            "ttime_max": 0,
            "eint": 0,
            "idle_conn_cur": 0,
            "safe_conn_cur": 0,
            "used_conn_cur": 0,
            "need_conn_est": 0,
            "uweight": s.weight,
            "-": "-",
            "ssl_sess": 0,
            "ssl_reused_sess": 0,
            "ssl_failed_handshake": 0,
        }
        return Row("S", iid, s.order + 1, f)

    def lastchg(self, s: ServerRuntime, now: float) -> int:
        """Seconds since the server's last change of state, on either axis."""
        since = max(s.admin.since or 0.0, s.oper_since or 0.0) or self.started
        return max(0, int(now - since))

    def _backend_row(self, iid: int, pool: PoolRuntime) -> Row:
        now = self.registry.clock.time()
        http = self._pool_mode(pool) == "http"
        responses: dict[str, int] = {}
        for s in pool.servers:
            for k, v in s.responses.items():
                responses[k] = responses.get(k, 0) + v
        # HAProxy: act/bck count the usable active/backup servers; weight and uweight sum
        # the active ones' weights, or the backups' when no active server is usable
        usable = [s for s in pool.servers if s.eligible]
        active = [s for s in usable if not s.config.backup]
        backup = [s for s in usable if s.config.backup]
        weighted = active or backup
        total = sum(s.requests_total for s in pool.servers)
        limits = [
            self.frontend_limit(name)
            for name, svc in self.app.config.services.items()
            if svc.pool == pool.name
        ]
        # HAProxy's default fullconn: 10% of the maxconn of the frontends that use it, or 1
        known = [x for x in limits if x]
        fullconn = (sum(known) + 9) // 10 if known else 1
        f: dict[str, object] = {
            "pxname": pool.name,
            "svname": "BACKEND",
            "qcur": pool.queue.qcur,  # waiting for a server (max_connections, hold_when_empty)
            "qmax": pool.queue.qmax,
            "scur": pool.sessions,
            "smax": 0,
            "slim": fullconn,
            "stot": total,
            "bin": sum(s.bytes_in for s in pool.servers),
            "bout": sum(s.bytes_out for s in pool.servers),
            "dreq": 0,
            "dresp": 0,
            "econ": pool.conn_errors + sum(s.conn_errors for s in pool.servers),
            "eresp": sum(s.resp_errors for s in pool.servers),
            "wretr": sum(s.retries for s in pool.servers),
            "wredis": sum(s.redispatches for s in pool.servers),
            "status": "UP" if pool.available else "DOWN",
            "weight": sum(s.weight for s in weighted),
            "act": len(active),
            "bck": len(backup),
            "chkdown": 0,
            "lastchg": int(now - self.started),
            "downtime": 0,
            "pid": 1,
            "iid": iid,
            "sid": 0,
            "lbtot": total,
            "type": 1,
            "rate": 0,
            "rate_max": 0,
        }
        if http:
            f |= _hrsp(responses)
        ctime, rtime, ttime = averages_ms(pool.servers)
        f |= {
            "req_tot": sum(responses.values()) if http else "",
            "cli_abrt": 0,
            "srv_abrt": sum(s.srv_aborts for s in pool.servers),
            "comp_in": 0,
            "comp_out": 0,
            "comp_byp": 0,
            "comp_rsp": 0,
            "lastsess": -1,
            "qtime": round(pool.queue.qtime * 1000),  # ms, the last 1024 that got a server
            "ctime": ctime,
            "rtime": rtime,
            "ttime": ttime,
            "mode": "http" if http else "tcp",
            "algo": _ALGOS.get(pool.config.algorithm, pool.config.algorithm),
            "wrew": 0,
            "connect": 0,
            "reuse": 0,
            "cache_lookups": 0,
            "cache_hits": 0,
            "qtime_max": round(pool.queue.qtime_max * 1000),
            "ctime_max": 0,
            "rtime_max": 0,
            "ttime_max": 0,
            "eint": 0,
            "uweight": sum(s.weight for s in weighted),
            "agg_server_status": 0,
            "agg_server_check_status": 0,
            "agg_check_status": 0,
            "-": "-",
        }
        f |= dict.fromkeys(_MODULE_FIELDS, 0)
        return Row("B", iid, 0, f)

    def _pool_mode(self, pool: PoolRuntime) -> str:
        for svc in self.app.config.services.values():
            if svc.pool == pool.name:
                return str(svc.protocol)
        return "http"

    # show servers state --------------------------------------------------------------------------

    def show_servers_state(self, a: list[str]) -> str:
        """``show servers state [<backend>]``: the version line, the header, a line a
        server."""
        return "".join(self.show_servers_state_parts(a))

    def show_servers_state_parts(self, a: list[str]) -> Iterator[str]:
        """:meth:`show_servers_state`'s answer in parts, as :meth:`show_stat_parts`: the two
        header lines, then the lines of at most :data:`SLICE` servers a part, each made when
        it is asked for (review F8: 10,000 servers took 0.55-0.8 s in one turn of the loop,
        past socat's 0.5 s). An unknown backend raises at the first part."""
        if a and a[0] not in self.registry.pools:
            raise CommandError("Can't find backend.")
        yield "1\n" + SERVERS_STATE_HEADER + "\n"
        lines: list[str] = []
        for iid, kind, name, obj in self._proxies():
            if kind != "backend" or (a and a[0] != name):
                continue
            pool: PoolRuntime = obj
            for s in list(pool.servers):
                lines.append(" ".join(str(v) for v in self._state_fields(iid, pool, s)))
                if len(lines) >= SLICE:
                    yield "\n".join(lines) + "\n"
                    lines.clear()
        if lines:
            yield "\n".join(lines) + "\n"

    def _state_fields(self, iid: int, pool: PoolRuntime, s: ServerRuntime) -> list[object]:
        now = self.registry.clock.time()
        # srv_op_state: SRV_ST_STOPPED 0, STARTING 1, RUNNING 2, STOPPING 3 (NOLB)
        op = {
            Oper.UP: 2,
            Oper.UNMONITORED: 2,
            Oper.MAINTENANCE: 3,
            Oper.DOWN: 0,
            Oper.UNKNOWN: 0,
        }[s.oper]
        if s.admin.state is Admin.MAINTENANCE or s.ejected:
            op = 0  # an ejection stops it as HAProxy's observe + on-error mark-down would
        # srv_admin_state: SRV_ADMF_FMAINT 0x01, SRV_ADMF_FDRAIN 0x08
        admin_flags = {Admin.ENABLED: 0, Admin.MAINTENANCE: 0x01, Admin.DRAIN: 0x08}[s.admin.state]
        checks = s.checks()
        last = checks[-1] if checks else None
        monitor = self.registry.monitors.get(s.monitors[0]) if s.monitors else None
        if last is None:
            chk_status, chk_result = CHECK_CODES["INI"], 0
        else:
            status = haproxy_check_status(last.reason, last.verdict, is_layer7(monitor))
            chk_status = CHECK_CODES[status]
            chk_result = _RESULT[last.verdict]
        if monitor is not None:
            health = _health(s, monitor.successful_checks, monitor.failed_checks)
        else:  # no check: HAProxy keeps health at rise (2 by default) for a running server
            health = 2 if s.oper is Oper.UNMONITORED else 0
        chk_state = 0
        if s.monitors:
            chk_state = _CHK_CONFIGURED | (_CHK_ENABLED if s.health_checks else 0)
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
            self.lastchg(s, now),
            chk_status,
            chk_result,
            health,
            chk_state,
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


_LAST_CHK = {
    Reason.CONNECTION_REFUSED: "Connection refused",
    Reason.CONNECTION_RESET: "Connection reset by peer",
    Reason.HOST_UNREACHABLE: "No route to host",
    Reason.TIMEOUT: "Timeout",
}

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
    if s.ejected and s.oper in (Oper.UP, Oper.UNMONITORED):
        return "DOWN (ejected)"  # passive outlier detection: "ejected (passive)"
    if s.oper is Oper.UP and not s.health_checks:
        return "no check"  # HAProxy: a running server whose checks are disabled
    return {
        Oper.MAINTENANCE: "NOLB",
        Oper.UP: "UP",
        Oper.DOWN: "DOWN",
        Oper.UNKNOWN: "DOWN",
        Oper.UNMONITORED: "no check",
    }[s.oper]


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


def _csv(row: Row) -> str:
    """One row in HAProxy's CSV: no quoting (HAProxy never quotes), trailing comma."""
    f = row.fields
    return ",".join(_field(f.get(name, "")) for name in STAT_FIELDS) + ","


def _field(value: object) -> str:
    return str(value).replace(",", " ").replace("\n", " ")


def _tags(kind: str, name: str, value: object) -> tuple[str, str]:
    tags = STAT_TAGS_BY_KIND.get((kind, name)) or STAT_TAGS.get(name)
    if tags is not None:
        return tags
    return ("MGP", "u32") if isinstance(value, int) else ("MOP", "str")


def _typed_row(row: Row) -> str:
    """HAProxy's ``show stat typed``: ``F.<iid>.<sid>.<pos>.<name>.1:<tags>:<type>:<value>``
    for every field the row sets."""
    out = []
    for pos, name in _TYPED_FIELDS:
        value = row.fields.get(name, "")
        if value == "" and not isinstance(value, _SetEmpty):
            continue
        tags, typ = _tags(row.kind, name, value)
        head = f"{row.kind}.{row.iid}.{row.sid}.{pos}.{name}.1"
        out.append(f"{head}:{tags}:{typ}:{_field(value)}\n")
    return "".join(out)


def _json_row(row: Row) -> str:
    """HAProxy's ``show stat json``: one list of field objects per row."""
    items = []
    for pos, name in _TYPED_FIELDS:
        value = row.fields.get(name, "")
        if value == "" and not isinstance(value, _SetEmpty):
            continue
        tags, typ = _tags(row.kind, name, value)
        item = {
            "objType": _OBJ_TYPE[row.kind],
            "proxyId": row.iid,
            "id": row.sid,
            "field": {"pos": pos, "name": name},
            "processNum": 1,
            "tags": {"origin": ORIGIN[tags[0]], "nature": NATURE[tags[1]], "scope": SCOPE[tags[2]]},
            "value": {"type": typ, "value": value if typ != "str" else str(value)},
        }
        items.append(json.dumps(item, separators=(",", ":"), ensure_ascii=False))
    return "[" + ",".join(items) + "]"
