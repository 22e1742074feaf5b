"""Reading a range of etcd keys in pages, all at one revision (the watcher's full reads).

One Range answer holding the whole prefix goes over gRPC's 4 MiB receive limit once the
prefix holds ~8,000 events (the default retention is 100,000), and a read that fails there
fails every start and every resync. So a read asks for :data:`PAGE_KEYS` keys at a time,
continuing after the last key it got (``key + b"\\0"``), every page at the revision of the
first answer: the pages are one snapshot, as one answer would have been. An answer still too
large (big values) is asked again for half as many keys; a revision compacted between two
pages starts the read again at the current one.

aetcd's ``get_prefix`` / ``get_range`` do not pass ``limit`` or ``revision`` on, so the
RangeRequest is built here and sent on the client's own stub (its timeout and credentials).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PAGE_KEYS = 1000
"""Keys asked for in one Range request (events are ~500 bytes: ~0.5 MB an answer)."""
KEY_PAGE_KEYS = 10_000
"""Keys asked for in one Range request without their values (~60 bytes each)."""
RESTARTS = 3
"""How often a read starts again because its revision was compacted meanwhile."""


@dataclass(slots=True)
class Snapshot:
    """The keys of a range at one revision, in key order (etcd ``KeyValue`` messages)."""

    revision: int = 0
    cluster_id: int = 0
    kvs: list[Any] = field(default_factory=list)
    pages: int = 0
    size: int = 0
    """Bytes of keys and values read."""


async def read_range(
    client: Any,
    start: bytes,
    end: bytes,
    *,
    revision: int = 0,
    keys_only: bool = False,
    min_mod_revision: int = 0,
    page_keys: int = PAGE_KEYS,
) -> Snapshot:
    """The keys in ``[start, end)`` at ``revision`` (0: the current one), in pages."""
    from aetcd import exceptions, rpc

    await client.connect()
    restarts = 0
    limit = max(1, page_keys)
    snap = Snapshot(revision)
    key = start
    while True:
        request = rpc.RangeRequest(
            key=key,
            range_end=end,
            limit=limit,
            revision=snap.revision,
            keys_only=keys_only,
            min_mod_revision=min_mod_revision,
        )
        try:
            answer = await client.kvstub.Range(
                request, timeout=client._timeout, metadata=client.metadata
            )
        except rpc.AioRpcError as exc:
            if exc.code() == rpc.StatusCode.RESOURCE_EXHAUSTED and limit > 1:
                limit = max(1, limit // 2)  # over the receive limit: fewer keys a page
                continue
            compacted = "compacted" in (exc.details() or "")
            if compacted and not revision and snap.pages and restarts < RESTARTS:
                restarts += 1  # the first page's revision is gone: read anew at the current
                snap, key = Snapshot(), start
                continue
            exceptions._handle_exception(exc)
            raise  # not reached: _handle_exception raises
        if not snap.pages:  # the header has the store's current revision
            snap.revision = snap.revision or int(answer.header.revision)
            snap.cluster_id = int(answer.header.cluster_id)
        snap.pages += 1
        snap.kvs.extend(answer.kvs)
        snap.size += sum(len(kv.key) + len(kv.value) for kv in answer.kvs)
        if not answer.more or not answer.kvs:
            return snap
        key = bytes(answer.kvs[-1].key) + b"\0"


__all__ = ["KEY_PAGE_KEYS", "PAGE_KEYS", "Snapshot", "read_range"]
