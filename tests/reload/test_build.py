"""The reload worker refuses to validate with code the serving process does not run (review
F13: after a package upgrade the worker, started at the first reload, imported the new code
while the old process applied what it accepted): quiesce.app.build. Every build compared
here is of a copy of the package, so an edit of the source tree during the session (several
engineers share it) changes nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from quiesce.app import build
from quiesce.app.build import PACKAGE, code_digest, skew_problem
from quiesce.app.reload_worker import check_for_reload


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "site-packages" / "quiesce"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_the_digest_follows_the_code(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    before = code_digest(root)
    assert code_digest(root) == before
    (root / "README.txt").write_text("not code")
    assert code_digest(root) == before
    loader = root / "config" / "loader.py"
    loader.write_text(loader.read_text() + "\n# upgraded\n")
    changed = code_digest(root)
    assert changed != before
    (root / "config" / "new_module.py").write_text("")
    assert len({before, changed, code_digest(root)}) == 3


def test_a_skewed_build_is_refused_with_the_takeover_named(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    mine = ("1.2.3", code_digest(root))
    assert skew_problem(mine, mine=mine, root=root, checked=True) is None
    older = ("1.2.2", "0123456789ab")
    problem = skew_problem(older, mine=mine, root=root, checked=True)
    assert problem is not None  # the worker's code is not the serving process's
    assert f"(1.2.2+0123456789ab -> 1.2.3+{mine[1]})" in problem
    assert "quiesce run --takeover" in problem
    assert skew_problem(older, mine=mine, root=root, checked=False) is None  # a source tree
    (root / "app" / "build.py").write_text("# upgraded on disk after the worker started\n")
    problem = skew_problem(mine, mine=mine, root=root, checked=True)
    assert problem is not None and f"-> 1.2.3+{code_digest(root)})" in problem


def test_check_for_reload_refuses_before_reading_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "quiesce.yaml"  # no such file: the skew is the one problem
    monkeypatch.setattr(build, "CHECKED", True)
    result = check_for_reload(str(path), None, ("0.0.0", "0123456789ab"))
    assert result["ok"] is False
    assert len(result["problems"]) == 1 and "quiesce on disk changed" in result["problems"][0]
    monkeypatch.setattr(build, "CHECKED", False)
    result = check_for_reload(str(path), None, ("0.0.0", "0123456789ab"))
    assert result["ok"] is False and "cannot read" in result["problems"][0]
