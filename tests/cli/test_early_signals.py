"""SIGHUP and SIGUSR1 held from the first line of ``quiesce run`` (quiesce.main, before its
imports; review 14 R4), and only there: a client verb, or a program that merely imports
quiesce.main, keeps their default action. Fresh interpreters (the handlers are process
state). The real process under signals: tests/e2e/test_signals_startup.py."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.peers  # fresh interpreters in subprocesses


def python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_run_holds_them_from_the_import_on() -> None:
    r = python(
        "import os, signal, sys\n"
        "sys.argv = ['/usr/bin/quiesce', 'run', '-c', 'q.yaml']\n"
        "from quiesce import main as m\n"
        "assert signal.getsignal(signal.SIGHUP) is m._hold\n"
        "os.kill(os.getpid(), signal.SIGHUP)\n"
        "os.kill(os.getpid(), signal.SIGUSR1)\n"
        "print(m._early)\n"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str([int(signal.SIGHUP), int(signal.SIGUSR1)])


def test_a_process_started_with_them_blocked_gets_them_once_held() -> None:
    """``quiesce upgrade`` starts ``run`` with both blocked; quiesce.main unblocks them."""
    r = python(
        "import os, signal, sys\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGHUP])\n"
        "os.kill(os.getpid(), signal.SIGHUP)\n"
        "sys.argv = ['/x/src/quiesce/__main__.py', 'run', '-c', 'q.yaml']\n"
        "from quiesce import main as m\n"
        "print(m._early, signal.SIGHUP in signal.pthread_sigmask(signal.SIG_BLOCK, []))\n"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{[int(signal.SIGHUP)]} False"


def test_another_verb_gets_the_default_action_back_and_what_was_held() -> None:
    # "run" among the arguments of a client verb: held at the import, released by the
    # command group, and the SIGHUP held meanwhile ends the process as it would have
    r = python(
        "import os, signal, sys\n"
        "sys.argv = ['/usr/bin/quiesce', '--hosts', '127.0.0.1:9', 'show', 'server', 'run']\n"
        "from quiesce import main as m\n"
        "os.kill(os.getpid(), signal.SIGHUP)\n"
        "print('held', flush=True)\n"
        "m.main()\n"
    )
    assert r.returncode == -signal.SIGHUP, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == "held\n"


def test_importing_it_elsewhere_changes_nothing() -> None:
    r = python(
        "import signal, sys\n"
        "sys.argv = ['/x/pytest/__main__.py', 'run', '-k', 'run']\n"
        "from quiesce import main as m\n"
        "print(signal.getsignal(signal.SIGHUP) is signal.SIG_DFL, m._early_previous)\n"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "True {}"
