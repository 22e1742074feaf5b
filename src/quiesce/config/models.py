"""The configuration, as immutable pydantic v2 models.

Monitor fields use Avi's names (DESIGN §4) so Avi users can port their monitors. Every model
forbids unknown keys. Cross-references (a pool naming a monitor, a service naming a pool) are
checked by :func:`quiesce.config.loader.cross_reference_errors`, which runs even when the rest
of the file has errors so that every problem is listed at once.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    StrictInt,
    model_validator,
)

from quiesce.config.addresses import split_address
from quiesce.config.base import KeyProblem, Model, Name
from quiesce.config.durations import parse_duration
from quiesce.config.logs import LoggingConfig
from quiesce.config.monitors import GrpcMonitor, MonitorTls
from quiesce.config.outlier import OutlierDetection
from quiesce.config.proxy import ProxyListener, ProxySender, SendProxy
from quiesce.config.retries import PoolRetries
from quiesce.config.rules import (
    _HTTP_ONLY,
    _TCP_ONLY,
    MonitorUri,
    OnResponseStatus,
    Rule,
    _uses,
)
from quiesce.config.tls import ListenerTls, PoolTls
from quiesce.config.upstream import PoolProtocol


def _address(value: str) -> str:
    split_address(value)
    return value.strip()


def _infinite_or_duration(value: object) -> float:
    """``-1`` / ``infinite`` mean no timeout (returned as -1.0)."""
    if value in (-1, "-1", "infinite", "inf", "none"):
        return -1.0
    return parse_duration(value)


def _duration_or_null(value: object) -> float | None:
    """A duration above 0, or ``null`` (None) for no limit."""
    if value is None:
        return None
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be above 0 (null: no limit)")
    return seconds


def _connection_count(value: object) -> int | None:
    """A number of connections: a whole number of at least 1, or ``null`` (None)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not a number of connections (a whole number ≥ 1, or null)")
    if value < 1:
        raise ValueError(f"{value} is below 1 (a whole number ≥ 1, or null)")
    return value


Duration = Annotated[float, BeforeValidator(parse_duration)]
DurationOrNull = Annotated[float | None, BeforeValidator(_duration_or_null)]
OptionalTimeout = Annotated[float, BeforeValidator(_infinite_or_duration)]
ConnectionCount = Annotated[int | None, BeforeValidator(_connection_count)]
Address = Annotated[str, AfterValidator(_address)]


def _server_address(value: str) -> str:
    if split_address(value)[1] == 0:
        raise ValueError(f"{value!r}: port 0 is not a port a server listens on (1-65535)")
    return value.strip()


ServerAddress = Annotated[str, AfterValidator(_server_address)]
"""A server's address: a listener may take port 0 (any free port), a server may not."""


def _loopback_address(value: str) -> str:
    host = split_address(value)[0]
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"{value!r}: the runtime socket has no authentication, so it listens on loopback "
            "only (127.0.0.1, ::1 or localhost)"
        )
    return value.strip()


LoopbackAddress = Annotated[str, AfterValidator(_loopback_address)]


# --- health monitors -----------------------------------------------------------------------

MonitorType = Literal[
    "icmp", "tcp", "tcp_half_open", "udp", "http", "https", "postgresql", "mysql", "grpc"
]
_CODE_CLASS = re.compile(r"^[1-5]xx$")


def _response_codes(values: list[str | int]) -> list[str]:
    out: list[str] = []
    for v in values:
        text = str(v).strip().lower()
        if text == "any" or _CODE_CLASS.match(text) or (text.isdigit() and 100 <= int(text) <= 599):
            out.append(text)
        else:
            raise ValueError(
                f"{v!r} is not a response code (use 2xx-style classes, any, or 100-599)"
            )
    if not out:
        raise ValueError("http_response_code needs at least one code or class")
    return out


def _maintenance_codes(values: list[int]) -> list[int]:
    if len(values) > 4:
        raise ValueError(f"at most 4 maintenance codes are allowed, got {len(values)}")
    for v in values:
        if not 101 <= v <= 599:
            raise ValueError(f"maintenance code {v} is outside 101-599")
    if len(set(values)) != len(values):
        raise ValueError("maintenance codes must not repeat")
    return values


def _short_string(value: str | None) -> str | None:
    if value is not None and len(value.encode()) > 2048:
        raise ValueError("must fit in the first 2048 bytes of a reply (at most 2048 bytes)")
    return value


MatchString = Annotated[str | None, AfterValidator(_short_string)]


