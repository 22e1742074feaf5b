"""Run a database test module on the pure-Python framers and on the C ones (quiesce._dbfast
through quiesce.dataplane.dbfast): an autouse fixture, parametrized ``python`` / ``c``."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest


def sans_io(names: dict[str, str]) -> Callable[..., Any]:
    """For a framer test module: ``c`` rebinds each of its names (``Session``, the framers)
    to quiesce.dataplane.dbfast's class ``names[name]``; skipped when that is not built."""

    @pytest.fixture(autouse=True, params=["python", "c"])
    def framers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
        if request.param == "c":
            dbfast = pytest.importorskip("quiesce.dataplane.dbfast")
            for name, fast in names.items():
                monkeypatch.setattr(request.module, name, getattr(dbfast, fast))

    return framers


def relay(module: ModuleType) -> Callable[..., Any]:
    """For a relay test module: ``python`` makes ``module`` (pgrelay, mysqlrelay) give its
    connections the pure-Python framers; ``c`` is skipped when they are all it has."""

    @pytest.fixture(autouse=True, params=["c", "python"])
    def framers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
        if request.param == "python":
            monkeypatch.setattr(module, "_framers", module._pure)
        elif module._framers is module._pure:
            pytest.skip("quiesce._dbfast is not built (or QUIESCE_PURE=1)")

    return framers
