"""The C check engine (``quiesce._checkfast``): its classification against the Python
reference (:mod:`quiesce.health.classify`, ``probes.base.describe``) on random replies and
rules, its refusals of bad input, and its I/O against real sockets on loopback.

The probe and manager tests run on it too (the ``engine`` fixture in conftest.py runs every
health test on the C engine and on the Python path)."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import math
import select
import socket
import warnings
import weakref
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from quiesce.config.models import HealthMonitor
from quiesce.core.checks import CheckResult, Reason
from quiesce.core.clock import SystemClock
from quiesce.core.states import Verdict
from quiesce.health.classify import WINDOW, HttpRules, classify_tcp, stream_reply_complete
from quiesce.health.probes import fast
from quiesce.health.probes.base import describe
from tests.health.servers import PAD, HttpBackend

cf = fast.checkfast
P = Verdict.PASS


# Tests of the C engine itself: only the "c" side of conftest's engine fixture (skipped when
# the extension is not built or QUIESCE_PURE=1).
pytestmark = pytest.mark.parametrize("engine", ["c"], indirect=True)


# --- classification: C against the Python reference --------------------------------------

ALPHABET = "ab \r\n5"
needles = st.one_of(st.none(), st.text(alphabet=ALPHABET, min_size=0, max_size=4))
codes = st.one_of(
    st.sampled_from(["1xx", "2xx", "3xx", "4xx", "5xx", "any", "ANY", "2XX"]),
    st.integers(100, 599),
    st.integers(100, 599).map(str),
)


@st.composite
def http_monitors(draw: st.DrawFn) -> HealthMonitor:
    sub: dict[str, Any] = {
        "http_response_code": draw(st.lists(codes, min_size=1, max_size=3)),
        "maintenance_code": draw(st.lists(st.integers(101, 599), max_size=4, unique=True)),
        "http_response": draw(needles),
        "maintenance_response": draw(needles),
    }
    return HealthMonitor.model_validate({"type": "http", "http_monitor": sub})


@st.composite
def tcp_monitors(draw: st.DrawFn) -> HealthMonitor:
    sub = {"tcp_response": draw(needles), "maintenance_response": draw(needles)}
    return HealthMonitor.model_validate({"type": "tcp", "tcp_monitor": sub})


@st.composite
def replies(draw: st.DrawFn) -> bytes:
    """Mostly plausible status lines, with the needles' alphabet in the body and padding that
    puts some of it across byte 2048; sometimes plain random bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=64))
    lead = draw(st.sampled_from([b"", b" ", b"\r\n", b"\t"]))
    version = draw(st.sampled_from([b"HTTP/1.0", b"HTTP/1.1", b"HTTP/", b"HTTPS", b"http/1.1"]))
    sep = draw(st.sampled_from([b" ", b"  ", b"\t", b"\x0b", b"\x0c", b""]))
    code = draw(
        st.one_of(
            st.integers(0, 999).map(lambda c: str(c).encode()),
            st.sampled_from([b"20", b"2000", b"2x0", b"", b"+20", b" 200", b"\xd9\xa2\xd9\xa0"]),
        )
    )
    rest = draw(st.binary(max_size=8))
    eol = draw(st.sampled_from([b"\r\n", b"\n", b"", b"\r"]))
    body = bytearray()
    for _ in range(draw(st.integers(0, 4))):
        body += b"x" * draw(st.sampled_from([0, 3, PAD - 100, WINDOW - 60, WINDOW - 2]))
        body += draw(st.text(alphabet=ALPHABET, max_size=8)).encode()
    reply = lead + version + sep + code + b" " + rest + eol + bytes(body)
    cut = draw(st.one_of(st.none(), st.integers(0, len(reply))))
    return reply if cut is None else reply[:cut]


def c_outcome(rules: Any, reply: bytes, complete: bool = True) -> tuple[Any, ...]:
    v, r, status, detail = rules.classify(reply, complete)
    return fast.VERDICTS[v], fast.REASONS[r], status, detail


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(http_monitors(), replies())
@example(
    HealthMonitor.model_validate({"type": "http", "http_monitor": {"maintenance_code": [503]}}),
    b"HTTP/1.1 503 Service Unavailable\r\n\r\n",
)
@example(
    HealthMonitor.model_validate({"type": "http", "http_monitor": {"maintenance_response": "ab"}}),
    b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * (WINDOW - 20) + b"ab",
)
def test_http_classification_matches_python(monitor: HealthMonitor, reply: bytes) -> None:
    ref = HttpRules.of(monitor.http)
    rules = fast.http_rules(monitor.http)
    window = reply[:WINDOW]
    verdict, reason, status = ref.classify(window)
    expected = (verdict, reason, status, describe(verdict, reason, status, window))
    assert c_outcome(rules, window) == expected
    assert rules.complete(reply) == ref.complete(reply)
    assert rules.reads


