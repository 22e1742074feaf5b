"""The layout issue 13 asks for, kept: no module of ``src/quiesce`` over 700 lines. Three
modules grew past it with issue 14's features (live reload, servers at runtime) in the same
session that split the others; they are listed here until they are split, and the test fails
as soon as any other module goes over, or a listed one is brought under (then take it off).
(The import contracts, layers and no cycles, run in scripts/check: lint-imports.)"""

from __future__ import annotations

from pathlib import Path

import quiesce

ROOT = Path(quiesce.__file__).parent
LIMIT = 700
NOT_SPLIT_YET: set[str] = set()  # issue 13


def sizes() -> dict[str, int]:
    return {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in ROOT.rglob("*.py")}


def test_no_module_over_700_lines() -> None:
    over = {name: n for name, n in sizes().items() if n > LIMIT}
    assert {name: n for name, n in over.items() if name not in NOT_SPLIT_YET} == {}


def test_the_list_of_modules_not_split_yet_is_honest() -> None:
    assert {name for name, n in sizes().items() if n > LIMIT} >= NOT_SPLIT_YET
