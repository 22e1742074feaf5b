"""TLS with real clients (issue 16, items 1, 2 and 6): curl (``--cacert``, ``--cert``),
``openssl s_client -servername … -alpn …``; TCP services terminating TLS, and routing on the
ClientHello's server name without terminating it."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from pathlib import Path
from typing import Any

import pytest

from tests.dataplane.backend import Backend
from tests.dataplane.conftest import curl, make_config, start_proxy
from tests.support.certs import Certs

pytestmark = pytest.mark.peers


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    c = Certs(tmp_path)
    c.leaf("a", "a.example")
    c.leaf("b", "b.example")
    c.leaf("client", "client.example", common_name="alice")
    c.leaf("web", "web.example")
    c.leaf("api", "api.example")
    return c


def tls_service(**extra: Any) -> dict[str, Any]:
    certificates = [{"cert": "a.pem", "key": "a.key"}, {"cert": "b.pem", "key": "b.key"}]
    return {"tls": {"certificates": certificates, **extra}}


def resolve(name: str, port: int) -> list[str]:
    return ["--resolve", f"{name}:{port}:127.0.0.1", f"https://{name}:{port}"]


async def s_client(port: int, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "openssl",
        "s_client",
        "-connect",
        f"127.0.0.1:{port}",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return out.decode(errors="replace")


async def test_curl_https_with_sni_and_a_client_certificate(certs: Certs, tmp_path: Path) -> None:
    async with Backend("a") as backend:
        service = tls_service(client_ca="ca.pem", verify="required")
        async with start_proxy(
            make_config([backend.address], service=service), base_dir=tmp_path
        ) as p:
            ca = ["--cacert", str(certs.ca_file)]
            me = ["--cert", str(tmp_path / "client.pem"), "--key", str(tmp_path / "client.key")]
            r = await curl(
                *ca,
                *me,
                *resolve("b.example", p.port)[:2],
                resolve("b.example", p.port)[2] + "/headers",
                "-H",
                "X-Forwarded-Client-Cert: forged",
            )
            assert r.code == 0, r.stderr
            assert b'"x-forwarded-proto": "https"' in r.stdout
            assert b'"x-forwarded-client-cert": "Subject=\\"CN=alice,' in r.stdout
            assert b"forged" not in r.stdout
            # no client certificate: the handshake is refused (curl: SSL error or reset)
            r = await curl(*ca, *resolve("a.example", p.port))
            assert r.code != 0 and backend.paths == ["/headers"]


async def test_openssl_s_client_sees_sni_and_alpn(certs: Certs, tmp_path: Path) -> None:
    async with Backend("a") as backend:
        raw = make_config([backend.address], service=tls_service())
        async with start_proxy(raw, base_dir=tmp_path) as p:
            ca = ["-CAfile", str(certs.ca_file)]
            out = await s_client(
                p.port,
                *ca,
                "-servername",
                "b.example",
                "-verify_hostname",
                "b.example",
                "-alpn",
                "h2,http/1.1",
            )
            assert "ALPN protocol: http/1.1" in out
            assert "Verify return code: 0 (ok)" in out
            out = await s_client(
                p.port,
                *ca,
                "-servername",
                "a.example",
                "-verify_hostname",
                "a.example",
                "-alpn",
                "h2",
            )
            assert "No ALPN negotiated" in out and "Verify return code: 0 (ok)" in out
            # an unknown name gets the default (first) certificate
            out = await s_client(
                p.port, *ca, "-servername", "nobody.example", "-verify_hostname", "a.example"
            )
            assert "Verify return code: 0 (ok)" in out
            out = await s_client(p.port, *ca, "-tls1_1")  # below min_version
            assert "Cipher is (NONE)" in out or "alert" in out
            assert p.service.stats.tls_failed >= 1


async def test_curl_plain_http_to_the_tls_port_gets_a_400(certs: Certs, tmp_path: Path) -> None:
    async with Backend("a") as backend:
        raw = make_config([backend.address], service=tls_service())
        async with start_proxy(raw, base_dir=tmp_path) as p:
            r = await curl("-w", "%{http_code}", f"http://127.0.0.1:{p.port}/")
            assert r.stdout.endswith(b"400") and b"plain HTTP request" in r.stdout
            r = await curl("--cacert", str(certs.ca_file), *resolve("a.example", p.port))
            assert r.code == 0 and r.stdout == b"hello from a\n"


async def test_a_tcp_service_terminates_tls(certs: Certs, tmp_path: Path) -> None:
    async with Backend("a") as backend:
        raw = make_config([backend.address], protocol="tcp", service=tls_service())
        async with start_proxy(raw, base_dir=tmp_path) as p:
            r = await curl("--cacert", str(certs.ca_file), *resolve("a.example", p.port))
            assert r.code == 0 and r.stdout == b"hello from a\n"


def backend_tls(tmp_path: Path, stem: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / f"{stem}.pem", tmp_path / f"{stem}.key")
    return ctx


async def test_a_tcp_service_routes_on_sni_without_terminating(
    certs: Certs, tmp_path: Path
) -> None:
    web_tls, api_tls = backend_tls(tmp_path, "web"), backend_tls(tmp_path, "api")
    async with Backend("web", tls=web_tls) as web, Backend("api", tls=api_tls) as api:
        rules = [{"if": {"sni": ["api.example", "*.api.example"]}, "then": {"pool": "api"}}]
        raw = make_config(
            [web.address],
            protocol="tcp",
            service={"rules": rules},
            extra_pools={"api": {"servers": [{"name": "api1", "address": api.address}]}},
        )
        async with start_proxy(raw, base_dir=tmp_path) as p:
            ca = ["--cacert", str(certs.ca_file)]
            r = await curl(*ca, *resolve("api.example", p.port))
            assert r.code == 0, r.stderr
            assert r.stdout == b"hello from api\n"  # the back end's own certificate verified
            r = await curl(*ca, *resolve("web.example", p.port))
            assert r.code == 0 and r.stdout == b"hello from web\n"
            # no TLS at all: routed with no name, to the default pool (which speaks TLS)
            r = await curl(f"http://127.0.0.1:{p.port}/")
            assert r.code != 0
            assert len(web.requests) == 1 and len(api.requests) == 1


async def test_app_reload_rereads_the_certificates_and_refuses_a_broken_key(
    certs: Certs, tmp_path: Path
) -> None:
    from quiesce.app import App
    from quiesce.config.loader import ConfigError, load_config

    async with Backend("a") as backend:
        path = tmp_path / "quiesce.yaml"
        path.write_text(
            f"""
