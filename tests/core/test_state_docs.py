"""docs/state-model.md is generated from the tables; it must match them."""

from __future__ import annotations

import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_state_docs_are_up_to_date() -> None:
    module = runpy.run_path(str(ROOT / "scripts" / "make_state_docs.py"))
    expected = module["render"]()
    actual = (ROOT / "docs" / "state-model.md").read_text(encoding="utf-8")
    assert actual == expected, "run: python scripts/make_state_docs.py > docs/state-model.md"
