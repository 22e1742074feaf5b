"""The client verbs start fast (issue 12, item 6): loading the ``quiesce`` command must not
import pydantic, the config models, httpx, ssl, FastAPI or the server side. Checked by what a
fresh interpreter has imported, not by timing (timings are in BENCHMARKS.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.peers  # a fresh interpreter in a subprocess

HEAVY = ["pydantic", "quiesce.config.models", "httpx", "ssl", "fastapi", "uvicorn", "yaml"]


def test_loading_the_command_imports_nothing_heavy() -> None:
    code = (
        "import sys, json; from quiesce.main import main; "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_the_config_package_still_offers_its_names() -> None:
    from quiesce import config

    assert config.load_text.__module__ == "quiesce.config.loader"
    assert config.Config.__module__ == "quiesce.config.models"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = config.nope  # type: ignore[attr-defined]
