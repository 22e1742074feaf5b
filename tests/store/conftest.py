"""The real etcd the etcd tests share: one per test module (tests/store/test_etcd.py has the
:class:`~tests.store.test_etcd.Etcd` runner; a module may override ``etcd`` with its own)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.store.test_etcd import Etcd


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Etcd]:
    server = Etcd(tmp_path_factory.mktemp("etcd"))
    server.start()
    yield server
    server.stop()
