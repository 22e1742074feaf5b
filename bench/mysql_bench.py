"""sysbench through quiesce's ``mysql`` service, its plain ``tcp`` service, HAProxy in TCP
mode, and straight to MariaDB, in one run (issue 20).

    python bench/mysql_bench.py [--seconds 10] [--rounds 2] [--threads 16]
                                [--test oltp_point_select]

Needs sysbench (``apt-get install sysbench``) and MariaDB (scripts/install-test-deps).
Starts a MariaDB 10.11 (tests/support/mariadb.py: a temp data dir, 127.0.0.1), ``sysbench
… prepare`` (1 table of 10,000 rows), quiesce's data plane alone (bench/quiesce_proxy.py,
uvloop) with both services, and HAProxy (``nbthread 1``, ``mode tcp``), the proxies pinned to
CPU 1. Each round runs every target once, in turn; the table gives the best round's
transactions per second, the ratios to HAProxy, and the proxy's CPU µs per transaction.
``oltp_point_select`` is one prepared SELECT per transaction (COM_STMT_EXECUTE, binary
rows); ``oltp_read_write`` is BEGIN, 14 statements, COMMIT.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from pg_bench import compare, start_haproxy, start_quiesce, table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.support.mariadb import PASSWORD, USER, mariadb_server  # noqa: E402


def command(port: int, test: str, *args: str) -> list[str]:
    return [
        "sysbench",
        test,
        "--db-driver=mysql",
        "--mysql-host=127.0.0.1",
        f"--mysql-port={port}",
        f"--mysql-user={USER}",
        f"--mysql-password={PASSWORD}",
        "--mysql-db=app",
        "--mysql-ssl=off",
        "--tables=1",
        "--table-size=10000",
        *args,
    ]


def sysbench(port: int, test: str, args: list[str]) -> tuple[float, int, int]:
    """(transactions/s, transactions, errors) of one sysbench run."""
    out = subprocess.run(command(port, test, *args), capture_output=True, text=True, check=True)
    m = re.search(r"transactions:\s+(\d+)\s+\(([\d.]+) per sec", out.stdout)
    assert m is not None, out.stdout
    errors = re.search(r"ignored errors:\s+(\d+)", out.stdout)
    return float(m.group(2)), int(m.group(1)), int(errors.group(1)) if errors else 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--test", default="oltp_point_select")
    opts = ap.parse_args()
    run = [f"--threads={opts.threads}", f"--time={opts.seconds}", "run"]
    with tempfile.TemporaryDirectory() as tmpdir, mariadb_server() as db:
        tmp = Path(tmpdir)
        subprocess.run(command(db.port, opts.test, "prepare"), check=True, capture_output=True)
        haproxy, hport = start_haproxy(tmp, db.port)
        quiesce, qports = start_quiesce(tmp, db.port, "mysql")
        targets = {
            "direct": (db.port, None),
            "quiesce mysql": (qports["pg"], quiesce.pid),
            "quiesce tcp": (qports["tcp"], quiesce.pid),
            "haproxy tcp": (hport, haproxy.pid),
        }
        try:
            best = compare(targets, lambda port: sysbench(port, opts.test, run), opts.rounds)
        finally:
            quiesce.terminate()
            haproxy.terminate()
            quiesce.wait(10)
            haproxy.wait(10)
        print(f"\nsysbench {opts.test} --threads={opts.threads} --time={opts.seconds}, best of")
        print(f"{opts.rounds} rounds\n")
        table(best, "transactions/s")


if __name__ == "__main__":
    main()
