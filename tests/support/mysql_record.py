"""Records a MariaDB session's packets for the unit tests of quiesce.dataplane.mysql
(tests/dataplane/mysql_session.json): PyMySQL drives a real MariaDB through a small
recording relay; each read is kept as it came (its splits too), with marks of the state the
session is in after each step. Run ``python3 -m tests.support.mysql_record`` to record again
(MariaDB and PyMySQL installed)."""

from __future__ import annotations

import json
import socket
import struct
import tempfile
import threading
from pathlib import Path
from typing import Any

from tests.support.mariadb import MariaDB, mariadb_server

OUT = Path(__file__).parent.parent / "dataplane" / "mysql_session.json"


class Recorder:
    def __init__(self, target: int) -> None:
        self.events: list[list[str]] = []
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.target = target
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        client, _ = self.listener.accept()
        server = socket.create_connection(("127.0.0.1", self.target))
        threading.Thread(target=self._pipe, args=(client, server, "c"), daemon=True).start()
        self._pipe(server, client, "s")

    def _pipe(self, src: socket.socket, dst: socket.socket, side: str) -> None:
        while True:
            data = src.recv(65536)
            if not data:
                dst.close()
                return
            with self.lock:
                self.events.append([side, data.hex()])
            dst.sendall(data)

    def mark(self, state: str, note: str) -> None:
        with self.lock:
            self.events.append(["mark", state, note])


def _binary_statement(conn: Any, rec: Recorder) -> None:
    """COM_STMT_PREPARE, COM_STMT_EXECUTE (binary rows), COM_STMT_CLOSE through PyMySQL's
    packet reader (PyMySQL itself only speaks the text protocol)."""
    conn._execute_command(0x16, "SELECT id, v FROM t WHERE id > ? AND v < ?")
    ok = conn._read_packet()
    data = ok.get_all_data()
    stmt, cols, params = struct.unpack_from("<IHH", data, 1)
    for _ in range(params + 1 + cols + 1):  # definitions and an EOF after each group
        conn._read_packet()
    rec.mark("idle", "after COM_STMT_PREPARE")
    body = struct.pack("<IBI", stmt, 0, 1) + b"\x00" + b"\x01" + b"\x08\x00" * 2
    body += struct.pack("<qq", 0, 1000)
    conn._execute_command(0x17, body)
    n = conn._read_packet().get_all_data()[0]
    for _ in range(n + 1):  # column definitions, EOF
        conn._read_packet()
    while not conn._read_packet().is_eof_packet():  # binary rows
        pass
    rec.mark("idle", "after COM_STMT_EXECUTE")
    conn._execute_command(0x19, struct.pack("<I", stmt))  # no response


def record(db: MariaDB) -> list[list[str]]:
    import pymysql
    from pymysql.constants import CLIENT

    rec = Recorder(db.port)
    conn = pymysql.connect(
        host="127.0.0.1",
        port=rec.port,
        user="app",
        password="secret",
        database="app",
        client_flag=CLIENT.MULTI_STATEMENTS,
        local_infile=True,
        autocommit=True,
    )
    rec.mark("idle", "connected (autocommit on)")
    steps = [
        ("INSERT INTO t (v) VALUES (1), (2), (3)", "idle", "autocommit insert"),
        ("BEGIN", "transaction", "BEGIN"),
        ("SELECT id, v, REPEAT('x', 3000) FROM t", "transaction", "result set in a transaction"),
        ("UPDATE t SET v = v + 1", "transaction", "update"),
        ("COMMIT", "idle", "COMMIT"),
        ("SELECT 1; BEGIN; SELECT 2", "transaction", "multi-statement ending in a transaction"),
        ("ROLLBACK", "idle", "ROLLBACK"),
    ]
    with conn.cursor() as cur:
        for sql, state, note in steps:
            cur.execute(sql)
            while cur.nextset():  # every result of a multi-statement
                pass
            rec.mark(state, note)
        try:
            cur.execute("SELECT nonexistent FROM t")
        except pymysql.err.OperationalError:
            pass
        rec.mark("idle", "an error")
        _binary_statement(conn, rec)
        with tempfile.NamedTemporaryFile("w", suffix=".tsv") as f:
            f.write("".join(f"\\N\t{i}\n" for i in range(500)))
            f.flush()
            cur.execute(f"LOAD DATA LOCAL INFILE '{f.name}' INTO TABLE t")
        rec.mark("idle", "LOAD DATA LOCAL INFILE")
        cur.execute("SET autocommit = 0")
        rec.mark("idle", "autocommit off")
        cur.execute("SELECT count(*) FROM t")
        cur.fetchall()
        rec.mark("transaction", "autocommit off: a read opened a transaction")
        conn.commit()
        rec.mark("idle", "commit")
    conn.close()
    return rec.events


def main() -> None:
    with mariadb_server() as db:
        events = record(db)
    OUT.write_text(json.dumps(events, indent=0) + "\n")
    print(f"{OUT}: {len(events)} reads and marks")


if __name__ == "__main__":
    main()
