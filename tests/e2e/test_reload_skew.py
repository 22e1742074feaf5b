"""A package upgrade under a running ``quiesce run``, then a reload (review F13): the reload
worker, started at the first reload, would import the new code while the old process applies
what it accepts. The reload is refused with the takeover named; nothing changes."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest

from quiesce.app.build import PACKAGE
from tests.e2e.test_reload import config_text, start
from tests.support.backend import Backend, serve_in_thread

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def test_a_reload_after_an_upgrade_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "lib" / "site-packages"  # the installed package this process runs
    shutil.copytree(PACKAGE, site / "quiesce", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("PYTHONPATH", str(site))
    run = tmp_path / "run"
    run.mkdir()
    with serve_in_thread(Backend("b1")) as (b1,):
        q = start(run, config_text([("w1", b1.port, 1)]))
        try:
            # the upgrade: a module changed on disk (pip install of a new version)
            loader = site / "quiesce" / "config" / "loader.py"
            loader.write_text(loader.read_text() + "\n# the next version\n")
            q.write(config_text([("w1", b1.port, 1), ("w2", b1.port, 1)]))
            status, body = q.api("POST", "/api/v1/reload")
            assert status == 422, body
            assert len(body["problems"]) == 1, body
            problem = body["problems"][0]
            assert "quiesce on disk changed since this process started" in problem, body
            assert "quiesce run --takeover" in problem, body
            out = q.socat("reload")
            assert "Reload refused: 1 problem(s)" in out and "--takeover" in out, out
            assert set(q.servers()) == {"web/w1"}  # nothing changed
            # the same code back on disk: the worker already imported the other one
            loader.write_text(loader.read_text().replace("\n# the next version\n", ""))
            status, body = q.api("POST", "/api/v1/reload")
            assert status == 422 and "--takeover" in body["problems"][0], body
        finally:
            code = q.proc.stop(signal.SIGTERM)
        assert code == 0, q.proc.output
