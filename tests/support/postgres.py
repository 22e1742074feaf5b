"""A real PostgreSQL (Debian's ``postgresql`` package, version 15) for the peers tests: a
cluster made by ``initdb`` in a temp directory, run by ``pg_ctl`` as the ``postgres`` user
(when the tests run as root) on 127.0.0.1 and a free port; password (SCRAM) auth over TCP
for the user ``app`` / ``secret``, trust on its Unix socket for the set-up."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

BIN = Path("/usr/lib/postgresql/15/bin")
USER = "app"
PASSWORD = "secret"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Postgres:
    port: int
    directory: Path
    ca_file: Path | None = None  # with tls: the CA of the server's certificate

    def dsn(self, port: int | None = None, **extra: str) -> str:
        opts = " ".join(f"{k}={v}" for k, v in extra.items())
        return (
            f"host=127.0.0.1 port={port or self.port} dbname=postgres user={USER} "
            f"password={PASSWORD} sslmode=disable connect_timeout=10 {opts}"
        ).strip()

    def promote(self) -> None:
        """A replica leaves recovery and becomes a primary."""
        _run([str(BIN / "pg_ctl"), "-D", str(self.directory / "data"), "-w", "promote"])

    def psql(self, sql: str) -> str:
        """Run ``sql`` as the superuser over the Unix socket (trust); its output."""
        r = _run(
            [
                str(BIN / "psql"),
                "-h",
                str(self.directory),
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-AtX",
                "-c",
                sql,
            ]
        )
        return r.stdout


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(_as_postgres(args), capture_output=True, text=True, timeout=120)
    if r.returncode:
        raise AssertionError(f"{args[0]} failed ({r.returncode}): {r.stdout}{r.stderr}")
    return r


@contextlib.contextmanager
def postgres_server(primary: Postgres | None = None, tls: bool = False) -> Iterator[Postgres]:
    """A running PostgreSQL 15; with ``primary``, a streaming replica of it (pg_basebackup
    -R: in recovery until :meth:`Postgres.promote`); with ``tls``, ``ssl = on`` with a
    certificate for 127.0.0.1 (``ca_file``: its CA). Skipped when the package is missing."""
    if not (BIN / "initdb").exists():
        pytest.skip("PostgreSQL 15 is not installed (scripts/install-test-deps)")
    directory = Path(tempfile.mkdtemp(prefix="quiesce-pg-"))
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    data = directory / "data"
    pwfile = directory / "pw"
    pwfile.write_text("unused\n")
    if os.geteuid() == 0:
        shutil.chown(pwfile, "postgres", "postgres")
    port = _free_port()
    pg = Postgres(port, directory)
    try:
        if primary is None:
            initdb = [str(BIN / "initdb"), "-D", str(data), "-U", "postgres", "--pwfile"]
            initdb += [str(pwfile), "--auth-local=trust", "--auth-host=scram-sha-256"]
            _run([*initdb, "-E", "UTF8", "--no-sync"])
        else:
            source = f"host=127.0.0.1 port={primary.port} user={USER} password={PASSWORD}"
            # --checkpoint=fast: a spread checkpoint after writes (pgbench -i) takes minutes
            _run(
                [
                    str(BIN / "pg_basebackup"),
                    *("-d", source, "-D", str(data), "-R", "--no-sync", "--checkpoint=fast"),
                ]
            )
        opts = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        opts += " -c max_connections=200"
        if tls:
            from tests.support.certs import Certs

            certs = Certs(directory)
            cert, key = certs.leaf("server", "127.0.0.1", "localhost")
            pg.ca_file = certs.ca_file
            key.chmod(0o600)
            if os.geteuid() == 0:
                for path in (cert, key, certs.ca_file):
                    shutil.chown(path, "postgres", "postgres")
            opts += f" -c ssl=on -c ssl_cert_file={cert} -c ssl_key_file={key}"
        ctl = [str(BIN / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(directory / "log")]
        _run([*ctl, "-w", "-t", "60", "start"])
        if primary is None:
            pg.psql(f"CREATE ROLE {USER} LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
        yield pg
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                _as_postgres([str(BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(directory, ignore_errors=True)
