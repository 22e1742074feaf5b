"""The MaxScale REST surface under /v1, driven with the requests maxctrl sends.

Each request below is the one MaxScale's maxctrl builds (maxctrl/lib/common.js: ``getUri`` =
``http[s]://HOST/v1/`` + resource, Basic auth with ``--user``/``--password``; ``pingCluster``
sends ``GET /v1/`` to every host first when ``--hosts`` names more than one; ``--skip-sync``
appends ``sync=false``), and each assertion reads the field maxctrl reads (list.js, show.js:
``id``, ``attributes.parameters.address|port``, ``attributes.state`` + ``state_details``,
``attributes.statistics.connections``, ``relationships.monitors|servers.data[].id``, ...).
"""

from __future__ import annotations

import copy
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from quiesce.core.events import EventQuery
from tests.api.harness import ADMIN, ADMIN_TOKEN, VIEWER, config_dict, running

pytestmark = pytest.mark.loopback


def _with_service(**admin: Any) -> dict[str, Any]:
    data = copy.deepcopy(config_dict(**admin))
    data["services"] = {
        "www": {"listen": "127.0.0.1:18080", "pool": "web", "fallback_pool": "other"},
        "tcp-app": {"listen": "127.0.0.1:18090", "protocol": "tcp", "pool": "app"},
    }
    return data


@pytest.fixture
async def app(tmp_path: Path) -> Any:
    async with running(tmp_path, _with_service()) as a:
        yield a


class Maxctrl:
    """The HTTP side of ``maxctrl --hosts H1,H2 -u U -p P [--secure] [--skip-sync] CMD``."""

    def __init__(
        self,
        urls: list[str],
        auth: tuple[str, str] = ADMIN,
        verify: Any = True,
        skip_sync: bool = False,
    ) -> None:
        self.urls, self.auth, self.verify, self.skip_sync = urls, auth, verify, skip_sync
        self.sent: list[tuple[str, str]] = []

    def uri(self, base: str, resource: str) -> str:
        if self.skip_sync:
            resource += ("&" if "?" in resource else "?") + "sync=false"
        return f"{base}/v1/{resource}"

    async def run(self, method: str, resource: str, body: Any = None) -> list[httpx.Response]:
        """One command on every host: the ``GET /v1/`` probe first when there are several
        hosts (it stops at the first failure, as pingCluster's Promise.all does)."""
        out = []
        async with httpx.AsyncClient(verify=self.verify, timeout=10) as c:
            if len(self.urls) > 1:
                for base in self.urls:
                    r = await c.get(self.uri(base, ""), auth=self.auth)
                    self.sent.append(("GET", str(r.request.url)))
                    if r.status_code != 200:
                        return [r]
            for base in self.urls:
                r = await c.request(method, self.uri(base, resource), auth=self.auth, json=body)
                self.sent.append((method, str(r.request.url)))
                out.append(r)
        return out

    async def get(self, resource: str) -> dict[str, Any]:
        (r,) = await self.run("GET", resource)
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data


def rows(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["id"]: d for d in doc["data"]}


def shown_state(resource: dict[str, Any]) -> str:
    """What maxctrl prints in the State column (list.js / show.js append state_details)."""
    a = resource["attributes"]
    state = str(a["state"])
    return state + (", " + str(a["state_details"]) if a.get("state_details") else "")


def rel(resource: dict[str, Any], kind: str) -> list[str]:
    return [r["id"] for r in resource["relationships"][kind]["data"]]


# list / show servers -------------------------------------------------------------------------


