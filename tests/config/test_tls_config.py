"""TLS in the config (issue 16, items 1, 2 and 6): ``services.X.tls`` and ``pools.X.tls``;
bad settings and bad files named by their path, an expired certificate warned about."""

from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path

import pytest

from quiesce.config import ConfigError, load_text
from quiesce.config.loader import config_warnings
from tests.support.certs import Certs

BASE = """
pools:
  web:
    TLSPOOL
    servers:
      - {name: a, address: 127.0.0.1:8081}
  api:
    servers:
      - {name: b, address: 127.0.0.1:8082}
services:
  www:
    listen: 127.0.0.1:8443
    protocol: PROTO
    pool: web
    TLS
"""


def config(tls: str = "", proto: str = "http", pool_tls: str = "", rules: str = "") -> str:
    text = BASE.replace("TLSPOOL", pool_tls or "algorithm: round_robin")
    text = text.replace("PROTO", proto).replace("TLS", tls or "grace_period: 1s", 1)
    return text + rules


def problems(text: str, base_dir: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_text(text, base_dir=base_dir)
    return info.value.problems


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return Certs(tmp_path)


def test_a_listener_and_a_pool_with_tls_load(certs: Certs, tmp_path: Path) -> None:
    a = certs.leaf("a", "a.example")
    b = certs.leaf("b", "b.example")
    text = config(
        f"tls: {{certificates: [{{cert: {a[0].name}, key: {a[1].name}}}, "
        f"{{cert: {b[0].name}, key: {b[1].name}}}], client_ca: ca.pem, verify: optional}}",
        pool_tls="tls: {ca: ca.pem, sni: backend.example}",
    )
    cfg = load_text(text, base_dir=tmp_path)
    tls = cfg.services["www"].tls
    assert tls is not None and len(tls.certificates) == 2
    assert tls.min_version == "TLSv1.2" and tls.alpn == ["http/1.1"] and tls.verify == "optional"
    pool = cfg.pools["web"].tls
    assert pool is not None and pool.verify and pool.sni == "backend.example"
    assert config_warnings(cfg, tmp_path) == []


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        ("tls: {certificates: []}", "services.www.tls.certificates: List should have at least 1"),
        (
            "tls: {certificates: [{cert: a.pem, key: a.key}], min_version: TLSv1.1}",
            "services.www.tls.min_version: Input should be 'TLSv1.2' or 'TLSv1.3'",
        ),
        (
            "tls: {certificates: [{cert: a.pem, key: a.key}], verify: required}",
            "services.www.tls: verify: required needs client_ca",
        ),
        (
            "tls: {certificates: [{cert: a.pem, key: a.key}], client_ca: ca.pem}",
            "services.www.tls: client_ca is given but verify is none",
        ),
        (
            "tls: {certificates: [{cert: a.pem, key: a.key}], alpn: [h3, http/1.1]}",
            "services.www.tls.alpn: an http service offers h2 and/or http/1.1, each once",
        ),
        (
            "tls: {certificates: [{cert: a.pem, key: a.key}], alpn: [h2, h2]}",
            "services.www.tls.alpn: an http service offers h2 and/or http/1.1, each once",
        ),
        (
            "tls: {certificates: [{cert: a.pem, key: a.key}], alpn: []}",
            "services.www.tls.alpn: an http service offers h2 and/or http/1.1, each once",
        ),
        ("tls: {certificates: [{cert: a.pem}]}", "services.www.tls.certificates[0].key: Field"),
        (
            "tls: {certificates: [{cert: a.pem, key: a.key}], ciphers: NOPE}",
            "services.www.tls.ciphers: OpenSSL matches no cipher suite in 'NOPE'",
        ),
    ],
)
def test_bad_listener_settings_are_named(tls: str, message: str) -> None:
    found = problems(config(tls))
    assert any(p.startswith(message) for p in found), found


def test_bad_pool_settings_are_named() -> None:
    found = problems(config(pool_tls="tls: {client_key: k.pem}"))
    assert any(p.startswith("pools.web.tls: client_key needs client_cert") for p in found), found
    found = problems(config(pool_tls="tls: {verify: maybe}"))
    assert any(p.startswith("pools.web.tls.verify:") for p in found), found


