"""``show info``, ``show version``, ``show backend`` and ``show sess`` as HAProxy 2.6 prints
them.

``show info`` answers every line of HAProxy 2.6's, in its order, with quiesce's values where it
has them and 0 where it measures nothing of the kind (memory pools, SSL, compression, peers…).
``Name:`` is ``quiesce`` and ``Version:`` quiesce's version, unless the config says
``admin.runtime_socket_compat: haproxy``: then ``Name: HAProxy`` and ``Version:
2.6.0-quiesce-<version>``, for tools that refuse to talk to anything else (docs/cli.md).
"""

from __future__ import annotations

import json
import os
import resource
import socket
import time
from typing import Any

from quiesce import __version__
from quiesce.frontends.runtime_socket.haproxy_fields import INFO_FIELDS, NATURE, ORIGIN, SCOPE
from quiesce.frontends.runtime_socket.stats import Stats

HAPROXY_BRANCH = "2.6.0"
"""The HAProxy version whose runtime API this socket speaks (for ``runtime_socket_compat``)."""
RELEASE_DATE = "2025/01/01"
"""quiesce's release date of ``__version__``, HAProxy's ``Release_date:`` format."""


class Info:
    def __init__(self, app: Any, stats: Stats, started: float) -> None:
        self.app = app
        self.stats = stats
        self.started = started
        self.wall_started = time.time()

    @property
    def compat(self) -> bool:
        admin = getattr(self.app.config, "admin", None)
        return getattr(admin, "runtime_socket_compat", "quiesce") == "haproxy"

    def version(self) -> str:
        if self.compat:
            return f"{HAPROXY_BRANCH}-quiesce-{__version__}"
        return __version__

    def show_version(self, _a: list[str]) -> str:
        return self.version() + "\n"

    def show_backend(self, _a: list[str]) -> str:
        names = [name for _, kind, name, _ in self.stats.proxies() if kind == "backend"]
        return "".join(["# name\n", *(f"{n}\n" for n in names)])

    def show_sess(self, _a: list[str]) -> str:
        """HAProxy lists its streams, this CLI session included; quiesce lists the CLI
        session and one line per connection its connection table holds to a server."""
        lines = [
            f"0x{id(self):x}: proto=unix_stream src=unix:1 fe=GLOBAL be=<NONE> srv=<none> "
            "ts=00 epoch=0 age=0s calls=1 rate=0 cpu=0 lat=0"
        ]
        table = getattr(self.app, "table", None)
        busy: dict[Any, set[Any]] = getattr(table, "busy", {}) or {}
        for server, conns in list(busy.items()):
            for conn in list(conns):
                peer = getattr(conn, "peer", "") or "?"
                lines.append(
                    f"0x{id(conn):x}: proto=tcpv4 src={peer} fe={self._frontend(server.pool)} "
                    f"be={server.pool} srv={server.name} ts=00 epoch=0"
                )
        return "\n".join(lines) + "\n"

    def _frontend(self, pool: str) -> str:
        for name, svc in self.app.config.services.items():
            if svc.pool == pool:
                return str(name)
        return "<NONE>"

    # show info -----------------------------------------------------------------------------------

    def values(self) -> dict[str, object]:
        uptime = max(0, int(self.app.registry.clock.time() - self.started))
        d, rest = divmod(uptime, 86400)
        h, rest = divmod(rest, 3600)
        m, s = divmod(rest, 60)
        services = getattr(self.app, "services", {}) or {}
        stats = [getattr(svc, "stats", None) for svc in services.values()]
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        limit = getattr(getattr(self.app, "gate", None), "limit", None)
        maxconn = limit if isinstance(limit, int) else nofile
        name = "HAProxy" if self.compat else "quiesce"
        return {
            "Name": name,
            "Version": self.version(),
            "Release_date": RELEASE_DATE,
            "Nbthread": 1,
            "Nbproc": 1,
            "Process_num": 1,
            "Pid": os.getpid(),
            "Uptime": f"{d}d {h}h{m:02d}m{s:02d}s",
            "Uptime_sec": uptime,
            "Ulimit-n": nofile,
            "Maxsock": nofile,
            "Maxconn": maxconn,
            "Hard_maxconn": maxconn,
            "CurrConns": sum(getattr(x, "connections", 0) for x in stats),
            "CumConns": sum(getattr(x, "connections_total", 0) for x in stats),
            "CumReq": sum(getattr(x, "requests", 0) for x in stats),
            "Idle_pct": 100,
            "node": socket.gethostname(),
            "Listeners": len(services),
            "Build info": self.version(),
            "Start_time_sec": int(self.wall_started),
            "Tainted": "0",
        }

    def show_info(self, a: list[str]) -> str:
        """``show info [desc|json|typed|float]*``: plain ``Name: value`` lines, or typed
        (``<pos>.<name>.1:<tags>:<type>:<value>``), or json; ``desc`` and ``float`` change
        nothing here."""
        values = self.values()
        rows = [(pos, name, tags, typ, values.get(name, 0)) for pos, name, tags, typ in INFO_FIELDS]
        if "json" in a:
            items = [
                {
                    "field": {"pos": pos, "name": name},
                    "processNum": 1,
                    "tags": {
                        "origin": ORIGIN[tags[0]],
                        "nature": NATURE[tags[1]],
                        "scope": SCOPE[tags[2]],
                    },
                    "value": {"type": typ, "value": str(v) if typ == "str" else v},
                }
                for pos, name, tags, typ, v in rows
            ]
            return json.dumps(items, separators=(",", ":")) + "\n"
        if "typed" in a:
            return "".join(f"{p}.{n}.1:{t}:{ty}:{v}\n" for p, n, t, ty, v in rows)
        return "".join(f"{name}: {v}\n" for _, name, _, _, v in rows)
