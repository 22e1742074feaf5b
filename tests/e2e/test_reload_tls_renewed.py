"""A certificate renewed on disk and picked up by a reload is reported as a change (review 14
R8: ``reloaded: 0 change(s)``, ``"changes": []``, no event, although new handshakes got the new
certificate). A real ``quiesce run`` terminating TLS, the files replaced in place, ``quiesce
reload``, a handshake with ``ssl`` before and after."""

from __future__ import annotations

import signal
import socket
import ssl
from pathlib import Path

import pytest

from tests.e2e.test_reload import _hash, start
from tests.support.backend import Backend, serve_in_thread
from tests.support.certs import Certs

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def config(port: int, cert: Path, key: Path) -> str:
    return f"""
admin:
  listen: 127.0.0.1:0
  users: [{{name: admin, password_hash: "{_hash()}", role: admin}}]
pools:
  web:
    servers:
      - {{name: w1, address: 127.0.0.1:{port}}}
services:
  www:
    listen: 127.0.0.1:0
    pool: web
    tls: {{certificates: [{{cert: "{cert}", key: "{key}"}}]}}
"""


def served(port: int, ca: Path) -> bytes:
    """The certificate a new handshake gets (DER)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def test_a_renewed_certificate_is_a_change_of_the_reload(tmp_path: Path) -> None:
    certs = Certs(tmp_path)
    cert, key = certs.leaf("site", "localhost")
    with serve_in_thread(Backend("b1")) as (b1,):
        q = start(tmp_path, config(b1.port, cert, key))
        try:
            first = served(q.port, certs.ca_file)
            r = q.cli("reload")  # nothing changed: nothing said
            assert r.returncode == 0 and "reloaded: 0 change(s)" in r.stdout, r
            # renewed in place, as certbot or an ACME client does
            new_cert, new_key = certs.leaf("renewed", "localhost")
            cert.write_bytes(new_cert.read_bytes())
            key.write_bytes(new_key.read_bytes())
            r = q.cli("reload")
            assert r.returncode == 0, r
            assert "reloaded: 2 change(s)" in r.stdout, r.stdout
            field = "services.www.tls.certificates[0]"
            assert f"{field}.cert: {cert} changed on disk, re-read (new handshakes)" in r.stdout
            assert f"{field}.key: {key} changed on disk" in r.stdout, r.stdout
            assert served(q.port, certs.ca_file) == new_cert_der(new_cert) != first
            _, events = q.api("GET", "/api/v1/events?kind=config_change")
            assert [e["to"] for e in events] == ["tls_renewed", "tls_renewed"], events
            assert events[0]["detail"]["target"] == field, events
            r = q.cli("reload")  # the renewal is said once
            assert r.returncode == 0 and "reloaded: 0 change(s)" in r.stdout, r
        finally:
            q.proc.stop(signal.SIGTERM)


def new_cert_der(pem: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(
        pem.read_text().split("-----END CERTIFICATE-----")[0] + ("-----END CERTIFICATE-----\n")
    )
