"""The ``protocol: postgresql`` relay: the database relay shell (quiesce.dataplane.dbrelay)
with PostgreSQL's framing (quiesce.dataplane.pg).

Maintenance without ``--force`` ends an idle session at once and any other right after the
``ReadyForQuery('I')`` that ends its transaction, with the ``ErrorResponse`` PostgreSQL sends
itself on an administrator's shutdown (FATAL 57P01) and a ``Terminate`` to the server.

An ``SSLRequest`` (or ``GSSENCRequest``) is answered ``N`` by the relay and not passed on:
the client goes on in cleartext or gives up, as its ``sslmode`` says.
"""

from __future__ import annotations

from quiesce.dataplane.dbrelay import FRESH_GRACE, DbClient
from quiesce.dataplane.pg import BackendFramer, FrontendFramer, Session

__all__ = ["FRESH_GRACE", "PgClient"]


class PgClient(DbClient):
    """One client connection of a ``postgresql`` service."""

    def framers(self, max_message: int) -> tuple[Session, FrontendFramer, BackendFramer]:
        session = Session()
        return session, FrontendFramer(session, max_message), BackendFramer(session, max_message)
