"""The etcd store's writer: the queue of writes and the task that puts them to etcd in order.
Part of :class:`~quiesce.store.etcd.EtcdStore`."""

from __future__ import annotations

import asyncio
import threading

from quiesce.core.states import CloseMode
from quiesce.store.base import Kind
from quiesce.store.etcd.base import (
    _STATE_EVENTS,
    RETRY_MAX,
    RETRY_MIN,
    EtcdBase,
    _about,
    _reraise_if_cancelled,
    log,
)


class Writer(EtcdBase):
    def _share(self, kind: Kind, name: str, value: object) -> None:
        if self._replay_from is not None:
            return
        extra: dict[str, object] = {}
        event = self._last_event
        if event is not None and event.kind in _STATE_EVENTS[kind] and _about(event, kind, name):
            extra = {"actor": event.actor or "", "reason": event.reason or "", "cause": event.cause}
            if kind == "admin":
                extra["close"] = event.detail.get("close", CloseMode.NONE.value)
        self._enqueue(self._key(kind, name), self._value(value, **extra))

    def _enqueue(self, key: str, value: bytes | None) -> None:
        self._op_seq += 1
        if key not in self._ops:
            self._queue.append(key)
        self._ops[key] = (self._op_seq, value)
        if len(self._queue) > self._max_queue:
            self._drop_oldest_event()
        self._idle.clear()
        if self._loop is None or threading.get_ident() == self._thread:
            self._wake.set()
        else:
            self._loop.call_soon_threadsafe(self._wake.set)

    def _drop_oldest_event(self) -> None:
        events = f"{self.prefix}events/"
        for i, key in enumerate(self._queue):
            if i > 0 and key.startswith(events):  # never the one in flight
                del self._queue[i]
                del self._ops[key]
                self._dropped += 1
                if self._dropped == 1 or self._dropped % 1000 == 0:
                    log.warning(
                        "state store: etcd unreachable for long: %d event(s) not shared",
                        self._dropped,
                    )
                return

    # the writer -----------------------------------------------------------------------------

    async def _run_writer(self) -> None:
        delay = RETRY_MIN
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            key = self._queue[0]
            seq, value = self._ops[key]
            client = self._get_client()
            try:
                if value is None:
                    resp = await client.delete(key.encode())
                    rev = None if resp is None else int(resp.header.revision)
                else:
                    resp = await client.put(key.encode(), value)
                    rev = int(resp.header.revision)
            except (Exception, asyncio.CancelledError) as exc:
                _reraise_if_cancelled(exc)
                self._lost(client, "writing", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            delay = RETRY_MIN
            self._found(rev)
            self.writes += 1
            if self._ops.get(key, (None, None))[0] == seq:
                del self._ops[key]
                self._queue.popleft()
            if rev is not None and not key.startswith(f"{self.prefix}events/"):
                self._acked[key] = rev
            if key not in self._ops and key in self._deferred:
                drev, dvalue = self._deferred.pop(key)
                if rev is None or drev > rev:
                    self._on_kv(key, dvalue, drev)


__all__ = ["Writer"]
