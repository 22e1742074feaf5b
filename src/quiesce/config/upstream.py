"""How quiesce speaks HTTP to a pool's servers (``pools.X.protocol``): HTTP/1.1 keep-alive
(the default) or HTTP/2 (``h2``): cleartext by prior knowledge (h2c), or TLS with ALPN ``h2``
when the pool has ``tls``. The data plane's side is quiesce.dataplane.h2client."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from quiesce.config.base import KeyProblem

UpstreamProtocol = Literal["http/1.1", "h2"]


class PoolProtocol(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # http/1.1: one request at a time per connection; h2: requests are streams multiplexed
    # on one connection per server (gRPC needs it: trailers)
    protocol: UpstreamProtocol = "http/1.1"

    @model_validator(mode="after")
    def _h2_fits(self) -> PoolProtocol:
        if self.protocol == "h2" and getattr(self, "send_proxy", None) is not None:
            raise KeyProblem(
                ("protocol",),
                "h2 carries many clients' requests on one connection, send_proxy one "
                "client's address per connection: use one or the other",
            )
        return self
