"""One error tree (issue 13): every error quiesce raises to a caller is a QuiesceError with a
status hint, and core/errors.py's docstring draws every one of them."""

from __future__ import annotations

import importlib
import re

import pytest

from quiesce.core import errors
from quiesce.core.errors import QuiesceError

# The tree in the docstring: "Name (module)" for the errors that live outside core.
DRAWN = re.findall(r"── (\w+)\s+\(([\w.]+)\)", errors.__doc__ or "")


def test_the_docstring_draws_the_errors_outside_core() -> None:
    assert len(DRAWN) >= 8, DRAWN


@pytest.mark.parametrize(("name", "module"), DRAWN)
def test_each_drawn_error_is_in_the_tree(name: str, module: str) -> None:
    cls = getattr(importlib.import_module(f"quiesce.{module}"), name)
    assert issubclass(cls, QuiesceError)
    assert isinstance(cls.status_hint, int)


def test_an_error_may_carry_its_own_status() -> None:
    from quiesce.dataplane.h1.headers import WireError
    from quiesce.frontends.auth import AuthError

    assert WireError(431).status_hint == 431
    assert AuthError(429, "too many", "slow down").status_hint == 429
    assert errors.NotFound("x").status_hint == 404
