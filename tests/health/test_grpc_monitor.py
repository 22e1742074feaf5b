"""The grpc monitor's sans-IO parts (issue 16, item 5): the verdict of each Health/Check
answer, bad ``grpc_monitor`` settings named by their path, and ``quiesce check`` saying how
to install grpcio when it is missing. The probe against a real grpcio server is in
tests/health/test_grpc_probe.py, a whole ``quiesce run`` in tests/e2e/test_grpc_monitor.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from quiesce.config.loader import ConfigError, load_text
from quiesce.config.monitors import GrpcMonitor
from quiesce.core.checks import Reason
from quiesce.core.states import Verdict
from quiesce.health.classify import GrpcAnswer, classify_grpc
from quiesce.main import check_cmd


@pytest.fixture
def engine() -> str:
    """No checks run here: once, not once per engine (conftest)."""
    return "python"


REFUSED = (
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:9: "
    "Failed to connect to remote host: Connection refused"
)
HANDSHAKE = (
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:9: Tls handshake "
    "failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: CERTIFICATE_VERIFY_FAILED"
)


@pytest.mark.parametrize(
    ("settings", "answer", "maintenance", "expected"),
    [
        ({}, GrpcAnswer("SERVING"), None, (Verdict.PASS, Reason.OK, "SERVING")),
        ({}, GrpcAnswer("NOT_SERVING"), None, (Verdict.FAIL, Reason.NOT_SERVING, "NOT_SERVING")),
        ({}, GrpcAnswer("UNKNOWN"), None, (Verdict.FAIL, Reason.NOT_SERVING, "UNKNOWN")),
        (
            {"service": "a"},
            GrpcAnswer(code="NOT_FOUND", details="unknown service"),
            None,
            (Verdict.FAIL, Reason.SERVICE_UNKNOWN, "service 'a' unknown"),
        ),
        (
            {"service": "a"},
            GrpcAnswer("SERVICE_UNKNOWN"),
            None,
            (Verdict.FAIL, Reason.SERVICE_UNKNOWN, "service 'a' unknown"),
        ),
        (
            {},
            GrpcAnswer(code="UNIMPLEMENTED", details="Method not found!"),
            None,
            (
                Verdict.FAIL,
                Reason.UNIMPLEMENTED,
                "UNIMPLEMENTED: the server has no grpc.health.v1.Health service",
            ),
        ),
        (
            {},
            GrpcAnswer(code="PERMISSION_DENIED", details="no"),
            None,
            (Verdict.FAIL, Reason.GRPC_ERROR, "PERMISSION_DENIED: no"),
        ),
        (
            {},
            GrpcAnswer(code="UNAVAILABLE", details=REFUSED),
            None,
            (
                Verdict.FAIL,
                Reason.CONNECTION_REFUSED,
                "UNAVAILABLE: Failed to connect to remote host: Connection refused",
            ),
        ),
        (
            {},
            GrpcAnswer(code="UNAVAILABLE", details=HANDSHAKE),
            None,
            (
                Verdict.FAIL,
                Reason.TLS_ERROR,
                "UNAVAILABLE: Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: "
                "CERTIFICATE_VERIFY_FAILED",
            ),
        ),
        (
            {},
            GrpcAnswer(code="UNAVAILABLE", details="Socket closed"),
            None,
            (Verdict.FAIL, Reason.CONNECTION_ERROR, "UNAVAILABLE: Socket closed"),
        ),
        (
            {"maintenance_status": ["NOT_SERVING"]},
            GrpcAnswer(code="DEADLINE_EXCEEDED", details="Deadline Exceeded"),
            None,
            (Verdict.FAIL, Reason.TIMEOUT, "no answer within receive_timeout"),
        ),
        (
            {"maintenance_status": "NOT_SERVING"},
            GrpcAnswer("NOT_SERVING"),
            None,
            (Verdict.MAINTENANCE, Reason.MAINTENANCE_STATUS_MATCH, "NOT_SERVING (maintenance)"),
        ),
        (
            {"service": "a", "maintenance_status": ["SERVICE_UNKNOWN"]},
            GrpcAnswer(code="NOT_FOUND"),
            None,
            (
                Verdict.MAINTENANCE,
                Reason.MAINTENANCE_STATUS_MATCH,
                "SERVICE_UNKNOWN (maintenance)",
            ),
        ),
        (
            {"maintenance_service": "m"},
            GrpcAnswer("NOT_SERVING"),
            GrpcAnswer("SERVING"),
            (
                Verdict.MAINTENANCE,
                Reason.MAINTENANCE_SERVICE_MATCH,
                "maintenance_service 'm': SERVING",
            ),
        ),
        (
            {"maintenance_service": "m"},
            GrpcAnswer("SERVING"),
            GrpcAnswer(code="NOT_FOUND"),
            (Verdict.PASS, Reason.OK, "SERVING"),
        ),
        (
            {"maintenance_service": "m"},
            GrpcAnswer("SERVING"),
            GrpcAnswer("NOT_SERVING"),
            (Verdict.PASS, Reason.OK, "SERVING"),
        ),
        (
            {"maintenance_service": "m"},
            GrpcAnswer("SERVING"),
            GrpcAnswer(code="DEADLINE_EXCEEDED"),
            (Verdict.FAIL, Reason.TIMEOUT, "maintenance_service: no answer within receive_timeout"),
        ),
    ],
)
def test_classify(
    settings: dict[str, object],
    answer: GrpcAnswer,
    maintenance: GrpcAnswer | None,
    expected: tuple[Verdict, Reason, str],
) -> None:
    assert classify_grpc(GrpcMonitor.model_validate(settings), answer, maintenance) == expected


BASE = """
healthmonitors:
  g: {MONITOR}
