"""The result of one health check, as probes report it to the health state machine."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from quiesce.core.states import Verdict


class Reason(StrEnum):
    """Reason codes, named as Avi names them where Avi has a name."""

    OK = "OK"
    MAINTENANCE_RESPONSE_CODE_MATCH = "MAINTENANCE_RESPONSE_CODE_MATCH"
    MAINTENANCE_PAYLOAD_CONTENT_MATCH = "MAINTENANCE_PAYLOAD_CONTENT_MATCH"
    RESPONSE_CODE_MISMATCH = "RESPONSE_CODE_MISMATCH"
    PAYLOAD_CONTENT_MISMATCH = "PAYLOAD_CONTENT_MISMATCH"
    CONNECTION_REFUSED = "CONNECTION_REFUSED"
    CONNECTION_RESET = "CONNECTION_RESET"
    CONNECTION_ERROR = "CONNECTION_ERROR"
    TIMEOUT = "TIMEOUT"
    PORT_UNREACHABLE = "PORT_UNREACHABLE"
    HOST_UNREACHABLE = "HOST_UNREACHABLE"
    TLS_ERROR = "TLS_ERROR"
    MALFORMED_RESPONSE = "MALFORMED_RESPONSE"
    PASSIVE_STATUS_MATCH = "PASSIVE_STATUS_MATCH"
    # database monitors (issue 20)
    AUTH_FAILED = "AUTH_FAILED"
    QUERY_FAILED = "QUERY_FAILED"
    ROLE_MISMATCH = "ROLE_MISMATCH"
    MAINTENANCE_QUERY_MATCH = "MAINTENANCE_QUERY_MATCH"
    # grpc monitors (issue 16): the service's ServingStatus, or the call's gRPC status code
    NOT_SERVING = "NOT_SERVING"
    SERVICE_UNKNOWN = "SERVICE_UNKNOWN"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    GRPC_ERROR = "GRPC_ERROR"
    MAINTENANCE_STATUS_MATCH = "MAINTENANCE_STATUS_MATCH"
    MAINTENANCE_SERVICE_MATCH = "MAINTENANCE_SERVICE_MATCH"


GRPC_ANSWERS = frozenset(
    {
        Reason.NOT_SERVING,
        Reason.SERVICE_UNKNOWN,
        Reason.UNIMPLEMENTED,
        Reason.GRPC_ERROR,
        Reason.MAINTENANCE_STATUS_MATCH,
        Reason.MAINTENANCE_SERVICE_MATCH,
    }
)
"""The reasons of a grpc server's own answer (HAProxy's layer 7 status, L7STS)."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check's outcome: verdict, reason code, what was seen, and how long it took.

    ``at`` is the time the check completed (the caller's clock); ``latency`` is in seconds.
    """

    monitor: str
    verdict: Verdict
    reason: Reason
    at: float
    latency: float
    status_code: int | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "monitor": self.monitor,
            "verdict": self.verdict.value,
            "reason": self.reason.value,
            "at": self.at,
            "latency_ms": round(self.latency * 1000, 3),
            "status_code": self.status_code,
            "detail": self.detail,
        }
