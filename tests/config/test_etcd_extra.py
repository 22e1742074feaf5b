"""``state.etcd`` without the etcd extra (review 14 R10): ``quiesce check`` and ``quiesce run``
refuse the file with one problem naming the key and ``pip install 'quiesce[etcd]'``, exit 1,
no traceback. The missing module is simulated (``sys.modules['aetcd'] = None``: an import of
it fails as if not installed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from quiesce.config.loader import ConfigError, load_config

ETCD = """
admin: {listen: 127.0.0.1:0}
state:
  etcd: {endpoints: ["127.0.0.1:1"]}
pools:
  web:
    servers: [{name: a, address: 127.0.0.1:18500}]
services:
  www: {listen: 127.0.0.1:0, pool: web}
"""

PROBLEM = (
    "state.etcd: the etcd client is not installed (aetcd missing): pip install 'quiesce[etcd]'"
)


def test_a_file_with_state_etcd_needs_the_etcd_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "q.yaml"
    path.write_text(ETCD)
    load_config(path)  # the test extra has aetcd: fine
    monkeypatch.setitem(sys.modules, "aetcd", None)
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    (problem,) = refused.value.problems
    assert problem.startswith(PROBLEM)
    monkeypatch.setitem(sys.modules, "grpc", None)
    with pytest.raises(ConfigError) as both:
        load_config(path)
    assert "(aetcd and grpcio missing)" in both.value.problems[0]
    sqlite = tmp_path / "s.yaml"  # without state.etcd nothing is asked
    sqlite.write_text(ETCD.replace('etcd: {endpoints: ["127.0.0.1:1"]}', "sqlite: null"))
    load_config(sqlite)


@pytest.mark.peers  # quiesce processes
@pytest.mark.parametrize("verb", ["check", "run"])
def test_check_and_run_say_it_in_one_line(tmp_path: Path, verb: str) -> None:
    path = tmp_path / "q.yaml"
    path.write_text(ETCD)
    code = (
        "import sys; sys.modules['aetcd'] = None; from quiesce.main import main; "
        f"sys.argv = ['quiesce', {verb!r}, '-c', {str(path)!r}]; main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "ModuleNotFoundError" not in done.stderr
    assert f"{path}: 1 problem(s)" in done.stderr
    assert PROBLEM in done.stderr
    assert "ok (" not in done.stdout
