"""Types of the optional C extension ``quiesce._dbfast`` (src/quiesce/_ext/dbfast.c); the
classes that use it are in quiesce.dataplane.dbfast."""

from typing import Any

class PgSession:
    status: int
    pending: int
    unsynced: bool
    listening: bool
    started: bool
    cancel: bool
    ended: bool
    fresh: bool
    def __init__(self) -> None: ...

class PgFramer:
    session: Any  # a PgSession (subclass)
    partial: bytes
    skip: int
    max: int
    def __init__(self, session: PgSession, max_message: int = ...) -> None: ...
    def typed(self, data: bytes) -> str | None: ...

class MysqlSession:
    phase: int
    status: int
    r: int
    queue: list[int]  # read-only: changed in place
    left: int
    server_caps: int
    started: bool
    deprecate_eof: bool
    cache_meta: bool
    opaque: bool
    ended: bool
    fresh: bool
    def __init__(self) -> None: ...

class MysqlFramer:
    session: Any  # a MysqlSession (subclass)
    partial: bytes
    skip: int
    max: int
    size: int
    cont: bool
    def __init__(self, session: MysqlSession, max_message: int = ...) -> None: ...
    def walk(self, data: bytes) -> str | None: ...