admin: {{listen: 127.0.0.1:0}}
state: {{sqlite: null}}
pools:
  web:
    servers: [{{name: s1, address: "{backend.address}"}}]
services:
  www:
    listen: 127.0.0.1:0
    pool: web
    tls: {{certificates: [{{cert: a.pem, key: a.key}}]}}
"""
        )
        app = App(load_config(path), tmp_path, config_path=path)
        await app.start()
        try:
            port = app.services["www"].port
            ca = ["--cacert", str(certs.ca_file)]
            assert (await curl(*ca, *resolve("a.example", port))).stdout == b"hello from a\n"
            (tmp_path / "renewed").mkdir()
            renewed = Certs(tmp_path / "renewed")
            cert, key = renewed.leaf("a", "a.example")
            (tmp_path / "a.pem").write_bytes(cert.read_bytes())
            (tmp_path / "a.key").write_bytes(key.read_bytes())
            await app.reload("test")  # the file's text did not change: the files are re-read
            assert (await curl(*ca, *resolve("a.example", port))).code != 0
            new_ca = ["--cacert", str(renewed.ca_file)]
            assert (await curl(*new_ca, *resolve("a.example", port))).code == 0
            # a key that does not match: refused, naming the field; the renewed pair serves on
            (tmp_path / "a.key").write_bytes((tmp_path / "b.key").read_bytes())
            with pytest.raises(ConfigError) as bad:
                await app.reload("test")
            assert bad.value.problems == [
                "services.www.tls.certificates[0]: the key 'a.key' does not match the "
                "certificate 'a.pem'"
            ]
            assert (await curl(*new_ca, *resolve("a.example", port))).code == 0
            # an expired certificate: applied (clients decide), with a warning naming it
            past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
            cert, key = renewed.leaf("old", "a.example", not_after=past)
            (tmp_path / "a.pem").write_bytes(cert.read_bytes())
            (tmp_path / "a.key").write_bytes(key.read_bytes())
            plan = await app.reload("test")
            assert any(
                w.startswith("services.www.tls.certificates[0].cert: 'a.pem' expired on ")
                for w in plan.warnings
            ), plan.warnings
        finally:
            await app.stop(1.0)


async def test_a_tcp_service_terminating_tls_routes_on_the_negotiated_name(
    certs: Certs, tmp_path: Path
) -> None:
    async with Backend("web") as web, Backend("api") as api:
        rules = [{"if": {"sni": "b.example"}, "then": {"pool": "api"}}]
        raw = make_config(
            [web.address],
            protocol="tcp",
            service={**tls_service(), "rules": rules},
            extra_pools={"api": {"servers": [{"name": "api1", "address": api.address}]}},
        )
        async with start_proxy(raw, base_dir=tmp_path) as p:
            ca = ["--cacert", str(certs.ca_file)]
            assert (await curl(*ca, *resolve("b.example", p.port))).stdout == b"hello from api\n"
            assert (await curl(*ca, *resolve("a.example", p.port))).stdout == b"hello from web\n"


async def test_a_reload_turns_tls_on_and_off_on_the_same_port(certs: Certs, tmp_path: Path) -> None:
    from quiesce.app import App
    from quiesce.config.loader import load_config

    async with Backend("a") as backend:
        path = tmp_path / "quiesce.yaml"
        text = f"""
admin: {{listen: 127.0.0.1:0}}
state: {{sqlite: null}}
pools:
  web:
    servers: [{{name: s1, address: "{backend.address}"}}]
services:
  www:
    listen: 127.0.0.1:0
    pool: web
"""
        path.write_text(text)
        app = App(load_config(path), tmp_path, config_path=path)
        await app.start()
        try:
            port = app.services["www"].port
            plain = f"http://127.0.0.1:{port}/"
            assert (await curl(plain)).stdout == b"hello from a\n"
            path.write_text(text + "    tls: {certificates: [{cert: a.pem, key: a.key}]}\n")
            plan = await app.reload("test")
            assert [c.kind for c in plan.changes] == ["service_rebound"]
            assert app.services["www"].port == port
            ca = ["--cacert", str(certs.ca_file)]
            assert (await curl(*ca, *resolve("a.example", port))).stdout == b"hello from a\n"
            assert b"plain HTTP request" in (await curl(plain)).stdout
            path.write_text(text)
            await app.reload("test")
            assert (await curl(plain)).stdout == b"hello from a\n"
        finally:
            await app.stop(1.0)
