"""``GET /api/v1/series`` against ``/metrics`` over the same interval (issue 19, item 1): a
real ``quiesce run``, real requests, the counters read both ways."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from quiesce.state.series import totals
from tests.support.process import BackendThread, run_quiesce, until, write_simple_config

pytestmark = [pytest.mark.peers, pytest.mark.slow]
AUTH = ("admin", "pw")


@pytest.fixture
def backends() -> Iterator[BackendThread]:
    with BackendThread(["b1", "b2"]) as bt:
        yield bt


def counters(base: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """(metric, labels) -> value of /metrics' counters."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    text = httpx.get(f"{base}/metrics", auth=AUTH).text
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name.endswith("_total"):
                out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def series(api: str, kind: str, name: str, seconds: int) -> dict[str, Any]:
    r = httpx.get(
        f"{api}/series", params={"kind": kind, "name": name, "seconds": seconds}, auth=AUTH
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def window_totals(api: str, kind: str, name: str, start: int, end: int) -> dict[str, Any]:
    """The sums of the rows of seconds start+1 .. end (a tick may come between two reads:
    the window is pinned by the rows' seconds, not by the query's)."""
    body = series(api, kind, name, 60)
    points = [p for p in body["points"] if start < p["t"] <= end]
    assert len(points) == end - start
    assert body["totals"] == totals(body["points"])  # the API's totals are its rows' sums
    return totals(points)


def wait_for_tick_after(api: str, t: float) -> int:
    """The second of the first series tick taken after wall-clock time ``t``."""
    last: list[int] = []

    def ticked() -> bool:
        r = httpx.get(f"{api}/series", params={"kind": "pool", "name": "web"}, auth=AUTH)
        if r.status_code == 404:  # before the first tick (the next whole second)
            return False
        now = series(api, "pool", "web", 1)["points"][-1]["t"]
        last[:] = [now]
        return bool(now >= int(t) + 1)

    until(ticked, 10)
    return last[0]


def test_series_totals_equal_metrics_over_the_same_interval(
    tmp_path: Path, backends: BackendThread
) -> None:
    write_simple_config(tmp_path, backends.backends)
    proc, url, api = run_quiesce(tmp_path)
    base = api.removesuffix("/api/v1")
    try:
        with httpx.Client() as c:
            for _ in range(5):  # before the interval: in the baseline, not in the sums
                c.get(url).raise_for_status()
        start = wait_for_tick_after(api, time.time())  # quiet from here to the next read
        before = counters(base)
        with httpx.Client() as c:
            for i in range(40):
                c.get(url + ("health" if i % 4 == 0 else f"x{i}")).raise_for_status()
        after = counters(base)
        end = wait_for_tick_after(api, time.time())
        # rows start+1 .. end: exactly the requests between the two reads

        def diff(metric: str, **labels: str) -> float:
            key = (metric, frozenset(labels.items()))
            return after.get(key, 0.0) - before.get(key, 0.0)

        svc = window_totals(api, "service", "www", start, end)
        assert svc["requests"] == diff("quiesce_service_requests_total", service="www") == 40
        assert svc["2xx"] == diff("quiesce_service_responses_total", service="www", code="2xx")
        assert svc["bytes_in"] == diff("quiesce_service_bytes_in_total", service="www") > 0
        assert svc["bytes_out"] == diff("quiesce_service_bytes_out_total", service="www") > 0
        pool = window_totals(api, "pool", "web", start, end)
        assert pool["requests"] == 40
        for name in ("b1", "b2"):
            t = window_totals(api, "server", f"web/{name}", start, end)
            assert (
                t["requests"]
                == diff("quiesce_server_requests_total", pool="web", server=name)
                == 20
            )
            assert t["2xx"] == diff(
                "quiesce_server_responses_total", pool="web", server=name, code="2xx"
            )
            assert t["bytes_in"] == diff("quiesce_server_bytes_in_total", pool="web", server=name)
            assert t["bytes_out"] == diff("quiesce_server_bytes_out_total", pool="web", server=name)
            got = series(api, "server", f"web/{name}", 60)["points"]
            # timed in the seconds it served (loopback: often the lowest bucket, the loop's
            # clock ticks in ms), not in the quiet ones
            assert all((p["p50_ms"] is not None) == (p["2xx"] > 0) for p in got)
            assert any(p["requests"] for p in got)
    finally:
        code = proc.stop(signal.SIGTERM)
    assert code == 0, proc.output


def test_series_refuses_bad_queries_and_needs_credentials(
    tmp_path: Path, backends: BackendThread
) -> None:
    write_simple_config(tmp_path, backends.backends[:1])
    proc, _, api = run_quiesce(tmp_path)
    try:
        assert httpx.get(f"{api}/series?kind=pool&name=web").status_code == 401
        for query, field in (
            ("kind=host&name=web", "kind"),
            ("kind=pool", "name"),
            ("kind=pool&name=web&seconds=901", "seconds"),
            ("kind=pool&name=web&seconds=0", "seconds"),
        ):
            r = httpx.get(f"{api}/series?{query}", auth=AUTH)
            assert r.status_code == 422 and field in r.json()["detail"], (query, r.text)
        r = httpx.get(f"{api}/series?kind=server&name=web/nope", auth=AUTH)
        assert r.status_code == 404 and "web/nope" in r.json()["detail"]
    finally:
        proc.stop(signal.SIGTERM)


def test_a_servers_health_checks_are_in_its_series(tmp_path: Path, backends: BackendThread) -> None:
    """Check results and latency per server (issue 19, item 1): b2 answers its monitor
    with 503, the maintenance code; b1 passes."""
    backends.backends[1].maintenance = True
    write_simple_config(
        tmp_path,
        backends.backends,
        extra="""healthmonitors:
  hm:
    type: http
    send_interval: 500ms
    receive_timeout: 400ms  # roomy: a loaded CI machine must not time a check out
    http_monitor: {http_request: "GET /health HTTP/1.0", maintenance_code: [503]}
""",
    )
    config = tmp_path / "quiesce.yaml"
    config.write_text(config.read_text().replace("  web:\n", "  web:\n    healthmonitors: [hm]\n"))
    proc, _, api = run_quiesce(tmp_path)
    try:

        def checked(name: str, field: str) -> int:
            r = httpx.get(
                f"{api}/series", params={"kind": "server", "name": f"web/{name}"}, auth=AUTH
            )
            if r.status_code == 404:  # before the first tick
                return 0
            return sum(p[field] or 0 for p in r.json()["points"])

        until(lambda: checked("b1", "checks") >= 3 and checked("b2", "checks") >= 3, 20)
        ok = series(api, "server", "web/b1", 60)["points"]
        assert all(p["check_ms"] is not None for p in ok if p["checks"])
        assert checked("b1", "checks_failed") == checked("b1", "checks_maintenance") == 0
        assert checked("b2", "checks_maintenance") == checked("b2", "checks") >= 3
        body = series(api, "pool", "web", 5)
        assert body["fields"][-4:] == ["checks", "checks_failed", "checks_maintenance", "check_ms"]
        assert {p["checks"] for p in body["points"]} == {None}  # servers only
    finally:
        proc.stop(signal.SIGTERM)


def test_the_series_stream_over_the_event_stream(tmp_path: Path, backends: BackendThread) -> None:
    """``/events/stream?series=…``: a ``series`` event a second with the newest row of each
    (issue 19, item 1), among the ordinary events; a bad entry is a 422 naming ``series``."""
    write_simple_config(tmp_path, backends.backends)
    proc, url, api = run_quiesce(tmp_path)
    try:
        r = httpx.get(f"{api}/events/stream", params={"series": "host:web"}, auth=AUTH)
        assert r.status_code == 422 and "series" in r.json()["detail"], r.text
        wanted = "server:web/b1,pool:web,server:web/nope"
        seen: list[dict[str, Any]] = []
        kinds: list[str] = []
        with (
            httpx.Client() as traffic,
            httpx.stream(
                "GET", f"{api}/events/stream", params={"series": wanted}, auth=AUTH, timeout=10
            ) as stream,
        ):
            assert stream.status_code == 200
            kind = ""
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                    kinds.append(kind)
                elif line.startswith("data: ") and kind == "series":
                    seen.append(json.loads(line[6:]))
                    traffic.get(url).raise_for_status()
                    httpx.post(f"{api}/servers/web/b2/drain", json={}, auth=AUTH)
                    if len(seen) >= 4 and any(s["rows"]["pool:web"]["requests"] for s in seen):
                        break
        stamps = [s["t"] for s in seen]
        assert stamps == sorted(set(stamps)) and stamps[-1] - stamps[0] <= len(stamps) + 2
        last = seen[-1]["rows"]
        assert set(last) == {"server:web/b1", "pool:web", "server:web/nope"}
        assert last["server:web/nope"] is None
        assert last["server:web/b1"]["t"] == seen[-1]["t"] and "p99_ms" in last["server:web/b1"]
        assert "admin_change" in kinds  # the ordinary events still come on the same stream
    finally:
        proc.stop(signal.SIGTERM)
