"""``quiesce upgrade``'s arguments: nonsense is refused with a clear message before any
process is started (the command's run against a real quiesce: tests/e2e/test_signals_upgrade.py)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from quiesce import main as entry


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([], "Missing option '-c' / '--config'"),
        (["-c", "q.yaml", "--timeout", "banana"], "'banana' is not a duration"),
        (["-c", "q.yaml", "--grace", "soon"], "'soon' is not a duration"),
        (["-c", "q.yaml", "--colour"], "No such option '--colour'"),
        (["-c", "q.yaml", "--timeout", "0s"], "0s: give a duration above 0"),
    ],
)
def test_bad_arguments_are_refused_before_anything_starts(
    args: list[str], words: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[list[str]] = []
    monkeypatch.setattr(entry, "_upgrade", lambda a, t: started.append(a) or 0)
    monkeypatch.setattr(entry, "_upgrade_takes_signals", lambda: None)  # not this process's
    result = CliRunner().invoke(entry.main, ["upgrade", *args])
    assert result.exit_code == 2, result.output
    assert words in result.output
    assert started == []
