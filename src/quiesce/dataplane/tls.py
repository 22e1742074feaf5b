"""TLS for a service: its listener's contexts (``services.X.tls``) and its connections to
TLS servers (``pools.X.tls``), built from the config by :func:`service_tls`.

A listener has one ``ssl.SSLContext`` per certificate, all with the same settings. The
first certificate's is the default; its ``sni_callback`` switches a handshake to the
context whose certificate names the ClientHello's server name (exact names first, then
``*.domain`` wildcards of one label), and leaves the default for a name nothing matches or
no name at all. Session tickets are OpenSSL's default (on; TLS 1.3 sends two per
handshake); the keys are the default context's, so a resumption works whichever
certificate served.

Everything here is built again at each reload (the files are read again): the front door
(quiesce.dataplane.frontdoor) takes ``ctx.tls`` at each new handshake, so a renewed
certificate serves the next handshake while established connections carry on.

The client certificate's subject: with ``verify: optional`` or ``required`` a verified
client certificate's subject goes to the server in ``X-Forwarded-Client-Cert:
Subject="CN=alice,O=Example"`` (Envoy's header and format, RFC 4514 with the most specific
name first); the header is removed from every request a client sends, on every service, so
it cannot be forged.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quiesce.config.models import PoolConfig, ServiceConfig
from quiesce.config.tls import ListenerTls, PoolTls, resolve

XFCC = b"X-Forwarded-Client-Cert"
HTTP_FORWARDED = b"X-Forwarded-Proto: http\r\n"
HTTPS_FORWARDED = b"X-Forwarded-Proto: https\r\n"

_VERIFY = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
_VERSION = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


@dataclass(slots=True, eq=False)
class ListenerContexts:
    """The contexts of one TLS listener; ``default`` is what a handshake starts with."""

    default: ssl.SSLContext
    exact: dict[str, ssl.SSLContext] = field(default_factory=dict)
    wildcard: dict[str, ssl.SSLContext] = field(default_factory=dict)  # by "example.com"
    client_subject: bool = False  # send the verified client certificate's subject

    def pick(self, sslobj: Any, name: str | None, _: ssl.SSLContext) -> None:
        """The default context's sni_callback: the certificate for ``name``; the name is
        kept on the connection's SSLObject (``server_name``: a server-side SSLObject does
        not say which name the client asked for)."""
        if not name:
            return
        name = name.lower().rstrip(".")
        sslobj._quiesce_sni = name
        ctx = self.exact.get(name)
        if ctx is None:
            ctx = self.wildcard.get(name.partition(".")[2])
        if ctx is not None and ctx is not self.default:
            sslobj.context = ctx


@dataclass(slots=True, eq=False)
class ServiceTls:
    """A service's TLS: its listener's contexts (None: cleartext) and the client contexts
    of the pools it may send to, by pool name (a pool without ``tls``: absent)."""

    listener: ListenerContexts | None = None
    pools: dict[str, tuple[ssl.SSLContext, str | None]] = field(default_factory=dict)

    def upstream(self, pool: str, host: str) -> dict[str, Any]:
        """``loop.create_connection`` keywords for a connection to ``host`` of ``pool``."""
        found = self.pools.get(pool)
        if found is None:
            return {}
        ctx, sni = found
        return {"ssl": ctx, "server_hostname": sni or host}


def listener_context(tls: ListenerTls, base_dir: Path) -> ListenerContexts:
    """Load every certificate of ``tls`` (raises OSError or ssl.SSLError: the config check
    reports those beforehand, naming the field)."""
    contexts = ListenerContexts(default=_server_context(tls, base_dir, 0))
    contexts.client_subject = tls.verify != "none"
    for i, pair in enumerate(tls.certificates):
        ctx = contexts.default if i == 0 else _server_context(tls, base_dir, i)
        for name in certificate_names(resolve(base_dir, pair.cert)):
            if name.startswith("*."):
                contexts.wildcard.setdefault(name[2:], ctx)
            else:
                contexts.exact.setdefault(name, ctx)
    contexts.default.sni_callback = contexts.pick  # also for the name: server_name()
    return contexts


def server_name(ssl_object: Any) -> str | None:
    """The server name a client sent in its ClientHello (lower-case), or None."""
    name: str | None = getattr(ssl_object, "_quiesce_sni", None)
    return name


def _server_context(tls: ListenerTls, base_dir: Path, i: int) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSION[tls.min_version]
    ctx.set_ciphers(tls.ciphers)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    if tls.alpn:
        ctx.set_alpn_protocols(tls.alpn)
    if tls.client_ca is not None:
        ctx.load_verify_locations(cafile=str(resolve(base_dir, tls.client_ca)))
        ctx.verify_mode = _VERIFY[tls.verify]
    pair = tls.certificates[i]
    ctx.load_cert_chain(resolve(base_dir, pair.cert), resolve(base_dir, pair.key))
    return ctx


def certificate_names(path: Path) -> list[str]:
    """The DNS names of a PEM file's first certificate (its subjectAltName, else its common
    name), lower-case."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_pem_x509_certificate(path.read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = [str(n) for n in san.value.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        names = []
    if not names:
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return [n.lower().rstrip(".") for n in names]