def test_missing_unreadable_and_mismatched_files(certs: Certs, tmp_path: Path) -> None:
    certs.leaf("a", "a.example")
    certs.leaf("b", "b.example")
    found = problems(config("tls: {certificates: [{cert: nope.pem, key: a.key}]}"), tmp_path)
    assert found == [
        f"services.www.tls.certificates[0].cert: cannot read {str(tmp_path / 'nope.pem')!r}: "
        "No such file or directory"
    ]
    found = problems(config("tls: {certificates: [{cert: a.pem, key: b.key}]}"), tmp_path)
    assert found == [
        "services.www.tls.certificates[0]: the key 'b.key' does not match the certificate 'a.pem'"
    ]
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    found = problems(config("tls: {certificates: [{cert: junk.pem, key: a.key}]}"), tmp_path)
    assert found == [
        "services.www.tls.certificates[0].cert: 'junk.pem' holds no certificate "
        "(PEM 'BEGIN CERTIFICATE' not found)"
    ]
    # a key where the certificate goes, a certificate where the key goes: which one is wrong
    pairs = "[{cert: a.pem, key: a.key}, {cert: a.key, key: a.key}, {cert: a.pem, key: b.pem}]"
    found = problems(config(f"tls: {{certificates: {pairs}}}"), tmp_path)
    assert found == [
        "services.www.tls.certificates[1].cert: 'a.key' holds no certificate "
        "(PEM 'BEGIN CERTIFICATE' not found)",
        "services.www.tls.certificates[2].key: 'b.pem' holds no private key "
        "(PEM 'BEGIN PRIVATE KEY' not found)",
    ]
    found = problems(config(pool_tls="tls: {client_cert: a.pem, client_key: junk.pem}"), tmp_path)
    assert found == [
        "pools.web.tls.client_key: 'junk.pem' holds no private key "
        "(PEM 'BEGIN PRIVATE KEY' not found)"
    ]
    found = problems(config(pool_tls="tls: {client_cert: a.pem}"), tmp_path)  # key in the cert?
    assert found == [
        "pools.web.tls.client_cert: 'a.pem' holds no private key "
        "(PEM 'BEGIN PRIVATE KEY' not found)"
    ]
    found = problems(config(pool_tls="tls: {ca: junk.pem}"), tmp_path)
    assert len(found) == 1 and found[0].startswith("pools.web.tls.ca: no CA certificate in")
    found = problems(config(pool_tls="tls: {client_cert: a.pem, client_key: b.key}"), tmp_path)
    assert found == [
        "pools.web.tls.client_cert: the key 'b.key' does not match the certificate 'a.pem'"
    ]


def test_an_expired_certificate_is_a_warning(certs: Certs, tmp_path: Path) -> None:
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=2)
    certs.leaf("old", "old.example", not_after=past)
    cfg = load_text(config("tls: {certificates: [{cert: old.pem, key: old.key}]}"), "c", tmp_path)
    (warning,) = config_warnings(cfg, tmp_path)
    assert warning.startswith("services.www.tls.certificates[0].cert: 'old.pem' expired on ")
    assert warning.endswith("clients will refuse it")


def test_tcp_rules_route_on_sni_only() -> None:
    sni = """    rules:
      - if: {sni: [api.example, "*.api.example"]}
        then: {pool: api}
"""
    cfg = load_text(config(proto="tcp", rules=sni))
    assert cfg.services["www"].rules[0].if_.sni == ["api.example", "*.api.example"]
    path = sni.replace('sni: [api.example, "*.api.example"]', "path_prefix: /x")
    found = problems(config(proto="tcp", rules=path))
    assert any(
        p.startswith("services.www.rules[0].if: path_prefix is a test of http") for p in found
    )
    page = sni.replace("{pool: api}", "maintenance_page")
    found = problems(config(proto="tcp", rules=page))
    assert "services.www.rules[0].then: a tcp service's rule names a pool" in found, found
    found = problems(config(proto="http", rules=sni))
    assert "services.www.rules[0].if: sni is a test of tcp services" in found, found


@pytest.mark.peers
def test_quiesce_check_names_the_file_problem_and_warns(certs: Certs, tmp_path: Path) -> None:
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=2)
    certs.leaf("old", "old.example", not_after=past)
    path = tmp_path / "quiesce.yaml"

    def check(tls: str) -> subprocess.CompletedProcess[str]:
        path.write_text(config(tls))
        return subprocess.run(
            [sys.executable, "-m", "quiesce", "check", "-c", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )

    ok = check("tls: {certificates: [{cert: old.pem, key: old.key}]}")
    assert ok.returncode == 0, ok.stderr
    assert "warning: services.www.tls.certificates[0].cert: 'old.pem' expired on" in ok.stderr
    bad = check("tls: {certificates: [{cert: old.pem, key: missing.key}]}")
    assert bad.returncode == 1
    assert "services.www.tls.certificates[0].key: cannot read" in bad.stderr
    swapped = check("tls: {certificates: [{cert: old.key, key: old.pem}]}")
    assert swapped.returncode == 1
    assert "services.www.tls.certificates[0].cert: 'old.key' holds no certificate" in swapped.stderr
    assert "PEM lib" not in swapped.stderr
