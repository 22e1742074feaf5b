"""The monitor types and where each may be attached (MCP's node/pool compatibility)."""

from __future__ import annotations

MONITOR_TYPES: list[dict[str, object]] = [
    {
        "type": "icmp",
        "node_compatible": True,
        "pool_compatible": True,
        "description": "ICMP echo request; up when an echo reply comes back (needs CAP_NET_RAW).",
    },
    {
        "type": "tcp",
        "node_compatible": False,
        "pool_compatible": True,
        "description": "Full TCP handshake; optionally sends tcp_request and expects "
        "tcp_response (or maintenance_response) in the first 2048 bytes.",
    },
    {
        "type": "tcp_half_open",
        "node_compatible": False,
        "pool_compatible": True,
        "description": "SYN only: SYN-ACK is up, RST is down; the handshake is never "
        "completed, so the server's application never sees the check (needs CAP_NET_RAW).",
    },
    {
        "type": "udp",
        "node_compatible": False,
        "pool_compatible": True,
        "description": "Sends udp_request; ICMP port unreachable is down at once; "
        "udp_response / maintenance_response matched in the reply.",
    },
    {
        "type": "http",
        "node_compatible": False,
        "pool_compatible": True,
        "description": "Sends http_request (default GET / HTTP/1.0); checks "
        "http_response_code, http_response, maintenance_code and maintenance_response.",
    },
    {
        "type": "https",
        "node_compatible": False,
        "pool_compatible": True,
        "description": "HTTP over TLS, with sni, verify (on by default), ca and client_cert.",
    },
    {
        "type": "postgresql",
        "node_compatible": False,
        "pool_compatible": True,
        "description": "PostgreSQL start-up and authentication (asyncpg), a query, "
        "pg_is_in_recovery() for the role, maintenance by a query's result; wrong "
        "credentials are AUTH_FAILED.",
    },
    {
        "type": "mysql",
        "node_compatible": False,
        "pool_compatible": True,
        "description": "MySQL/MariaDB handshake and authentication (aiomysql), a query, "
        "SELECT @@read_only for the role, maintenance by a query's result; wrong "
        "credentials are AUTH_FAILED.",
    },
    {
        "type": "grpc",
        "node_compatible": False,
        "pool_compatible": True,
        "description": "The standard grpc.health.v1.Health/Check of grpc_monitor.service "
        "(grpcio), over h2c or TLS: SERVING is up, NOT_SERVING and SERVICE_UNKNOWN down; "
        "maintenance_status or maintenance_service SERVING means maintenance.",
    },
]
"""For ``GET /api/v1/healthmonitor-types``. As in Avi and MCP, only ICMP is node-compatible
(attachable to one server through ``ServerConfig.healthmonitors``); all are pool-compatible."""

NEEDS_RAW_SOCKET = {"icmp": "ICMP", "tcp_half_open": "TCP"}

__all__ = ["MONITOR_TYPES", "NEEDS_RAW_SOCKET"]
