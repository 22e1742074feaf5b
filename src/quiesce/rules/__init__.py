"""Routing rules, runtime flags in rules and the monitor URI (issue 7). The evaluator is sans-IO.

``compile_router(name, service, registry)`` turns a service's validated ``rules`` and
``monitor_uri`` into a :class:`ServiceRouter` once; the data plane calls
``router.route(RequestView) -> Decision`` per request. See docs/rules.md.
"""

from quiesce.rules._conditions import flag_truthy
from quiesce.rules._router import (
    DEFAULT,
    MONITOR_200,
    MONITOR_503,
    MONITOR_FAIL,
    MONITOR_OK,
    ServiceRouter,
    compile_router,
)
from quiesce.rules.decision import (
    Decision,
    Redirect,
    RequestView,
    Respond,
    Router,
    ServePage,
    ToPool,
)

__all__ = [
    "DEFAULT",
    "MONITOR_200",
    "MONITOR_503",
    "MONITOR_FAIL",
    "MONITOR_OK",
    "Decision",
    "Redirect",
    "RequestView",
    "Respond",
    "Router",
    "ServePage",
    "ServiceRouter",
    "ToPool",
    "compile_router",
    "flag_truthy",
]
