"""Health monitor sub-objects kept out of :mod:`quiesce.config.models` (its size limit): the
TLS settings a monitor shares with others (``https_monitor``, ``grpc_monitor.tls``) and the
``grpc_monitor`` of ``type: grpc`` (quiesce.health.probes.grpc, docs/health.md).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from quiesce.config.base import Model


class ClientCert(Model):
    cert: str
    key: str | None = None


class MonitorTls(Model):
    """A monitor's TLS to the server it checks (``https_monitor``, ``grpc_monitor.tls``)."""

    sni: str | None = None
    verify: bool = True
    ca: str | None = None
    client_cert: ClientCert | None = None
    # verify, ca, sni and client certificate from the checked server's pools.X.tls (if any)
    use_pool_tls: bool = False


GRPC_STATUSES = ("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")
"""``grpc.health.v1.HealthCheckResponse.ServingStatus``, by number (0-3)."""

GrpcStatus = Literal["UNKNOWN", "NOT_SERVING", "SERVICE_UNKNOWN"]


def _status_list(value: object) -> object:
    """``maintenance_status: NOT_SERVING`` is ``[NOT_SERVING]``."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list) and "SERVING" in value:
        raise ValueError("SERVING is the status of a server that is up, never maintenance")
    return value


class GrpcTls(MonitorTls):
    """``grpc_monitor.tls``: the check over TLS (absent: plaintext h2c)."""

    @model_validator(mode="after")
    def _verifies(self) -> GrpcTls:
        if not self.verify:
            raise ValueError(
                "verify: false is not possible for a grpc monitor (grpcio always verifies the "
                "server's certificate): give the CA that signed it in ca"
            )
        return self


class GrpcMonitor(Model):
    """``type: grpc``: ``grpc.health.v1.Health/Check`` of ``service`` (SERVING is up).

    Maintenance, two ways (either is enough): ``service``'s status is one of
    ``maintenance_status``; or ``maintenance_service`` is asked too and answers SERVING (a
    flag the back end raises with its health servicer's ``set(NAME, SERVING)``)."""

    service: str = ""  # "": the server as a whole
    maintenance_status: Annotated[list[GrpcStatus], BeforeValidator(_status_list)] = []
    maintenance_service: Annotated[str, Field(min_length=1)] | None = None
    # the value of the :authority header (None: host:port of the server)
    authority: Annotated[str, Field(min_length=1)] | None = None
    tls: GrpcTls | None = None

    @model_validator(mode="after")
    def _distinct(self) -> GrpcMonitor:
        if len(set(self.maintenance_status)) != len(self.maintenance_status):
            raise ValueError("maintenance_status must not repeat")
        if self.maintenance_service is not None and self.maintenance_service == self.service:
            raise ValueError(
                f"maintenance_service {self.maintenance_service!r} is the checked service "
                "itself: its SERVING would mean both up and maintenance"
            )
        return self


__all__ = ["GRPC_STATUSES", "ClientCert", "GrpcMonitor", "GrpcTls", "MonitorTls"]
