"""A running control plane for tests: Config → Registry → store → AdminService → admin server,
without the data plane. Shared by tests/api, tests/cli, tests/runtime_socket, tests/metrics."""

from __future__ import annotations

import base64
import copy
import hashlib
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from quiesce.admin import AdminService
from quiesce.config.loader import parse_config
from quiesce.core.clock import SystemClock
from quiesce.state.registry import Registry

ADMIN = ("admin", "admin-pw")
VIEWER = ("viewer", "viewer-pw")
ADMIN_TOKEN = "deploy-token-0123456789"
VIEWER_TOKEN = "grafana-token-0123456789"


def cheap_hash(password: str) -> str:
    """A real scrypt hash in quiesce's format, at a low cost factor so tests stay fast
    (``verify_password`` reads the cost from the hash)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**10, r=8, p=1, dklen=32)
    b64 = base64.b64encode
    return f"scrypt$1024$8$1${b64(salt).decode()}${b64(digest).decode()}"


_HASHES = {
    "admin": cheap_hash(ADMIN[1]),
    "viewer": cheap_hash(VIEWER[1]),
    "deploy": cheap_hash(ADMIN_TOKEN),
    "grafana": cheap_hash(VIEWER_TOKEN),
}

BASE: dict[str, Any] = {
    "admin": {
        "listen": "127.0.0.1:0",
        "users": [
            {"name": "admin", "password_hash": _HASHES["admin"], "role": "admin"},
            {"name": "viewer", "password_hash": _HASHES["viewer"], "role": "read_only"},
        ],
        "tokens": [
            {"name": "deploy", "token_hash": _HASHES["deploy"], "role": "admin"},
            {"name": "grafana", "token_hash": _HASHES["grafana"], "role": "read_only"},
        ],
        "login_failures_per_minute": 5,
    },
    "state": {"sqlite": None},
    "healthmonitors": {
        "System-HTTP": {
            "type": "http",
            "send_interval": "10s",
            "receive_timeout": "4s",
            "http_monitor": {"http_request": "GET /health HTTP/1.0", "maintenance_code": [503]},
        },
        "Spare-TCP": {"type": "tcp"},
    },
    "pools": {
        "web": {
            "healthmonitors": ["System-HTTP"],
            "servers": [
                {"name": "web1", "address": "127.0.0.1:18081"},
                {"name": "web2", "address": "127.0.0.1:18082", "weight": 2},
            ],
        },
        "app": {
            "min_servers_up": 1,
            "servers": [
                {"name": "a1", "address": "127.0.0.1:18091"},
                {"name": "a2", "address": "127.0.0.1:18092"},
                {"name": "shared", "address": "127.0.0.1:18093"},
            ],
        },
        "other": {"servers": [{"name": "shared", "address": "127.0.0.1:18094"}]},
    },
    "flags": {"maintenance_mode": False},
}


def config_dict(**admin: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data["admin"].update(admin)
    return data


async def build_app(base_dir: Path, data: dict[str, Any] | None = None) -> SimpleNamespace:
    from quiesce.store import open_store

    config = parse_config(data or config_dict())
    clock = SystemClock()
    registry = Registry(config, clock)
    store = open_store(config.state, base_dir)
    await store.open()  # as quiesce.app does
    admin = AdminService(registry, store, clock)
    await admin.start()
    return SimpleNamespace(
        config=config,
        base_dir=base_dir,
        clock=clock,
        registry=registry,
        store=store,
        admin=admin,
        services={},
        admin_server=None,
    )


@asynccontextmanager
async def running(base_dir: Path, data: dict[str, Any] | None = None) -> AsyncIterator[Any]:
    """The app with its admin server listening; ``app.admin_server.url`` is its base URL."""
    from quiesce.frontends.api import start_admin_server

    app = await build_app(base_dir, data)
    app.admin_server = await start_admin_server(app)
    try:
        yield app
    finally:
        await app.admin_server.stop()
        await app.admin.stop()
        app.store.close()
