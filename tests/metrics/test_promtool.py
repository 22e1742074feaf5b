"""Both /metrics families pass ``promtool check metrics`` (Debian's ``prometheus`` package,
installed by scripts/install-test-deps: the test fails, never skips, without it)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from quiesce.core.checks import Reason
from quiesce.core.states import Verdict
from quiesce.dataplane.context import ServiceStats
from tests.api.harness import VIEWER, running
from tests.metrics.test_haproxy_compatible import check, haproxy_config

pytestmark = pytest.mark.peers  # runs promtool in a subprocess


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Any]:
    async with running(tmp_path, haproxy_config()) as a:
        yield a


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=app.admin_server.url, auth=VIEWER) as c:
        yield c


async def test_promtool_accepts_both_families(client: httpx.AsyncClient, app: Any) -> None:
    # Not skipped when missing: scripts/install-test-deps installs Debian's prometheus.
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: run scripts/install-test-deps (Debian package prometheus)"
    check(app, "web/web1", Verdict.FAIL, Reason.CONNECTION_REFUSED, None)
    app.services["www"] = SimpleNamespace(stats=ServiceStats(requests=1))
    text = (await client.get("/metrics")).text
    assert "haproxy_server_status{" in text and "quiesce_server_status{" in text
    proc = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(text.encode()), 60)
    assert proc.returncode == 0, out.decode()
    assert out.decode().strip() == "", out.decode()
