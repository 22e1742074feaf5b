"""The frames a client sends, looked at before the codec (libnghttp2, ``ngh2``) parses them:
the defences
against floods, and the client's GOAWAY (sans-IO: bytes and a clock reading in, bytes and a
verdict out).

Theory of operation
-------------------
:class:`Guard` reads the 9-byte header of every frame (length, type, flags, stream id) and
lets the bytes through unchanged, with two exceptions:

* a **GOAWAY** frame is taken out of the stream and recorded (``goaways``): ``ngh2`` refuses
  every read after a client's GOAWAY (the connection "is terminating"), while the streams
  still in flight, which a GOAWAY is meant to let finish, may still send DATA and their
  WINDOW_UPDATEs must still be read.
  The shell (quiesce.dataplane.h2.conn) reads ``goaways`` and finishes its streams; it writes
  its own GOAWAY frames too (:func:`goaway_frame`);
* a frame header split across two reads is held back until it is whole (at most 8 bytes),
  so a GOAWAY is never half passed on.

It refuses, raising :class:`Broken` (answered with GOAWAY and its ``code``, then closed),
as soon as a frame's 9-byte header is read, before its payload is buffered anywhere:

* a frame longer than ``max_frame``, the SETTINGS_MAX_FRAME_SIZE the proxy advertises
  (16,384, the default): ``FRAME_SIZE_ERROR`` (RFC 9113 §4.2). Without it a header announcing
  16 MiB made the pure-Python ``h2`` buffer all of it before looking (libnghttp2 checks it
  too; the check here costs 0.015 µs a frame and names the reason in the log), and bytes
  that are not HTTP/2 at all read as such a header;
* a first frame after the preface that is not SETTINGS: ``PROTOCOL_ERROR`` (§3.4);
* a malformed GOAWAY: on a stream other than 0, ``PROTOCOL_ERROR`` (§6.8); shorter than its
  8 bytes of last stream id and error code, ``FRAME_SIZE_ERROR`` (§4.2). (It was taken out
  and dropped without a word: libnghttp2, which would refuse it, never sees it.)

It counts, and raises :class:`Calm` (answered with GOAWAY ``ENHANCE_YOUR_CALM``) when a client
goes past a limit:

* **rapid reset** (CVE-2023-44487): each RST_STREAM a client sends takes a token from a
  bucket of ``reset_burst`` that refills at ``reset_rate`` a second (nghttp2's defaults:
  1000 and 33/s): opening streams and cancelling them at once costs the client nothing and
  the proxy (and its servers) a request each;
* **CONTINUATION flood** (2024): the bytes of one header block, HEADERS and its
  CONTINUATIONs, may not pass ``max_block`` (the header list size limit; the block is
  compressed, so never larger for an honest client) nor ``max_block_frames`` frames
  (libnghttp2's own cap is set to the same number: session.py);
* **SETTINGS/PING floods** (CVE-2019-9512/9515), and empty DATA and PRIORITY frames
  (CVE-2019-9518): each takes a token from a second bucket (``control_burst``,
  ``control_rate``): every SETTINGS and PING is answered, and a client that does not read
  its answers would fill the proxy's write buffer.

The cost is one header parse per frame (a few slices and int.from_bytes) in Python; with
quiesce._h2fast built, its ``frames`` walks over the headers of the frames passed without a
word (a request's HEADERS, DATA, WINDOW_UPDATE, the ACKs) in C, and Python reads only the
frames above (counted, refused, taken out) and a header cut by the read's end: one C call a
read of h2load's ~7 requests instead of ~120 Python opcodes a request. The Python walk is its
twin (``QUIESCE_PURE=1``), compared on random frame streams cut at random points
(tests/dataplane/test_h2_guard_scan.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from quiesce import _accel
from quiesce.core.errors import QuiesceError

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS = 0, 1, 2, 3, 4
PING, GOAWAY, CONTINUATION = 6, 7, 9
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4

NO_ERROR = 0
PROTOCOL_ERROR = 1
FRAME_SIZE_ERROR = 6
ENHANCE_YOUR_CALM = 11
MAX_FRAME = 16384  # SETTINGS_MAX_FRAME_SIZE's initial value (RFC 9113 §6.5.2)
MAX_STREAM_ID = 2**31 - 1

# quiesce._h2fast's frames (the walk over the frames passed without a word, in C), or None:
# then Guard.feed reads every header in Python (tests switch it: tests/support/paths.py)
_fast_scan = None if _accel.h2fast is None else _accel.h2fast.frames


class Broken(QuiesceError):
    """A client broke the framing: answered with GOAWAY ``code``, then closed."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Calm(QuiesceError):
    """A client went past a limit: answered with GOAWAY ENHANCE_YOUR_CALM, then closed."""


@dataclass(slots=True, frozen=True)
class Limits:
    reset_burst: int = 1000
    reset_rate: float = 33.0
    control_burst: int = 200
    control_rate: float = 20.0
    max_block: int = 65536
    max_block_frames: int = 16
    max_frame: int = MAX_FRAME  # the SETTINGS_MAX_FRAME_SIZE advertised


class _Bucket:
    __slots__ = ("at", "burst", "rate", "tokens")

    def __init__(self, burst: int, rate: float, now: float) -> None:
        self.burst = burst
        self.rate = rate
        self.tokens = float(burst)
        self.at = now

    def take(self, now: float) -> bool:
        """One token (False: none left)."""
        tokens = self.tokens + (now - self.at) * self.rate
        self.at = now
        if tokens > self.burst:
            tokens = self.burst
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True