async def test_list_servers(app: Any) -> None:
    mx = Maxctrl([app.admin_server.url])
    doc = await mx.get("servers")
    assert mx.sent == [("GET", f"{app.admin_server.url}/v1/servers")]
    servers = rows(doc)
    # flat MaxScale ids: the bare name when unique across pools, else POOL/SERVER
    assert list(servers) == ["web1", "web2", "a1", "a2", "app/shared", "other/shared"]
    web2 = servers["web2"]
    assert web2["type"] == "servers"
    assert web2["attributes"]["parameters"]["address"] == "127.0.0.1"
    assert web2["attributes"]["parameters"]["port"] == 18082
    assert web2["attributes"]["parameters"]["weight"] == 2
    assert web2["attributes"]["statistics"]["connections"] == 0
    assert rel(web2, "monitors") == ["System-HTTP"]
    assert rel(web2, "services") == ["www"]
    # monitored, no verdict yet: Down, and the detail says why
    assert web2["attributes"]["state"] == "Down"
    assert shown_state(web2) == "Down, no health verdict yet"
    a1 = servers["a1"]
    assert shown_state(a1) == "Running" and a1["attributes"]["state_details"] is None
    assert rel(a1, "monitors") == [] and rel(a1, "services") == ["tcp-app"]
    assert rel(servers["other/shared"], "services") == ["www"]  # www's fallback pool
    assert web2["links"]["self"].endswith("/v1/servers/web2")
    assert servers["app/shared"]["links"]["self"].endswith("/v1/servers/app%2Fshared")


async def test_show_server_by_every_name(app: Any) -> None:
    mx = Maxctrl([app.admin_server.url], auth=VIEWER)
    for ref in ("a1", "app/a1", "app%2Fa1"):
        doc = await mx.get(f"servers/{ref}")
        a = doc["data"]["attributes"]
        assert doc["data"]["id"] == "a1"
        assert (a["parameters"]["address"], a["parameters"]["port"]) == ("127.0.0.1", 18091)
        assert a["statistics"]["connections"] == 0
        assert a["state"] == "Running"
        assert rel(doc["data"], "monitors") == [] and rel(doc["data"], "services") == ["tcp-app"]
        assert a["quiesce"]["pool"] == "app" and a["quiesce"]["admin"] == "enabled"
    doc = await mx.get("servers/other/shared")
    assert doc["data"]["id"] == "other/shared"
    assert doc["data"]["attributes"]["parameters"]["port"] == 18094
    # bad ids: 404 with the API's error body
    for ref in ("nope", "shared", "nopool/a1", "a1/extra"):
        (r,) = await mx.run("GET", f"servers/{ref}")
        assert r.status_code == 404, ref
        assert set(r.json()) == {"error", "detail"}
    (r,) = await mx.run("GET", "servers/shared")
    assert "POOL/SERVER" in r.json()["detail"]


async def test_sparse_fieldsets(app: Any) -> None:
    """What MaxScale's GUI and scripts send: ``?fields[servers]=state``."""
    mx = Maxctrl([app.admin_server.url])
    doc = await mx.get("servers/a1?fields[servers]=state,monitors")
    assert doc["data"]["attributes"] == {"state": "Running"}
    assert list(doc["data"]["relationships"]) == ["monitors"]
    doc = await mx.get("servers?fields[servers]=statistics")
    assert all(list(d["attributes"]) == ["statistics"] for d in doc["data"])


# set / clear server, as maxctrl sends them ---------------------------------------------------


async def test_set_clear_maintenance_and_drain(app: Any) -> None:
    mx = Maxctrl([app.admin_server.url])
    a1 = app.registry.find_server("app/a1")

    async def state() -> str:
        return shown_state((await mx.get("servers/a1"))["data"])

    # set.js: "servers/" + server + "/set?state=" + state (+ "&force=yes")
    (r,) = await mx.run("PUT", "servers/a1/set?state=maintenance")
    assert r.status_code == 204 and r.content == b""
    assert await state() == "Maintenance, Running"
    (r,) = await mx.run("PUT", "servers/a1/clear?state=maintenance")
    assert r.status_code == 204 and await state() == "Running"
    (r,) = await mx.run("PUT", "servers/a1/set?state=maintenance&force=yes")
    assert r.status_code == 204 and a1.admin.state.value == "maintenance"
    (r,) = await mx.run("PUT", "servers/a1/clear?state=maintenance")
    (r,) = await mx.run("PUT", "servers/a1/set?state=drain")
    assert r.status_code == 204 and await state() == "Drained, Running"
    a1.connections = 2  # live connections finishing: MaxScale says Draining
    doc = (await mx.get("servers/a1"))["data"]
    assert shown_state(doc) == "Draining, Running"
    assert doc["attributes"]["statistics"]["connections"] == 2
    a1.connections = 0
    (r,) = await mx.run("PUT", "servers/a1/clear?state=drain")
    assert r.status_code == 204 and await state() == "Running"
    # audited as any API command: actor and cause
    events = app.admin.events(EventQuery(kind="admin_change", limit=100))
    assert len(events) == 6
    assert {(e.actor, e.cause, e.pool, e.server) for e in events} == {("admin", "api", "app", "a1")}
    # the list shows what the operator set
    listed = rows(await mx.get("servers"))
    assert shown_state(listed["a1"]) == "Running"