pools:
  api:
    healthmonitors: [g]
    servers: [{name: a, address: 127.0.0.1:50051}]
"""


def config(monitor: str) -> str:
    return BASE.replace("{MONITOR}", monitor)


def test_a_good_config_loads() -> None:
    cfg = load_text(
        config(
            "{type: grpc, grpc_monitor: {service: api.Orders, maintenance_status: NOT_SERVING, "
            "maintenance_service: quiesce.maintenance, tls: {ca: ca.pem, sni: api.internal}}}"
        )
    )
    g = cfg.healthmonitors["g"].grpc
    assert (g.service, g.maintenance_status, g.maintenance_service) == (
        "api.Orders",
        ["NOT_SERVING"],
        "quiesce.maintenance",
    )
    assert g.tls is not None and g.tls.sni == "api.internal" and g.tls.verify
    plain = load_text(config("{type: grpc}")).healthmonitors["g"].grpc
    assert (plain.service, plain.maintenance_status, plain.tls) == ("", [], None)


@pytest.mark.parametrize(
    ("monitor", "words"),
    [
        ("{type: grpc, grpc_monitor: {servce: x}}", ["healthmonitors.g.grpc_monitor.servce"]),
        (
            "{type: grpc, grpc_monitor: {maintenance_status: SERVING}}",
            ["healthmonitors.g.grpc_monitor.maintenance_status", "SERVING is the status"],
        ),
        (
            "{type: grpc, grpc_monitor: {maintenance_status: [DRAINING]}}",
            ["healthmonitors.g.grpc_monitor.maintenance_status"],
        ),
        (
            "{type: grpc, grpc_monitor: {maintenance_status: [NOT_SERVING, NOT_SERVING]}}",
            ["healthmonitors.g.grpc_monitor", "must not repeat"],
        ),
        (
            "{type: grpc, grpc_monitor: {service: a, maintenance_service: a}}",
            ["healthmonitors.g.grpc_monitor", "is the checked service itself"],
        ),
        (
            "{type: grpc, grpc_monitor: {tls: {verify: false}}}",
            ["healthmonitors.g.grpc_monitor.tls", "verify: false is not possible"],
        ),
        (
            "{type: grpc, grpc_monitor: {tls: {sni: a, cipher: x}}}",
            ["healthmonitors.g.grpc_monitor.tls.cipher"],
        ),
        ("{type: http, grpc_monitor: {}}", ["grpc_monitor does not go with type http"]),
        ("{type: grpc, http_monitor: {}}", ["http_monitor does not go with type grpc"]),
    ],
)
def test_bad_settings_are_named(monitor: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        load_text(config(monitor))
    for word in words:
        assert word in str(err.value), str(err.value)


@pytest.mark.loopback  # quiesce check binds each listen address to warn of one in use
def test_check_says_how_to_install_grpcio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "quiesce.yaml"
    path.write_text(config("{type: grpc, grpc_monitor: {service: api.Orders}}"))
    hint = "pip install 'quiesce[grpc]'"
    ok = CliRunner().invoke(check_cmd, ["-c", str(path)])
    assert ok.exit_code == 0 and hint not in ok.output, ok.output
    monkeypatch.setitem(sys.modules, "grpc", None)  # import grpc raises ImportError
    missing = CliRunner().invoke(check_cmd, ["-c", str(path)])
    assert missing.exit_code == 0, missing.output
    assert (
        "warning: health monitor 'g' (type grpc): grpc monitors need grpcio and "
        f"grpcio-health-checking: {hint}" in missing.output
    ), missing.output


def test_run_refuses_a_grpc_monitor_without_grpcio(monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``quiesce run`` and a reload refuse (their checks would all fail): only attached
    monitors count, as for raw sockets."""
    from quiesce.health import startup_problems

    attached = load_text(config("{type: grpc}"))
    detached = load_text(
        config("{type: grpc}").replace("healthmonitors: [g]", "healthmonitors: []")
    )
    assert startup_problems(attached) == []
    monkeypatch.setitem(sys.modules, "grpc", None)
    assert [p.split(":")[0] for p in startup_problems(attached)] == [
        "health monitor 'g' (type grpc)"
    ]
    assert startup_problems(detached) == []


