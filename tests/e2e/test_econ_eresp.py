"""HAProxy's ``econ`` and ``eresp`` as a user sees them: a real ``quiesce run`` and HAProxy 2.6
side by side in front of the same misbehaving back ends (a closed port, a server that closes
without answering, one that sends a malformed status line, one that cuts its response short,
one that never answers; at L4 a closed port, a server that resets, one that closes cleanly),
the same requests through each, then ``show stat`` from both runtime sockets with ``socat``:
every server's and backend's ``econ``/``eresp``/``srv_abrt`` are HAProxy's (a response cut
short after its head and an L4 reset are in both ``eresp`` and ``srv_abrt``), a request no
server could take
(its only server disabled over the runtime socket) in the BACKEND's ``econ`` alone. A refused
connect that a retry saves is ``wretr``, not ``econ`` (HAProxy counts a connect error once the
retries are spent).
"""

from __future__ import annotations

import contextlib
import csv
import io
import shutil
import socket
import socketserver
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_outlier import AUTH, _hash
from tests.support.process import run_quiesce, until

pytestmark = [
    pytest.mark.peers,
    pytest.mark.skipif(shutil.which("socat") is None, reason="needs socat"),
    pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy"),
]

HTTP_KINDS = ("refused", "empty", "junk", "cut", "silent")  # round robin: one request each
TCP_KINDS = ("refused", "reset", "empty")


class _Bad(socketserver.BaseRequestHandler):
    """Reads a request head, then misbehaves as its server's ``kind`` says."""

    def handle(self) -> None:
        kind: str = self.server.kind  # type: ignore[attr-defined]
        sock: socket.socket = self.request
        sock.settimeout(10)
        head = b""
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in head and (chunk := sock.recv(4096)):
                head += chunk
            if kind == "junk":
                sock.sendall(b"HTTP/1.1 2x0 garbage\r\n\r\n")
            elif kind == "cut":
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
            elif kind == "silent":
                sock.recv(1)  # until the proxy gives up and closes
            elif kind == "reset":  # an RST, not a FIN (socketserver would shut down first)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()


@contextlib.contextmanager
def bad_servers(kinds: set[str]) -> Iterator[dict[str, int]]:
    """A listening port for each kind but ``refused`` (a port nothing listens on)."""
    servers = []
    ports = {"refused": free_port()}
    for kind in kinds - {"refused"}:
        srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Bad)
        srv.daemon_threads = True
        srv.kind = kind  # type: ignore[attr-defined]
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        ports[kind] = srv.server_address[1]
    try:
        yield ports
    finally:
        for srv in servers:
            srv.shutdown()
            srv.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


Rows = dict[tuple[str, str], dict[str, str]]


def socat(sock: Path, command: str) -> str:
    return subprocess.run(
        ["socat", "-t", "5", "stdio", f"UNIX-CONNECT:{sock}"],
        input=command + "\n", capture_output=True, text=True, timeout=20, check=True,
    ).stdout  # fmt: skip


def show_stat(sock: Path) -> Rows:
    out = socat(sock, "show stat")
    return {(r["pxname"], r["svname"]): r for r in csv.DictReader(io.StringIO(out[2:]))}


