"""What the state store keeps of a server changed at runtime, against the config file (review 14
R9), driven as an operator drives it: ``quiesce create``/``alter``/``destroy server`` and
``quiesce reload`` against a real ``quiesce run`` with a SQLite state file, then a ``kill -9``
and a restart, which must agree with the reloads (docs/admin.md, "Precedence against the config
file" and "Which wins").

- A server the file never had, added and deleted at runtime, leaves no tombstone: a server of
  that name written into the file later is served (it was "kept deleted" for ever).
- A server of the file changed at runtime, or deleted and added again, follows the file again
  once it is set back to the file's values (there was no way back but renaming it)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.e2e.test_reload import Running, config_text, start
from tests.e2e.test_run_and_demo import Proc
from tests.support.backend import Backend, serve_in_thread

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def restart(q: Running) -> Running:
    assert q.proc.stop(signal.SIGKILL) == -signal.SIGKILL
    return Running(q.dir, Proc(["run", "-c", "quiesce.yaml"], q.dir))


def ok(q: Running, *args: str) -> str:
    r = q.cli(*args)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def test_a_runtime_server_deleted_leaves_no_tombstone(tmp_path: Path) -> None:
    with serve_in_thread(Backend("b1"), Backend("b2"), Backend("b3")) as (b1, b2, b3):
        q = start(tmp_path, config_text([("w1", b1.port, 1)]))
        try:
            ok(q, "create", "server", "web/c1", f"127.0.0.1:{b2.port}")
            out = ok(q, "destroy", "server", "web/c1", "--drain")
            assert "deleted" in out, out
            assert "web/c1" not in q.servers()
            # later, the operator writes a server of that name into the file
            q.write(config_text([("w1", b1.port, 1), ("c1", b3.port, 1)]))
            out = ok(q, "reload")
            assert "web/c1: added" in out and "kept deleted" not in out, out
            assert q.servers()["web/c1"]["address"] == f"127.0.0.1:{b3.port}"
            q = restart(q)  # a restart with the same file and store agrees
            assert q.servers()["web/c1"]["address"] == f"127.0.0.1:{b3.port}"
            # a server of the file deleted at runtime still stays deleted (its tombstone)
            ok(q, "set", "server", "web/c1", "maintenance")
            ok(q, "destroy", "server", "web/c1")
            out = ok(q, "reload")
            assert "web/c1" not in q.servers()
            q.write(config_text([("w1", b1.port, 1), ("c1", b3.port, 2)]))
            out = ok(q, "reload")
            assert "web/c1: kept deleted (deleted at runtime)" in out, out
            assert "web/c1" not in q.servers()
        finally:
            q.proc.stop(signal.SIGTERM)


def test_a_file_server_set_back_to_the_file_follows_it_again(tmp_path: Path) -> None:
    with serve_in_thread(Backend("b1"), Backend("b2")) as (b1, b2):
        q = start(tmp_path, config_text([("w1", b1.port, 1), ("w2", b2.port, 1)]))
        try:
            ok(q, "alter", "server", "web/w1", "weight", "2")
            q.write(config_text([("w1", b1.port, 3), ("w2", b2.port, 1)]))
            out = ok(q, "reload")
            assert "web/w1: kept (added or changed at runtime)" in out, out
            assert q.servers()["web/w1"]["weight"] == 2
            # set back to the file's values at runtime: it follows the file again
            ok(q, "alter", "server", "web/w1", "weight", "3")
            q.write(config_text([("w1", b1.port, 5), ("w2", b2.port, 1)]))
            out = ok(q, "reload")
            assert "web/w1: weight 3 → 5" in out, out
            assert q.servers()["web/w1"]["weight"] == 5

            # deleted at runtime (a tombstone over the file), then added again as the file has it
            ok(q, "set", "server", "web/w2", "maintenance")
            ok(q, "destroy", "server", "web/w2")
            ok(q, "reload")
            assert "web/w2" not in q.servers()
            ok(q, "create", "server", "web/w2", f"127.0.0.1:{b2.port}")
            q.write(config_text([("w1", b1.port, 5), ("w2", b2.port, 4)]))
            out = ok(q, "reload")
            assert "web/w2: weight 1 → 4" in out and "kept" not in out, out
            assert q.servers()["web/w2"]["weight"] == 4

            q = restart(q)  # the store holds nothing of them: the file's values
            servers = q.servers()
            assert (servers["web/w1"]["weight"], servers["web/w2"]["weight"]) == (5, 4)
            # and a runtime change still wins over the file, as before
            ok(q, "alter", "server", "web/w2", "weight", "9")
            q.write(config_text([("w1", b1.port, 5), ("w2", b2.port, 6)]))
            out = ok(q, "reload")
            assert "web/w2: kept (added or changed at runtime)" in out, out
            assert q.servers()["web/w2"]["weight"] == 9
        finally:
            q.proc.stop(signal.SIGTERM)