def test_a_pool_tls_without_verify_is_refused_for_a_grpc_monitor() -> None:
    text = config("{type: grpc, grpc_monitor: {tls: {use_pool_tls: true}}}").replace(
        "    healthmonitors: [g]\n", "    healthmonitors: [g]\n    tls: {verify: false}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_text(text)
    assert (
        "pools.api.healthmonitors[0]: grpc monitor 'g' uses the pool's tls (use_pool_tls), "
        "whose verify: false a grpc monitor cannot do" in str(err.value)
    ), str(err.value)
    # its own tls settings, or a pool that verifies: fine
    load_text(text.replace("use_pool_tls: true", "ca: ca.pem"))
    load_text(text.replace("tls: {verify: false}", "tls: {ca: ca.pem}"))


def test_haproxy_check_status_of_grpc_checks() -> None:
    """``show stat``'s check_status and the HAProxy exporter's haproxy_server_check_status
    are one mapping (quiesce.frontends.haproxy_check): a grpc answer is a layer 7 status
    (L7OK, L7STS; maintenance L7OKC, as for an http maintenance code), not SOCKERR."""
    from quiesce.frontends.haproxy_check import haproxy_check_status, is_layer7

    monitor = load_text(config("{type: grpc}")).healthmonitors["g"]
    seen = {}
    for reason, verdict in (
        (Reason.OK, Verdict.PASS),
        (Reason.NOT_SERVING, Verdict.FAIL),
        (Reason.SERVICE_UNKNOWN, Verdict.FAIL),
        (Reason.UNIMPLEMENTED, Verdict.FAIL),
        (Reason.GRPC_ERROR, Verdict.FAIL),
        (Reason.TIMEOUT, Verdict.FAIL),
        (Reason.MAINTENANCE_SERVICE_MATCH, Verdict.MAINTENANCE),
        (Reason.MAINTENANCE_STATUS_MATCH, Verdict.MAINTENANCE),
    ):
        seen[reason.value] = haproxy_check_status(reason, verdict, is_layer7(monitor))
    assert seen == {
        "OK": "L7OK",
        "NOT_SERVING": "L7STS",
        "SERVICE_UNKNOWN": "L7STS",
        "UNIMPLEMENTED": "L7STS",
        "GRPC_ERROR": "L7STS",
        "TIMEOUT": "L7TOUT",
        "MAINTENANCE_SERVICE_MATCH": "L7OKC",
        "MAINTENANCE_STATUS_MATCH": "L7OKC",
    }, seen
