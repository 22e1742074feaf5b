"""Where runtime state survives a restart: admin records, runtime flags, runtime monitors,
pool monitor attachments and the event log.

``open_store(config.state, base_dir)`` picks the implementation from the config:

- ``state.sqlite: PATH`` (the default, ``./quiesce-state.db``): :class:`SqliteStore` on that
  file, relative to the config file's directory;
- ``state.sqlite: null``: the same store in memory (nothing survives a restart);
- ``state.etcd``: not available in this build (a clear :class:`StoreError`).
"""

from __future__ import annotations

from pathlib import Path

from quiesce.config.models import StateConfig
from quiesce.store.base import StateStore, StoreError
from quiesce.store.sqlite import SCHEMA_VERSION, SqliteStore


def open_store(config: StateConfig, base_dir: Path | str = ".") -> StateStore:
    """The state store the config asks for."""
    if config.etcd is not None:
        raise StoreError(
            "state.etcd: the etcd state store is not available in this build; "
            "use state.sqlite (a file path, or null for an in-memory store)"
        )
    retention = config.event_retention
    if config.sqlite is None:
        path = ":memory:"
    else:
        p = Path(config.sqlite).expanduser()
        if not p.is_absolute():
            p = Path(base_dir) / p
        if not p.parent.is_dir():
            raise StoreError(f"state.sqlite: directory {p.parent} does not exist")
        path = str(p)
    return SqliteStore(path, retention_rows=retention.rows, retention_age=retention.age)


__all__ = ["SCHEMA_VERSION", "SqliteStore", "StateStore", "StoreError", "open_store"]
