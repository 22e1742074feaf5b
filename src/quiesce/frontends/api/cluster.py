"""``GET /api/v1/cluster``: this node's link to the shared store and the nodes it knows
(:mod:`quiesce.store.cluster`), and the same link as metrics (``quiesce_store_up``,
``quiesce_store_lag_seconds``, ``quiesce_cluster_nodes``); :func:`install_cluster` also puts
:class:`~quiesce.frontends.api.confirm.ConfirmWrites` in front of the API (a write that lost
to another node's change: 409)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, FastAPI
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from quiesce.frontends.api.confirm import ConfirmWrites
from quiesce.frontends.api.deps import AppLike, Read


def cluster_view(app: AppLike) -> dict[str, Any]:
    """The cluster view; a node on a local store (SQLite) is alone, its link ``local``."""
    cluster = getattr(app.admin.store, "cluster", None)
    if cluster is not None:
        view: dict[str, Any] = cluster.view()
        return view
    return {"node": None, "store": "sqlite", "link": "local", "nodes": []}


def cluster_routes(v1: APIRouter, app: AppLike) -> None:
    @v1.get("/cluster", tags=["cluster"])
    async def show_cluster(p: Read) -> dict[str, Any]:
        return cluster_view(app)


def install_cluster(api: FastAPI, app: AppLike, metrics: CollectorRegistry) -> None:
    """The cluster's metrics, and the wait for etcd's confirmation of every write request."""
    metrics.register(ClusterCollector(app))
    api.add_middleware(ConfirmWrites, admin=app.admin)


class ClusterCollector(Collector):
    """The link to the shared store, when there is one (etcd)."""

    def __init__(self, app: AppLike) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        view = cluster_view(self.app)
        if view["store"] != "etcd":
            return
        yield GaugeMetricFamily(
            "quiesce_store_up",
            "1 while the shared store (etcd) answers within state.etcd.stale_after",
            value=1.0 if view["link"] == "up" else 0.0,
        )
        yield GaugeMetricFamily(
            "quiesce_store_lag_seconds",
            "Seconds since the shared store (etcd) last answered",
            value=float(view["lag_seconds"]),
        )
        yield GaugeMetricFamily(
            "quiesce_cluster_nodes",
            "Nodes registered in the shared store, this one included",
            value=float(len(view["nodes"])),
        )


__all__ = ["ClusterCollector", "cluster_routes", "cluster_view", "install_cluster"]