class HttpMonitor(Model):
    http_request: str = "GET / HTTP/1.0"
    exact_http_request: bool = False
    http_response_code: Annotated[list[str | int], AfterValidator(_response_codes)] = ["2xx"]
    http_response: MatchString = None
    maintenance_code: Annotated[list[int], AfterValidator(_maintenance_codes)] = []
    maintenance_response: MatchString = None

    @model_validator(mode="after")
    def _request_line(self) -> HttpMonitor:
        first = self.http_request.split("\r\n", 1)[0].split("\n", 1)[0]
        parts = first.split()
        if len(parts) < 2 or not parts[0].isalpha() or not parts[1].startswith(("/", "*", "http")):
            raise ValueError(f"http_request {self.http_request!r} is not 'METHOD /path [HTTP/1.x]'")
        return self


class HttpsMonitor(MonitorTls, HttpMonitor):
    """HTTP over TLS: sni, verify, ca, client_cert and use_pool_tls (config.monitors)."""


class TcpMonitor(Model):
    tcp_request: str | None = None
    tcp_response: MatchString = None
    maintenance_response: MatchString = None


class UdpMonitor(Model):
    udp_request: str = ""
    udp_response: MatchString = None
    maintenance_response: MatchString = None


class DatabaseMonitor(Model):
    """What the database checks share: credentials, a query, the role, maintenance."""

    user: Annotated[str, Field(min_length=1)]
    # a file holding the password (its first line), read at each check as given (absolute, or
    # relative to the working directory); none: postgresql: asyncpg reads PGPASSWORD or
    # ~/.pgpass; mysql: no password
    password_file: str | None = None
    query: Annotated[str, Field(min_length=1)] = "SELECT 1"
    maintenance_query: str | None = None
    # primary: a replica (postgresql: in recovery; mysql: @@read_only on) fails the check
    # (ROLE_MISMATCH); replica: the other way round; any: both pass, the role is in the detail
    role: Literal["any", "primary", "replica"] = "any"


class PostgresqlMonitor(DatabaseMonitor):
    """A PostgreSQL check (quiesce.health.probes.postgresql): start-up and authentication
    (trust, md5, scram-sha-256), ``query``, ``pg_is_in_recovery()`` for the role, and
    ``maintenance_query``: a first column that is true means maintenance (a text: true
    unless it spells false, ``off``, ``no``, ``0`` or is empty)."""

    database: str = "postgres"


class MysqlMonitor(DatabaseMonitor):
    """A MySQL / MariaDB check (quiesce.health.probes.mysql): handshake and authentication,
    ``query``, ``SELECT @@read_only`` for the role (on: a replica), and ``maintenance_query``:
    a first column that is true (non-zero; a text unless it spells false: ``0``, ``off``, …)
    means maintenance."""

    database: str | None = None


_SUBOBJECT = {
    "postgresql": "postgresql_monitor",
    "mysql": "mysql_monitor",
    "grpc": "grpc_monitor",
    "http": "http_monitor",
    "https": "https_monitor",
    "tcp": "tcp_monitor",
    "udp": "udp_monitor",
    "icmp": None,
    "tcp_half_open": None,
}


class HealthMonitor(Model):
    type: MonitorType
    send_interval: Duration = 10.0
    receive_timeout: Duration = 4.0
    successful_checks: Annotated[int, Field(ge=1, le=50)] = 2
    failed_checks: Annotated[int, Field(ge=1, le=50)] = 2
    monitor_port: Annotated[int, Field(ge=0, le=65535)] = 0
    description: str = ""
    http_monitor: HttpMonitor | None = None
    https_monitor: HttpsMonitor | None = None
    tcp_monitor: TcpMonitor | None = None
    udp_monitor: UdpMonitor | None = None
    postgresql_monitor: PostgresqlMonitor | None = None
    mysql_monitor: MysqlMonitor | None = None
    grpc_monitor: GrpcMonitor | None = None  # quiesce.config.monitors
    send_proxy: SendProxy = None  # a PROXY header first (tcp, http); set from pools.X.send_proxy

    @model_validator(mode="after")
    def _consistent(self) -> HealthMonitor:
        problems = []
        if self.send_interval <= 0:
            problems.append("send_interval must be above 0")
        if self.receive_timeout <= 0:
            problems.append("receive_timeout must be above 0")
        if self.receive_timeout >= self.send_interval:
            problems.append(
                f"receive_timeout ({self.receive_timeout:g}s) must be below "
                f"send_interval ({self.send_interval:g}s)"
            )
        wanted = _SUBOBJECT[self.type]
        for sub in _SUBOBJECTS:
            if getattr(self, sub) is not None and sub != wanted:
                problems.append(f"{sub} does not go with type {self.type}")
        if self.type == "postgresql" and self.postgresql_monitor is None:
            problems.append("postgresql_monitor (with its user) is required for type postgresql")
        if self.type == "mysql" and self.mysql_monitor is None:
            problems.append("mysql_monitor (with its user) is required for type mysql")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def http(self) -> HttpMonitor:
        """The HTTP(S) settings, defaults filled in."""
        if self.type == "https":
            return self.https_monitor or HttpsMonitor()
        return self.http_monitor or HttpMonitor()

    @property
    def grpc(self) -> GrpcMonitor:
        return self.grpc_monitor or GrpcMonitor()

    @property
    def tcp(self) -> TcpMonitor:
        return self.tcp_monitor or TcpMonitor()

    @property
    def udp(self) -> UdpMonitor:
        return self.udp_monitor or UdpMonitor()


