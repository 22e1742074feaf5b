"""The ``protocol: mysql`` relay: the database relay shell (quiesce.dataplane.dbrelay) with
the MySQL / MariaDB client/server protocol followed (quiesce.dataplane.mysql).

Maintenance without ``--force`` ends an idle session at once and any other right after the
OK (or EOF) that ends its command with no transaction left open, with an ERR packet
``ER_SERVER_SHUTDOWN`` (1053, SQLSTATE 08S01) to the client and a ``COM_QUIT`` to the server.

A client that asks for TLS (``CLIENT_SSL`` in its handshake response) is relayed opaque:
its session is counted ``tls`` and drained at connection level, as a plain L4 connection is
(the service's first one is logged as a warning; ``quiesce check`` and ``run`` say so too).
"""

from __future__ import annotations

from collections.abc import Callable

from quiesce import _accel
from quiesce.dataplane.dbrelay import BackFramer, DbClient, FrontFramer, Session
from quiesce.dataplane.mysql import ClientFramer, ServerFramer
from quiesce.dataplane.mysql import Session as PySession


def _pure(max_message: int) -> tuple[PySession, ClientFramer, ServerFramer]:
    session = PySession()
    return session, ClientFramer(session, max_message), ServerFramer(session, max_message)


_framers: Callable[[int], tuple[Session, FrontFramer, BackFramer]] = _pure
if _accel.dbfast is not None:  # the same framers with their walk in C
    from quiesce.dataplane.dbfast import mysql_framers

    _framers = mysql_framers


class MysqlClient(DbClient):
    """One client connection of a ``mysql`` service."""

    def framers(self, max_message: int) -> tuple[Session, FrontFramer, BackFramer]:
        return _framers(max_message)