def client_context(tls: PoolTls, base_dir: Path, alpn: list[str] | None) -> ssl.SSLContext:
    """The context of connections to a pool's servers: verified against ``ca`` (or the
    system's CAs) unless ``verify: false``."""
    if tls.verify:
        ca = None if tls.ca is None else str(resolve(base_dir, tls.ca))
        ctx = ssl.create_default_context(cafile=ca)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if tls.client_cert is not None:
        key = tls.client_key or tls.client_cert
        ctx.load_cert_chain(resolve(base_dir, tls.client_cert), resolve(base_dir, key))
    return ctx


def service_tls(
    config: ServiceConfig, pools: dict[str, PoolConfig], base_dir: Path
) -> ServiceTls | None:
    """A service's TLS, or None when neither its listener nor any pool speaks TLS."""
    listener = None if config.tls is None else listener_context(config.tls, base_dir)
    alpn = ["http/1.1"] if config.protocol == "http" else None
    upstream = {
        name: (client_context(p.tls, base_dir, ["h2"] if p.protocol == "h2" else alpn), p.tls.sni)
        for name, p in pools.items()
        if p.tls is not None
    }
    if listener is None and not upstream:
        return None
    return ServiceTls(listener, upstream)


_ESCAPED = frozenset(',+"\\<>;=')


def client_subject(peercert: Any) -> bytes | None:
    """The header line for a verified client certificate (``peercert``: the dict
    ``SSLObject.getpeercert()`` returns), or None when there is none."""
    if not peercert:
        return None
    rdns = peercert.get("subject") or ()
    parts = []
    for rdn in reversed(rdns):  # RFC 4514: the most specific name first
        parts.append("+".join(f"{_SHORT.get(k, k)}={_escape(v)}" for k, v in rdn))
    dn = ",".join(parts).replace("\\", "\\\\").replace('"', '\\"')
    return XFCC + b': Subject="' + dn.encode("ascii") + b'"\r\n'


def _escape(value: str) -> str:
    out = []
    for ch in value:
        if ch in _ESCAPED:
            out.append("\\" + ch)
        elif " " <= ch <= "~":
            out.append(ch)
        else:  # control characters and non-ASCII: their UTF-8 bytes, \hh each
            out.append("".join(f"\\{b:02x}" for b in ch.encode("utf-8")))
    text = "".join(out)
    if text.startswith((" ", "#")):
        text = "\\" + text
    if text.endswith(" "):
        text = text[:-1] + "\\ "
    return text


_SHORT = {
    "commonName": "CN",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}
