"""TLS to etcd: aetcd (the etcd client) opens plain gRPC channels only, so
:class:`TlsClient` is an ``aetcd.Client`` whose channel is a TLS one (``grpc.aio``'s
``secure_channel`` with the CA, and the client certificate and key when given).

aetcd creates its channel with ``aetcd.rpc.insecure_channel`` at the start of
``connect()``, before its first await. :meth:`TlsClient.connect` puts a function there that
puts the original back on its first call and returns a secure channel instead: the swap
lasts from the call to ``connect()`` to the channel's creation, with no await in between, so
no other connection of the process can see it. Nothing of aetcd is copied or changed.
"""

from __future__ import annotations

from typing import Any

import aetcd
import aetcd.rpc as rpc
import grpc


class TlsClient(aetcd.Client):  # type: ignore[misc]
    def __init__(self, *args: Any, credentials: grpc.ChannelCredentials, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._credentials = credentials

    async def connect(self) -> None:
        original = rpc.insecure_channel

        def secure(target: str, options: Any = None) -> Any:
            rpc.insecure_channel = original
            return grpc.aio.secure_channel(target, self._credentials, options=options)

        rpc.insecure_channel = secure
        try:
            await super().connect()
        finally:
            if rpc.insecure_channel is secure:  # connected already: no channel was made
                rpc.insecure_channel = original


def credentials(ca: bytes | None, cert: bytes | None, key: bytes | None) -> Any:
    """gRPC's TLS credentials: ``ca`` None trusts the system's roots; ``cert`` and ``key``
    (PEM) are this node's client certificate, for an etcd that asks for one."""
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


__all__ = ["TlsClient", "credentials"]
