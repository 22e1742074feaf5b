"""The L7 proxy's two ways of reading message heads, switched in-process for tests.

The data plane reads common-case heads with the C module ``quiesce._httpfast`` when it is
built, and with httptools otherwise (or with ``QUIESCE_PURE=1``): quiesce.dataplane.h1.codec.
:func:`use_path` puts a running test on one of the two, ``"c"`` or ``"python"``, by setting
the module globals the data plane reads on every connection and read (:data:`C_SWITCHES`),
so one pytest run covers both (the ``h1_path`` fixture of tests/dataplane/conftest.py)::

    use_path("python", monkeypatch)   # as if the C module were not there; undone after the test
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import sys
from types import ModuleType

import pytest

from quiesce import _accel

# QUIESCE_PURE=1 asks for the Python path alone: the c runs are not even made.
PATHS = ("python",) if _accel.PURE else ("c", "python")

# Where the data plane keeps quiesce._httpfast or its functions (module: attributes); each is
# None without the C module. quiesce.dataplane.http is the old name that tests still patch.
C_SWITCHES = {
    "quiesce.dataplane.h1.codec": ("C_HEADS", "fast_request", "fast_response"),
    "quiesce.dataplane.h1.client": ("_fast_request",),
    "quiesce.dataplane.h1.upstream": ("_fast_response",),
    "quiesce.dataplane.http": ("_fast_request", "_fast_response"),
    # quiesce._h2fast: an HTTP/2 stream's request and its answer's head
    "quiesce.dataplane.h2.stream": ("_fast_answer",),
    "quiesce.dataplane.h2.request": ("_fast_request",),
    "quiesce.dataplane.h2.guard": ("_fast_scan",),  # (the walk over the frames passed on)
}


@functools.cache
def c_switches() -> tuple[tuple[ModuleType, str], ...]:
    """The (module, attribute) pairs of :data:`C_SWITCHES`; fails if one is gone, or if a
    data-plane module holds the C module or one of its functions under a name not listed
    (the python path would then still run C code there)."""
    where = "the C switches moved: update C_SWITCHES in tests/support/paths.py"
    found = []
    for name, attrs in C_SWITCHES.items():
        module = importlib.import_module(name)
        for attr in attrs:
            assert hasattr(module, attr), f"{name}.{attr} is gone; {where}"
            found.append((module, attr))
    fast = _accel.httpfast
    if fast is not None:
        listed = {(m.__name__, a) for m, a in found}
        targets = (fast, fast.request, fast.response)
        stray = sorted(
            f"{m.__name__}.{a}"
            for m, a in _dataplane_globals()
            if any(getattr(m, a) is t for t in targets) and (m.__name__, a) not in listed
        )
        assert not stray, f"{', '.join(stray)} hold quiesce._httpfast; {where}"
    return tuple(found)


def _dataplane_globals() -> list[tuple[ModuleType, str]]:
    import quiesce.dataplane as dataplane

    for info in pkgutil.walk_packages(dataplane.__path__, "quiesce.dataplane."):
        importlib.import_module(info.name)
    return [
        (module, attr)
        for name, module in list(sys.modules.items())
        if name.startswith("quiesce.dataplane") and module is not None
        for attr in list(vars(module))
    ]


def use_path(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``"c"``: the C module as built (the test skips when it is not built); ``"python"``:
    every switch None, httptools alone."""
    switches = c_switches()
    if path == "c":
        if _accel.httpfast is None:
            pytest.skip("quiesce._httpfast is not built (or QUIESCE_PURE=1)")
        return
    assert path == "python", path
    for module, attr in switches:
        monkeypatch.setattr(module, attr, None)
