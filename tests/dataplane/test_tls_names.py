"""The sans-IO parts of quiesce.dataplane.tls (issue 16, item 1): which certificate a server
name gets, and the X-Forwarded-Client-Cert line of a client certificate's subject."""

from __future__ import annotations

import ssl
from pathlib import Path
from types import SimpleNamespace

import pytest

from quiesce.config.tls import ListenerTls
from quiesce.dataplane.tls import certificate_names, client_subject, listener_context
from tests.support.certs import Certs

pytestmark = pytest.mark.one_path  # no HTTP head read


def test_names_pick_the_certificate_exact_then_wildcard_else_the_default(tmp_path: Path) -> None:
    certs = Certs(tmp_path)
    certs.leaf("a", "a.example", "www.a.example")
    certs.leaf("b", "b.example", "*.b.example")
    certs.leaf("cn", common_name="legacy.example")
    assert certificate_names(tmp_path / "b.pem") == ["b.example", "*.b.example"]
    assert certificate_names(tmp_path / "cn.pem") == ["legacy.example"]  # no SAN: the CN
    tls = ListenerTls.model_validate(
        {"certificates": [{"cert": f"{n}.pem", "key": f"{n}.key"} for n in ("a", "b", "cn")]}
    )
    contexts = listener_context(tls, tmp_path)
    default = contexts.default
    assert default.sni_callback is not None

    def served(name: str | None) -> ssl.SSLContext:
        obj = SimpleNamespace(context=default)
        contexts.pick(obj, name, default)
        return obj.context  # type: ignore[no-any-return]

    b, legacy = contexts.exact["b.example"], contexts.exact["legacy.example"]
    assert served("B.Example.") is b
    assert served("x.b.example") is b and served("y.x.b.example") is default  # one label
    assert served("legacy.example") is legacy
    assert served("www.a.example") is default and served("nobody.example") is default
    assert served(None) is default


@pytest.mark.parametrize(
    ("subject", "line"),
    [
        (
            (
                (("countryName", "FR"),),
                (("organizationName", "Example"),),
                (("commonName", "alice"),),
            ),
            b'X-Forwarded-Client-Cert: Subject="CN=alice,O=Example,C=FR"\r\n',
        ),
        (
            ((("commonName", 'a,b+c"d\\e'),),),
            b'X-Forwarded-Client-Cert: Subject="CN=a\\\\,b\\\\+c\\\\\\"d\\\\\\\\e"\r\n',
        ),
        (
            ((("commonName", "\u00e9v\r\nX-Evil: 1"),),),
            b'X-Forwarded-Client-Cert: Subject="CN=\\\\c3\\\\a9v\\\\0d\\\\0aX-Evil: 1"\r\n',
        ),
        (((("organizationalUnitName", " lead"), ("userId", "7")),), None),
    ],
)
def test_the_subject_line_is_escaped_and_one_line(subject: object, line: bytes | None) -> None:
    got = client_subject({"subject": subject})
    assert got is not None and got.count(b"\r\n") == 1 and got.endswith(b"\r\n")
    if line is not None:
        assert got == line
    else:
        assert got == b'X-Forwarded-Client-Cert: Subject="OU=\\\\ lead+UID=7"\r\n'


def test_no_certificate_no_line() -> None:
    assert client_subject(None) is None and client_subject({}) is None
