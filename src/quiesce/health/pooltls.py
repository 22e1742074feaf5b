"""An ``https`` or ``grpc`` monitor that takes its TLS settings from the pool of the server it
checks (``https_monitor: {use_pool_tls: true}``, ``grpc_monitor: {tls: {use_pool_tls: true}}``):
``verify``, ``ca``, ``sni`` and the client certificate of ``pools.X.tls``, so a pool's servers
are checked as the proxy connects to them.
Paths are resolved against the config file's directory, as the data plane resolves them.
"""

from __future__ import annotations

from pathlib import Path

from quiesce.config.models import HealthMonitor
from quiesce.config.monitors import ClientCert, MonitorTls
from quiesce.config.tls import PoolTls, resolve


class PoolTlsMonitors:
    """The monitor a check runs, per (definition, pool TLS) pair: the same object for the
    same pair, so the probers' per-monitor caches (plans, TLS contexts) keep working."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self._made: dict[tuple[int, int], tuple[HealthMonitor, PoolTls, HealthMonitor]] = {}

    def monitor(self, definition: HealthMonitor, tls: PoolTls | None) -> HealthMonitor:
        https, grpc = definition.https_monitor, definition.grpc_monitor
        settings: MonitorTls | None = https if grpc is None or grpc.tls is None else grpc.tls
        if tls is None or settings is None or not settings.use_pool_tls:
            return definition
        key = (id(definition), id(tls))
        hit = self._made.get(key)
        if hit is not None and hit[0] is definition and hit[1] is tls:
            return hit[2]
        if len(self._made) > 10_000:  # definitions replaced by reloads: start afresh
            self._made.clear()
        base = self.base_dir
        cert = settings.client_cert
        if tls.client_cert is not None:
            key_file = tls.client_key or tls.client_cert
            cert = ClientCert(
                cert=str(resolve(base, tls.client_cert)), key=str(resolve(base, key_file))
            )
        update = {
            "verify": tls.verify,
            "ca": None if tls.ca is None else str(resolve(base, tls.ca)),
            "sni": tls.sni or settings.sni,
            "client_cert": cert,
        }
        changed = settings.model_copy(update=update)
        if grpc is not None:
            made = definition.model_copy(
                update={"grpc_monitor": grpc.model_copy(update={"tls": changed})}
            )
        else:
            made = definition.model_copy(update={"https_monitor": changed})
        self._made[key] = (definition, tls, made)
        return made
