"""``quiesce reload`` waits long enough for the reload worker's bound (review 14 R11): the
worker has 30 s to validate the file, then the reload is refused naming it; the CLI's
default 10 s request timeout said "cannot reach … timed out" of a quiesce that answers."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from quiesce.app.reload_worker import RELOAD_WORKER_TIMEOUT
from quiesce.frontends.cli import client
from quiesce.frontends.cli.transport import Api
from quiesce.main import main


@pytest.mark.parametrize(("options", "waited"), [([], client.RELOAD_WAIT), (["-t", "2m"], 120)])
def test_reload_waits_past_the_workers_bound(
    monkeypatch: pytest.MonkeyPatch, options: list[str], waited: float
) -> None:
    sent: list[tuple[str, float]] = []

    def send(self: Api, method: str, path: str, body: Any = None) -> Any:
        sent.append((path, self.settings.timeout))
        return {"reloaded": True, "changes": [], "kept": [], "warnings": []}

    monkeypatch.setattr(Api, "send", send)
    result = CliRunner().invoke(main, [*options, "reload"])
    assert result.exit_code == 0, result.output
    assert sent == [("/api/v1/reload", waited)]
    assert waited > RELOAD_WORKER_TIMEOUT
