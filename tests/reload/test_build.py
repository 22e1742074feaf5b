"""The reload worker refuses to validate with code the serving process does not run (review
F13: after a package upgrade the worker, started at the first reload, imported the new code
while the old process applied what it accepted): quiesce.app.build."""

from __future__ import annotations

import shutil
from pathlib import Path

from quiesce.app.build import BUILD, PACKAGE, code_digest, skew_problem
from quiesce.app.reload_worker import check_for_reload


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "quiesce"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_the_digest_follows_the_code(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    before = code_digest(root)
    assert before == BUILD[1]  # what this process imported
    (root / "README.txt").write_text("not code")
    assert code_digest(root) == before
    loader = root / "config" / "loader.py"
    loader.write_text(loader.read_text() + "\n# upgraded\n")
    assert code_digest(root) != before
    (root / "config" / "new_module.py").write_text("")
    assert len({before, code_digest(root)}) == 2


def test_a_skewed_build_is_refused_with_the_takeover_named(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    assert skew_problem(BUILD, root) is None
    older = (BUILD[0], "0123456789ab")
    problem = skew_problem(older, root)  # the worker's code is not the serving process's
    assert problem is not None
    assert f"({BUILD[0]}+0123456789ab -> {BUILD[0]}+{BUILD[1]})" in problem
    assert "quiesce run --takeover" in problem
    (root / "app" / "build.py").write_text("# upgraded on disk after the worker started\n")
    problem = skew_problem(BUILD, root)
    assert problem is not None and f"{BUILD[0]}+{code_digest(root)}" in problem


def test_check_for_reload_refuses_before_reading_the_file(tmp_path: Path) -> None:
    path = tmp_path / "quiesce.yaml"  # no such file: the skew is the one problem
    result = check_for_reload(str(path), None, ("0.0.0", "0123456789ab"))
    assert result["ok"] is False
    assert len(result["problems"]) == 1 and "quiesce on disk changed" in result["problems"][0]
    result = check_for_reload(str(path), None, BUILD)
    assert result["ok"] is False and "cannot read" in result["problems"][0]