_SUBOBJECTS = (
    "http_monitor",
    "https_monitor",
    "tcp_monitor",
    "udp_monitor",
    "postgresql_monitor",
    "mysql_monitor",
    "grpc_monitor",
)


# --- pools and servers ---------------------------------------------------------------------

Algorithm = Literal["round_robin", "weighted_round_robin", "least_connections", "source_ip_hash"]


_GIVEN: dict[frozenset[str], set[str]] = {}  # ServerConfig's sets of keys given, shared
_NO_MONITORS: list[str] = []  # ServerConfig's healthmonitors when none is given, shared


class ServerConfig(Model):
    name: Name
    address: ServerAddress
    weight: Annotated[StrictInt, Field(ge=0, le=256)] = 1  # strict: true is not 1
    backup: bool = False
    priority: Annotated[StrictInt, Field(ge=0, le=1000)] = 0
    healthmonitors: list[str] = []  # node monitors (e.g. ICMP) of this server only
    # at most this many busy connections at once (L7 requests, L4 relays); more wait in the
    # pool's queue (queue_timeout); null: no limit
    max_connections: ConnectionCount = None

    def model_post_init(self, context: object, /) -> None:
        # The keys given, a set per model (216 bytes): one set per combination of keys
        # instead, shared (the model is frozen, so its set never changes; issue 21, memory at
        # 100,000 servers)
        given = self.__pydantic_fields_set__
        shared = _GIVEN.setdefault(frozenset(given), given)
        if shared is not given:
            object.__setattr__(self, "__pydantic_fields_set__", shared)
        # No monitor of its own (most servers): one empty list for all, not one each (56
        # bytes; never changed in place: the model is frozen and replaced on a change)
        if not self.healthmonitors and self.healthmonitors is not _NO_MONITORS:
            self.__dict__["healthmonitors"] = _NO_MONITORS

    @property
    def host(self) -> str:
        return split_address(self.address)[0]

    @property
    def port(self) -> int:
        return split_address(self.address)[1]


class Persistence(Model):
    type: Literal["cookie", "source_ip"]
    cookie_name: Name = "QUIESCE_SERVER"
    timeout: Duration = 3600.0


class PoolConfig(Model, ProxySender, PoolRetries, PoolProtocol):  # send_proxy; retries...; protocol
    algorithm: Algorithm = "round_robin"
    mode: Literal["balanced", "active_standby"] = "balanced"
    preempt: bool = False
    healthmonitors: list[str] = []
    min_health_monitors_up: Annotated[int, Field(ge=1)] | None = None
    graceful_disable_timeout: OptionalTimeout = 60.0
    min_servers_up: Annotated[int, Field(ge=0)] = 0
    on_server_down: Literal["leave", "close"] = "leave"
    slow_start: Duration = 0.0
    persistence: Persistence | None = None
    connect_timeout: Duration = 5.0
    response_timeout: Duration = 60.0
    max_idle_per_server: Annotated[int, Field(ge=0)] = 64
    # how long a request waits in the pool's queue for a server under its max_connections
    queue_timeout: Duration = 5.0
    # how long a request waits for a server to come back when none is eligible (a deploy),
    # instead of the maintenance page; null: not at all
    hold_when_empty: DurationOrNull = None
    tls: PoolTls | None = None  # speak TLS to the servers (quiesce.config.tls)
    outlier_detection: OutlierDetection | None = None  # passive ejection (config.outlier)
    servers: list[ServerConfig]

    @model_validator(mode="after")
    def _monitor_count(self) -> PoolConfig:
        # Duplicate server names are checked on the raw file (loader.cross_reference_errors)
        # so they are reported even when another field of the pool is invalid.
        if self.min_health_monitors_up is not None and self.min_health_monitors_up > len(
            self.healthmonitors
        ):
            raise ValueError(
                f"min_health_monitors_up ({self.min_health_monitors_up}) is more than the "
                f"{len(self.healthmonitors)} monitors attached"
            )
        return self


