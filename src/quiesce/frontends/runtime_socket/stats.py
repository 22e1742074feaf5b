"""``show stat`` and ``show servers state`` as HAProxy 2.6 prints them.

A pool is a backend, a server a server, a service a frontend; proxies are numbered in config
order from iid 2 (services first, then pools), as HAProxy numbers them. Columns that quiesce
does not measure are 0 or empty, never invented.
"""

from __future__ import annotations

import sys
from typing import Any

from quiesce.core.checks import Reason
from quiesce.core.states import Admin, Oper, Verdict
from quiesce.frontends.runtime_socket.errors import CommandError
from quiesce.state.registry import PoolRuntime, Registry, ServerRuntime

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

# HAProxy's healthcheck status codes (HCHK_STATUS_*) and their short names.
_CHECK_CODES = {"INI": 1, "L4OK": 6, "L4TOUT": 7, "L4CON": 8, "L6RSP": 11, "L7TOUT": 12}
_CHECK_CODES |= {"L7RSP": 13, "L7OK": 14, "L7STS": 16, "SOCKERR": 5}


class Stats:
    """The two stats commands against an App (its registry, config and services)."""

    def __init__(self, app: Any, started: float) -> None:
        self.app = app
        self.registry: Registry = app.registry
        self.started = started

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
