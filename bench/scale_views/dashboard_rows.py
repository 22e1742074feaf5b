"""The dashboard's Servers view, 100 rows of a 3,000-server pool (the stack of
tests/dashboard/test_servers_paged.py): ms of JavaScript to build the rows and to draw them
with their sparklines, in headless Chromium: ``python3 bench/scale_views/dashboard_rows.py``."""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import tempfile

from playwright.sync_api import sync_playwright
from tests.dashboard.conftest import ADMIN, CHROMIUM, CHROMIUM_ARGS, serve_stack
from tests.dashboard.test_servers_paged import _big_pool

with serve_stack(Path(tempfile.mkdtemp()), _big_pool) as st, sync_playwright() as pw:
    b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    page = b.new_page()
    page.on("console", lambda m: print("CONSOLE", m.type, m.text))
    page.on("pageerror", lambda e: print("PAGEERR", e))
    page.on("request", lambda r: print("REQ", r.url) if "/api/v1/servers" in r.url else None)
    page.goto(st.admin_url + "/")
    page.get_by_label("User").fill(ADMIN[0])
    page.get_by_label("Password").fill(ADMIN[1])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_selector("#who:has-text('alice')")
    page.goto(st.admin_url + "/#/servers?pool=big")
    page.wait_for_selector('tr[data-server="big/s0000"]')
    time.sleep(2)
    print(
        "range",
        page.locator("#servers-range").text_content(),
        page.locator("#servers-next").is_disabled(),
    )
    print("err", page.locator("#load-error").all_text_contents())
    rows = (
        "const v=window.quiesceDashboard.views.servers;"
        " const st=window.quiesceDashboard.state; let t=performance.now();"
        " const rows=st.servers.map((s)=>v.row(s,true)); const a=performance.now()-t;"
        " t=performance.now(); v.draw();"
        " return [a, performance.now()-t, st.servers.length,"
        " document.querySelectorAll('*').length]"
    )
    spark = (
        "const t=performance.now(); for (let i=0;i<100;i++)"
        " window.QuiesceCharts.sparkline([1,2,3],[1,2,3],{label:'x',width:64,height:20});"
        " return performance.now()-t"
    )
    div = (
        "const t=performance.now(); for (let i=0;i<100;i++) document.createElement('div');"
        " return performance.now()-t"
    )
    # rows: [ms building the rows, ms of draw(), rows, DOM nodes]
    for label, expr in (("rows", rows), ("sparkline x100", spark), ("div x100", div)):
        t = time.time()
        print(label, page.evaluate("async () => {" + expr + "}"), time.time() - t)
    b.close()
