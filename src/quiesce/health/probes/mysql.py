"""The ``mysql`` probe (MySQL, MariaDB): log in, run the monitor's query, ask the role, ask
for maintenance.

It uses aiomysql (an optional dependency: ``pip install quiesce[mysql]``), an asyncio driver
on PyMySQL's protocol code: the handshake, the authentication (mysql_native_password,
caching_sha2_password over cleartext, ed25519 is not supported by it) and the queries never
block the event loop. One connection per check, closed at the end, all within
``receive_timeout``; no TLS.

Verdicts (quiesce.health.probes.postgresql's :func:`classify`): wrong credentials (error
1045, or 1044 for the database) are ``AUTH_FAILED`` (down); a failing query is
``QUERY_FAILED``; ``maintenance_query``'s first column true is ``MAINTENANCE_QUERY_MATCH``;
``SELECT @@read_only`` on is a replica, off a primary, and a role other than the one asked
for is ``ROLE_MISMATCH``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from quiesce.config.models import HealthMonitor
from quiesce.core.checks import CheckResult, Reason
from quiesce.health.probes.base import Target, error_result, failure, outcome
from quiesce.health.probes.postgresql import DatabaseProber, classify

_AUTH_ERRORS = (1044, 1045)  # ER_DBACCESS_DENIED_ERROR, ER_ACCESS_DENIED_ERROR


class MysqlProber(DatabaseProber):
    driver = "aiomysql"
    extra = "mysql"

    async def login(
        self,
        driver: Any,
        secret: str | None,
        target: Target,
        monitor: HealthMonitor,
        name: str,
        started: float,
    ) -> CheckResult:
        import pymysql  # (installed with aiomysql)

        clock = self.clock
        aiomysql = driver
        settings = monitor.mysql_monitor
        assert settings is not None
        conn: Any = None
        try:
            async with asyncio.timeout(monitor.receive_timeout):
                conn = await aiomysql.connect(
                    host=target.host,
                    port=target.port,
                    user=settings.user,
                    password=secret or "",
                    db=settings.database,
                    connect_timeout=monitor.receive_timeout,
                    autocommit=True,
                )
                async with conn.cursor() as cur:
                    step = "query"
                    try:
                        await cur.execute(settings.query)
                        await cur.fetchall()
                        step = "SELECT @@read_only"
                        await cur.execute("SELECT @@read_only")
                        read_only = bool((await cur.fetchone())[0])
                        maintenance = False
                        if settings.maintenance_query:
                            step = "maintenance_query"
                            await cur.execute(settings.maintenance_query)
                            row = await cur.fetchone()
                            maintenance = bool(row and row[0])
                    except pymysql.err.MySQLError as exc:
                        return failure(name, clock, started, Reason.QUERY_FAILED, f"{step}: {exc}")
        except pymysql.err.OperationalError as exc:
            if exc.args and exc.args[0] in _AUTH_ERRORS:
                return failure(name, clock, started, Reason.AUTH_FAILED, str(exc.args[-1]))
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, OSError | TimeoutError):
                return error_result(name, clock, started, cause)
            return failure(name, clock, started, Reason.CONNECTION_ERROR, str(exc))
        except pymysql.err.MySQLError as exc:
            return failure(name, clock, started, Reason.CONNECTION_ERROR, str(exc))
        except (OSError, TimeoutError) as exc:
            return error_result(name, clock, started, exc)
        finally:
            if conn is not None:
                conn.close()
        return outcome(name, clock, started, *classify(settings, read_only, maintenance))


__all__ = ["MysqlProber"]
