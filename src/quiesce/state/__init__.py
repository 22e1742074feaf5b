"""The state box: the registry (the one writer of both server axes) and the runtime objects it
owns. Fed by health (check results) and admin (commands); read by the balancer, the data plane
and the front ends. Sans-IO."""

from quiesce.state.registry import Registry
from quiesce.state.runtime import PoolRuntime, ServerRuntime

__all__ = ["PoolRuntime", "Registry", "ServerRuntime"]
