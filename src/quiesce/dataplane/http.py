"""The old name of the L7 proxy (now the package quiesce.dataplane.h1), kept for tests that
switch the C fast path off and on: setting ``_fast_request`` or ``_fast_response`` here sets
them in the modules that read them (``h1.client``, ``h1.upstream``), where a per-request
lookup stays a global one. New code imports from quiesce.dataplane.h1.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from quiesce.dataplane.h1 import client as _client
from quiesce.dataplane.h1 import upstream as _upstream
from quiesce.dataplane.h1.client import ClientConnection
from quiesce.dataplane.h1.exchange import Request, may_resend, resendable
from quiesce.dataplane.h1.upstream import Upstream

__all__ = ["ClientConnection", "Request", "Upstream", "may_resend", "resendable"]

_fast_request = _client._fast_request
_fast_response = _upstream._fast_response

_WHERE = {"_fast_request": _client, "_fast_response": _upstream}


class _Shim(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        where = _WHERE.get(name)
        if where is not None:
            setattr(where, name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Shim
