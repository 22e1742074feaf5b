"""The PROXY protocol settings (HAProxy's, v1 and v2; quiesce.dataplane.proxyproto):
``services.X.accept_proxy`` with ``services.X.trusted_proxies`` on a listener, and
``pools.X.send_proxy``. ServiceConfig takes the listener's fields from :class:`ProxyListener`,
PoolConfig its one from :class:`ProxySender`."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, model_validator

from quiesce.config.base import KeyProblem

SendProxy = Literal["v1", "v2"] | None


def _network(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an address or CIDR network") from None
    return value


class ProxyListener(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # read a PROXY header (v1 or v2) before anything else; its client address is the client's
    accept_proxy: bool = False
    # the peers allowed to send one (required with accept_proxy); anyone else is closed
    trusted_proxies: list[Annotated[str, AfterValidator(_network)]] = []

    @model_validator(mode="after")
    def _trusted(self) -> ProxyListener:
        if not self.accept_proxy:
            return self
        if not self.trusted_proxies:
            raise KeyProblem(
                ("trusted_proxies",),
                "required with accept_proxy: true (the addresses of the proxies allowed to say "
                "who the client is)",
            )
        protocol = getattr(self, "protocol", "")
        if protocol in ("postgresql", "mysql"):
            raise KeyProblem(("accept_proxy",), f"not supported on a {protocol} service yet")
        return self

    def trusted_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(v, strict=False) for v in self.trusted_proxies)


class ProxySender(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # a PROXY header first on each connection to a server (L4 and L7), and from the monitors
    send_proxy: SendProxy = None

    @model_validator(mode="before")
    @classmethod
    def _private(cls, data: Any) -> Any:
        """A connection that carried one client's header is that client's: never pooled
        (``max_idle_per_server`` is 0), so never reused for another."""
        if not isinstance(data, dict) or data.get("send_proxy") is None:
            return data
        if data.get("max_idle_per_server") not in (None, 0):
            raise KeyProblem(
                ("max_idle_per_server",),
                "a pool with send_proxy keeps no idle connection (each carries one client's "
                "address); leave it out or set 0",
            )
        if data.get("tls") is not None:
            raise KeyProblem(("send_proxy",), "not supported with tls on the same pool yet")
        return {**data, "max_idle_per_server": 0}