async def test_set_with_skip_sync_and_pool_ids(app: Any) -> None:
    mx = Maxctrl([app.admin_server.url], skip_sync=True)
    (r,) = await mx.run("PUT", "servers/other/shared/set?state=maintenance")
    assert r.status_code == 204
    assert str(r.request.url).endswith("/v1/servers/other/shared/set?state=maintenance&sync=false")
    assert app.registry.find_server("other/shared").admin.state.value == "maintenance"
    assert app.registry.find_server("app/shared").admin.state.value == "enabled"
    doc = await mx.get("servers/other%2Fshared")
    assert shown_state(doc["data"]) == "Maintenance, Running"


async def test_set_refusals_change_nothing(app: Any) -> None:
    mx = Maxctrl([app.admin_server.url])
    before = {s.key: s.admin.state for s in app.registry.servers()}
    for resource, status in [
        ("servers/a1/set?state=master", 400),
        ("servers/a1/set?state=running", 400),
        ("servers/a1/set", 400),
        ("servers/a1/set?state=drain&force=yes", 400),
        ("servers/a1/clear?state=slave", 400),
        ("servers/nope/set?state=maintenance", 404),
        ("servers/shared/set?state=maintenance", 404),
    ]:
        (r,) = await mx.run("PUT", resource)
        assert r.status_code == status, resource
        assert set(r.json()) == {"error", "detail"}
    # min_servers_up: 1 on pool app: the last eligible server is guarded
    (r,) = await mx.run("PUT", "servers/a1/set?state=maintenance")
    (r,) = await mx.run("PUT", "servers/a2/set?state=maintenance")
    assert r.status_code == 204
    (r,) = await mx.run("PUT", "servers/app/shared/set?state=maintenance")
    assert r.status_code == 409 and "min_servers_up" in r.json()["detail"]
    assert app.registry.find_server("app/shared").admin.state == before["app/shared"]


async def test_unknown_query_parameters_are_refused_and_change_nothing(app: Any) -> None:
    """As the native routes refuse them: a misspelt ``force`` (``forse=yes``) is a 422 that
    names it, never an unforced maintenance; maxctrl's own ``sync`` and ``local`` pass."""
    mx = Maxctrl([app.admin_server.url])
    before = {s.key: (s.admin.state, s.weight) for s in app.registry.servers()}
    for method, resource, body, bad in [
        ("PUT", "servers/a1/set?state=maintenance&forse=yes", None, "forse"),
        ("PUT", "servers/a1/set?state=drain&reason=x", None, "reason"),
        ("PUT", "servers/a1/clear?state=maintenance&drain=true", None, "drain"),
        ("PATCH", "servers/a1?dry_run=1", {"data": {"attributes": {"parameters": {"weight": 3}}}},
         "dry_run"),
    ]:  # fmt: skip
        (r,) = await mx.run(method, resource, body)
        assert r.status_code == 422, (resource, r.text)
        assert f"{bad}: unknown query parameter" in r.json()["detail"], r.text
    assert {s.key: (s.admin.state, s.weight) for s in app.registry.servers()} == before
    assert app.admin.events(EventQuery(kind="admin_change", limit=10)) == []
    (r,) = await mx.run("PUT", "servers/a1/set?state=drain&sync=false&local=true")
    assert r.status_code == 204, r.text
    assert app.registry.find_server("app/a1").admin.state.value == "drain"