@settings(max_examples=400)
@given(tcp_monitors(), replies(), st.booleans())
def test_tcp_classification_matches_python(
    monitor: HealthMonitor, reply: bytes, complete: bool
) -> None:
    tcp = monitor.tcp
    rules = fast.tcp_rules(tcp)
    window = reply[:WINDOW]
    verdict, reason, status = classify_tcp(window, tcp, complete=complete)
    expected = (verdict, reason, status, describe(verdict, reason, status, window))
    assert c_outcome(rules, window, complete) == expected
    assert rules.complete(reply) == stream_reply_complete(
        reply, tcp.tcp_response, tcp.maintenance_response
    )
    assert rules.reads == bool(tcp.tcp_response or tcp.maintenance_response)


def test_a_string_starting_beyond_the_window_is_not_seen() -> None:
    monitor = HealthMonitor.model_validate(
        {"type": "http", "http_monitor": {"maintenance_response": "under construction"}}
    )
    rules = fast.http_rules(monitor.http)
    head = b"HTTP/1.1 200 OK\r\n\r\n"
    early = head + b"under construction"
    late = head + b"x" * (WINDOW - len(head) - 5) + b"under construction"
    assert c_outcome(rules, early)[:2] == (
        Verdict.MAINTENANCE,
        Reason.MAINTENANCE_PAYLOAD_CONTENT_MATCH,
    )
    assert c_outcome(rules, late)[:2] == (Verdict.PASS, Reason.OK)


# --- bad input -----------------------------------------------------------------------------


def test_bad_rules_are_refused_with_clear_errors() -> None:
    with pytest.raises(ValueError, match="kind must be 'http' or 'tcp', not 'smtp'"):
        cf.Rules("smtp", (), (), None, None)
    with pytest.raises(ValueError, match="accept: status code 700 is not within 100-599"):
        cf.Rules("http", [700], (), None, None)
    with pytest.raises(ValueError, match="maintenance_codes: status code 99"):
        cf.Rules("http", [200], [99], None, None)
    with pytest.raises(TypeError, match="maintenance must be bytes or None, not str"):
        cf.Rules("http", [200], (), "down", None)
    with pytest.raises(TypeError, match="expected must be bytes or None, not int"):
        cf.Rules("tcp", (), (), None, 5)


def test_bad_specs_and_engines_are_refused() -> None:
    rules = cf.Rules("tcp", (), (), None, None)
    with pytest.raises(
        ValueError, match=r"host must be an IPv4 or IPv6 address, not 'example\.com'"
    ):
        cf.Spec("example.com", 80, b"", rules, 1.0)
    with pytest.raises(ValueError, match="port must be within 1-65535, not 0"):
        cf.Spec("127.0.0.1", 0, b"", rules, 1.0)
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        cf.Spec("127.0.0.1", 80, b"", rules, math.nan)
    with pytest.raises(ValueError, match="Engine needs 3 verdicts and 11 reasons"):
        cf.Engine(fast.VERDICTS, fast.REASONS[:3], CheckResult)
    with pytest.raises(TypeError, match="result_type str is not a dataclass"):
        cf.Engine(fast.VERDICTS, fast.REASONS, str)

    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked(CheckResult):
        def __post_init__(self) -> None:
            raise AssertionError("must run")

    with pytest.raises(TypeError, match="result_type Checked has a __post_init__"):
        cf.Engine(fast.VERDICTS, fast.REASONS, Checked)

    @dataclasses.dataclass
    class NoSlots:
        monitor: str
        verdict: Verdict
        reason: Reason
        at: float
        latency: float
        status_code: int | None
        detail: str

    with pytest.raises(TypeError, match="must be a slots dataclass with the fields monitor"):
        cf.Engine(fast.VERDICTS, fast.REASONS, NoSlots)
    engine = cf.Engine(fast.VERDICTS, fast.REASONS, CheckResult)
    with pytest.raises(TypeError, match=r"batch items must be \(token, Spec\) tuples"):
        engine.start([("token", rules)], 0.0, 0.0, 0.0)
    engine.close()
    with pytest.raises(ValueError, match="the engine is closed"):
        engine.start([], 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="the engine is closed"):
        engine.fileno()


