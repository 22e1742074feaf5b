"""The database framers with their walk in C (quiesce._dbfast, src/quiesce/_ext/dbfast.c).

Same classes, same state, same errors as the pure-Python ones in quiesce.dataplane.pg and
quiesce.dataplane.mysql (the reference, and the fallback when the extension is not built or
``QUIESCE_PURE=1``): the C types hold the state and walk a read; the Python rules of
what the state means (``SessionRules``) and the rare packets (PostgreSQL's start-up,
MySQL's connection phase and uncommon responses, ``ClientRules``/``ServerRules``) are the
pure framers' own, called from C. tests/dataplane/test_dbfast.py compares both on random
message streams split at random points.

Importing this module raises ImportError when the extension is not there.
"""

from __future__ import annotations

from quiesce._dbfast import MysqlFramer, PgFramer
from quiesce._dbfast import MysqlSession as _MysqlSession
from quiesce._dbfast import PgSession as _PgSession
from quiesce.dataplane.mysql import ClientRules, ServerRules
from quiesce.dataplane.mysql import SessionRules as MysqlRules
from quiesce.dataplane.pg import SessionRules as PgRules
from quiesce.dataplane.pg import front_feed


class PgSession(PgRules, _PgSession):
    __slots__ = ()


class PgFrontendFramer(PgFramer):
    __slots__ = ()
    _who = "client"
    feed = front_feed


class PgBackendFramer(PgFramer):
    __slots__ = ()
    _who = "server"
    feed = PgFramer.typed


class MysqlSession(MysqlRules, _MysqlSession):
    __slots__ = ()


class MysqlClientFramer(ClientRules, MysqlFramer):
    __slots__ = ()
    walk = typed = MysqlFramer.walk


class MysqlServerFramer(ServerRules, MysqlFramer):
    __slots__ = ()
    walk = feed = MysqlFramer.walk


def pg_framers(max_message: int) -> tuple[PgSession, PgFrontendFramer, PgBackendFramer]:
    s = PgSession()
    return s, PgFrontendFramer(s, max_message), PgBackendFramer(s, max_message)


def mysql_framers(
    max_message: int,
) -> tuple[MysqlSession, MysqlClientFramer, MysqlServerFramer]:
    s = MysqlSession()
    return s, MysqlClientFramer(s, max_message), MysqlServerFramer(s, max_message)