class Guard:
    """One connection's inbound frames (see the module docstring)."""

    __slots__ = (
        "block",
        "block_frames",
        "control",
        "first",
        "goaways",
        "held",
        "left",
        "limits",
        "resets",
        "skip",
        "take_buf",
        "taking",
    )

    def __init__(self, limits: Limits, now: float, preface: bool = True) -> None:
        self.limits = limits
        self.left = len(PREFACE) if preface else 0  # bytes of the current frame still to pass
        self.first = preface  # the next frame is the first after the preface: SETTINGS
        self.skip = 0  # bytes of a GOAWAY still to take out
        self.taking = False
        self.take_buf = b""
        self.held = b""  # an incomplete frame header
        self.block = -1  # bytes of an unfinished header block (-1: none)
        self.block_frames = 0
        self.resets = _Bucket(limits.reset_burst, limits.reset_rate, now)
        self.control = _Bucket(limits.control_burst, limits.control_rate, now)
        self.goaways: list[tuple[int, int]] = []  # (last stream id, error code) received

    def feed(self, data: bytes, now: float) -> bytes:
        """The bytes to hand to the codec; raises :class:`Calm` past a limit."""
        scan = _fast_scan
        if scan is not None and not (self.left or self.held or self.skip or self.first):
            # (the usual read: whole frames, passed without a word; else the walk below)
            n = len(data)
            i = scan(data, 0, self.limits.max_frame)
            if i >= n:
                self.left = i - n
                return data
        if self.held:
            data = self.held + data
            self.held = b""
        n = len(data)
        i = 0
        max_frame = self.limits.max_frame
        out: list[bytes] | None = None  # set once something is taken out
        start = 0  # the first byte not yet passed or taken
        while i < n:
            left = self.left
            if left:
                step = left if left <= n - i else n - i
                self.left = left - step
                i += step
                continue
            skip = self.skip
            if skip:
                if out is None:
                    out = []
                out.append(data[start:i])
                step = skip if skip <= n - i else n - i
                self.take_buf += data[i : i + step]
                self.skip = skip - step
                i += step
                if not self.skip:
                    self._goaway(self.take_buf)
                    self.take_buf = b""
                start = i
                continue
            if scan is not None and not self.first:
                i = scan(data, i, max_frame)  # (over the frames passed without a word)
                if i >= n:
                    self.left = i - n  # (what of the last frame the next read carries)
                    break
            if n - i < 9:
                self.held = data[i:]
                n = i
                break
            length = int.from_bytes(data[i : i + 3], "big")
            kind = data[i + 3]
            flags = data[i + 4]
            if self.first:
                self.first = False
                if kind != SETTINGS:
                    raise Broken(PROTOCOL_ERROR, "the first frame after the preface: not SETTINGS")
            if length > max_frame:
                raise Broken(
                    FRAME_SIZE_ERROR,
                    f"a frame of {length} bytes (SETTINGS_MAX_FRAME_SIZE {max_frame})",
                )
            if kind == GOAWAY:
                if int.from_bytes(data[i + 5 : i + 9], "big") & MAX_STREAM_ID:
                    raise Broken(PROTOCOL_ERROR, "a GOAWAY on a stream other than 0")
                if length < 8:
                    raise Broken(FRAME_SIZE_ERROR, f"a GOAWAY of {length} bytes (at least 8)")
                if out is None:
                    out = []
                out.append(data[start:i])
                i += 9
                self.skip = length
                start = i
                continue
            self._count(kind, flags, length, now)
            self.left = length
            i += 9
        if out is None:
            return data[:n] if n < len(data) else data
        out.append(data[start:n])
        return b"".join(out)

    def _count(self, kind: int, flags: int, length: int, now: float) -> None:
        limits = self.limits
        if kind == HEADERS:
            if not flags & END_HEADERS:
                self.block = length
                self.block_frames = 1
            elif not length:
                self._control(now, "empty HEADERS")
        elif kind == CONTINUATION:
            if self.block >= 0:
                self.block += length
                self.block_frames += 1
                if self.block > limits.max_block or self.block_frames > limits.max_block_frames:
                    raise Calm(
                        f"CONTINUATION flood: a header block of {self.block_frames} frames, "
                        f"{self.block} bytes"
                    )
                if flags & END_HEADERS:
                    self.block = -1
        elif kind == RST_STREAM:
            if not self.resets.take(now):
                raise Calm("rapid reset: more RST_STREAM than the reset rate allows")
        elif kind in (SETTINGS, PING):
            if not flags & ACK:
                self._control(now, "SETTINGS/PING flood")
        elif kind == PRIORITY or (kind == DATA and not length and not flags & END_STREAM):
            self._control(now, "empty frame flood")

    def _control(self, now: float, what: str) -> None:
        if not self.control.take(now):
            raise Calm(what)

    def _goaway(self, payload: bytes) -> None:
        last = int.from_bytes(payload[:4], "big") & MAX_STREAM_ID
        self.goaways.append((last, int.from_bytes(payload[4:8], "big")))


def goaway_frame(last_stream_id: int, code: int = NO_ERROR, debug: bytes = b"") -> bytes:
    """A GOAWAY frame (RFC 9113 §6.8), written without the codec's connection state: the
    shell decides what follows it (the streams in flight finish, a later one is refused
    REFUSED_STREAM, the close)."""
    payload = (last_stream_id & MAX_STREAM_ID).to_bytes(4, "big") + code.to_bytes(4, "big")
    payload += debug
    return len(payload).to_bytes(3, "big") + bytes((GOAWAY, 0)) + b"\0\0\0\0" + payload
