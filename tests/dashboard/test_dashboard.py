"""The dashboard end to end: Debian's Chromium (headless, Playwright) against `quiesce run`.

Each test is a story an operator lives through in the browser, checked against the REST API
and the balancer's behaviour. The run also writes the screenshots the docs link
(docs/screenshots/pools.png, servers.png, events.png, servers-390.png).
"""

from __future__ import annotations

import http.client
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.dashboard.conftest import ADMIN, VIEWER, Stack

pytestmark = [pytest.mark.browser, pytest.mark.peers]

expect: Any = None


@pytest.fixture(autouse=True)
def _expect(browser: Any) -> None:
    global expect
    from playwright.sync_api import expect as pw_expect

    pw_expect.set_options(timeout=20_000)
    expect = pw_expect


def new_page(browser: Any, width: int = 1280, height: int = 900) -> tuple[Any, Any, list[str]]:
    ctx = browser.new_context(viewport={"width": width, "height": height})
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    return ctx, page, errors


def login(page: Any, stack: Stack, who: tuple[str, str]) -> None:
    page.goto(stack.admin_url + "/")
    page.wait_for_url(re.compile(r"/login"))
    page.get_by_label("User").fill(who[0])
    page.get_by_label("Password").fill(who[1])
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#who")).to_contain_text(who[0])
    expect(page.locator("#live")).to_contain_text("live")


def row(page: Any, key: str) -> Any:
    return page.locator(f'#servers-table tr[data-server="{key}"]')


def status_of(page: Any, key: str) -> Any:
    return row(page, key).locator(".status .badge")


class Holder:
    """Requests to /hold through the balancer: each keeps one proxied connection open."""

    def __init__(self, url: str, count: int) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.threads = [threading.Thread(target=self._one, daemon=True) for _ in range(count)]
        self.statuses: list[int | str] = []

    def _one(self) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            conn.request("GET", "/hold")
            self.statuses.append(conn.getresponse().status)
        except (OSError, http.client.HTTPException) as exc:
            self.statuses.append(type(exc).__name__)
        finally:
            conn.close()

    def start(self) -> Holder:
        for t in self.threads:
            t.start()
        return self

    def join(self) -> None:
        for t in self.threads:
            t.join(30)