# wrong credentials, roles ----------------------------------------------------------------------


async def test_credentials_and_roles(app: Any) -> None:
    url = app.admin_server.url
    async with httpx.AsyncClient(timeout=10) as c:
        for path in ("/v1/", "/v1/servers", "/v1/servers/a1", "/v1/monitors", "/v1/maxscale"):
            r = await c.get(url + path)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
            assert set(r.json()) == {"error", "detail"}
            assert (await c.get(url + path, auth=VIEWER)).status_code == 200
            r = await c.get(url + path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            assert r.status_code == 200
        # maxctrl's default user is not a quiesce user (unless configured: docs/api.md)
        r = await c.get(url + "/v1/servers", auth=("admin", "mariadb"))
        assert r.status_code == 401 and r.json()["error"]
    viewer = Maxctrl([url], auth=VIEWER)
    for method, resource, body in [
        ("PUT", "servers/a1/set?state=maintenance", None),
        ("PUT", "servers/a1/clear?state=maintenance", None),
        ("PATCH", "servers/a1", {"data": {"attributes": {"parameters": {"weight": 5}}}}),
    ]:
        (r,) = await viewer.run(method, resource, body)
        assert r.status_code == 403 and "read_only" in r.json()["detail"]
    a1 = app.registry.find_server("app/a1")
    assert a1.admin.state.value == "enabled" and a1.weight == 1
    assert not app.admin.events(EventQuery(kind="admin_change", limit=10))


# alter server weight (PATCH) -------------------------------------------------------------------


async def test_patch_weight(app: Any) -> None:
    mx = Maxctrl([app.admin_server.url])
    # alter.js: updateParams -> PATCH servers/S {"data": {"attributes": {"parameters": {...}}}}
    body = {"data": {"attributes": {"parameters": {"weight": 7}}}}
    (r,) = await mx.run("PATCH", "servers/web2", body)
    assert r.status_code == 204
    assert app.registry.find_server("web/web2").weight == 7
    doc = await mx.get("servers/web2")
    assert doc["data"]["attributes"]["parameters"]["weight"] == 7
    (e,) = app.admin.events(EventQuery(kind="admin_command", server="web2", limit=10))
    assert (e.actor, e.cause) == ("admin", "api")
    # a GET, edited, sent back: unchanged address and port are accepted
    data = doc["data"]
    data["attributes"]["parameters"].update(weight=3)
    data.pop("relationships")
    (r,) = await mx.run("PATCH", "servers/web2", {"data": data})
    assert r.status_code == 204 and app.registry.find_server("web/web2").weight == 3


@pytest.mark.parametrize(
    ("body", "status", "where"),
    [
        ("not json", 400, "not valid JSON"),
        ([1, 2], 422, "data"),
        ({"weight": 5}, 422, "data"),
        ({"data": {"attributes": {"parameters": {"weight": "5"}}}}, 422, "parameters.weight"),
        ({"data": {"attributes": {"parameters": {"weight": True}}}}, 422, "parameters.weight"),
        (
            {"data": {"attributes": {"parameters": {"weight": 999}}}},
            400,
            "weight 999 is outside 0-256",
        ),
        (
            {"data": {"attributes": {"parameters": {"weight": -1}}}},
            400,
            "weight -1 is outside 0-256",
        ),
        (
            {"data": {"attributes": {"parameters": {"weight": 5, "address": "10.0.0.1"}}}},
            422,
            "parameters.address",
        ),
        ({"data": {"attributes": {"parameters": {"port": 1}}}}, 422, "parameters.port"),
        ({"data": {"attributes": {"parameters": {"pool": "app"}}}}, 422, "parameters.pool"),
        ({"data": {"attributes": {"parameters": {"backup": 0}}}}, 422, "parameters.backup"),
        ({"data": {"attributes": {"parameters": {"socket": "/x"}}}}, 422, "unknown parameter"),
        ({"data": {"attributes": {"parameters": [1]}}}, 422, "parameters"),
        ({"data": {"id": "web1", "attributes": {"parameters": {"weight": 5}}}}, 422, "data.id"),
        ({"data": {"type": "monitors", "attributes": {}}}, 422, "data.type"),
        (
            {"data": {"relationships": {"services": {"data": []}}}},
            422,
            "data.relationships",
        ),
    ],
)
async def test_patch_refused_changes_nothing(app: Any, body: Any, status: int, where: str) -> None:
    url = f"{app.admin_server.url}/v1/servers/web2"
    async with httpx.AsyncClient(timeout=10) as c:
        if isinstance(body, str):
            r = await c.patch(url, content=body.encode(), auth=ADMIN)
        else:
            r = await c.patch(url, json=body, auth=ADMIN)
    assert r.status_code == status, r.text
    assert where in r.json()["detail"]
    web2 = app.registry.find_server("web/web2")
    assert (web2.weight, web2.host, web2.port) == (2, "127.0.0.1", 18082)
    assert not app.admin.events(EventQuery(kind="admin_command", limit=10))
    refused = app.admin.events(EventQuery(kind="admin_refused", limit=10))
    # a refusal by the admin service is audited (DESIGN §2); one of the body is not a command
    assert [e.detail["error"] for e in refused] == ([where] if "outside" in where else [])


async def test_patch_unknown_server(app: Any) -> None:
    mx = Maxctrl([app.admin_server.url])
    (r,) = await mx.run("PATCH", "servers/nope", {"data": {"attributes": {"parameters": {}}}})
    assert r.status_code == 404


# monitors, services, maxscale, sessions ------------------------------------------------------


async def test_list_and_show_monitors(app: Any) -> None:
    mx = Maxctrl([app.admin_server.url], auth=VIEWER)
    monitors = rows(await mx.get("monitors"))
    assert list(monitors) == ["Spare-TCP", "System-HTTP"]
    http = monitors["System-HTTP"]
    assert http["attributes"]["state"] == "Running"
    assert rel(http, "servers") == ["web1", "web2"]
    assert monitors["Spare-TCP"]["attributes"]["state"] == "Stopped"
    assert rel(monitors["Spare-TCP"], "servers") == []
    doc = await mx.get("monitors/System-HTTP")
    m = doc["data"]
    assert m["id"] == "System-HTTP" and m["attributes"]["module"] == "http"
    assert m["attributes"]["parameters"]["http_monitor"]["maintenance_code"] == [503]
    assert m["attributes"]["monitor_diagnostics"] == {"pools": ["web"]}
    (r,) = await mx.run("GET", "monitors/nope")
    assert r.status_code == 404


async def test_list_and_show_services(app: Any) -> None:
    mx = Maxctrl([app.admin_server.url], auth=VIEWER)
    services = rows(await mx.get("services"))
    assert list(services) == ["www", "tcp-app"]
    www = services["www"]
    assert www["attributes"]["router"] == "http"
    assert www["attributes"]["statistics"] == {"connections": 0, "total_connections": 0}
    assert rel(www, "servers") == ["web1", "web2", "other/shared"]
    assert rel(services["tcp-app"], "servers") == ["a1", "a2", "app/shared"]
    doc = await mx.get("services/tcp-app")
    a = doc["data"]["attributes"]
    assert a["router"] == "tcp" and a["parameters"]["listen"] == "127.0.0.1:18090"
    # no data plane in this harness: the service is configured but not started
    assert a["state"] == "Stopped"
    assert a["listeners"][0]["attributes"]["parameters"]["port"] == 18090
    (r,) = await mx.run("GET", "services/nope")
    assert r.status_code == 404


async def test_show_maxscale_and_sessions(app: Any) -> None:
    from quiesce import __version__

    mx = Maxctrl([app.admin_server.url], auth=VIEWER)
    doc = await mx.get("maxscale")
    a = doc["data"]["attributes"]
    assert doc["data"]["id"] == "maxscale"
    assert a["version"] == __version__ and a["product"] == "quiesce"
    assert isinstance(a["uptime"], int) and a["uptime"] >= 0
    assert a["started_at"].endswith("GMT") and a["activated_at"] == a["started_at"]
    assert a["parameters"]["admin_port"] == int(app.config.admin.listen.rpartition(":")[2])
    sessions = await mx.get("sessions")
    assert sessions["data"] == []
    (r,) = await mx.run("GET", "sessions/1")
    assert r.status_code == 404


# --hosts A,B ------------------------------------------------------------------------------------


async def test_two_hosts_probe_then_command(app: Any, tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    async with running(tmp_path / "b", _with_service()) as other:
        urls = [app.admin_server.url, other.admin_server.url]
        mx = Maxctrl(urls)
        results = await mx.run("PUT", "servers/a1/set?state=maintenance")
        assert [m for m, _ in mx.sent] == ["GET", "GET", "PUT", "PUT"]
        assert mx.sent[0][1] == f"{urls[0]}/v1/" and mx.sent[1][1] == f"{urls[1]}/v1/"
        assert [r.status_code for r in results] == [204, 204]
        for a in (app, other):
            assert a.registry.find_server("app/a1").admin.state.value == "maintenance"
        listed = await mx.run("GET", "servers")
        assert [shown_state(rows(r.json())["a1"]) for r in listed] == ["Maintenance, Running"] * 2
        # the probe: a JSON document with links; a bad password stops maxctrl before any write
        async with httpx.AsyncClient(timeout=10) as c:
            root = (await c.get(f"{urls[0]}/v1/", auth=VIEWER)).json()
            assert root["links"]["servers"].endswith("/v1/servers")
            assert (await c.get(f"{urls[0]}/v1", auth=VIEWER)).status_code == 200
        bad = Maxctrl(urls, auth=("admin", "wrong"))
        (r,) = await bad.run("PUT", "servers/a2/set?state=maintenance")
        assert r.status_code == 401 and [m for m, _ in bad.sent] == ["GET"]
        for a in (app, other):
            assert a.registry.find_server("app/a2").admin.state.value == "enabled"


# TLS (maxctrl --secure --tls-ca-cert ...) --------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def test_over_tls(tmp_path: Path, ca: trustme.CA) -> None:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    tls = {"cert": "server.pem", "key": "server.pem", "client_ca": "ca.pem"}
    async with running(tmp_path, _with_service(tls=tls)) as app:
        url = app.admin_server.url
        assert url.startswith("https://")
        ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        ca.issue_cert("maxctrl@example.com").configure_cert(ctx)  # --tls-key / --tls-cert
        mx = Maxctrl([url, url], verify=ctx)  # two hosts: the probe goes over TLS too
        results = await mx.run("PUT", "servers/a1/set?state=maintenance&force=yes")
        assert [r.status_code for r in results] == [204, 204]
        assert mx.sent[0] == ("GET", f"{url}/v1/")
        mx = Maxctrl([url], verify=ctx)
        servers = rows(await mx.get("servers"))
        assert shown_state(servers["a1"]) == "Maintenance, Running"
        assert servers["a1"]["links"]["self"].startswith("https://")
        assert rel(rows(await mx.get("monitors"))["System-HTTP"], "servers") == ["web1", "web2"]
        assert (await mx.get("maxscale"))["data"]["attributes"]["parameters"]["admin_ssl"]
        (r,) = await mx.run("PUT", "servers/a1/clear?state=maintenance")
        assert r.status_code == 204
        (r,) = await mx.run(
            "PATCH", "servers/a1", {"data": {"attributes": {"parameters": {"weight": 4}}}}
        )
        assert r.status_code == 204 and app.registry.find_server("app/a1").weight == 4
        # --secure without a client certificate: the handshake fails
        bare = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            await Maxctrl([url], verify=bare).run("GET", "servers")
        # plain HTTP against the TLS listener (maxctrl without --secure) gets nothing
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError)):
            await Maxctrl([url.replace("https://", "http://")]).run("GET", "servers")
