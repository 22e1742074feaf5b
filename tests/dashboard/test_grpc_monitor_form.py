"""The dashboard's monitor form on a grpc monitor: editing its common fields keeps its type
(the type list offered postgresql and grpc to no one, so the disabled select said http) and
its grpc_monitor (the form shows no grpc fields: what the API gave is sent back, without the
maintenance_response of the http/tcp/udp types, which the server refused with a 422)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.dashboard.conftest import ADMIN, Stack
from tests.dashboard.test_dashboard import _expect, login, new_page  # noqa: F401 (_expect: autouse)

pytestmark = [pytest.mark.browser, pytest.mark.peers]

GRPC = {
    "name": "Orders-gRPC",
    "type": "grpc",
    "grpc_monitor": {"service": "api.Orders", "maintenance_service": "quiesce.maintenance"},
}


def test_editing_a_grpc_monitor_keeps_it_grpc(stack: Stack, browser: Any) -> None:
    from playwright.sync_api import expect

    with stack.client() as c:
        r = c.post("/api/v1/healthmonitors", json=GRPC)
        assert r.status_code == 201, r.text
    ctx, page, errors = new_page(browser)
    try:
        login(page, stack, ADMIN)
        page.goto(stack.admin_url + "/#/monitors")
        page.locator("#edit-Orders-gRPC").click()
        form = page.locator("#monitor-form")
        expect(form).to_be_visible()
        expect(form.locator("#hm-type")).to_have_value("grpc")
        form.locator("#hm-description").fill("orders over gRPC")
        page.locator("#hm-save").click()
        expect(page.locator("#hm-messages")).to_contain_text("Saved health monitor Orders-gRPC")
        saved = stack.get("/api/v1/healthmonitors/Orders-gRPC")
        assert saved["type"] == "grpc" and saved["description"] == "orders over gRPC", saved
        assert saved["grpc_monitor"]["service"] == "api.Orders", saved
        assert saved["grpc_monitor"]["maintenance_service"] == "quiesce.maintenance", saved
        assert errors == []
    finally:
        ctx.close()
        with stack.client() as c:
            c.delete("/api/v1/healthmonitors/Orders-gRPC")