def test_gracefully_disable_two_servers_then_enable(
    stack: Stack, browser: Any, screenshots: Any
) -> None:
    ctx, page, errors = new_page(browser)
    login(page, stack, ADMIN)

    # A second tab on the events view, opened before anything happens: it must stream.
    events = ctx.new_page()
    events.on("pageerror", lambda e: errors.append(str(e)))
    events.goto(stack.admin_url + "/#/events")
    expect(events.locator("#live")).to_contain_text("live")
    expect(events.locator("#events-body tr").first).to_be_visible()

    page.goto(stack.admin_url + "/#/servers?pool=web")
    for name in ("web1", "web2", "web3"):
        expect(status_of(page, f"web/{name}")).to_have_attribute("data-status", "up")

    # Six slow requests through the balancer: round robin gives each server two.
    holder = Holder(stack.service_url, 6).start()
    for name in ("web1", "web2"):
        stack.backends[name].wait_holding(1)
        expect(row(page, f"web/{name}").locator(".conns")).not_to_have_text("0")

    page.get_by_label("Select web/web1").check()
    page.get_by_label("Select web/web2").check()
    expect(page.locator("#selected-count")).to_have_text("2 selected")

    # Gracefully › after N minutes (0.15 min = 9 s), then the confirmation.
    page.locator("#act-graceful").click()
    dialog = page.locator("#dlg-graceful")
    expect(dialog).to_be_visible()
    dialog.locator("input[name=mode][value=timeout]").check()
    dialog.locator("input[name=minutes]").fill("0.15")
    dialog.get_by_label("Reason").fill("deploy 42")
    dialog.get_by_role("button", name="Disable gracefully").click()
    confirm = page.locator("#dlg-confirm")
    expect(confirm).to_be_visible()
    expect(confirm).to_contain_text("will be closed")
    confirm.get_by_role("button", name="Disable gracefully").click()

    for name in ("web1", "web2"):
        badge = status_of(page, f"web/{name}")
        expect(badge).to_have_attribute("data-status", "draining")
        expect(badge).to_contain_text(re.compile(r"draining \(\d+\)"))
        expect(row(page, f"web/{name}").locator(".admin-reason")).to_have_text("deploy 42")
    expect(status_of(page, "web/web3")).to_have_attribute("data-status", "up")
    view = stack.server("web", "web1")
    assert (view["admin"], view["actor"], view["reason"]) == ("drain", ADMIN[0], "deploy 42")
    assert view["deadline"] is not None

    # web1's connections end on their own: drained. web2's are still open.
    stack.backends["web1"].release()
    expect(status_of(page, "web/web1")).to_have_attribute("data-status", "drained")
    expect(status_of(page, "web/web2")).to_contain_text("draining (")
    page.screenshot(path=str(screenshots / "servers.png"), full_page=True)

    pools = ctx.new_page()
    pools.goto(stack.admin_url + "/#/pools")
    expect(pools.locator('tr[data-pool="web"] .eligible')).to_have_text("1/3")
    pools.screenshot(path=str(screenshots / "pools.png"), full_page=True)
    pools.close()

    # At the deadline both are disabled; web2's remaining connections are closed.
    for name in ("web1", "web2"):
        expect(status_of(page, f"web/{name}")).to_have_attribute("data-status", "disabled")
        expect(row(page, f"web/{name}").locator(".conns")).to_have_text("0")
    assert stack.server("web", "web2")["admin"] == "maintenance"

    # The events tab got them live: the dashboard's commands, then the deadline.
    drain_rows = events.locator('tr[data-kind="admin_change"]').filter(has_text="drain")
    for name in ("web1", "web2"):
        expect(
            drain_rows.filter(has_text=f"web / {name}").filter(has_text="dashboard")
        ).not_to_have_count(0)
        expect(
            events.locator('tr[data-kind="admin_change"]')
            .filter(has_text=f"web / {name}")
            .filter(has_text="deadline")
        ).not_to_have_count(0)
    events.screenshot(path=str(screenshots / "events.png"), full_page=False)

    # Enable them again (still selected): no confirmation, both come back up.
    expect(page.locator("#selected-count")).to_have_text("2 selected")
    page.locator("#act-enable").click()
    for name in ("web1", "web2"):
        expect(status_of(page, f"web/{name}")).to_have_attribute("data-status", "up")
        assert stack.server("web", name)["admin"] == "enabled"
    expect(
        events.locator('tr[data-kind="admin_change"]')
        .filter(has_text="web / web2")
        .filter(has_text="enabled")
        .filter(has_text="dashboard")
    ).not_to_have_count(0)

    for b in stack.backends.values():
        b.release()
    holder.join()
    assert errors == []
    ctx.close()


