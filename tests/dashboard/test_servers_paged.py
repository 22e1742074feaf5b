"""The Servers view pages (issue 21, review finding F7): with a pool of thousands of servers it
fetches only the page it shows (GET /api/v1/servers?pool=&limit=&offset=), never the whole
list, and pages forward and back. Debian's Chromium (headless, Playwright) against its own
`quiesce run` with a 3,000-server pool (no monitors, no idle connections: quick to start).
"""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dashboard.conftest import ADMIN, Stack, serve_stack
from tests.dashboard.test_servers_runtime import new_page, row

pytestmark = [pytest.mark.browser, pytest.mark.peers]

BIG = 3000

expect: Any = None


@pytest.fixture(autouse=True)
def _expect(browser: Any) -> None:
    global expect
    from playwright.sync_api import expect as pw_expect

    pw_expect.set_options(timeout=20_000)
    expect = pw_expect


def login(page: Any, stack: Stack) -> None:
    page.goto(stack.admin_url + "/")
    page.wait_for_url(re.compile(r"/login"))
    page.get_by_label("User").fill(ADMIN[0])
    page.get_by_label("Password").fill(ADMIN[1])
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#who")).to_contain_text(ADMIN[0])


def _big_pool(config: dict[str, Any]) -> None:
    config["pools"]["big"] = {
        "max_idle_per_server": 0,
        "servers": [{"name": f"s{i:04d}", "address": f"127.0.0.1:{20000 + i}"} for i in range(BIG)],
    }


@pytest.fixture(scope="module")
def big_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with serve_stack(Path(tmp_path_factory.mktemp("paged")), _big_pool) as s:
        yield s


def _server_lists(urls: list[str]) -> list[dict[str, list[str]]]:
    """The query of every request the page made for a list of servers."""
    out = []
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        if parts.path.rstrip("/") == "/api/v1/servers":
            out.append(urllib.parse.parse_qs(parts.query))
    return out


def test_a_big_pool_is_shown_a_page_at_a_time(big_stack: Stack, browser: Any) -> None:
    ctx, page, errors = new_page(browser)
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    login(page, big_stack)

    started = time.monotonic()
    page.goto(big_stack.admin_url + "/#/servers?pool=big")
    expect(row(page, "big/s0000")).to_be_visible(timeout=15_000)
    first_page = time.monotonic() - started
    rows = page.locator("#servers-table tr[data-server]")
    expect(rows).to_have_count(100)
    expect(row(page, "big/s0099")).to_be_visible()
    expect(page.locator("#servers-range")).to_have_text(re.compile(r"Servers 1–100 of 3.?000"))
    expect(page.locator("#servers-prev")).to_be_disabled()

    # page 2: the next hundred, in the URL
    page.locator("#servers-next").click()
    expect(row(page, "big/s0100")).to_be_visible()
    expect(row(page, "big/s0199")).to_be_visible()
    expect(row(page, "big/s0000")).to_have_count(0)
    expect(rows).to_have_count(100)
    expect(page.locator("#servers-range")).to_have_text(re.compile(r"Servers 101–200 of 3.?000"))
    assert "page=2" in page.url
    # the sparklines ask for the same slice of the pool
    page.wait_for_function(
        "() => performance.getEntriesByType('resource').some((e) => "
        "e.name.includes('/series/servers?pool=big') && e.name.includes('offset=100'))"
    )

    # 200 a page: page 1 of 200 holds the 100th-199th, so it stays in view
    page.locator("#server-page-size").select_option("200")
    expect(rows).to_have_count(200)
    expect(row(page, "big/s0000")).to_be_visible()
    expect(row(page, "big/s0199")).to_be_visible()
    assert "size=200" in page.url

    # the last page is short and has no next
    page.goto(big_stack.admin_url + "/#/servers?pool=big&page=15&size=200")
    expect(row(page, "big/s2999")).to_be_visible()
    expect(rows).to_have_count(200)
    expect(page.locator("#servers-next")).to_be_disabled()
    # past the end (an old link): the last page
    page.goto(big_stack.admin_url + "/#/servers?pool=big&page=99")
    expect(row(page, "big/s2999")).to_be_visible()
    expect(rows).to_have_count(100)

    # every pool (config order, as the API pages them): 3,006 servers, the last page holds
    # the six of the small pools
    page.locator("#server-pool-filter").select_option("")
    expect(page.locator("#servers-range")).to_have_text(re.compile(r"Servers 1–100 of 3.?006"))
    expect(rows).to_have_count(100)
    page.goto(big_stack.admin_url + "/#/servers?page=31")
    expect(row(page, "web/web1")).to_be_visible()
    expect(rows).to_have_count(6)
    expect(page.locator("#servers-range")).to_have_text(
        re.compile(r"Servers 3.?001–3.?006 of 3.?006")
    )

    # a poll (3 s) while shown: again a page
    seen = len(urls)
    page.wait_for_function(
        f"() => performance.getEntriesByType('resource').filter((e) => "
        f"e.name.includes('/api/v1/servers?')).length > {len(_server_lists(urls))}"
    )
    assert len(urls) > seen

    lists = _server_lists(urls)
    assert lists, urls
    unpaged = [q for q in lists if "limit" not in q or int(q["limit"][0]) > 500]
    assert not unpaged, f"unpaged GET /api/v1/servers: {unpaged}"
    assert not errors, errors
    assert first_page < 15, first_page
    ctx.close()
