"""sysbench through quiesce's ``mysql`` service, its plain ``tcp`` service, HAProxy in TCP
mode, and straight to MariaDB, in one run (issue 20).

    python bench/mysql_bench.py [--seconds 10] [--rounds 2] [--threads 16]
                                [--test oltp_point_select] [--pure] [--paired]

Needs sysbench (``apt-get install sysbench``) and MariaDB (scripts/install-test-deps).
Starts a MariaDB 10.11 (tests/support/mariadb.py: a temp data dir, 127.0.0.1), ``sysbench
… prepare`` (1 table of 10,000 rows), quiesce's data plane alone (bench/quiesce_proxy.py,
uvloop) with both services, and HAProxy (``nbthread 1``, ``mode tcp``), the proxies pinned to
CPU 1. Each round runs every target once, in turn, the order rotated by one each round; the
table gives each target's best round and median transactions per second, their ratios to
HAProxy's, and the proxy's CPU µs per transaction (median of the rounds).
``oltp_point_select`` is one prepared SELECT per transaction (COM_STMT_EXECUTE, binary
rows); ``oltp_read_write`` is BEGIN, 14 statements, COMMIT.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pg_bench import PAIRED_HELP, PURE_HELP, compare, start_targets, stop, table

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
    ap.add_argument("--pure", action="store_true", help=PURE_HELP)
    ap.add_argument("--paired", action="store_true", help=PAIRED_HELP)
    opts = ap.parse_args()
    if shutil.which("sysbench") is None:
        sys.exit("mysql_bench: sysbench is not installed (apt-get install sysbench)")
    run = [f"--threads={opts.threads}", f"--time={opts.seconds}", "run"]
    with tempfile.TemporaryDirectory() as tmpdir, mariadb_server() as db:
        tmp = Path(tmpdir)
        subprocess.run(command(db.port, opts.test, "prepare"), check=True, capture_output=True)
        procs, targets = start_targets(tmp, db.port, "mysql", opts.pure, opts.paired)
        try:
            runs = compare(
                targets, lambda port: sysbench(port, opts.test, run), opts.rounds, opts.paired
            )
        finally:
            stop(procs)
        print(f"\nsysbench {opts.test} --threads={opts.threads} --time={opts.seconds},")
        print(f"{opts.rounds} rounds (the order of the targets rotated each round)\n")
        table(runs, "transactions/s")


if __name__ == "__main__":
    main()
