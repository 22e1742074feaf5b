"""The optional C accelerators, or ``None`` when they are not there.

``quiesce._httpfast`` (the L7 proxy's common-case request and response heads),
``quiesce._h2fast`` (an HTTP/2 stream's answer head as a header list),
``quiesce._checkfast`` (the health checker's probe I/O), ``quiesce._logfast`` (the access
log's httplog and json lines) and ``quiesce._dbfast`` (the database relays' framers) are built
by ``pip install`` when a C compiler is present (``setup.py``; all are optional). Every caller
keeps the pure-Python path and uses it when the module is missing, or when ``QUIESCE_PURE=1``
is set in the environment (the test suite runs its accelerator tests both ways).
"""

from __future__ import annotations

import os
from types import ModuleType

PURE = os.environ.get("QUIESCE_PURE", "") not in ("", "0")


def _load(name: str) -> ModuleType | None:
    if PURE:
        return None
    try:
        return __import__(f"quiesce.{name}", fromlist=[name])
    except ImportError:
        return None


httpfast = _load("_httpfast")
h2fast = _load("_h2fast")
checkfast = _load("_checkfast")
logfast = _load("_logfast")
dbfast = _load("_dbfast")
