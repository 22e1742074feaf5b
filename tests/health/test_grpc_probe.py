"""The grpc probe against a real grpcio server with the standard health servicer on 127.0.0.1
(issue 16, item 5): each status and failure gives its verdict and reason, over h2c and TLS
(the monitor's own settings, a client certificate, and the pool's TLS through the health
manager). Both event loops (conftest), as ``quiesce run`` uses uvloop."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from quiesce.config.models import Config, HealthMonitor
from quiesce.core.checks import CheckResult, Reason
from quiesce.core.clock import SystemClock
from quiesce.core.states import Oper, Verdict
from quiesce.health.probes import GrpcProber, Target
from quiesce.state.registry import Registry
from tests.health.test_pool_tls import oper_after_checks
from tests.support.certs import Certs
from tests.support.grpc_health import GrpcHealthServer

pytestmark = pytest.mark.loopback


@pytest.fixture
def engine() -> str:
    """grpc checks never take the C engine: once, not once per engine (conftest)."""
    return "python"


@pytest.fixture
def server() -> Iterator[GrpcHealthServer]:
    with GrpcHealthServer() as s:
        yield s


def monitor(timeout: float = 2.0, **grpc_monitor: Any) -> HealthMonitor:
    return HealthMonitor.model_validate(
        {
            "type": "grpc",
            "receive_timeout": timeout,
            "send_interval": timeout * 2,
            "grpc_monitor": grpc_monitor,
        }
    )


async def check(port: int, m: HealthMonitor) -> CheckResult:
    return await GrpcProber(SystemClock()).check(Target("127.0.0.1", port), m, "g")


def seen(r: CheckResult) -> tuple[Verdict, Reason, str]:
    return r.verdict, r.reason, r.detail


async def test_statuses(server: GrpcHealthServer) -> None:
    assert seen(await check(server.port, monitor())) == (Verdict.PASS, Reason.OK, "SERVING")
    server.set("", "NOT_SERVING")
    assert seen(await check(server.port, monitor())) == (
        Verdict.FAIL,
        Reason.NOT_SERVING,
        "NOT_SERVING",
    )
    server.set("api.Orders", "SERVING")
    assert (await check(server.port, monitor(service="api.Orders"))).verdict is Verdict.PASS
    # a name the servicer does not know: NOT_FOUND, which is SERVICE_UNKNOWN
    assert seen(await check(server.port, monitor(service="api.Nope"))) == (
        Verdict.FAIL,
        Reason.SERVICE_UNKNOWN,
        "service 'api.Nope' unknown",
    )


async def test_maintenance_by_status_and_by_service(server: GrpcHealthServer) -> None:
    by_status = monitor(maintenance_status="NOT_SERVING")
    assert (await check(server.port, by_status)).verdict is Verdict.PASS
    server.set("", "NOT_SERVING")
    assert seen(await check(server.port, by_status)) == (
        Verdict.MAINTENANCE,
        Reason.MAINTENANCE_STATUS_MATCH,
        "NOT_SERVING (maintenance)",
    )
    server.set("", "SERVING")
    by_service = monitor(maintenance_service="quiesce.maintenance")
    # not registered (NOT_FOUND) or NOT_SERVING: no maintenance
    assert (await check(server.port, by_service)).verdict is Verdict.PASS
    server.set("quiesce.maintenance", "SERVING")
    assert seen(await check(server.port, by_service)) == (
        Verdict.MAINTENANCE,
        Reason.MAINTENANCE_SERVICE_MATCH,
        "maintenance_service 'quiesce.maintenance': SERVING",
    )
    server.set("", "NOT_SERVING")  # maintenance wins over down
    assert (await check(server.port, by_service)).verdict is Verdict.MAINTENANCE
    server.set("quiesce.maintenance", "NOT_SERVING")
    assert (await check(server.port, by_service)).reason is Reason.NOT_SERVING


async def test_failures_have_clear_reasons(closed_port: int) -> None:
    r = await check(closed_port, monitor())
    assert (r.verdict, r.reason) == (Verdict.FAIL, Reason.CONNECTION_REFUSED)
    assert "Connection refused" in r.detail, r.detail
    with GrpcHealthServer(health=False) as bare:
        assert seen(await check(bare.port, monitor())) == (
            Verdict.FAIL,
            Reason.UNIMPLEMENTED,
            "UNIMPLEMENTED: the server has no grpc.health.v1.Health service",
        )
    with GrpcHealthServer() as slow:
        slow.hold()
        r = await check(slow.port, monitor(timeout=0.3))
        assert seen(r) == (Verdict.FAIL, Reason.TIMEOUT, "no answer within receive_timeout")
        assert 0.25 < r.latency < 2, r.latency  # the deadline is receive_timeout


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return Certs(tmp_path)


async def test_tls(certs: Certs, tmp_path: Path) -> None:
    cert, key = certs.leaf("server", "grpc.internal")
    client_cert, client_key = certs.leaf("client", "checker")
    ca = str(certs.ca_file)
    with GrpcHealthServer(cert=cert, key=key) as tls:
        ok = monitor(tls={"ca": ca, "sni": "grpc.internal"})
        assert seen(await check(tls.port, ok)) == (Verdict.PASS, Reason.OK, "SERVING")
        for bad in (
            monitor(tls={"ca": ca, "sni": "other.example"}),  # the name does not match
            monitor(tls={"sni": "grpc.internal"}),  # not signed by the default roots
        ):
            r = await check(tls.port, bad)
            assert (r.verdict, r.reason) == (Verdict.FAIL, Reason.TLS_ERROR), r
        r = await check(tls.port, monitor())  # h2c to a TLS port
        assert r.verdict is Verdict.FAIL, r
        r = await check(tls.port, monitor(tls={"ca": str(tmp_path / "missing.pem")}))
        assert (r.reason, r.detail[:33]) == (Reason.TLS_ERROR, "cannot load the TLS settings (ca,")
    with GrpcHealthServer(cert=cert, key=key, client_ca=certs.ca_file) as mutual:
        # without a client certificate: refused (TLS 1.3: the client has finished its
        # handshake when the server closes, so grpcio says "Socket closed")
        r = await check(mutual.port, ok)
        assert r.verdict is Verdict.FAIL and r.reason in (Reason.TLS_ERROR, Reason.CONNECTION_ERROR)
        with_cert = monitor(
            tls={
                "ca": ca,
                "sni": "grpc.internal",
                "client_cert": {"cert": str(client_cert), "key": str(client_key)},
            }
        )
        assert (await check(mutual.port, with_cert)).verdict is Verdict.PASS


@pytest.mark.parametrize(
    ("tls", "pool_tls", "expected"),
    [
        ({"use_pool_tls": True}, {"ca": "ca.pem", "sni": "grpc.internal"}, (Oper.UP, "OK")),
        ({"use_pool_tls": True}, {"ca": "ca.pem", "sni": "x.example"}, (Oper.DOWN, "TLS_ERROR")),
        ({"use_pool_tls": True}, {"verify": False}, (Oper.DOWN, "TLS_ERROR")),
        ({}, {"ca": "ca.pem", "sni": "grpc.internal"}, (Oper.DOWN, "TLS_ERROR")),  # its own
        (None, {"ca": "ca.pem", "sni": "grpc.internal"}, (Oper.DOWN, "CONNECTION_ERROR")),  # h2c
    ],
)
async def test_the_pool_tls(
    certs: Certs,
    tmp_path: Path,
    tls: dict[str, Any] | None,
    pool_tls: dict[str, Any],
    expected: tuple[Oper, str],
) -> None:
    cert, key = certs.leaf("server", "grpc.internal")
    base = tmp_path / "conf"
    base.mkdir()
    shutil.copy(certs.ca_file, base / "ca.pem")  # relative to the config's directory
    with GrpcHealthServer(cert=cert, key=key) as server:
        grpc_monitor = {} if tls is None else {"tls": tls}
        config = {
            "healthmonitors": {
                "g": {
                    "type": "grpc",
                    "send_interval": 0.5,
                    "receive_timeout": 0.4,
                    "successful_checks": 1,
                    "failed_checks": 1,
                    "grpc_monitor": grpc_monitor,
                }
            },
            "pools": {
                "p": {
                    "healthmonitors": ["g"],
                    "tls": pool_tls,
                    "servers": [{"name": "s0", "address": f"127.0.0.1:{server.port}"}],
                }
            },
        }
        reg = Registry(Config.model_validate(config))
        oper = await oper_after_checks(reg, base)
        assert (oper, reg.pool("p").server("s0").last_checks["g"][-1].reason) == expected
