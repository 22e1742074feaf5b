"""The failed-login limit counts per (source, user name), not per source (review F14): every
local client shares 127.0.0.1, so wrong passwords for one name (an attacker on the host, a
monitoring job with a stale password) must not lock every admin out of the API and the CLI.
A named account can still be delayed from that source; bearer tokens count as one name."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest

from quiesce.frontends import auth as auth_module
from quiesce.frontends.auth import Authenticator, AuthError
from tests.api.harness import ADMIN, ADMIN_TOKEN, VIEWER
from tests.cli.test_client import cli, failed, ok

pytestmark = pytest.mark.loopback


async def test_wrong_passwords_for_one_name_do_not_lock_the_others(
    app: Any, client: httpx.AsyncClient
) -> None:
    limit = app.config.admin.login_failures_per_minute
    for i in range(limit):
        r = await client.get("/api/v1/whoami", auth=("mallory", f"guess{i}"))
        assert r.status_code == 401
    r = await client.get("/api/v1/whoami", auth=("mallory", "guess"))
    assert r.status_code == 429 and r.headers["retry-after"]
    assert "for user 'mallory' from 127.0.0.1" in r.json()["detail"], r.json()
    # the admins, from the same address: the API, the dashboard's login, the CLI
    assert (await client.get("/api/v1/whoami", auth=ADMIN)).status_code == 200
    r = await client.post("/api/v1/login", json={"user": "admin", "password": "admin-pw"})
    assert r.status_code == 200
    ok(await cli(app, "list", "servers"))


async def test_a_targeted_account_is_delayed_the_others_and_tokens_are_not(
    app: Any, client: httpx.AsyncClient
) -> None:
    """The documented limit of the fix: wrong passwords for 'admin' still delay 'admin' from
    that source (the guessing limit of that account); another user and a token still work."""
    limit = app.config.admin.login_failures_per_minute
    for i in range(limit):
        r = await client.get("/api/v1/whoami", auth=("admin", f"wrong{i}"))
        assert r.status_code == 401
    assert (await client.get("/api/v1/whoami", auth=ADMIN)).status_code == 429
    line = failed(await cli(app, "list", "servers"))
    assert "429" in line and "for user 'admin'" in line, line
    r = await client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert r.status_code == 200 and r.json()["user"] == "deploy"
    ok(await cli(app, "list", "servers", QUIESCE_USER=VIEWER[0], QUIESCE_PASSWORD=VIEWER[1]))


async def test_bad_bearer_tokens_limit_tokens_not_users(
    app: Any, client: httpx.AsyncClient
) -> None:
    limit = app.config.admin.login_failures_per_minute
    for i in range(limit):
        r = await client.get("/api/v1/whoami", headers={"Authorization": f"Bearer bad{i}"})
        assert r.status_code == 401
    r = await client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert r.status_code == 429 and "for bearer tokens" in r.json()["detail"]
    assert (await client.get("/api/v1/whoami", auth=ADMIN)).status_code == 200


async def test_hash_checks_in_flight_are_bounded_per_source(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spraying user names cannot run more than the limit's number of hash checks at once
    from one source (the CPU bound that replaces the per-source count); a check refused so
    is not a failure, and once they end the next name is checked."""
    release = threading.Event()

    def slow_verify(secret: str, hashed: str) -> bool:
        release.wait(20)
        return False

    monkeypatch.setattr("quiesce.frontends.auth.verify_password", slow_verify)
    auth = Authenticator(app.config.admin, app.admin)
    limit = app.config.admin.login_failures_per_minute
    tasks = [
        asyncio.create_task(auth.check_password(f"name{i}", "x", "127.0.0.1")) for i in range(limit)
    ]
    try:
        async with asyncio.timeout(10):
            while auth._pending.get("127.0.0.1", 0) < limit:
                await asyncio.sleep(0.01)
        with pytest.raises(AuthError) as err:
            await auth.check_password("one-more", "x", "127.0.0.1")
        assert err.value.status == 429 and "being checked" in err.value.detail
        # another source is not held up
        other = asyncio.create_task(auth.check_password("name0", "x", "127.0.0.2"))
        async with asyncio.timeout(10):
            while auth._pending.get("127.0.0.2", 0) < 1:
                await asyncio.sleep(0.01)
    finally:
        release.set()
    for t in [*tasks, other]:
        with pytest.raises(AuthError) as err:
            await t
        assert err.value.status == 401
    with pytest.raises(AuthError) as err:
        await auth.check_password("one-more", "x", "127.0.0.1")
    assert err.value.status == 401


async def test_a_429_tells_when_to_retry(
    app: Any, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retry-After says what the answer's text says: 1 s for the short-lived 429 of hash
    checks in flight (it said 60), the seconds left for a name's failed logins."""
    release = threading.Event()
    real = auth_module.verify_password

    def slow_verify(secret: str, hashed: str) -> bool:
        release.wait(20)
        return False

    monkeypatch.setattr("quiesce.frontends.auth.verify_password", slow_verify)
    limit = app.config.admin.login_failures_per_minute
    auth = app.admin_server.api.state.auth
    tasks = [
        asyncio.create_task(client.get("/api/v1/whoami", auth=(f"name{i}", "x")))
        for i in range(limit)
    ]
    try:
        async with asyncio.timeout(10):
            while auth._pending.get("127.0.0.1", 0) < limit:
                await asyncio.sleep(0.01)
        r = await client.get("/api/v1/whoami", auth=("one-more", "x"))
        assert r.status_code == 429 and "being checked" in r.json()["detail"]
        assert r.headers["retry-after"] == "1"
    finally:
        release.set()
    assert {(await t).status_code for t in tasks} == {401}
    monkeypatch.setattr("quiesce.frontends.auth.verify_password", real)
    for i in range(limit):
        r = await client.get("/api/v1/whoami", auth=("mallory", f"guess{i}"))
    r = await client.get("/api/v1/whoami", auth=("mallory", "guess"))
    assert r.status_code == 429
    retry = int(r.headers["retry-after"])
    assert f"retry in {retry}s" in r.json()["detail"] and 1 <= retry <= 61
