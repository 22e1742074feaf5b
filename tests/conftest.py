"""Suite-wide fixtures and the test lanes. Area fixtures live in each folder's conftest.py.

Lanes (markers in pyproject.toml): a test with no lane marker is a *unit* test, sans-IO: no
socket, no subprocess. A test that opens real sockets on loopback (or a Unix socket) with
in-process peers only is ``loopback``; one that starts an external program (nginx, HAProxy,
etcd, curl, wrk, socat, a ``quiesce`` process, Chromium) is ``peers``. ``slow``, ``root`` and
``browser`` come on top of one of those two.

``--unit`` (``./scripts/test unit``) selects the unmarked tests and, for the whole session,
makes socket ``bind``/``connect`` and process creation raise :class:`LaneError`, so a test that
belongs in another lane fails there instead of passing by luck. The guard sees sockets made
through Python's ``socket`` module; uvloop's client connections are made in C and get past it,
which is why the collection check below also refuses the known loopback fixtures in the lane.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings


def _ignored(signum: int, frame: object) -> None:
    """SIGHUP / SIGUSR1 to the test run itself, still ignored."""


# A test run started with SIGHUP or SIGUSR1 ignored (``nohup``, some CI runners) would hand
# that to every process it starts, and the tests of quiesce's own signal handling (a SIGHUP
# reloads; one during start-up is held: tests/cli/test_early_signals.py, the e2e signal
# tests) would see a quiesce that keeps the inherited ignore. A handler instead: this
# process still ignores them, and its children start with the default action (a handler
# does not survive exec).
for _sig in (signal.SIGHUP, signal.SIGUSR1):
    if signal.getsignal(_sig) is signal.SIG_IGN:
        signal.signal(_sig, _ignored)

# Hypothesis' per-example deadline (200 ms by default) is a wall-clock margin: on a loaded
# machine a slow example fails a property that holds (test_checkfast's classification failed
# that way under load, and passed 30,000 examples with no deadline). Properties are checked
# here; speed belongs in bench/.
hypothesis_settings.register_profile("quiesce", deadline=None)
hypothesis_settings.load_profile("quiesce")

LANES = ("loopback", "peers")
ON_TOP = ("slow", "root", "browser")
UNIT = "not (" + " or ".join((*LANES, *ON_TOP)) + ")"

# Fixtures that always open sockets or start programs: a test using one needs a lane marker.
SOCKET_FIXTURES = frozenset(
    {
        "backend",  # tests/dataplane, tests/support: the fake HTTP back end
        "backends",
        "http_backend",  # tests/health
        "tls_backend",
        "udp_echo",
        "closed_port",
        "apps",  # tests/health/test_traffic.py
        "app",  # tests/api, tests/runtime_socket: the admin server
        "stack",  # tests/dashboard: a quiesce process
        "browser",
    }
)


class LaneError(AssertionError):
    """A unit-lane test tried to use the network or start a process."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--unit",
        action="store_true",
        help="the unit lane: only unmarked tests, with sockets and subprocesses refused",
    )


def pytest_configure(config: pytest.Config) -> None:
    if not config.getoption("unit"):
        return
    given = config.option.markexpr
    config.option.markexpr = f"({given}) and {UNIT}" if given else UNIT


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    if session.config.getoption("unit"):  # after the plugins' own start-up (pytest-benchmark)
        _install_guard()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that uses a socket fixture or an on-top marker names its lane."""
    missing = []
    for item in items:
        names = {m.name for m in item.iter_markers()}
        if names & set(LANES):
            continue
        fixtures = set(getattr(item, "fixturenames", ())) & SOCKET_FIXTURES
        if fixtures or names & set(ON_TOP):
            why = ", ".join(sorted(fixtures | (names & set(ON_TOP))))
            missing.append(f"{item.nodeid} ({why})")
    if missing:
        raise pytest.UsageError(
            "tests without a lane marker (pytest.mark.loopback or pytest.mark.peers):\n  "
            + "\n  ".join(missing)
        )


def _refuse(what: str) -> Any:
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise LaneError(
            f"unit lane: {what} refused; mark the test loopback or peers (tests/conftest.py)"
        )

    return refused


def _install_guard() -> None:
    # Patched for the rest of the process: the unit lane never needs them back.
    for name in ("bind", "connect", "connect_ex"):
        setattr(socket.socket, name, _refuse(f"socket.{name}"))
    socket.create_connection = _refuse("socket.create_connection")
    subprocess.Popen.__init__ = _refuse("subprocess.Popen")  # type: ignore[method-assign]
    asyncio.create_subprocess_exec = _refuse("asyncio.create_subprocess_exec")
    asyncio.create_subprocess_shell = _refuse("asyncio.create_subprocess_shell")
