"""Dashboard session and CSRF, failed-login events and the per-source limit, loopback-only
binding, TLS and client certificates (trustme)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from quiesce.core.events import EventQuery
from quiesce.frontends.api.server import is_loopback
from tests.api.harness import ADMIN, VIEWER, build_app, config_dict, running

pytestmark = pytest.mark.loopback


async def test_session_login_csrf_logout(client: httpx.AsyncClient, app: Any) -> None:
    r = await client.post("/api/v1/login", json={"user": "admin", "password": "admin-pw"})
    assert r.status_code == 200
    body = r.json()
    assert body["user"] == "admin" and body["role"] == "admin"
    assert client.cookies["quiesce_csrf"] == body["csrf"]
    assert "HttpOnly" in r.headers.get_list("set-cookie")[0]
    who = (await client.get("/api/v1/whoami")).json()
    assert who["via"] == "session" and who["csrf"] == body["csrf"]
    r = await client.post("/api/v1/servers/app/a1/drain", json={})
    assert r.status_code == 403 and "X-CSRF-Token" in r.json()["detail"]
    assert "www-authenticate" not in r.headers
    r = await client.post(
        "/api/v1/servers/app/a1/drain", json={}, headers={"X-CSRF-Token": "forged"}
    )
    assert r.status_code == 403
    r = await client.post(
        "/api/v1/servers/app/a1/drain", json={}, headers={"X-CSRF-Token": body["csrf"]}
    )
    assert r.status_code == 200
    events = (await client.get("/api/v1/events?kind=admin_change")).json()
    assert (events[-1]["actor"], events[-1]["cause"]) == ("admin", "dashboard")
    sid = client.cookies["quiesce_session"]
    assert (await client.post("/api/v1/logout")).status_code == 204
    client.cookies.clear()
    client.cookies.set("quiesce_session", sid)
    assert (await client.get("/api/v1/whoami")).status_code == 401  # gone on the server too
    client.cookies.clear()
    client.cookies.set("quiesce_session", "stale")
    r = await client.get("/api/v1/whoami")
    assert r.status_code == 401 and "www-authenticate" not in r.headers


async def test_form_login_and_read_only_session(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/login", data={"user": "viewer", "password": "viewer-pw"})
    assert r.status_code == 200 and r.json()["role"] == "read_only"
    csrf = r.json()["csrf"]
    r = await client.post("/api/v1/servers/app/a1/drain", json={}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 403


async def test_bad_logins(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/login", json={"user": "admin", "password": "nope"})
    assert r.status_code == 401 and "quiesce_session" not in r.cookies
    assert (await client.post("/api/v1/login", json={"user": "admin"})).status_code == 422
    assert (
        await client.post(
            "/api/v1/login", content=b"{", headers={"Content-Type": "application/json"}
        )
    ).status_code == 400


async def test_failed_logins_are_events_and_rate_limited(
    client: httpx.AsyncClient, app: Any
) -> None:
    limit = app.config.admin.login_failures_per_minute
    for i in range(limit):
        r = await client.get("/api/v1/servers", auth=("mallory", f"guess{i}"))
        assert r.status_code == 401
    r = await client.get("/api/v1/servers", auth=("mallory", "guess"))
    assert r.status_code == 429 and r.headers["retry-after"]
    r = await client.post("/api/v1/login", json={"user": "mallory", "password": "guess"})
    assert r.status_code == 429
    # per (source, user name): the admin is not locked out by mallory (review F14)
    assert (await client.get("/api/v1/servers", auth=ADMIN)).status_code == 200
    failed = app.admin.events(EventQuery(kind="login_failed", limit=100))
    assert len(failed) == limit
    assert failed[0].actor == "mallory" and failed[0].detail["source"] == "127.0.0.1"


async def test_non_loopback_refused(tmp_path: Path) -> None:
    app = await build_app(tmp_path, config_dict(listen="0.0.0.0:0"))
    from quiesce.frontends.api import start_admin_server

    with pytest.raises(OSError, match="allow_non_loopback"):
        await start_admin_server(app)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _tls_files(tmp_path: Path, ca: trustme.CA) -> dict[str, str]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    return {"cert": "server.pem", "key": "server.pem"}


async def test_tls(tmp_path: Path, ca: trustme.CA) -> None:
    tls = _tls_files(tmp_path, ca)
    async with running(tmp_path, config_dict(tls=tls)) as app:
        url = app.admin_server.url
        assert url.startswith("https://")
        ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        async with httpx.AsyncClient(verify=ctx) as c:
            assert (await c.get(f"{url}/api/v1/whoami", auth=VIEWER)).status_code == 200
        async with httpx.AsyncClient() as c:  # the system store does not know our CA
            with pytest.raises(httpx.ConnectError):
                await c.get(f"{url}/api/v1/whoami", auth=VIEWER)


async def test_client_certificate_required(tmp_path: Path, ca: trustme.CA) -> None:
    tls = {**_tls_files(tmp_path, ca), "client_ca": "ca.pem"}
    async with running(tmp_path, config_dict(tls=tls)) as app:
        url = f"{app.admin_server.url}/api/v1/whoami"
        bare = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        async with httpx.AsyncClient(verify=bare) as c:
            with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
                await c.get(url, auth=VIEWER)
        stranger = trustme.CA().issue_cert("client@example.com")
        ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        stranger.configure_cert(ctx)
        async with httpx.AsyncClient(verify=ctx) as c:
            with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
                await c.get(url, auth=VIEWER)
        good = ca.issue_cert("client@example.com")
        ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        good.configure_cert(ctx)
        async with httpx.AsyncClient(verify=ctx) as c:
            r = await c.get(url, auth=VIEWER)
            assert r.status_code == 200
            # a certificate is not a login: credentials are still required
            assert (await c.get(url)).status_code == 401
