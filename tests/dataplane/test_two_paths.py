"""The ``h1_path`` fixture (conftest.py) puts each data-plane test on the C head path or the
Python one, in one pytest run."""

from __future__ import annotations

import pytest

from tests.support.paths import c_switches


def test_every_c_switch_follows_the_path(h1_path: str) -> None:
    values = [getattr(module, attr) for module, attr in c_switches()]
    if h1_path == "python":
        assert values == [None] * len(values)
    else:
        assert None not in values


@pytest.mark.one_path
def test_a_one_path_test_is_left_as_built(h1_path: str | None) -> None:
    assert h1_path is None