def errors(rows: Rows, pool: str, names: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """(econ, eresp, srv_abrt) of the pool's servers ``names`` and its BACKEND row."""
    fields = ("econ", "eresp", "srv_abrt")
    return {n: tuple(rows[pool, n][f] for f in fields) for n in (*names, "BACKEND")}


def drive(http_port: int, tcp_port: int, none_port: int) -> list[int]:
    """One HTTP request per server (round robin), one L4 connection per server, one request
    to the pool without a server; the HTTP statuses."""
    statuses = []
    for _ in HTTP_KINDS:
        # a connection each: HAProxy closes a kept-alive client's connection without a 502
        # (nor an eresp) when the server closes before answering its next request
        with httpx.Client(timeout=10) as client:
            try:
                statuses.append(client.get(f"http://127.0.0.1:{http_port}/x").status_code)
            except httpx.HTTPError:
                statuses.append(0)  # the cut response
    statuses.append(httpx.get(f"http://127.0.0.1:{none_port}/x", timeout=10).status_code)
    for _ in TCP_KINDS:
        with socket.create_connection(("127.0.0.1", tcp_port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            with contextlib.suppress(OSError):
                while s.recv(4096):
                    pass
    return statuses


def quiesce_config(ports: dict[str, int]) -> str:
    def servers(kinds: tuple[str, ...]) -> str:
        return "".join(f"\n      - {{name: {k}, address: 127.0.0.1:{ports[k]}}}" for k in kinds)

    return f"""
admin:
  listen: 127.0.0.1:0
  runtime_socket: ./quiesce.sock
  users: [{{name: admin, password_hash: "{_hash()}", role: admin}}]
state: {{sqlite: ./state.db}}
metrics: {{haproxy_compatible: true}}
pools:
  web:
    algorithm: round_robin
    retries: 0
    response_timeout: 0.5s
    servers:{servers(HTTP_KINDS)}
  l4:
    algorithm: round_robin
    retries: 0
    servers:{servers(TCP_KINDS)}
  saved:
    algorithm: round_robin
    servers:{servers(("refused", "empty"))}
  none:
    servers:{servers(("empty",))}
services:
  www: {{listen: 127.0.0.1:0, pool: web}}
  raw: {{listen: 127.0.0.1:0, pool: l4, protocol: tcp}}
  retried: {{listen: 127.0.0.1:0, pool: saved, protocol: tcp}}
  nothing: {{listen: 127.0.0.1:0, pool: none}}
"""


def haproxy_config(ports: dict[str, int], sock: Path, http: int, tcp: int, none: int) -> str:
    def servers(kinds: tuple[str, ...]) -> str:
        return "".join(f"    server {k} 127.0.0.1:{ports[k]}\n" for k in kinds)

    return (
        f"global\n    stats socket {sock} mode 600 level admin\n"
        "defaults\n    timeout connect 1s\n    timeout client 5s\n    timeout server 500ms\n"
        "    retries 0\n    balance roundrobin\n"
        f"listen web\n    mode http\n    bind 127.0.0.1:{http}\n{servers(HTTP_KINDS)}"
        f"listen l4\n    mode tcp\n    bind 127.0.0.1:{tcp}\n{servers(TCP_KINDS)}"
        f"listen none\n    mode http\n    bind 127.0.0.1:{none}\n{servers(('empty',))}"
    )


def test_econ_and_eresp_are_haproxys(tmp_path: Path) -> None:
    with bad_servers(set(HTTP_KINDS) | set(TCP_KINDS)) as ports:
        hap_sock, http, tcp, none = tmp_path / "haproxy.sock", free_port(), free_port(), free_port()
        (tmp_path / "haproxy.cfg").write_text(haproxy_config(ports, hap_sock, http, tcp, none))
        hap = subprocess.Popen(
            ["haproxy", "-db", "-f", str(tmp_path / "haproxy.cfg")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        (tmp_path / "quiesce.yaml").write_text(quiesce_config(ports))
        proc, www, api = run_quiesce(tmp_path)
        try:
            until(hap_sock.exists)
            raw = int(proc.wait_for(r"service raw listening on port (\d+)").group(1))
            nothing = int(proc.wait_for(r"service nothing listening on port (\d+)").group(1))
            for sock in (hap_sock, tmp_path / "quiesce.sock"):
                assert socat(sock, "disable server none/empty") == "\n"
            ours = drive(int(www.rsplit(":", 1)[1].strip("/")), raw, nothing)
            theirs = drive(http, tcp, none)
            # one request each server, in turn (HAProxy answers a refused connect 503), then
            # the pool without a server (quiesce: its maintenance page)
            assert ours == [502, 502, 502, 0, 504, 503]
            assert theirs == [503, 502, 502, 0, 504, 503]

            def counted(sock: Path) -> bool:
                rows = show_stat(sock)  # the L4 resets land as their connections close
                return rows["l4", "BACKEND"]["eresp"] == "1"

            until(lambda: counted(hap_sock) and counted(tmp_path / "quiesce.sock"))
            mine, haproxys = show_stat(tmp_path / "quiesce.sock"), show_stat(hap_sock)
            # (econ, eresp, srv_abrt): the body cut short and the L4 reset are aborts
            want_web = {"refused": ("1", "0", "0"), "empty": ("0", "1", "0")}
            want_web |= {"junk": ("0", "1", "0"), "cut": ("0", "1", "1")}
            want_web |= {"silent": ("0", "1", "0"), "BACKEND": ("1", "4", "1")}
            want_l4 = {"refused": ("1", "0", "0"), "reset": ("0", "1", "1")}
            want_l4 |= {"empty": ("0", "0", "0"), "BACKEND": ("1", "1", "1")}
            for rows in (haproxys, mine):
                assert errors(rows, "web", HTTP_KINDS) == want_web
                assert errors(rows, "l4", TCP_KINDS) == want_l4
                assert errors(rows, "none", ("empty",)) == {
                    "empty": ("0", "0", "0"),
                    "BACKEND": ("1", "0", "0"),
                }

            # the same counters in /metrics, under quiesce's and HAProxy's names
            admin = api.split("/api/")[0]
            with httpx.Client(auth=AUTH, timeout=10) as client:
                metrics = client.get(f"{admin}/metrics").text
            for line in (
                'quiesce_server_connection_errors_total{pool="web",server="refused"} 1.0',
                'quiesce_server_response_errors_total{pool="web",server="junk"} 1.0',
                'quiesce_server_response_errors_total{pool="l4",server="empty"} 0.0',
                'haproxy_backend_connection_errors_total{proxy="web"} 1.0',
                'haproxy_backend_response_errors_total{proxy="web"} 4.0',
                'haproxy_server_response_errors_total{proxy="l4",server="reset"} 1.0',
                'haproxy_backend_connection_errors_total{proxy="none"} 1.0',
                'haproxy_server_connection_errors_total{proxy="none",server="empty"} 0.0',
                'quiesce_server_aborts_total{pool="web",server="cut"} 1.0',
                'quiesce_server_aborts_total{pool="web",server="silent"} 0.0',
                'haproxy_server_server_aborts_total{proxy="web",server="cut"} 1.0',
                'haproxy_backend_server_aborts_total{proxy="web"} 1.0',
                'haproxy_server_server_aborts_total{proxy="l4",server="reset"} 1.0',
                'haproxy_backend_server_aborts_total{proxy="l4"} 1.0',
            ):
                assert line in metrics, line

            # a refused connect retried on the next server (the default: once, elsewhere)
            # is a retry of the refusing server's, not a connection error
            port = int(proc.wait_for(r"service retried listening on port (\d+)").group(1))
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                deadline = time.monotonic() + 10
                while s.recv(4096) and time.monotonic() < deadline:
                    pass
            rows = show_stat(tmp_path / "quiesce.sock")
            refused = rows["saved", "refused"]
            assert (refused["wretr"], refused["econ"], refused["eresp"]) == ("1", "0", "0")
            assert rows["saved", "BACKEND"]["econ"] == "0"
        finally:
            proc.stop()
            hap.terminate()
            hap.wait(10)
