"""The dashboard's Servers view on a 10,000-server pool in headless Chromium: the first row
of page 10 and the time from *Next* to the next page's first row, at 100 and 200 a page:
``python3 bench/scale_views/dashboard_next_page.py``."""

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from pathlib import Path

from playwright.sync_api import sync_playwright
from tests.dashboard.conftest import ADMIN, CHROMIUM, CHROMIUM_ARGS, serve_stack


def big(c):
    c["pools"]["big"] = {
        "max_idle_per_server": 0,
        "servers": [
            {"name": f"s{i:05d}", "address": f"127.0.0.1:{20000 + i}"} for i in range(10000)
        ],
    }


with serve_stack(Path(tempfile.mkdtemp()), big) as st, sync_playwright() as pw:
    b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    page = b.new_page()
    sizes = []
    page.on(
        "response",
        lambda r: (
            sizes.append((r.url.split("/api/v1")[-1][:60], len(r.body())))
            if "/api/v1/servers" in r.url
            else None
        ),
    )
    page.goto(st.admin_url + "/")
    page.get_by_label("User").fill(ADMIN[0])
    page.get_by_label("Password").fill(ADMIN[1])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_selector("#who:has-text('alice')")
    for size in (100, 200):
        t = time.monotonic()
        page.goto(st.admin_url + f"/#/servers?pool=big&size={size}&page=10")
        page.wait_for_selector(f'tr[data-server="big/s{9 * size:05d}"]', timeout=60000)
        print(f"size {size}: first row after {time.monotonic() - t:.2f} s")
        page.wait_for_timeout(3000)
        t = time.monotonic()
        page.on(
            "request",
            lambda r, t=t: (
                print("  req", round(time.monotonic() - t, 2), r.url.split("/api/v1")[-1][:70])
                if "servers" in r.url
                else None
            ),
        )
        page.locator("#servers-next").click()
        print("  clicked", round(time.monotonic() - t, 2))
        page.wait_for_selector(f'tr[data-server="big/s{10 * size:05d}"]', timeout=60000)
        print(f"size {size}: next page after {time.monotonic() - t:.2f} s")
    print(sorted(set(sizes))[:6])
    b.close()
