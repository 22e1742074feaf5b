"""An https monitor with ``use_pool_tls`` checks a pool's servers with the pool's TLS settings
(``pools.X.tls``: ca, sni, verify), paths relative to the config's directory (issue 16,
item 2)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from quiesce.config.models import Config
from quiesce.core.states import Oper
from quiesce.health import HealthManager
from quiesce.state.registry import Registry
from tests.health.servers import HttpBackend

pytestmark = pytest.mark.loopback


def registry(port: int, https: dict[str, Any], tls: dict[str, Any] | None) -> Registry:
    pool: dict[str, Any] = {
        "healthmonitors": ["tls"],
        "servers": [{"name": "s0", "address": f"127.0.0.1:{port}"}],
    }
    if tls is not None:
        pool["tls"] = tls
    monitor = {
        "type": "https",
        "send_interval": 0.2,
        "receive_timeout": 0.15,
        "successful_checks": 1,
        "failed_checks": 1,
        "https_monitor": https,
    }
    return Registry(
        Config.model_validate({"healthmonitors": {"tls": monitor}, "pools": {"p": pool}})
    )


async def oper_after_checks(reg: Registry, base_dir: Path) -> Oper:
    manager = HealthManager(reg, base_dir=base_dir)
    manager.start()
    server = reg.pool("p").server("s0")
    try:
        async with asyncio.timeout(10):
            while server.oper not in (Oper.UP, Oper.DOWN):
                await asyncio.sleep(0.02)
    finally:
        await manager.stop()
    return server.oper


@pytest.mark.parametrize(
    ("https", "tls", "oper"),
    [
        ({}, {"ca": "ca.pem", "sni": "localhost"}, Oper.DOWN),  # the monitor's own: system CAs
        ({"use_pool_tls": True}, {"ca": "ca.pem", "sni": "localhost"}, Oper.UP),
        ({"use_pool_tls": True}, {"ca": "ca.pem", "sni": "wrong.example"}, Oper.DOWN),
        ({"use_pool_tls": True}, {"verify": False, "sni": "wrong.example"}, Oper.UP),
        ({"use_pool_tls": True}, None, Oper.DOWN),  # no pool TLS: the monitor's own again
    ],
)
async def test_the_pool_tls_settings_decide_the_check(
    tls_backend: HttpBackend,
    ca_file: str,
    tmp_path: Path,
    https: dict[str, Any],
    tls: dict[str, Any] | None,
    oper: Oper,
) -> None:
    shutil.copy(ca_file, tmp_path / "ca.pem")  # relative to the config's directory
    assert await oper_after_checks(registry(tls_backend.port, https, tls), tmp_path) is oper