def test_an_ipv6_literal_is_accepted_and_a_host_name_takes_the_python_path() -> None:
    monitor = HealthMonitor.model_validate({"type": "tcp"})
    rules = fast.tcp_rules(monitor.tcp)
    assert fast.spec(fast_target("::1", 80), monitor, b"", rules) is not None
    assert fast.spec(fast_target("localhost", 80), monitor, b"", rules) is None


def fast_target(host: str, port: int) -> Any:
    from quiesce.health.probes import Target

    return Target(host, port)


# --- I/O on loopback -----------------------------------------------------------------------


class Token:
    def __init__(self, monitor: str = "m") -> None:
        self.monitor = monitor
        self.results: list[CheckResult] = []
        self.arrived = asyncio.Event()

    def on_done(self, result: CheckResult) -> None:
        self.results.append(result)
        self.arrived.set()


@pytest.fixture
async def engine_() -> AsyncIterator[fast.FastEngine]:
    engine = fast.FastEngine(asyncio.get_running_loop(), SystemClock())
    yield engine
    engine.close()


def http_spec(port: int, timeout: float = 0.5, **sub: Any) -> Any:
    monitor = HealthMonitor.model_validate(
        {"type": "http", "receive_timeout": timeout, "http_monitor": sub}
    )
    request = b"GET / HTTP/1.0\r\nHost: x\r\n\r\n"
    return fast.spec(
        fast_target("127.0.0.1", port), monitor, request, fast.http_rules(monitor.http)
    )


@pytest.mark.loopback
async def test_a_batch_of_checks_starts_in_one_call_and_each_reports_once(
    engine_: fast.FastEngine, http_backend: HttpBackend
) -> None:
    spec = http_spec(http_backend.port, maintenance_code=[503])
    tokens = [Token() for _ in range(50)]
    engine_.start([(t, spec) for t in tokens])
    assert len(engine_) == 50
    async with asyncio.timeout(5):
        for t in tokens:
            await t.arrived.wait()
    assert all(len(t.results) == 1 for t in tokens)
    r = tokens[0].results[0]
    assert (r.verdict, r.reason, r.status_code, r.detail) == (P, Reason.OK, 200, "HTTP/1.1 200 OK")
    assert r.latency >= 0
    assert len(engine_) == 0 and http_backend.requests == 50

    http_backend.mode = "503"
    t = Token()
    engine_.start([(t, spec)])
    async with asyncio.timeout(5):
        await t.arrived.wait()
    assert (t.results[0].verdict, t.results[0].reason) == (
        Verdict.MAINTENANCE,
        Reason.MAINTENANCE_RESPONSE_CODE_MATCH,
    )


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.loopback
async def test_the_address_family_is_kept_in_the_compact_address(
    engine_: fast.FastEngine,
) -> None:
    """A Spec keeps its address as the family's own struct (no sockaddr_storage): an IPv4
    and an IPv6 check each reach their listener (the family and length read from it)."""
    if not ipv6_loopback():
        pytest.skip("no IPv6 loopback")
    monitor = HealthMonitor.model_validate({"type": "tcp"})
    rules = fast.tcp_rules(monitor.tcp)
    accepted: list[str] = []

    async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        accepted.append(w.get_extra_info("sockname")[0])
        w.close()

    servers = [await asyncio.start_server(on_conn, host, 0) for host in ("127.0.0.1", "::1")]
    try:
        tokens = []
        for server in servers:
            host, port = server.sockets[0].getsockname()[:2]
            spec = fast.spec(fast_target(host, port), monitor, b"", rules)
            assert spec is not None
            tokens.append(Token())
            engine_.start([(tokens[-1], spec)])
        async with asyncio.timeout(5):
            for t in tokens:
                await t.arrived.wait()
            while len(accepted) < 2:
                await asyncio.sleep(0.01)
        assert [t.results[0].verdict for t in tokens] == [P, P]
        assert sorted(accepted) == ["127.0.0.1", "::1"]
        assert cf.Spec.__basicsize__ <= 80  # 176 with a sockaddr_storage
    finally:
        for server in servers:
            server.close()


@pytest.mark.loopback
async def test_silence_is_a_timeout_at_the_deadline(
    engine_: fast.FastEngine, http_backend: HttpBackend
) -> None:
    http_backend.mode = "hang"
    t = Token()
    loop = asyncio.get_running_loop()
    started = loop.time()
    engine_.start([(t, http_spec(http_backend.port, timeout=0.2))])
    async with asyncio.timeout(5):
        await t.arrived.wait()
    r = t.results[0]
    assert (r.verdict, r.reason, r.detail) == (
        Verdict.FAIL,
        Reason.TIMEOUT,
        "no reply within receive_timeout",
    )
    assert loop.time() - started >= 0.2 - 0.002
    assert len(engine_) == 0


