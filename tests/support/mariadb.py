"""A real MariaDB 10.11 (Debian's ``mariadb-server`` package) for the peers tests: a data
directory made by ``mariadb-install-db`` in a temp directory, ``mariadbd`` run as the
``mysql`` user (when the tests run as root) on 127.0.0.1 and a free port, small InnoDB
buffers; the user ``app`` / ``secret`` (mysql_native_password) over TCP, root over the Unix
socket for the set-up. Ready when a connection succeeds, never after a fixed sleep."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.postgres import _free_port

MARIADBD = Path("/usr/sbin/mariadbd")
INSTALL_DB = Path("/usr/bin/mariadb-install-db")
USER = "app"
PASSWORD = "secret"


@dataclass
class MariaDB:
    port: int
    directory: Path
    ca_file: Path | None = None  # with tls: the CA of the server's certificate

    @property
    def socket(self) -> str:
        return str(self.directory / "sock")

    def connect(self, port: int | None = None, **extra: Any) -> Any:
        """A PyMySQL connection as ``app`` over TCP (to ``port``: through quiesce)."""
        import pymysql

        opts: dict[str, Any] = {"database": "app", "connect_timeout": 10, **extra}
        return pymysql.connect(
            host="127.0.0.1", port=port or self.port, user=USER, password=PASSWORD, **opts
        )

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        """Run ``statement`` as root over the Unix socket; its rows."""
        import pymysql

        conn = pymysql.connect(unix_socket=self.socket, user="root", autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                return list(cur.fetchall())
        finally:
            conn.close()


def _run(args: list[str]) -> None:
    r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if r.returncode:
        raise AssertionError(f"{args[0]} failed ({r.returncode}): {r.stdout}{r.stderr}")


def _wait_ready(db: MariaDB, proc: subprocess.Popen[bytes], log: Path) -> None:
    import pymysql

    deadline = time.monotonic() + 60
    while True:
        try:  # (a plain socket first: PyMySQL leaves its socket open when a connect fails)
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(db.socket)
            pymysql.connect(unix_socket=db.socket, user="root", connect_timeout=2).close()
            return
        except (OSError, pymysql.err.OperationalError):
            if proc.poll() is not None or time.monotonic() > deadline:
                text = log.read_text() if log.exists() else ""
                raise AssertionError(f"mariadbd did not start: {text[-2000:]}") from None
            time.sleep(0.05)  # polling for readiness, not waiting for it


@contextlib.contextmanager
def mariadb_server(
    tls: bool = False, binlog: bool = False, primary: MariaDB | None = None
) -> Iterator[MariaDB]:
    """A running MariaDB with a database ``app`` and a table ``app.t (id, v)``; with ``tls``,
    a certificate for 127.0.0.1 (``ca_file``: its CA) so clients may ask for TLS; with
    ``binlog``, a binary log (a primary others may replicate from); with ``primary`` (one
    started with ``binlog``), replicating from it from its current position (writable: its
    ``read_only`` stays off). Skipped when the package or PyMySQL is missing."""
    if not MARIADBD.exists():
        pytest.skip("MariaDB is not installed (scripts/install-test-deps)")
    pytest.importorskip("pymysql")
    directory = Path(tempfile.mkdtemp(prefix="quiesce-mariadb-"))
    user = ["--user=mysql"] if os.geteuid() == 0 else []
    if user:
        shutil.chown(directory, "mysql", "mysql")
    data = directory / "data"
    log = directory / "error.log"
    db = MariaDB(_free_port(), directory)
    proc: subprocess.Popen[bytes] | None = None
    tls_options: list[str] = []
    if tls:
        from tests.support.certs import Certs

        certs = Certs(directory)
        cert, key = certs.leaf("server", "127.0.0.1", "localhost")
        db.ca_file = certs.ca_file
        tls_options = [f"--ssl-cert={cert}", f"--ssl-key={key}", f"--ssl-ca={certs.ca_file}"]
        for path in (cert, key, certs.ca_file):
            if user:
                shutil.chown(path, "mysql", "mysql")
    try:
        _run(
            [
                str(INSTALL_DB),
                "--no-defaults",
                f"--datadir={data}",
                *user,
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ]
        )
        proc = subprocess.Popen(
            [
                str(MARIADBD),
                "--no-defaults",
                f"--datadir={data}",
                *user,
                f"--port={db.port}",
                "--bind-address=127.0.0.1",
                f"--socket={db.socket}",
                f"--pid-file={directory / 'pid'}",
                f"--log-error={log}",
                "--innodb-buffer-pool-size=16M",
                "--innodb-log-file-size=8M",
                "--innodb-flush-log-at-trx-commit=0",
                "--skip-name-resolve",
                "--max-connections=300",
                *tls_options,
                f"--server-id={db.port}",
                *([f"--log-bin={directory / 'binlog'}"] if binlog else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_ready(db, proc, log)
        db.sql("CREATE DATABASE app")
        db.sql(f"CREATE USER {USER}@'%' IDENTIFIED BY '{PASSWORD}'")
        db.sql(f"GRANT ALL ON *.* TO {USER}@'%'")
        db.sql("CREATE TABLE app.t (id INT PRIMARY KEY AUTO_INCREMENT, v INT) ENGINE=InnoDB")
        if primary is not None:
            ((log_file, position, *_),) = primary.sql("SHOW MASTER STATUS")
            db.sql(
                f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={primary.port}, "
                f"MASTER_USER='{USER}', MASTER_PASSWORD='{PASSWORD}', "
                f"MASTER_LOG_FILE='{log_file}', MASTER_LOG_POS={position}, MASTER_USE_GTID=no"
            )
            db.sql("START SLAVE")
        yield db
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(directory, ignore_errors=True)
