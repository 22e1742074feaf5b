"""The admin subsystem: the one internal command API (:class:`AdminService`) every front end
calls, the deadline/expiry timer, persistence of runtime state and the live event bus."""

from __future__ import annotations

from quiesce.admin.bus import EventBus, Subscription
from quiesce.admin.context import CommandContext
from quiesce.admin.service import AdminService, CommandResult

__all__ = ["AdminService", "CommandContext", "CommandResult", "EventBus", "Subscription"]
