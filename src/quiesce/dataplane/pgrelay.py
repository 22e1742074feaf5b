"""The ``protocol: postgresql`` relay: the database relay shell (quiesce.dataplane.dbrelay)
with PostgreSQL's framing (quiesce.dataplane.pg).

Maintenance without ``--force`` ends an idle session at once and any other right after the
``ReadyForQuery('I')`` that ends its transaction, with the ``ErrorResponse`` PostgreSQL sends
itself on an administrator's shutdown (FATAL 57P01) and a ``Terminate`` to the server.

An ``SSLRequest`` (or ``GSSENCRequest``) is answered ``N`` by the relay and not passed on:
the client goes on in cleartext or gives up, as its ``sslmode`` says.
"""

from __future__ import annotations

from collections.abc import Callable

from quiesce import _accel
from quiesce.dataplane.dbrelay import FRESH_GRACE, BackFramer, DbClient, FrontFramer, Session
from quiesce.dataplane.pg import BackendFramer, FrontendFramer
from quiesce.dataplane.pg import Session as PySession

__all__ = ["FRESH_GRACE", "PgClient"]


def _pure(max_message: int) -> tuple[PySession, FrontendFramer, BackendFramer]:
    session = PySession()
    return session, FrontendFramer(session, max_message), BackendFramer(session, max_message)


_framers: Callable[[int], tuple[Session, FrontFramer, BackFramer]] = _pure
if _accel.dbfast is not None:  # the same framers with their walk in C
    from quiesce.dataplane.dbfast import pg_framers

    _framers = pg_framers


class PgClient(DbClient):
    """One client connection of a ``postgresql`` service."""

    def framers(self, max_message: int) -> tuple[Session, FrontFramer, BackFramer]:
        return _framers(max_message)
