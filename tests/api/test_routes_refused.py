"""Refusals on every route, against one shared server (nothing here changes state): no
credentials, wrong ones, and read-only principals on writes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from quiesce.frontends.views import server_view
from tests.api.harness import VIEWER, VIEWER_TOKEN, config_dict, running
from tests.api.test_routes_auth import ALL, Route, assert_error, call

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.loopback]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    base: Path = tmp_path_factory.mktemp("refused")
    # wrong credentials from every test share one source address: no limit here
    async with running(base, config_dict(login_failures_per_minute=100000)) as a:
        yield a


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=app.admin_server.url, timeout=10) as c:
        yield c


@pytest.mark.parametrize("route", ALL, ids=str)
async def test_no_or_wrong_credentials_are_401(client: httpx.AsyncClient, route: Route) -> None:
    r = await call(client, route)
    assert_error(r, 401)
    assert r.headers["www-authenticate"] == 'Basic realm="quiesce"'
    assert_error(await call(client, route, auth=("admin", "wrong")), 401)
    assert_error(await call(client, route, auth=("nobody", "admin-pw")), 401)
    bearer = {"Authorization": "Bearer not-a-token"}
    assert_error(await call(client, route, headers=bearer), 401)
    garbage = {"Authorization": "Basic !!!"}
    assert_error(await call(client, route, headers=garbage), 401)


@pytest.mark.parametrize("route", ALL, ids=str)
async def test_read_only(client: httpx.AsyncClient, app: Any, route: Route) -> None:
    before = server_view(app.registry, app.registry.find_server("app/a1"))
    for auth in (VIEWER, None):
        headers = {} if auth else {"Authorization": f"Bearer {VIEWER_TOKEN}"}
        r = await call(client, route, auth=auth, headers=headers)
        if route.write:
            data = assert_error(r, 403)
            assert "read_only" in data["detail"]
        else:
            assert r.status_code == 200, r.text
    # a refused write changed nothing
    assert server_view(app.registry, app.registry.find_server("app/a1")) == before
    assert "Spare-TCP" in app.registry.monitors
    assert app.registry.flags == {"maintenance_mode": False}
