"""The store interfaces: every store opens and closes the same way; only etcd is shared."""

from __future__ import annotations

from quiesce.store import EtcdStore, SharedStore, SqliteStore


async def test_sqlite_opens_and_closes_like_every_store_and_is_not_shared() -> None:
    store = SqliteStore(":memory:")
    assert not isinstance(store, SharedStore)
    await store.open()
    assert store.load_flags() == {}
    await store.aclose()


def test_etcd_is_a_shared_store() -> None:
    store = EtcdStore(["127.0.0.1:2379"])  # not opened: no connection is made
    try:
        assert isinstance(store, SharedStore)
        assert store.connected is False and store.pending == 0
    finally:
        store.close()
