from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.harness import running


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Any]:
    async with running(tmp_path) as a:
        yield a


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=app.admin_server.url, timeout=10) as c:
        yield c
