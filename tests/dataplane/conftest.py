"""Fixtures for data-plane tests; importable by other areas.

* :class:`tests.dataplane.backend.Backend` — a scriptable HTTP back end on port 0.
* :func:`start_proxy`, :func:`make_config` (from :mod:`tests.support.proxy`) — registry +
  connection table + one service from a config mapping::

      async with start_proxy(config_dict, service="web") as p:
          p.url, p.port, p.registry, p.table, p.service

* :func:`curl` — run curl against the proxy in a subprocess (never blocks the loop).
* :func:`dead_port` — a loopback port with nothing listening.

Every test here runs twice, on the C head path and on the Python one (the autouse ``h1_path``
fixture, ``c`` or ``python``: tests.support.paths), as the health tests do with ``engine``. A
test or module marked ``one_path`` runs once, on whatever the build gives: those that pick the
path themselves (test_httpfast, test_headers, test_smuggling_corpus) or never read an HTTP
head (sans-IO state machines, L4). With ``QUIESCE_PURE=1`` only the ``python`` half runs.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.dataplane.backend import Backend
from tests.support.paths import PATHS, use_path

# moved to tests.support.proxy; re-exported for the tests that import them from here
from tests.support.proxy import Proxy as Proxy
from tests.support.proxy import make_config as make_config
from tests.support.proxy import start_proxy as start_proxy


@dataclass
class CurlResult:
    code: int
    stdout: bytes
    stderr: bytes


async def curl(*args: str, timeout: float = 60.0, stdin: bytes | None = None) -> CurlResult:
    proc = await asyncio.create_subprocess_exec(
        "curl",
        "-sS",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    assert proc.returncode is not None
    return CurlResult(proc.returncode, out, err)


def dead_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


async def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.01) -> None:
    """Poll ``predicate()`` until true (readiness, never a fixed sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(interval)


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The data plane runs on uvloop in production: its tests run there too (this conftest
    hook is seen by the tests of this folder only)."""
    import uvloop

    # test_smoke also on asyncio's own loop (the fallback); QUIESCE_TEST_LOOPS=all: every test
    if item.path.name == "test_smoke.py" or os.environ.get("QUIESCE_TEST_LOOPS") == "all":
        return {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}
    return {"uvloop": uvloop.new_event_loop}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "h1_path" in metafunc.fixturenames and not metafunc.definition.get_closest_marker(
        "one_path"
    ):
        metafunc.parametrize("h1_path", PATHS, indirect=True)


@pytest.fixture(autouse=True)
def h1_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """``c`` or ``python``: the head path this run of the test is on; None for a ``one_path``
    test (left as built)."""
    path: str | None = getattr(request, "param", None)
    if path is not None:
        use_path(path, monkeypatch)
    return path


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    async with Backend("a") as b:
        yield b


@pytest.fixture
async def backends() -> AsyncIterator[list[Backend]]:
    async with Backend("a") as a, Backend("b") as b, Backend("c") as c:
        yield [a, b, c]
