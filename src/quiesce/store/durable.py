"""A store whose writes return before they are on disk: the SQLite store once ``open()`` has
started its writer thread (:mod:`quiesce.store.sqlite_writer`). A front end answering an
admin command awaits :meth:`DurableStore.committed` first, so the change survives a
``kill -9`` once the caller has the answer (:meth:`quiesce.admin.AdminService.durable`)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from quiesce.store.base import StateStore


@runtime_checkable
class DurableStore(StateStore, Protocol):
    @property
    def writes(self) -> int:
        """Writes made so far (two readings differ: something was written in between)."""
        ...

    async def committed(self) -> None:
        """Return once every write made before the call is durable; :class:`StoreError`
        if one of them could not be written."""
        ...


__all__ = ["DurableStore"]
