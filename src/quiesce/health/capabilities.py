"""Which attached monitors cannot run here: the process may not open raw sockets, or a
library a monitor type needs is not installed (grpc: grpcio)."""

from __future__ import annotations

import socket
from collections.abc import Callable

from quiesce.config.models import Config
from quiesce.health.probes.grpc import missing
from quiesce.health.types import NEEDS_RAW_SOCKET

_PROTOCOLS = {"ICMP": socket.IPPROTO_ICMP, "TCP": socket.IPPROTO_TCP}


def can_open_raw(protocol: str) -> bool:
    """Try it: this is right for root, for CAP_NET_RAW without root, and inside containers
    whose capability set differs from what the user id suggests."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, _PROTOCOLS[protocol]).close()
    except PermissionError:
        return False
    return True


def monitors_in_use(config: Config) -> set[str]:
    used: set[str] = set()
    for pool in config.pools.values():
        used.update(pool.healthmonitors)
        for server in pool.servers:
            used.update(server.healthmonitors)
    return used


def raw_socket_problems(
    config: Config, can_open: Callable[[str], bool] = can_open_raw
) -> list[str]:
    """One message per attached ``icmp`` / ``tcp_half_open`` monitor that this process could
    not run (no root, no CAP_NET_RAW). ``quiesce run`` refuses to start when there are any."""
    problems: list[str] = []
    verdicts: dict[str, bool] = {}
    used = monitors_in_use(config)
    for name, monitor in sorted(config.healthmonitors.items()):
        protocol = NEEDS_RAW_SOCKET.get(monitor.type)
        if protocol is None or name not in used:
            continue
        if protocol not in verdicts:
            verdicts[protocol] = can_open(protocol)
        if not verdicts[protocol]:
            problems.append(
                f"health monitor {name!r} (type {monitor.type}) needs a raw {protocol} socket: "
                "run quiesce as root or grant it CAP_NET_RAW "
                "(setcap cap_net_raw+ep on the python binary, or "
                "AmbientCapabilities=CAP_NET_RAW in the systemd unit)"
            )
    return problems


def library_problems(config: Config) -> list[str]:
    """One message per attached ``grpc`` monitor when grpcio is not installed, saying how to
    install it (``quiesce check`` prints them as warnings; ``quiesce run`` refuses)."""
    used = monitors_in_use(config)
    names = [n for n, m in sorted(config.healthmonitors.items()) if m.type == "grpc" and n in used]
    if not names:
        return []
    hint = missing()
    return [] if hint is None else [f"health monitor {n!r} (type grpc): {hint}" for n in names]


def startup_problems(config: Config, can_open: Callable[[str], bool] = can_open_raw) -> list[str]:
    """What ``quiesce run`` (and a reload) refuses: monitors this process cannot run."""
    return raw_socket_problems(config, can_open) + library_problems(config)


__all__ = [
    "can_open_raw",
    "library_problems",
    "monitors_in_use",
    "raw_socket_problems",
    "startup_problems",
]
