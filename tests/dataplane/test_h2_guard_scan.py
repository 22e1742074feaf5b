"""quiesce._h2fast.frames, the C walk over the frames the HTTP/2 guard passes without a word,
against the guard's Python walk (quiesce.dataplane.h2.guard.Guard.feed with ``_fast_scan``
None, as under ``QUIESCE_PURE=1``): on random frame streams cut at random points into reads,
the same bytes handed on, the same GOAWAYs taken out, the same refusal (class, code, reason)
at the same read, the same state after each read (buckets, header blocks, what is held)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quiesce import _accel
from quiesce.dataplane.h2 import guard as guard_mod
from quiesce.dataplane.h2.guard import PREFACE, Broken, Calm, Guard, Limits

pytestmark = [
    pytest.mark.skipif(_accel.h2fast is None, reason="C accelerator not built"),
    pytest.mark.one_path,
]

C_SCAN: Callable[[bytes | bytearray, int, int], int] | None = (
    None if _accel.h2fast is None else _accel.h2fast.frames
)


def frame(kind: int, flags: int = 0, payload: bytes = b"", sid: int = 1, length: int = -1) -> bytes:
    n = len(payload) if length < 0 else length
    return n.to_bytes(3, "big") + bytes((kind, flags)) + sid.to_bytes(4, "big") + payload


@contextmanager
def scan(fn: Callable[[bytes, int, int], int] | None) -> Iterator[None]:
    saved = guard_mod._fast_scan
    guard_mod._fast_scan = fn
    try:
        yield
    finally:
        guard_mod._fast_scan = saved


def state(g: Guard) -> tuple[Any, ...]:
    return (
        g.left,
        g.first,
        g.skip,
        g.take_buf,
        g.held,
        g.block,
        g.block_frames,
        list(g.goaways),
        (g.resets.tokens, g.resets.at),
        (g.control.tokens, g.control.at),
    )


def run(
    fn: Callable[[bytes, int, int], int] | None, limits: Limits, preface: bool, reads: list[bytes]
) -> list[Any]:
    """What the guard does with each read: (bytes out, state) or the refusal, then stops."""
    seen: list[Any] = []
    with scan(fn):
        g = Guard(limits, 0.0, preface=preface)
        for k, data in enumerate(reads):
            try:
                out = g.feed(data, k * 0.01)
            except (Broken, Calm) as exc:
                seen.append((type(exc).__name__, getattr(exc, "code", None), str(exc)))
                break
            seen.append((out, state(g)))
    return seen


# h2load's read: seven requests' HEADERS (END_HEADERS | END_STREAM) and a WINDOW_UPDATE
H2LOAD = b"".join(frame(1, 0x5, b"h" * 20, sid) for sid in range(1, 15, 2)) + frame(
    8, 0, b"\0\0\x10\0", 0
)

STOPS = [  # (the frame, the C walk stops at it)
    (frame(0, 0, b""), True),  # empty DATA without END_STREAM: counted
    (frame(0, 0x1, b""), False),
    (frame(0, 0, b"x"), False),
    (frame(1, 0x4, b""), True),  # empty HEADERS: counted
    (frame(1, 0x1, b"h"), True),  # no END_HEADERS: a header block begins
    (frame(1, 0x5, b"h"), False),
    (frame(2, 0, b"p" * 5), True),
    (frame(3, 0, b"\0" * 4), True),
    (frame(4, 0, b""), True),
    (frame(4, 0x1, b""), False),
    (frame(6, 0, b"p" * 8), True),
    (frame(6, 0x1, b"p" * 8), False),
    (frame(7, 0, b"\0" * 8, 0), True),
    (frame(8, 0, b"\0\0\0\1"), False),
    (frame(9, 0x4, b"c"), True),
    (frame(0xEE, 0xFF, b"?"), False),  # unknown types are passed (RFC 9113 §5.5)
    (frame(0, 0, b"", length=16385), True),  # past SETTINGS_MAX_FRAME_SIZE
]


@pytest.mark.parametrize(("one", "stops"), STOPS)
def test_the_c_walk_stops_at_the_frames_the_guard_acts_on(one: bytes, stops: bool) -> None:
    assert C_SCAN is not None
    data = H2LOAD + one + H2LOAD
    assert C_SCAN(data, 0, 16384) == (len(H2LOAD) if stops else len(data))
    assert C_SCAN(data, len(H2LOAD), 16384) == (len(H2LOAD) if stops else len(data))


def test_the_c_walk_ends_at_a_cut() -> None:
    assert C_SCAN is not None
    assert C_SCAN(H2LOAD, 0, 16384) == len(H2LOAD)
    starts = [0]
    while starts[-1] < len(H2LOAD):
        starts.append(starts[-1] + 9 + int.from_bytes(H2LOAD[starts[-1] : starts[-1] + 3], "big"))
    for cut in range(len(H2LOAD)):
        at = max(b for b in starts if b <= cut)  # the frame the cut falls in
        # its header cut: it stops there (the guard holds it); else past the cut, at its end
        want = at if cut - at < 9 else starts[starts.index(at) + 1]
        assert C_SCAN(H2LOAD[:cut], 0, 16384) == want
    assert C_SCAN(bytearray(H2LOAD), 0, 16384) == len(H2LOAD)  # any buffer
    assert C_SCAN(b"", 0, 16384) == 0


@pytest.mark.parametrize("preface", [True, False])
def test_h2loads_reads_alike(preface: bool) -> None:
    settings_frame = frame(4, 0, b"\0\x03\0\0\0\x64", 0)
    start = (PREFACE if preface else b"") + settings_frame
    stream = start + H2LOAD * 3 + frame(4, 0x1, b"", 0) + H2LOAD
    for cut in range(1, len(stream), 7):
        reads = [stream[:cut], stream[cut:]]
        assert run(C_SCAN, Limits(), preface, reads) == run(None, Limits(), preface, reads)


KINDS = st.sampled_from([0, 0, 1, 1, 1, 2, 3, 4, 6, 7, 8, 8, 9, 9, 5, 0x0A, 0xEE])
FLAGS = st.sampled_from([0, 0x1, 0x4, 0x5, 0x8, 0x20, 0xFF])


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    kind = draw(KINDS)
    flags = draw(FLAGS)
    sid = draw(st.sampled_from([0, 1, 3, 0x80000000, 0x80000001]))
    payload = draw(st.binary(max_size=24))
    if kind == 7 and draw(st.booleans()):  # a well-formed GOAWAY
        sid = draw(st.sampled_from([0, 0x80000000]))
        payload = draw(st.binary(min_size=8, max_size=20))
    length = draw(st.sampled_from([-1] * 10 + [41, 0x10000]))  # past max_frame
    return frame(kind, flags, payload, sid, length)


@st.composite
def streams(draw: st.DrawFn) -> tuple[bool, bytes, list[int]]:
    preface = draw(st.booleans())
    first = frame(4, 0, b"", 0) if draw(st.integers(0, 9)) else draw(frames())
    body = b"".join(draw(st.lists(frames(), max_size=40)))
    data = (PREFACE if preface else b"") + first + body
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    return preface, data, cuts


LIMITS = Limits(
    reset_burst=4,
    reset_rate=50.0,
    control_burst=6,
    control_rate=100.0,
    max_block=60,
    max_block_frames=3,
    max_frame=40,
)


@settings(max_examples=600, deadline=None)
@given(streams())
def test_c_and_python_walks_alike_on_random_streams(case: tuple[bool, bytes, list[int]]) -> None:
    preface, data, cuts = case
    bounds = [0, *cuts, len(data)]
    reads = [data[a:b] for a, b in itertools.pairwise(bounds)]
    assert run(C_SCAN, LIMITS, preface, reads) == run(None, LIMITS, preface, reads)