@pytest.mark.loopback
async def test_cancel_never_reports_and_closes_the_socket(
    engine_: fast.FastEngine, http_backend: HttpBackend
) -> None:
    http_backend.mode = "hang"
    t = Token()
    engine_.start([(t, http_spec(http_backend.port, timeout=0.2))])
    async with asyncio.timeout(5):
        while http_backend.requests < 1:  # the backend has the request: the check is running
            await asyncio.sleep(0.01)
    engine_.cancel(t)
    assert len(engine_) == 0
    # A second check, past the first one's deadline, reports; the cancelled one never does.
    t2 = Token()
    engine_.start([(t2, http_spec(http_backend.port, timeout=0.3))])
    async with asyncio.timeout(5):
        await t2.arrived.wait()
    assert t.results == []


@pytest.mark.loopback
async def test_refused_is_reported_on_a_later_loop_iteration(
    engine_: fast.FastEngine, closed_port: int
) -> None:
    t = Token()
    engine_.start([(t, http_spec(closed_port))])
    assert t.results == []  # never from inside start()
    async with asyncio.timeout(5):
        await t.arrived.wait()
    r = t.results[0]
    assert (r.verdict, r.reason, r.detail) == (
        Verdict.FAIL,
        Reason.CONNECTION_REFUSED,
        "connection refused",
    )


@pytest.mark.loopback
async def test_a_reply_that_came_in_time_is_not_a_timeout_when_the_loop_is_late(
    http_backend: HttpBackend,
) -> None:
    """The raw engine, no loop callbacks: the reply is in the socket when the deadline is
    handled (expire before poll), and it is classified, not called a timeout."""
    engine = cf.Engine(fast.VERDICTS, fast.REASONS, CheckResult)
    tok = Token("web")
    try:
        loop = asyncio.get_running_loop()
        readable = loop.create_future()
        loop.add_reader(engine.fileno(), lambda: readable.done() or readable.set_result(None))
        try:
            assert (
                engine.start([(tok, http_spec(http_backend.port, timeout=0.1))], 0.0, 0.0, 5.0)
                == []
            )
            async with asyncio.timeout(5):
                await readable
        finally:
            loop.remove_reader(engine.fileno())
        assert engine.next_deadline() == pytest.approx(0.1)
        assert engine.expire(0.05, 0.0, 5.0) == []  # before the deadline: nothing
        [(token, result)] = engine.expire(1.0, 0.25, 7.5)
        assert token is tok
        # The result the C side made is the CheckResult Python would make, and as frozen.
        assert type(result) is CheckResult
        assert result == CheckResult("web", P, Reason.OK, 7.5, 0.25, 200, "HTTP/1.1 200 OK")
        assert result.to_dict()["latency_ms"] == 250.0
        with pytest.raises(dataclasses.FrozenInstanceError):
            result.detail = "changed"  # type: ignore[misc]
        assert engine.next_deadline() is None
    finally:
        engine.close()


