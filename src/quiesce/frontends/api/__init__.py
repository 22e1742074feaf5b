"""The control plane's HTTP side: REST API, MaxScale aliases, /metrics, on the admin listener.

``create_api(app)`` builds the ASGI application; ``start_admin_server(app)`` serves it inside
the running event loop and returns an :class:`AdminServer` (``.port``, ``await .stop()``).
"""

from quiesce.frontends.api.routes import AppLike, create_api
from quiesce.frontends.api.server import AdminServer, start_admin_server

__all__ = ["AdminServer", "AppLike", "create_api", "start_admin_server"]
