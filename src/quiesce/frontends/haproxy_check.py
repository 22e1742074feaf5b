"""HAProxy 2.6's short check status for one quiesce check result: one mapping for ``show
stat``'s check_status (and ``show servers state``'s code) and the exporter's
``haproxy_server_check_status``, as HAProxy's exporter reports the status ``show stat``
shows. A maintenance answer is HAProxy's ``http-check disable-on-404`` case: ``L7OKC``
(conditionally passed), the server NOLB (measured on HAProxy 2.6.12: a server that was up
and answers 404 shows ``NOLB``/``L7OKC`` in ``show stat`` and
``haproxy_server_check_status{state="L7OKC"} 1`` in its exporter)."""

from __future__ import annotations

from typing import Any

from quiesce.core.checks import GRPC_ANSWERS, Reason
from quiesce.core.states import Verdict

LAYER7_TYPES = frozenset({"http", "https", "grpc"})

_FAILED = {
    Reason.CONNECTION_REFUSED: "L4CON",
    Reason.CONNECTION_RESET: "L4CON",
    Reason.CONNECTION_ERROR: "L4CON",
    Reason.PORT_UNREACHABLE: "L4CON",
    Reason.HOST_UNREACHABLE: "L4CON",
    Reason.RESPONSE_CODE_MISMATCH: "L7STS",
    Reason.MAINTENANCE_RESPONSE_CODE_MATCH: "L7OKC",
    Reason.PAYLOAD_CONTENT_MISMATCH: "L7RSP",
    Reason.MAINTENANCE_PAYLOAD_CONTENT_MATCH: "L7OKC",
    Reason.MALFORMED_RESPONSE: "L7RSP",
    Reason.TLS_ERROR: "L6RSP",
    # grpc monitors: the health service's answer is their layer 7 status
    Reason.MAINTENANCE_STATUS_MATCH: "L7OKC",
    Reason.MAINTENANCE_SERVICE_MATCH: "L7OKC",
}
_FAILED |= {r: "L7STS" for r in GRPC_ANSWERS if r not in _FAILED}


def is_layer7(monitor: Any) -> bool:
    """Whether a monitor (None: unknown) checks at layer 7, as HAProxy's httpchk does."""
    return monitor is not None and monitor.type in LAYER7_TYPES


def haproxy_check_status(reason: Reason, verdict: Verdict, layer7: bool) -> str:
    """HAProxy's check status (L4OK, L7OK, L7OKC, L7STS, ...) for one result."""
    if verdict is Verdict.PASS:
        return "L7OK" if layer7 else "L4OK"
    if reason is Reason.TIMEOUT:
        return "L7TOUT" if layer7 else "L4TOUT"
    return _FAILED.get(reason, "SOCKERR")


__all__ = ["LAYER7_TYPES", "haproxy_check_status", "is_layer7"]
