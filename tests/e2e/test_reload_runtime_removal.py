"""A reload leaves an operator's removal alone (review 14, R1): ``quiesce destroy server
--drain`` of a server the file has goes on through ``quiesce reload`` (the file unchanged, or
that server changed in it), the reload lists the server under ``kept``, and the server is
deleted once its last request ends. (A reload took every removal in progress for one of its
own, "back in the file", cancelled it and put the server back in service.)"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.e2e.test_reload import config_text, start
from tests.support.backend import Backend, serve_in_thread

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def test_a_reload_does_not_cancel_a_removal_an_operator_asked_for(tmp_path: Path) -> None:
    with serve_in_thread(Backend("b1"), Backend("b2")) as (b1, b2):
        text = config_text([("w1", b1.port, 1), ("w2", b2.port, 1)])
        q = start(tmp_path, text)
        try:
            r = q.cli("set", "server", "web/w1", "maintenance", "--reason", "route to w2")
            assert r.returncode == 0, r
            held: list[tuple[int, bytes]] = []
            t = threading.Thread(target=lambda: held.append(q.get("/hold")), daemon=True)
            t.start()
            b2.wait_holding(1)
            assert q.cli("clear", "server", "web/w1", "maintenance").returncode == 0
            r = q.cli("destroy", "server", "web/w2", "--drain", "--timeout", "60s")
            assert r.returncode == 0, r
            assert q.servers()["web/w2"]["admin"] == "drain"

            for weight in (1, 5):  # the file as it was, then w2 re-weighted in it
                q.write(config_text([("w1", b1.port, 1), ("w2", b2.port, weight)]))
                r = q.cli("reload")
                assert r.returncode == 0, r
                status, body = q.api("GET", "/api/v1/events?kind=config_reload&limit=1")
                assert status == 200, body
                detail = body[-1]["detail"]
                assert not [c for c in detail["changes"] if "web/w2" in c], detail
                if weight != 1:  # the file's change is not applied, and the answer says why
                    assert "web/w2: kept (being removed at runtime)" in detail["kept"], detail
                w2 = q.servers()["web/w2"]
                assert w2["admin"] == "drain" and w2["weight"] == 1, w2

            b2.release()  # its last request ends: the removal finishes
            t.join(10)
            assert held == [(200, b"released by b2\n")]
            deadline = time.monotonic() + 10
            while "web/w2" in q.servers():
                assert time.monotonic() < deadline, q.servers()["web/w2"]
                time.sleep(0.05)
            q.write(text)  # the file still has w2: it stays deleted (a deletion at runtime)
            assert q.cli("reload").returncode == 0
            assert "web/w2" not in q.servers()
        finally:
            q.proc.stop()
