"""``systemctl kill -s HUP quiesce`` (what contrib/quiesce.service recommends for a live
reload) signals every process of the unit: the serving process, its reload worker and
multiprocessing's resource tracker (review 14 R3: the worker and the tracker died, a
UserWarning and five tracebacks in the journal). With a real ``quiesce run``: they ignore
SIGHUP and SIGUSR1, and the next reload works with the same worker."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.e2e.test_reload import config_text
from tests.e2e.test_run_and_demo import Proc, until
from tests.support.backend import Backend, serve_in_thread

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid``."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def reloads(proc: Proc) -> int:
    return sum("reload by SIGHUP: 0 change(s)" in line for line in list(proc.lines))


def test_a_sighup_to_every_process_of_quiesce_kills_none(tmp_path: Path) -> None:
    """``systemctl kill -s HUP quiesce`` (contrib/quiesce.service): the serving process, its
    reload worker and multiprocessing's resource tracker all get it."""
    with serve_in_thread(Backend("b1")) as (b1,):
        (tmp_path / "quiesce.yaml").write_text(config_text([("w1", b1.port, 1)]))
        proc = Proc(["run", "-c", "quiesce.yaml"], tmp_path)
        try:
            proc.wait_for("quiesce: ready")
            proc.p.send_signal(signal.SIGHUP)  # the first reload starts the worker
            proc.wait_for(r"reload by SIGHUP: 0 change\(s\)")
            helpers = children(proc.p.pid)
            assert len(helpers) == 2, helpers  # the reload worker and the resource tracker
            for round_ in range(3):
                for sig in (signal.SIGHUP, signal.SIGUSR1):
                    for pid in [proc.p.pid, *helpers]:
                        os.kill(pid, sig)
                until(lambda n=round_: reloads(proc) >= n + 2, 30)
            # the next reload works, with the same worker (it was not killed and replaced)
            (tmp_path / "quiesce.yaml").write_text(config_text([("w1", b1.port, 2)]))
            proc.p.send_signal(signal.SIGHUP)
            proc.wait_for(r"reload by SIGHUP: 1 change\(s\)")
            assert all(alive(pid) for pid in helpers), helpers
            assert sorted(children(proc.p.pid)) == sorted(helpers)
        finally:
            code = proc.stop(signal.SIGTERM)
        assert code == 0, proc.output
        assert "Traceback" not in proc.output, proc.output
        assert "resource_tracker" not in proc.output, proc.output
