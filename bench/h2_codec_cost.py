"""The HTTP/2 codec's cost per request, alone: python-hyper ``h2`` (configured as
quiesce.dataplane.h2.session configured it, header validation off) against ``ngh2``
(libnghttp2), server side, on the frames of h2load's requests (issue 16, benchmark (c)).

    python3 bench/h2_codec_cost.py [--rounds 5] [--batch 10]

One connection per codec, set up once (preface and SETTINGS outside the timer). Per request:
the client's HEADERS frame (h2load's five fields, END_STREAM, HPACK-indexed after the first
batch) read, its RequestReceived event taken, a response of ``:status 200`` and three fields
plus a 612-byte body (nginx's index page) with END_STREAM written, and the frames collected.
``--batch`` requests go in one read (h2load -m10: ten streams in flight a connection), their
answers in one write. Prints µs per request for each codec (the best of ``--rounds`` timings
of 2,000 batches) and their ratio (BENCHMARKS.md, "HTTP/2").
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

import h2.config
import h2.connection
import h2.events
import hpack
import ngh2

from quiesce.dataplane.h2.guard import PREFACE

REQUEST = [
    (b":method", b"GET"),
    (b":path", b"/"),
    (b":scheme", b"http"),
    (b":authority", b"127.0.0.1:8080"),
    (b"user-agent", b"h2load nghttp2/1.52.0"),
]
RESPONSE = [
    (b":status", b"200"),
    (b"server", b"nginx/1.22.1"),
    (b"content-type", b"text/html"),
    (b"content-length", b"612"),
]
BODY = b"x" * 612


def frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + sid.to_bytes(4, "big") + payload


class Client:
    """The bytes of h2load's side: the preface with SETTINGS (every window open), then
    batches of HEADERS frames (one HPACK encoder: indexed as a real client's are) and a
    WINDOW_UPDATE giving back the connection window the answers took."""

    def __init__(self) -> None:
        self.encoder = hpack.Encoder()
        self.sid = 1
        settings = frame(4, 0, 0, (4).to_bytes(2, "big") + (2**31 - 1).to_bytes(4, "big"))
        self.opening = PREFACE + settings + frame(8, 0, 0, (2**30 - 65535).to_bytes(4, "big"))

    def batch(self, n: int) -> bytes:
        out = []
        for _ in range(n):
            out.append(frame(1, 0x5, self.sid, self.encoder.encode(REQUEST)))
            self.sid += 2
        out.append(frame(8, 0, 0, (n * len(BODY)).to_bytes(4, "big")))
        return b"".join(out)


def h2_server(client: Client) -> Callable[[bytes], bytes]:
    config = h2.config.H2Configuration(
        client_side=False,
        header_encoding=None,
        validate_inbound_headers=False,
        normalize_inbound_headers=False,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
    )
    s = h2.connection.H2Connection(config)
    s.initiate_connection()
    s.receive_data(client.opening)
    s.data_to_send()

    def serve(data: bytes) -> bytes:
        for e in s.receive_data(data):
            if type(e) is h2.events.RequestReceived:
                s.send_headers(e.stream_id, RESPONSE)
                s.send_data(e.stream_id, BODY, end_stream=True)
        return s.data_to_send()

    return serve


def ngh2_server(client: Client) -> Callable[[bytes], bytes]:
    s = ngh2.Connection(ngh2.Role.SERVER, ngh2.Configuration(auto_window_update=False))
    s.initiate_connection({ngh2.Setting.MAX_CONCURRENT_STREAMS: 100})
    s.receive_data(client.opening)
    s.events()
    s.data_to_send()

    def serve(data: bytes) -> bytes:
        s.receive_data(data)
        for e in s.events():
            if type(e) is ngh2.RequestReceived:
                s.send_response(e.stream_id, RESPONSE)
                s.send_data(e.stream_id, BODY, end_stream=True)
        return s.data_to_send()

    return serve


def cost(make: Callable[[Client], Callable[[bytes], bytes]], batch: int, rounds: int) -> float:
    """µs per request: the best of ``rounds`` timings of 2,000 batches (the client's bytes
    made beforehand, outside the timer)."""
    client = Client()
    serve = make(client)
    best = float("inf")
    for _ in range(rounds):
        reads = iter([client.batch(batch) for _ in range(2000)])
        t = timeit.timeit(lambda r=reads: serve(next(r)), number=2000)  # type: ignore[misc]
        best = min(best, t)
    return best / (2000 * batch) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=10)
    args = ap.parse_args()
    a = cost(h2_server, args.batch, args.rounds)
    b = cost(ngh2_server, args.batch, args.rounds)
    print(f"h2 {h2.__version__} (validation off): {a:.2f} µs per request")
    print(f"ngh2 {ngh2.__version__} (libnghttp2): {b:.2f} µs per request")
    print(f"ratio: {a / b:.1f}x (batch {args.batch}, best of {args.rounds})")


if __name__ == "__main__":
    main()