@pytest.mark.loopback
async def test_tcp_handshake_only_and_banner(engine_: fast.FastEngine) -> None:
    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 ready\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(banner, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        for sub, want in [
            ({}, (P, Reason.OK, "connected")),
            ({"tcp_response": "220"}, (P, Reason.OK, "11 bytes received")),
            (
                {"maintenance_response": "ready"},
                (
                    Verdict.MAINTENANCE,
                    Reason.MAINTENANCE_PAYLOAD_CONTENT_MATCH,
                    "maintenance string found in reply",
                ),
            ),
            (
                {"tcp_response": "nope"},
                (
                    Verdict.FAIL,
                    Reason.PAYLOAD_CONTENT_MISMATCH,
                    "expected string not in the first 2048 bytes (11 bytes received)",
                ),
            ),
        ]:
            monitor = HealthMonitor.model_validate({"type": "tcp", "tcp_monitor": sub})
            spec = fast.spec(
                fast_target("127.0.0.1", port), monitor, b"", fast.tcp_rules(monitor.tcp)
            )
            t = Token()
            engine_.start([(t, spec)])
            async with asyncio.timeout(5):
                await t.arrived.wait()
            r = t.results[0]
            assert (r.verdict, r.reason, r.detail) == want, sub
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.loopback
def test_the_socket_is_closed_with_a_reset_after_a_read() -> None:
    """Linger 0 after reading a reply, as HAProxy does: the server side sees a reset, and no
    TIME_WAIT is left on either side."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    engine = cf.Engine(fast.VERDICTS, fast.REASONS, CheckResult)
    tok = Token()
    try:
        engine.start([(tok, http_spec(port, timeout=5.0))], 0.0, 0.0, 0.0)
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(5)
            assert conn.recv(1024).startswith(b"GET / HTTP/1.0")
            conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n")
            # wait for the engine's socket to be readable, then let it read and close
            select.select([engine.fileno()], [], [], 5)
            [(token, result)] = engine.poll(0.0, 0.0)
            assert (token, result.verdict) == (tok, P)
            with pytest.raises(ConnectionResetError):
                conn.recv(1024)
    finally:
        engine.close()
        listener.close()


@pytest.mark.loopback
def test_a_cycle_through_the_engine_is_collected() -> None:
    """The engine holds the tokens of the checks in flight; a token that holds the engine
    (a manager's job does, through the manager) must not keep both alive forever."""
    # earlier tests' garbage first (an unclosed socket of theirs warned here once, in CI):
    # the collection below is to find this test's cycle only
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    class Holder:
        monitor = "m"
        engine: Any = None

    holder = Holder()
    holder.engine = cf.Engine(fast.VERDICTS, fast.REASONS, CheckResult)
    holder.engine.start([(holder, http_spec(port, timeout=5.0))], 0.0, 0.0, 0.0)
    conn, _ = listener.accept()
    try:
        conn.settimeout(5)
        assert conn.recv(1024).startswith(b"GET /")  # the check is in flight
        ref = weakref.ref(holder)
        del holder
        gc.collect()
        assert ref() is None
        # and collecting the engine closed the check's socket (with a reset: it was reading)
        with pytest.raises(ConnectionResetError):
            conn.recv(1024)
    finally:
        conn.close()
        listener.close()


@pytest.mark.loopback
def test_a_result_that_cannot_be_made_still_ends_the_check(closed_port: int) -> None:
    engine = cf.Engine(fast.VERDICTS, fast.REASONS, CheckResult)
    try:
        token = object()  # no `monitor` attribute
        assert engine.start([(token, http_spec(closed_port))], 0.0, 0.0, 0.0) == [(token, None)]
        assert len(engine) == 0
    finally:
        engine.close()


@pytest.mark.loopback
async def test_the_wrapper_reports_such_a_check_as_failed(closed_port: int) -> None:
    engine = fast.FastEngine(asyncio.get_running_loop(), SystemClock())
    results: list[CheckResult] = []
    arrived = asyncio.Event()

    class NoName:
        def on_done(self, result: CheckResult) -> None:
            results.append(result)
            arrived.set()

    try:
        engine.start([(NoName(), http_spec(closed_port))])  # type: ignore[list-item]
        async with asyncio.timeout(5):
            await arrived.wait()
    finally:
        engine.close()
    [r] = results
    assert (r.monitor, r.verdict, r.reason) == ("?", Verdict.FAIL, Reason.CONNECTION_ERROR)
    assert "could not make the result" in r.detail


@pytest.mark.loopback
async def test_python_run_inside_the_engine_cannot_free_checks_under_it(
    engine_: fast.FastEngine, http_backend: HttpBackend
) -> None:
    """The engine reads a token's ``monitor`` while it walks its checks: closing it or
    cancelling another check from there is refused (RuntimeError), so no freed check is ever
    used (a review found a use-after-free under ASan with such tokens)."""
    refused: list[str] = []

    class Meddling(Token):
        others: list[Token] = []

        @property  # type: ignore[override]
        def monitor(self) -> str:
            for attempt in ("close", "cancel"):
                try:
                    if attempt == "close":
                        engine_.engine.close()
                    else:
                        engine_.engine.cancel(Meddling.others[-1])
                except RuntimeError as exc:
                    refused.append(str(exc))
            return "m"

        @monitor.setter
        def monitor(self, value: str) -> None:
            pass

    tokens = [Meddling() for _ in range(4)]
    Meddling.others = list(tokens)
    engine_.start([(t, http_spec(http_backend.port)) for t in tokens])
    async with asyncio.timeout(5):
        for t in tokens:
            await t.arrived.wait()
    assert all(len(t.results) == 1 for t in tokens)
    assert all(t.results[0].verdict is P for t in tokens)
    assert refused and all("re-entrant" in r for r in refused)
    # still usable afterwards
    plain = Token()
    engine_.start([(plain, http_spec(http_backend.port))])
    async with asyncio.timeout(5):
        await plain.arrived.wait()
    assert plain.results[0].verdict is P
