"""Issue 15, case 9 (its authentication part): a node starts against an etcd with
authentication on, given a user whose role may only read and write the node's prefix (the
setup docs/admin.md shows); wrong or missing credentials are a clear error at start. Real
etcd, auth switched on through its gRPC API (aetcd's stubs: no etcdctl needed)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aetcd
import aetcd.rpc as rpc
import pytest

from quiesce.admin import AdminService
from quiesce.config import parse_config
from quiesce.core.clock import SystemClock
from quiesce.core.states import Admin
from quiesce.state.registry import Registry
from quiesce.store import EtcdStore, StoreError
from tests.store.test_etcd import ETCD, RAW, A, Etcd, until

pytestmark = [
    pytest.mark.skipif(not Path(ETCD).exists(), reason="etcd server not installed"),
    pytest.mark.peers,
]
PREFIX = f"/quiesce-auth/{uuid.uuid4().hex[:8]}/"


async def enable_auth(etcd: Etcd) -> None:
    """root (for etcd itself), and user ``node`` whose role ``quiesce`` may read and write
    PREFIX only; then authentication on."""
    client = aetcd.Client(host="127.0.0.1", port=etcd.client_port, timeout=5)
    await client.connect()
    stub = rpc.AuthStub(client.channel)
    end = PREFIX[:-1] + chr(ord(PREFIX[-1]) + 1)
    await stub.UserAdd(rpc.AuthUserAddRequest(name="root", password="root-pw"))
    await stub.RoleAdd(rpc.AuthRoleAddRequest(name="root"))
    await stub.UserGrantRole(rpc.AuthUserGrantRoleRequest(user="root", role="root"))
    await stub.RoleAdd(rpc.AuthRoleAddRequest(name="quiesce"))
    permission = rpc.Permission(
        permType=rpc.Permission.READWRITE, key=PREFIX.encode(), range_end=end.encode()
    )
    await stub.RoleGrantPermission(
        rpc.AuthRoleGrantPermissionRequest(name="quiesce", perm=permission)
    )
    await stub.UserAdd(rpc.AuthUserAddRequest(name="node", password="node-pw"))
    await stub.UserGrantRole(rpc.AuthUserGrantRoleRequest(user="node", role="quiesce"))
    await stub.AuthEnable(rpc.AuthEnableRequest())
    await client.close()


@pytest.fixture
async def auth_etcd(tmp_path: Path) -> AsyncIterator[Etcd]:
    server = Etcd(tmp_path / "etcd")
    server.start()
    await enable_auth(server)
    yield server
    server.stop()


async def open_node(
    etcd: Etcd, name: str, user: str, password: str, prefix: str = PREFIX
) -> tuple[EtcdStore, AdminService]:
    registry = Registry(parse_config(RAW), SystemClock())
    store = EtcdStore([etcd.endpoint], prefix, node=name, username=user, password=password)
    await store.open()
    service = AdminService(registry, store)
    await service.start()
    return store, service


async def test_nodes_with_credentials_share_state_on_their_prefix(auth_etcd: Etcd) -> None:
    a_store, a = await open_node(auth_etcd, "A", "node", "node-pw")
    b_store, b = await open_node(auth_etcd, "B", "node", "node-pw")
    try:
        mark = a.write_mark()
        a.maintenance("web/w1", replace(A, reason="with auth"))
        await a.confirm_writes(mark)
        w1 = b.registry.find_server("web/w1")
        await until(lambda: w1.admin.state is Admin.MAINTENANCE)
        await until(lambda: len(b_store.cluster.view()["nodes"]) == 2)  # leases work too
    finally:
        for service, store in ((a, a_store), (b, b_store)):
            await service.stop()
            await store.aclose()


@pytest.mark.parametrize(
    ("user", "password", "prefix", "words"),
    [
        (None, None, PREFIX, "etcd requires authentication: set state.etcd.username and password"),
        (
            "node",
            "wrong",
            PREFIX,
            "etcd refused user 'node': wrong state.etcd.username or password",
        ),
        (
            "node",
            "node-pw",
            "/elsewhere/",
            "etcd user 'node' may not read and write /elsewhere/: grant its role readwrite on"
            " the prefix",
        ),
    ],
)
async def test_wrong_or_missing_credentials_are_a_clear_error(
    auth_etcd: Etcd, user: str | None, password: str | None, prefix: str, words: str
) -> None:
    store = EtcdStore([auth_etcd.endpoint], prefix, node="X", username=user, password=password)
    with pytest.raises(StoreError) as caught:
        await store.open()
    store.close()
    assert caught.value.message == f"state.etcd: {auth_etcd.endpoint}: {words}" + (
        " (docs/admin.md, 'etcd access')" if "may not" in words else ""
    ), caught.value.message
    assert caught.value.status_hint == 503


def test_half_credentials_are_refused_and_https_means_tls() -> None:
    with pytest.raises(StoreError, match="give both username and password"):
        EtcdStore(["127.0.0.1:2379"], username="node")
    assert EtcdStore(["https://127.0.0.1:2379"]).tls == (None, None, None)  # the system's CAs
    assert EtcdStore(["127.0.0.1:2379"]).tls is None


def test_https_endpoints_in_the_config_mean_tls() -> None:
    from quiesce.config.loader import ConfigError

    config = parse_config({**RAW, "state": {"etcd": {"endpoints": ["https://10.0.0.5:2379"]}}})
    etcd = config.state.etcd
    assert etcd is not None and etcd.endpoints == ["10.0.0.5:2379"] and etcd.tls is not None
    config = parse_config({**RAW, "state": {"etcd": {"endpoints": ["http://10.0.0.5:2379/"]}}})
    assert config.state.etcd is not None and config.state.etcd.tls is None
    with pytest.raises(ConfigError) as caught:  # it used to say "write IPv6 addresses as ..."
        parse_config({**RAW, "state": {"etcd": {"endpoints": ["http://10.0.0.5:2379"], "tls": {}}}})
    assert "'http://10.0.0.5:2379' is http:// but tls is set" in str(caught.value.problems)
    with pytest.raises(ConfigError) as caught:
        parse_config({**RAW, "state": {"etcd": {"endpoints": ["h:1"], "tls": {"cert": "c.pem"}}}})
    assert "state.etcd.tls: give cert and key together" in str(caught.value.problems)


def test_half_credentials_in_the_config_name_the_keys() -> None:
    from quiesce.config.loader import ConfigError

    for etcd in (
        {"endpoints": ["127.0.0.1:2379"], "username": "node"},
        {"endpoints": ["127.0.0.1:2379"], "username": "n", "password": "a", "password_file": "f"},
    ):
        with pytest.raises(ConfigError) as caught:
            parse_config({**RAW, "state": {"etcd": etcd}})
        assert "state.etcd" in str(caught.value.problems), caught.value.problems


def test_quiesce_run_with_a_password_file(tmp_path: Path) -> None:
    """The config keys, through ``quiesce run``: a node starts with its user and password
    file; with a wrong password it does not start and says why."""
    from tests.store.test_cluster import cli, cluster, start_node
    from tests.support.process import BackendThread, until

    server = Etcd(tmp_path / "etcd")
    server.start()
    try:
        asyncio.run(enable_auth(server))
        (tmp_path / "good").mkdir()
        (tmp_path / "good" / "etcd.pw").write_text("node-pw\n")
        with BackendThread(["b1"]) as backends:
            port = backends.backends[0].port
            extra = ", username: node, password_file: ../etcd.pw"  # beside the config dir
            node = start_node(tmp_path / "good", server, PREFIX, "A", port, extra)
            try:
                until(lambda: cluster(node)["link"] == "up", 10)
                cli(node, "set", "server", "web/b1", "maintenance")
            finally:
                node.proc.stop()
            (tmp_path / "bad").mkdir()
            with pytest.raises(AssertionError) as caught:
                start_node(
                    tmp_path / "bad",
                    server,
                    PREFIX,
                    "B",
                    port,
                    ", username: node, password: wrong-pw",
                )
            assert "etcd refused user 'node': wrong state.etcd.username or password" in str(
                caught.value
            )
    finally:
        server.stop()