# --- services, pages, rules ----------------------------------------------------------------


class MaintenancePage(Model):
    status: Annotated[int, Field(ge=200, le=599)] = 503
    file: str | None = None
    body: str | None = None
    content_type: str = "text/html; charset=utf-8"
    retry_after: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> MaintenancePage:
        if self.file is not None and self.body is not None:
            raise ValueError("give either file or body, not both")
        return self


class ServiceConfig(Model, ProxyListener):  # accept_proxy, trusted_proxies
    listen: Address
    protocol: Literal["http", "tcp", "postgresql", "mysql"] = "http"
    pool: Name
    fallback_pool: Name | None = None
    maintenance_page: MaintenancePage = MaintenancePage()
    monitor_uri: MonitorUri | None = None
    rules: list[Rule] = []
    on_response_status: OnResponseStatus | None = None
    max_header_size: Annotated[int, Field(ge=1024)] = 65536
    max_request_line: Annotated[int, Field(ge=256)] = 8192
    client_header_timeout: Duration = 10.0
    client_idle_timeout: Duration = 60.0
    # the whole request body must arrive within this (null: no limit); enforced by the L7 proxy
    client_body_timeout: DurationOrNull = 300.0
    grace_period: Duration = 10.0
    # this service's client connections (null: only the global limits.max_connections)
    max_connections: ConnectionCount = None
    # false: no access-log line for this service (logging.access)
    access_log: bool = True
    tls: ListenerTls | None = None  # terminate TLS (quiesce.config.tls)
    # postgresql, mysql: a message longer than this closes the connection (PostgreSQL's own
    # limit; about MariaDB's largest max_allowed_packet)
    max_message_size: Annotated[int, Field(ge=1024, le=0x3FFFFFFF)] = 0x3FFFFFFF

    @model_validator(mode="after")
    def _protocol_fits(self) -> ServiceConfig:
        if self.protocol in ("postgresql", "mysql"):
            for i, rule in enumerate(self.rules):
                if _uses(rule.if_, _TCP_ONLY):
                    raise KeyProblem(
                        ("rules", i, "if"), f"sni is not seen by a {self.protocol} service (no TLS)"
                    )
        if self.protocol == "http":
            if self.tls is not None:
                unknown = [p for p in self.tls.alpn if p not in ("h2", "http/1.1")]
                if unknown or not self.tls.alpn or len(set(self.tls.alpn)) < len(self.tls.alpn):
                    raise KeyProblem(
                        ("tls", "alpn"),
                        "an http service offers h2 and/or http/1.1, each once "
                        f"(in order of preference), not {self.tls.alpn}",
                    )
            for i, rule in enumerate(self.rules):
                if _uses(rule.if_, _TCP_ONLY):
                    raise KeyProblem(("rules", i, "if"), "sni is a test of tcp services")
        else:
            for i, rule in enumerate(self.rules):
                bad = _uses(rule.if_, _HTTP_ONLY)
                if bad:
                    raise KeyProblem(
                        ("rules", i, "if"),
                        f"{bad} is a test of http requests; a tcp service "
                        "routes on sni, flag, source and usable_servers_below",
                    )
                if rule.then.pool is None:
                    raise KeyProblem(("rules", i, "then"), "a tcp service's rule names a pool")
        return self

    @property
    def sni_routing(self) -> bool:
        """A tcp service whose rules test ``sni``: routed on the ClientHello's server name
        (its connections start with quiesce.dataplane.frontdoor)."""
        return self.protocol == "tcp" and any(_uses(r.if_, _TCP_ONLY) for r in self.rules)


# --- admin, state, top level ---------------------------------------------------------------


class UserConfig(Model):
    name: Name
    password_hash: str
    role: Literal["admin", "read_only"] = "read_only"


class TokenConfig(Model):
    name: Name
    token_hash: str
    role: Literal["admin", "read_only"] = "read_only"


class TlsConfig(Model):
    cert: str
    key: str
    client_ca: str | None = None


