"""The data plane: the L7 HTTP proxy, the L4 TCP relay, and the per-server connection table.

Public surface (what the composition root calls)::

    table = ConnectionTable(registry)
    registry.close_handlers.append(table.close)
    service = await start_service(name, config, registry, table, router=router,
                                  base_dir=base_dir)
    service.port, service.stats          # bound port; ServiceStats counters
    await service.close()                # stop accepting
    await service.shutdown(grace)        # staged: idle closed, in-flight finish, then cut

See docs/dataplane.md for behaviour, limits and the answers to every failure.
"""

from quiesce.balancing.persistence import StickyTable
from quiesce.dataplane.context import ServiceStats
from quiesce.dataplane.pages import Page
from quiesce.dataplane.service import Service, start_service
from quiesce.dataplane.table import ConnectionTable

__all__ = [
    "ConnectionTable",
    "Page",
    "Service",
    "ServiceStats",
    "StickyTable",
    "start_service",
]
