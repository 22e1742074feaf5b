"""A config file loaded for a long-running process, its objects packed (issue 21, memory at
100,000 servers).

Parsing a file of 100,000 servers makes far more short-lived objects (the YAML loader's
nodes and marks, the raw mapping, pydantic's validation) than it keeps (one ``ServerConfig``
and two strings a server), and the ones kept are made in between them. Once the short-lived
ones are freed, the memory they took stays in the process: the allocator's arenas each keep
a few live objects, so they are not given back (``quiesce run`` held ≈ 2 KiB a server after
the parse, ≈ 0.5 KiB of it live). :func:`load_packed` copies the parsed config through
``pickle`` with nothing else of the parse left alive in between: the arenas of the parse are
then all free and given back, and the copy is made in fresh ones, densely.

Nothing else changes: the copy is equal (``==``) to what :func:`load_config` returns, its
shared objects shared as they were (pickle keeps identity within one dump: a key set shared
by ``ServerConfig``\\ s stays shared). The reload's configs come from its worker process
already pickled (``quiesce.app.reload_worker``).
"""

from __future__ import annotations

import pickle
from pathlib import Path

from quiesce.config.loader import load_config
from quiesce.config.models import Config


def load_packed(path: str | Path) -> Config:
    """:func:`~quiesce.config.loader.load_config`, the result copied once the parse is freed
    (raises the same :class:`~quiesce.config.loader.ConfigError`)."""
    # No name holds the parsed config: it is freed as soon as it is dumped.
    blob = pickle.dumps(load_config(path), pickle.HIGHEST_PROTOCOL)
    config: Config = pickle.loads(blob)
    return config


__all__ = ["load_packed"]
