"""Issue 14: a ``quiesce run --takeover`` that gives up records no event, in the state store
or its log, as if it had started: neither its first checks' verdicts (a server only its config
has) nor its shutdown. One that takes over records them, before its startup event. Real
``quiesce`` processes, a real back end, the events read from the state file."""

from __future__ import annotations

import signal
import socket
import sqlite3
from pathlib import Path

import pytest

from tests.e2e.test_run_and_demo import Proc
from tests.e2e.test_upgrade import until_served, write_config
from tests.support.backend import Backend, serve_in_thread
from tests.support.process import until

pytestmark = [pytest.mark.peers, pytest.mark.slow]

Row = tuple[int, str, str | None, str | None, str | None]


def events_after(path: Path, last: int) -> list[Row]:
    with sqlite3.connect(path) as db:
        return list(
            db.execute(
                "SELECT id, kind, server, to_state, cause FROM events WHERE id > ? ORDER BY id",
                (last,),
            )
        )


def last_id(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT max(id) FROM events").fetchone()[0])


def with_b2(tmp_path: Path, name: str, b2: str, extra: str = "") -> None:
    """The running config plus server b2 at ``b2`` (and ``extra`` lines), as ``name``."""
    text = (tmp_path / "quiesce.yaml").read_text()
    head, servers, tail = text.partition("    servers:\n")
    server = f"      - {{name: b2, address: {b2}}}\n"
    tail = tail.replace("services:\n", f"{server}services:\n", 1)
    (tmp_path / name).write_text(head + servers + tail + extra)


def started(proc: Proc, db: Path) -> int:
    port = int(proc.wait_for(r"service www listening on port (\d+)").group(1))
    proc.wait_for("quiesce: ready")
    until_served(port)  # b1's first check made it up
    # ... and the old process's events are in: its SQLite writer thread commits them after
    # the fact (on a loaded machine b1's oper_change and pool_up landed after `before` was read)

    def committed() -> bool:
        try:
            rows = {r[1:4] for r in events_after(db, 0)}
        except sqlite3.OperationalError:  # no events table yet
            return False
        return {
            ("startup", None, None),
            ("oper_change", "b1", "up"),
            ("pool_up", None, None),
        } <= rows

    until(committed)
    return port


def test_an_abandoned_takeover_records_no_event(tmp_path: Path) -> None:
    """The new process's first check of b2 (a server only its config has) is done, then it
    cannot bind a port and gives up: no event of it in the store or in its output."""
    db = tmp_path / "state.db"
    with serve_in_thread(Backend("b1")) as (backend,):
        write_config(tmp_path, backend.port)
        old = Proc(["run", "-c", "quiesce.yaml"], tmp_path)
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        try:
            started(old, db)
            before = last_id(db)
            extra = f'  extra: {{listen: "127.0.0.1:{busy.getsockname()[1]}", pool: web}}\n'
            with_b2(tmp_path, "bad.yaml", f"127.0.0.1:{backend.port}", extra)
            new = Proc(["run", "-c", "bad.yaml", "--takeover"], tmp_path)
            assert new.stop(None, timeout=60) == 1, new.output
            assert "address already in use" in new.output
            old.wait_for("takeover abandoned by the new process: still serving")
        finally:
            busy.close()
            assert old.stop(signal.SIGTERM) == 0, old.output
    # b2 went up in the new process (its first verdict was awaited before the services
    # started), yet nothing says so: only the old process's shutdown
    assert "event:" not in new.output, new.output
    assert [r[1:] for r in events_after(db, before)] == [("shutdown", None, None, "signal")], (
        events_after(db, before)
    )


def test_a_takeover_whose_old_process_is_gone_before_finish_records_no_event(
    tmp_path: Path,
) -> None:
    """The old process dies while the new one waits for the first verdict of b2 (a server
    only its config has): ``finish`` is not confirmed, the new process stops, and records
    neither its checks nor a shutdown."""
    db = tmp_path / "state.db"
    silent = socket.socket()  # b2: accepts (the kernel's backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    with serve_in_thread(Backend("b1")) as (backend,):
        write_config(tmp_path, backend.port)
        old = Proc(["run", "-c", "quiesce.yaml"], tmp_path)
        try:
            started(old, db)
            before = last_id(db)
            # b2 in a pool of its own whose one monitor takes seconds to decide
            text = (
                (tmp_path / "quiesce.yaml")
                .read_text()
                .replace(
                    "pools:\n",
                    "  slow:\n    type: http\n    send_interval: 4s\n    receive_timeout: 3s\n"
                    '    http_monitor: {http_request: "GET /health HTTP/1.0"}\n'
                    "pools:\n  other:\n    healthmonitors: [slow]\n"
                    f"    servers: [{{name: b2, address: 127.0.0.1:{silent.getsockname()[1]}}}]\n",
                    1,
                )
            )
            (tmp_path / "new.yaml").write_text(text)
            new = Proc(["run", "-c", "new.yaml", "--takeover"], tmp_path)
            new.wait_for("takeover: the state of 1 server")  # waiting for b2's verdict now
        finally:
            old_code = old.stop(signal.SIGKILL)
            silent.close()
        assert old_code == -signal.SIGKILL
        assert new.stop(None, timeout=60) == 1, new.output
    assert "did not confirm" in new.output, new.output
    assert "event:" not in new.output, new.output
    assert events_after(db, before) == []


def test_a_takeover_records_its_first_checks_once_it_has_taken_over(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    with serve_in_thread(Backend("b1")) as (backend,):
        write_config(tmp_path, backend.port)
        old = Proc(["run", "-c", "quiesce.yaml"], tmp_path)
        new: Proc | None = None
        try:
            started(old, db)
            before = last_id(db)
            with_b2(tmp_path, "new.yaml", f"127.0.0.1:{backend.port}")
            new = Proc(["run", "-c", "new.yaml", "--takeover"], tmp_path)
            new.wait_for("quiesce: ready")
            assert old.stop(None) == 0, old.output
            new.wait_for(r"event: oper_change web/b2 unknown -> up")
            new.wait_for(r"event: startup")
        finally:
            old.stop(signal.SIGKILL)
            if new is not None:
                new.stop(signal.SIGTERM)
    rows = [(r[1], r[2], r[3]) for r in events_after(db, before)]
    assert ("oper_change", "b2", "up") in rows, rows
    # the takeover's first verdicts, then its startup (the old process's shutdown anywhere)
    assert rows.index(("oper_change", "b2", "up")) < rows.index(("startup", None, None)), rows