def test_monitor_editor_maintenance_codes_and_pool_attach(stack: Stack, browser: Any) -> None:
    ctx, page, errors = new_page(browser)
    login(page, stack, ADMIN)
    edge1 = stack.backends["edge1"]
    edge1.maintenance = True
    edge1.maintenance_status = 418
    assert stack.server("edge", "edge1")["oper"] == "unmonitored"

    page.goto(stack.admin_url + "/#/monitors")
    expect(page.locator('tr[data-monitor="Maint-Check"]')).to_contain_text("503")
    page.locator("#edit-Maint-Check").click()
    form = page.locator("#monitor-form")
    expect(form).to_be_visible()
    maintenance = form.locator("#maintenance-mode")
    expect(maintenance).to_contain_text("Server maintenance mode")
    expect(page.locator("#hm-maintenance_code-0")).to_have_value("503")

    # An invalid code: the API's 422 message shows next to the codes, nothing is saved.
    page.locator("#hm-maintenance_code-0").fill("418")
    page.locator("#hm-maintenance_code-1").fill("999")
    page.locator("#hm-save").click()
    expect(page.locator("#err-maintenance_code")).to_contain_text("999 is outside 101-599")
    expect(page.locator("#hm-errors")).to_contain_text("422")
    assert stack.get("/api/v1/healthmonitors/Maint-Check")["http_monitor"]["maintenance_code"] == [
        503
    ]

    page.locator("#hm-maintenance_code-1").fill("")
    page.locator("#hm-save").click()
    expect(page.locator("#hm-messages")).to_contain_text("Saved health monitor Maint-Check")
    expect(page.locator("#err-maintenance_code")).to_be_hidden()
    assert stack.get("/api/v1/healthmonitors/Maint-Check")["http_monitor"]["maintenance_code"] == [
        418
    ]

    # Pool settings › Add active monitor.
    page.goto(stack.admin_url + "/#/pools")
    page.locator("#settings-edge").click()
    page.get_by_label("Add active monitor").select_option("Maint-Check")
    page.locator("#add-monitor-btn-edge").click()
    expect(page.locator('tr[data-pool="edge"]')).to_contain_text("Maint-Check")
    pools = {p["name"]: p for p in stack.get("/api/v1/pools")}
    assert pools["edge"]["healthmonitors"] == ["Maint-Check"]

    # Behaviour: 418 is now a maintenance code, so edge1 is down for maintenance...
    page.goto(stack.admin_url + "/#/servers?pool=edge")
    expect(status_of(page, "edge/edge1")).to_have_attribute("data-status", "down for maintenance")
    expect(row(page, "edge/edge1").locator(".reason-code")).to_have_text(
        "MAINTENANCE_RESPONSE_CODE_MATCH"
    )
    expect(row(page, "edge/edge1").locator(".last-check")).to_contain_text("418")
    assert stack.server("edge", "edge1")["oper"] == "maintenance"
    # ...and 503, removed from the list, is an ordinary failure now: down, not maintenance.
    edge1.maintenance_status = 503
    expect(status_of(page, "edge/edge1")).to_have_attribute("data-status", "down")
    expect(row(page, "edge/edge1").locator(".reason-code")).to_have_text("RESPONSE_CODE_MISMATCH")
    edge1.maintenance = False
    expect(status_of(page, "edge/edge1")).to_have_attribute("data-status", "up")

    # Detach again from the pool's settings.
    page.goto(stack.admin_url + "/#/pools")
    page.locator("#settings-edge").click()
    page.get_by_role("button", name="Remove monitor Maint-Check from pool edge").click()
    expect(page.locator('tr[data-pool="edge"]')).not_to_contain_text("Maint-Check")
    assert stack.server("edge", "edge1")["oper"] == "unmonitored"

    # Create a TCP monitor: the codes are HTTP only, the maintenance string is not.
    page.goto(stack.admin_url + "/#/monitors")
    page.locator("#create-monitor").click()
    page.get_by_label("Name", exact=True).fill("Tcp-Maint")
    page.locator("#hm-type").select_option("tcp")
    expect(page.locator("#hm-maintenance_code-0")).to_be_hidden()
    page.locator("#hm-send_interval").fill("2s")
    page.locator("#hm-receive_timeout").fill("3s")
    page.locator("#hm-maintenance_response").fill("under construction")
    page.locator("#hm-save").click()
    expect(page.locator("#hm-errors")).to_contain_text("must be below send_interval")
    page.locator("#hm-receive_timeout").fill("1s")
    page.locator("#hm-save").click()
    page.wait_for_url(re.compile(r"#/monitors/Tcp-Maint$"))
    expect(page.locator("#hm-maintenance_response")).to_have_value("under construction")
    created = stack.get("/api/v1/healthmonitors/Tcp-Maint")
    assert (created["type"], created["send_interval"], created["receive_timeout"]) == (
        "tcp",
        2.0,
        1.0,
    )
    assert created["tcp_monitor"]["maintenance_response"] == "under construction"
    assert errors == []
    ctx.close()