class AdminConfig(Model):
    listen: Address = "127.0.0.1:9900"
    users: list[UserConfig] = []
    tokens: list[TokenConfig] = []
    runtime_socket: str | None = None
    runtime_tcp: LoopbackAddress | None = None
    # the commands runtime_tcp answers (it has no authentication: any local user connects), as
    # HAProxy's "stats socket ... level": user: show/get (stats, servers state, info, weight);
    # operator: also show sess, get var; admin: every change (set/add/del server, reload...).
    # The Unix runtime_socket is created 0600 and is always admin (docs/cli.md).
    runtime_tcp_level: Literal["user", "operator", "admin"] = "user"
    # what the runtime socket's "show info" / "show version" call the product: "haproxy"
    # answers "Name: HAProxy" and a 2.6 version, for tools that insist on it (docs/cli.md)
    runtime_socket_compat: Literal["quiesce", "haproxy"] = "quiesce"
    tls: TlsConfig | None = None
    allow_non_loopback: bool = False
    login_failures_per_minute: Annotated[int, Field(ge=1)] = 10


def _etcd_endpoint(value: object) -> object:
    """``host:port``, or a URL as etcd's own flags write it (``https://``: TLS, see ``tls``)."""
    if isinstance(value, str):
        for scheme in ("http://", "https://"):
            if value.startswith(scheme):
                return value.removeprefix(scheme).rstrip("/")
    return value


class EtcdTls(Model):
    ca: str | None = None  # PEM file of the CA that signed etcd's certificate; default: system's
    cert: str | None = None  # this node's client certificate (PEM), for --client-cert-auth
    key: str | None = None  # ... and its key

    @model_validator(mode="after")
    def _pair(self) -> EtcdTls:
        if (self.cert is None) != (self.key is None):
            raise ValueError("give cert and key together, or neither")
        return self


class EtcdConfig(Model):
    endpoints: Annotated[
        list[Annotated[Address, BeforeValidator(_etcd_endpoint)]], Field(min_length=1)
    ]
    prefix: str = "/quiesce/"
    node: Name | None = None  # this node's name in shared events; default host:pid
    # no answer from etcd for this long: this node says its view is stale (node_isolated)
    stale_after: Annotated[Duration, Field(ge=0.2, le=300)] = 3.0
    # the lease of this node's registration (nodes/<name>): it is gone this long after a crash
    lease_ttl: Annotated[int, Field(ge=2, le=300)] = 5
    # etcd's authentication (docs/admin.md, "etcd access"): a user whose role covers the prefix;
    # its password inline or in a file (relative to the config file), not both
    username: str | None = None
    password: str | None = None
    password_file: str | None = None
    # TLS to etcd (files relative to the config file); https:// endpoints alone: the system's CAs
    tls: EtcdTls | None = None

    @model_validator(mode="before")
    @classmethod
    def _https(cls, data: object) -> object:
        if not isinstance(data, dict) or not isinstance(data.get("endpoints"), list):
            return data
        urls = [e for e in data["endpoints"] if isinstance(e, str)]
        if data.get("tls") is not None and (plain := [e for e in urls if e.startswith("http://")]):
            raise ValueError(f"endpoints: {plain[0]!r} is http:// but tls is set: give https://")
        if data.get("tls") is None and any(e.startswith("https://") for e in urls):
            return {**data, "tls": {}}
        return data

    @model_validator(mode="after")
    def _credentials(self) -> EtcdConfig:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        has_password = self.password is not None or self.password_file is not None
        if (self.username is None) != (not has_password):
            raise ValueError("give username with password (or password_file), or neither")
        return self


class EventRetention(Model):
    rows: Annotated[int, Field(ge=100)] = 100_000
    age: Duration = 30 * 86400.0


class StateConfig(Model):
    sqlite: str | None = "./quiesce-state.db"
    etcd: EtcdConfig | None = None
    event_retention: EventRetention = EventRetention()


class LimitsConfig(Model):
    # client connections of all services together; null: derived from RLIMIT_NOFILE
    # (quiesce.dataplane.limits, docs/config.md)
    max_connections: ConnectionCount = None


class MetricsConfig(Model):
    # also publish HAProxy 2.6's exporter names (haproxy_server_status...) at /metrics
    # (quiesce.frontends.metrics, docs/api.md)
    haproxy_compatible: bool = False
    # false: no series per server (pool and process series only): the cardinality limit for
    # pools of thousands of servers (about 44 series per server; docs/api.md)
    per_server: bool = True


class Config(Model):
    admin: AdminConfig = AdminConfig()
    state: StateConfig = StateConfig()
    limits: LimitsConfig = LimitsConfig()
    metrics: MetricsConfig = MetricsConfig()
    logging: LoggingConfig = LoggingConfig()
    healthmonitors: dict[Name, HealthMonitor] = {}
    pools: dict[Name, PoolConfig] = {}
    services: dict[Name, ServiceConfig] = {}
    pages: dict[Name, MaintenancePage] = {}
    flags: dict[Name, bool | str] = {}
