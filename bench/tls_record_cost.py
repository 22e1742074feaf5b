#!/usr/bin/env python3
"""The floor of what TLS adds to a keep-alive request: OpenSSL's work through Python's
``ssl.SSLObject`` and memory BIOs (what uvloop's TLS protocol calls), no sockets, no loop.

    python3 bench/tls_record_cost.py [ROUND_TRIPS]

A client and a server ``SSLObject`` (TLS 1.3, trustme ECDSA certificate) connected by memory
BIOs exchange the request wrk sends and the response nginx answers; each round trip is one
decrypt and one encrypt on each side. Prints CPU µs per round trip and per side (half):
the server's share is what the proxy pays at least, per request, for the record layer.
"""

from __future__ import annotations

import ssl
import sys
import time

import trustme

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8443\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 13\r\nConnection: keep-alive\r\n\r\nhello, world\n"
)


def main(n: int) -> None:
    ca = trustme.CA()
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side in (client, server):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    client.write(REQUEST)
    record = c_out.read()
    print(server.version(), server.cipher()[0] if server.cipher() else "?")
    for _ in range(3):
        began = time.process_time()
        for _ in range(n):
            s_in.write(record)
            server.read(65536)
            server.write(RESPONSE)
            c_in.write(s_out.read())
            client.read(65536)
            client.write(REQUEST)
            record = c_out.read()
        us = (time.process_time() - began) / n * 1e6
        print(f"{us:.2f} µs per round trip, {us / 2:.2f} µs per side")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