@pytest.fixture
def attacker() -> Iterator[dict[str, Any]]:
    """A page on another origin that auto-submits a form to the admin API (classic CSRF)."""
    target: dict[str, Any] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            # text/plain smuggles a JSON body: {"force":true,"reason":"=csrf"}
            fields = target.get(
                "fields", '<input name=\'{"force":true,"reason":"\' value=\'csrf"}\'>'
            )
            body = (
                "<!doctype html><title>free prizes</title>"
                f'<form method="post" enctype="text/plain" action="{target["action"]}">'
                f"{fields}</form><script>document.forms[0].submit()</script>"
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    target["url"] = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        yield target
    finally:
        server.shutdown()
        server.server_close()


def test_read_only_user_sees_no_actions(stack: Stack, browser: Any) -> None:
    ctx, page, errors = new_page(browser)
    login(page, stack, VIEWER)
    expect(page.locator("#who")).to_contain_text("read-only")

    page.goto(stack.admin_url + "/#/servers")
    expect(row(page, "web/web1")).to_be_visible()
    assert page.locator("#servers-table input[type=checkbox]").count() == 0
    assert page.locator("[role=toolbar], #act-disable, #act-graceful, #act-enable").count() == 0
    assert (
        page.get_by_role("button", name=re.compile("Disable|Gracefully|Maintenance")).count() == 0
    )

    page.goto(stack.admin_url + "/#/pools")
    page.locator("#settings-web").click()
    expect(page.locator("#settings-row-web")).to_contain_text("System-HTTP")
    assert page.locator("#settings-row-web button, #settings-row-web select").count() == 0

    page.goto(stack.admin_url + "/#/monitors/System-HTTP")
    expect(page.locator("#monitor-form")).to_be_visible()
    assert page.locator("#hm-save, #hm-delete, #create-monitor").count() == 0
    expect(page.locator("#hm-send_interval")).to_have_attribute("readonly", "")

    page.goto(stack.admin_url + "/#/flags")
    expect(page.locator("#site-panel")).to_contain_text("OFF")
    assert page.locator("main button[role=switch], #add-flag, main button").count() == 0

    # The API agrees: the viewer's own session, with the right CSRF header, may not write.
    csrf = next(c["value"] for c in ctx.cookies() if c["name"] == "quiesce_csrf")
    r = page.request.post(
        stack.admin_url + "/api/v1/servers/web/web1/maintenance",
        data={"reason": "x"},
        headers={"X-CSRF-Token": csrf},
    )
    assert r.status == 403
    assert stack.server("web", "web1")["admin"] == "enabled"
    assert errors == []
    ctx.close()


def test_forged_post_with_session_cookie_is_refused(
    stack: Stack, browser: Any, attacker: dict[str, Any]
) -> None:
    ctx, page, _ = new_page(browser)
    login(page, stack, ADMIN)
    attacker["action"] = stack.admin_url + "/api/v1/servers/web/web3/maintenance"

    # A cross-origin form post carries the session cookie (same site: 127.0.0.1) but cannot
    # set the X-CSRF-Token header: refused (and the browser's Sec-Fetch-Site/Origin give it
    # away before that).
    with page.expect_response(lambda r: r.url == attacker["action"]) as answer:
        page.goto(attacker["url"])
    assert answer.value.status == 403
    assert stack.server("web", "web3")["admin"] == "enabled"

    # The same session from a script without the header: refused; with it: accepted.
    url = stack.admin_url + "/api/v1/servers/web/web3/enable"
    assert page.request.post(url, data={"reason": "forged"}).status == 403
    csrf = next(c["value"] for c in ctx.cookies() if c["name"] == "quiesce_csrf")
    ok = page.request.post(url, data={"reason": "mine"}, headers={"X-CSRF-Token": csrf})
    assert ok.status == 200
    assert ok.json()["changed"] is False
    ctx.close()


def test_http_basic_login_and_cross_site_post_refused(
    stack: Stack, browser: Any, attacker: dict[str, Any]
) -> None:
    ctx = browser.new_context(http_credentials={"username": ADMIN[0], "password": ADMIN[1]})
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(stack.admin_url + "/basic-login")
    page.wait_for_url(stack.admin_url + "/")
    expect(page.locator("#who")).to_contain_text(ADMIN[0])

    # The dashboard works on Basic alone: an action goes through.
    page.goto(stack.admin_url + "/#/servers?pool=web")
    page.get_by_label("Select web/web3").check()
    page.locator("#act-enable").click()
    expect(page.locator("#server-messages [role=status]")).to_contain_text("web/web3")

    # The browser replays cached Basic credentials on a cross-site form post, which has no
    # CSRF header to check: the origin check refuses it. An empty text/plain body is what
    # would get through the API's body validation.
    attacker["action"] = stack.admin_url + "/api/v1/servers/web/web3/maintenance"
    attacker["fields"] = ""
    with page.expect_response(lambda r: r.url == attacker["action"]) as answer:
        page.goto(attacker["url"])
    assert answer.value.status == 403
    assert "cross-origin" in answer.value.text()
    assert stack.server("web", "web3")["admin"] == "enabled"
    assert errors == []
    ctx.close()


def test_guard_refusal_shows_409_keyboard_only(stack: Stack, browser: Any) -> None:
    ctx, page, errors = new_page(browser)
    login(page, stack, ADMIN)
    page.goto(stack.admin_url + "/#/servers?pool=guarded")
    expect(status_of(page, "guarded/g1")).to_be_visible()

    # Keyboard only: Space ticks, Enter opens the dialog, Enter submits, Tab+Enter confirms.
    page.get_by_label("Select guarded/g1").focus()
    page.keyboard.press("Space")
    expect(page.locator("#selected-count")).to_have_text("1 selected")
    page.locator("#act-maintenance").focus()
    page.keyboard.press("Enter")
    dialog = page.locator("#dlg-maint")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Reason").focus()
    page.keyboard.type("patching")
    page.keyboard.press("Enter")
    confirm = page.locator("#dlg-confirm")
    expect(confirm).to_be_visible()
    # what closes when: a web server's requests, a database server's transactions
    expect(confirm).to_contain_text("busy ones at their next request boundary")
    expect(confirm).to_contain_text("a database session: at its transaction boundary")
    expect(confirm.get_by_role("button", name="Cancel")).to_be_focused()
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")

    alert = page.locator("#server-messages [role=alert]")
    expect(alert).to_contain_text("guarded/g1")
    expect(alert).to_contain_text("below min_servers_up 2")
    expect(alert).not_to_contain_text("--force-guard")  # no command-line flag in the dashboard
    assert stack.server("guarded", "g1")["admin"] == "enabled"
    refused = stack.get("/api/v1/events?pool=guarded&kind=admin_refused")
    assert refused and refused[-1]["cause"] == "dashboard"

    # With the guard overridden and an expiry, it goes through; the row shows both.
    page.locator("#act-maintenance").click()
    dialog.get_by_label("Reason").fill("patching")
    dialog.get_by_label("For", exact=True).fill("10m")
    dialog.get_by_label("Override the pool's minimum-servers guard").check()
    dialog.get_by_role("button", name="Set maintenance").click()
    confirm.get_by_role("button", name="Set maintenance").click()
    expect(status_of(page, "guarded/g1")).to_have_attribute("data-status", "disabled")
    expect(row(page, "guarded/g1").locator(".adminstate")).to_contain_text(
        re.compile(r"in 9m|in 10m")
    )
    g1 = stack.server("guarded", "g1")
    assert g1["admin"] == "maintenance" and g1["expires"] is not None
    page.locator("#act-enable").click()
    expect(status_of(page, "guarded/g1")).to_have_attribute("data-status", "up")

    # Escape closes a dialog without doing anything.
    page.locator("#act-disable").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#dlg-disable")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#dlg-disable")).to_be_hidden()
    assert stack.server("guarded", "g1")["admin"] == "enabled"
    assert errors == []
    ctx.close()


def test_site_maintenance_switch_and_filtered_live_events(stack: Stack, browser: Any) -> None:
    ctx, page, errors = new_page(browser)
    login(page, stack, ADMIN)
    events = ctx.new_page()
    events.goto(stack.admin_url + "/#/events")
    expect(events.locator("#live")).to_contain_text("live")
    events.get_by_label("Kind").select_option("flag_change")
    expect(events.locator("#events-body tr:not([data-kind=flag_change])")).to_have_count(0)

    page.goto(stack.admin_url + "/#/flags")
    switch = page.locator("#site-maintenance")
    expect(switch).to_have_attribute("aria-checked", "false")
    assert httpx.get(stack.service_url + "/").status_code == 200
    switch.click()
    confirm = page.locator("#dlg-confirm")
    expect(confirm).to_contain_text("site-wide maintenance")
    confirm.get_by_role("button", name="Turn on").click()
    expect(switch).to_have_attribute("aria-checked", "true")
    expect(page.locator("#site-maint")).to_be_visible()
    expect(page.locator("#flag-maintenance_mode")).to_have_attribute("aria-checked", "true")
    assert stack.get("/api/v1/flags")["maintenance_mode"] is True
    assert httpx.get(stack.service_url + "/").status_code == 503

    # The filtered events tab shows the flag change live, and nothing else.
    on = events.locator("#events-body tr[data-kind=flag_change]").filter(has_text="true")
    expect(on.filter(has_text="dashboard")).not_to_have_count(0)
    expect(events.locator("#events-body tr:not([data-kind=flag_change])")).to_have_count(0)

    # Off again from the flag's own toggle (no confirmation needed to restore service).
    page.locator("#flag-maintenance_mode").click()
    expect(switch).to_have_attribute("aria-checked", "false")
    expect(page.locator("#site-maint")).to_be_hidden()
    assert httpx.get(stack.service_url + "/").status_code == 200
    assert errors == []
    ctx.close()


# Visible form controls and buttons that a screen reader could not name.
UNNAMED_CONTROLS = """() => [
  ...document.querySelectorAll('input, select, textarea, button, a[href]')]
  .filter((el) => el.offsetParent !== null && el.type !== 'hidden')
  .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
    && !el.getAttribute('aria-labelledby') && !(el.textContent || '').trim())
  .map((el) => el.outerHTML.slice(0, 80))"""


@pytest.mark.parametrize("width", [390, 1280])
def test_views_fit_the_screen(stack: Stack, browser: Any, screenshots: Any, width: int) -> None:
    ctx, page, errors = new_page(browser, width=width, height=844)
    login(page, stack, ADMIN)
    for view, ready in (
        ("pools", "#pools-table"),
        ("servers", "#servers-table"),
        ("monitors", "#monitors-table"),
        ("monitors/System-HTTP", "#monitor-form"),
        ("events", "#events-body tr"),
        ("flags", "#flags-table"),
    ):
        page.goto(f"{stack.admin_url}/#/{view}")
        expect(page.locator(ready).first).to_be_visible()
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{view} scrolls sideways by {overflow}px at {width}px"
        unnamed = page.evaluate(UNNAMED_CONTROLS)
        assert unnamed == [], f"{view}: controls without an accessible name: {unnamed}"
        if width == 390 and view == "servers":
            page.screenshot(path=str(screenshots / "servers-390.png"), full_page=True)
    assert errors == []
    ctx.close()
