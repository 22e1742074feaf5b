"""The ``postgresql`` probe: log in, run the monitor's query, ask the role, ask for maintenance.

It uses asyncpg (an optional dependency: ``pip install quiesce[postgresql]``), a native
asyncio driver: the start-up, the authentication (trust, md5, scram-sha-256) and the queries
never block the event loop, and it needs no libpq. One connection per check, closed at the
end, all within ``receive_timeout``.

Verdicts (:func:`classify`): wrong credentials are ``AUTH_FAILED`` (down); a failing query is
``QUERY_FAILED``; ``maintenance_query``'s first column true is ``MAINTENANCE_QUERY_MATCH`` (the
server goes to "down for maintenance" at once, like a maintenance string); a role other than
the one asked for (``role: primary`` on a server in recovery) is ``ROLE_MISMATCH``. The role
(``primary`` or ``replica``, from ``pg_is_in_recovery()``) is in the check's detail.
"""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path
from typing import Any

from quiesce.config.models import DatabaseMonitor, HealthMonitor
from quiesce.core.checks import CheckResult, Reason
from quiesce.core.states import Verdict
from quiesce.health.probes.base import Target, TaskStart, error_result, failure, outcome


def classify(
    settings: DatabaseMonitor, in_recovery: bool, maintenance: bool
) -> tuple[Verdict, Reason, str]:
    """The verdict of a check that logged in and ran its queries (sans-IO); ``in_recovery``:
    the server is a replica (MySQL: ``@@read_only``)."""
    role = "replica" if in_recovery else "primary"
    if maintenance:
        return Verdict.MAINTENANCE, Reason.MAINTENANCE_QUERY_MATCH, f"{role}: maintenance_query"
    if settings.role != "any" and settings.role != role:
        return Verdict.FAIL, Reason.ROLE_MISMATCH, f"{role}, expected {settings.role}"
    return Verdict.PASS, Reason.OK, role


_WORDS = {  # PostgreSQL's boolean input words (and MySQL's 0/1), case and blanks ignored
    **dict.fromkeys(("t", "true", "y", "yes", "on", "1"), True),
    **dict.fromkeys(("f", "false", "n", "no", "off", "0", ""), False),
}


def in_maintenance(value: object) -> bool:
    """Does ``maintenance_query``'s first column say maintenance? None (no row, NULL) and
    false, zero, or a text that spells false (``off``, ``false``, ``no``, ``f``, ``0``, empty:
    a setting read as text) say no; true, a non-zero number, a text that spells true, or any
    other non-empty text (a reason written in a maintenance table) say yes."""
    if value is None:
        return False
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", "replace")
    if isinstance(value, str):
        return _WORDS.get(value.strip().lower(), True)
    return bool(value)


def password(settings: DatabaseMonitor) -> str | None:
    """The password file's first line (None: the driver's own defaults)."""
    if settings.password_file is None:
        return None
    text = Path(settings.password_file).read_text(encoding="utf-8")
    return text.splitlines()[0] if text else ""


class DatabaseProber(TaskStart):
    """What a database check does before it logs in: its driver imported (an optional
    extra), its password file read; :meth:`login` does the rest."""

    driver = ""  # the driver's module, and the extra that installs it
    extra = ""

    async def check(self, target: Target, monitor: HealthMonitor, name: str) -> CheckResult:
        clock = self.clock
        started = clock.monotonic()
        try:
            module = importlib.import_module(self.driver)
        except ImportError:
            return failure(
                name,
                clock,
                started,
                Reason.CONNECTION_ERROR,
                f"{monitor.type} monitors need {self.driver}: pip install quiesce[{self.extra}]",
            )
        settings = monitor.postgresql_monitor or monitor.mysql_monitor
        assert settings is not None  # the model requires it for these types
        try:
            secret = password(settings)
        except OSError as exc:
            return failure(
                name, clock, started, Reason.AUTH_FAILED, f"password_file: {exc.strerror}"
            )
        return await self.login(module, secret, target, monitor, name, started)

    async def login(
        self,
        driver: Any,
        secret: str | None,
        target: Target,
        monitor: HealthMonitor,
        name: str,
        started: float,
    ) -> CheckResult:
        raise NotImplementedError


class PostgresqlProber(DatabaseProber):
    driver = "asyncpg"
    extra = "postgresql"

    async def login(
        self,
        driver: Any,
        secret: str | None,
        target: Target,
        monitor: HealthMonitor,
        name: str,
        started: float,
    ) -> CheckResult:
        clock = self.clock
        asyncpg = driver
        settings = monitor.postgresql_monitor
        assert settings is not None
        conn: Any = None
        try:
            async with asyncio.timeout(monitor.receive_timeout):
                conn = await asyncpg.connect(
                    host=target.host,
                    port=target.port,
                    user=settings.user,
                    password=secret,
                    database=settings.database,
                    ssl=False,
                    timeout=monitor.receive_timeout,
                    statement_cache_size=0,
                )
                try:
                    await conn.execute(settings.query)
                except asyncpg.PostgresError as exc:
                    return failure(name, clock, started, Reason.QUERY_FAILED, f"query: {exc}")
                in_recovery = bool(await conn.fetchval("SELECT pg_is_in_recovery()"))
                maintenance = False
                if settings.maintenance_query:
                    try:
                        maintenance = in_maintenance(
                            await conn.fetchval(settings.maintenance_query)
                        )
                    except asyncpg.PostgresError as exc:
                        return failure(
                            name, clock, started, Reason.QUERY_FAILED, f"maintenance_query: {exc}"
                        )
        except (
            asyncpg.InvalidPasswordError,
            asyncpg.InvalidAuthorizationSpecificationError,
        ) as exc:
            return failure(name, clock, started, Reason.AUTH_FAILED, str(exc))
        except asyncpg.PostgresError as exc:  # e.g. the database does not exist, shutting down
            return failure(name, clock, started, Reason.CONNECTION_ERROR, str(exc))
        except (OSError, TimeoutError) as exc:
            return error_result(name, clock, started, exc)
        finally:
            if conn is not None:
                conn.terminate()
        return outcome(name, clock, started, *classify(settings, in_recovery, maintenance))


__all__ = ["DatabaseProber", "PostgresqlProber", "classify", "in_maintenance", "password"]
