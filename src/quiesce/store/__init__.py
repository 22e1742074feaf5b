"""Where runtime state survives a restart: admin records, runtime flags, runtime monitors,
pool monitor attachments and the event log.

``open_store(config.state, base_dir)`` picks the implementation from the config:

- ``state.sqlite: PATH`` (the default, ``./quiesce-state.db``): :class:`SqliteStore` on that
  file, relative to the config file's directory;
- ``state.sqlite: null``: the same store in memory (nothing survives a restart);
- ``state.etcd: {endpoints, prefix, node}``: :class:`EtcdStore`, shared by every node
  configured with the same etcd and prefix; ``await store.open()`` before the admin service
  starts, ``await store.aclose()`` at the end (``quiesce.app`` does both).
"""

from __future__ import annotations

from pathlib import Path

from quiesce.config.models import StateConfig
from quiesce.store.base import RemoteChange, SharedStore, StateStore, StoreError
from quiesce.store.etcd import EtcdStore
from quiesce.store.sqlite import SCHEMA_VERSION, SqliteStore


def open_store(config: StateConfig, base_dir: Path | str = ".") -> StateStore:
    """The state store the config asks for."""
    retention = config.event_retention
    if config.etcd is not None:
        etcd = config.etcd

        def read(key: str, name: str | None) -> bytes | None:
            if name is None:
                return None
            p = Path(name).expanduser()
            p = p if p.is_absolute() else Path(base_dir) / p
            try:
                return p.read_bytes()
            except OSError as exc:
                raise StoreError(f"state.etcd.{key}: cannot read {p}: {exc.strerror}") from None

        secret = read("password_file", etcd.password_file)
        password = etcd.password if secret is None else secret.decode().strip()
        tls = None
        if etcd.tls is not None:
            t = etcd.tls
            tls = (read("tls.ca", t.ca), read("tls.cert", t.cert), read("tls.key", t.key))
        return EtcdStore(
            etcd.endpoints,
            etcd.prefix,
            node=etcd.node,
            stale_after=etcd.stale_after,
            lease_ttl=etcd.lease_ttl,
            retention_rows=retention.rows,
            retention_age=retention.age,
            username=etcd.username,
            password=password,
            tls=tls,
        )
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


__all__ = [
    "SCHEMA_VERSION",
    "EtcdStore",
    "RemoteChange",
    "SharedStore",
    "SqliteStore",
    "StateStore",
    "StoreError",
    "open_store",
]
