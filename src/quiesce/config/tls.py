"""TLS settings: a service's listener (``services.X.tls``) and a pool's connections to its
servers (``pools.X.tls``); and what a valid-looking TLS section can still get wrong, checked
against the files (:func:`tls_problems`, :func:`tls_warnings`).

Paths are relative to the config file's directory. The files are read again by the data
plane when it builds its contexts (at start and at every reload), so a renewed certificate
is taken by a reload without a restart.
"""

from __future__ import annotations

import datetime
import re
import ssl
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# TLS 1.2 suites (TLS 1.3's are OpenSSL's own, all safe): forward secrecy and AEAD only.
DEFAULT_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CertificatePair(_Model):
    cert: Annotated[str, Field(min_length=1)]  # PEM: the certificate, then its chain
    key: Annotated[str, Field(min_length=1)]  # PEM: its private key


class ListenerTls(_Model):
    """``services.X.tls``: terminate TLS on the listener."""

    certificates: Annotated[list[CertificatePair], Field(min_length=1)]
    min_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"
    ciphers: Annotated[str, Field(min_length=1)] = DEFAULT_CIPHERS
    client_ca: str | None = None
    verify: Literal["none", "optional", "required"] = "none"
    alpn: Annotated[list[Annotated[str, Field(min_length=1, max_length=255)]], Field()] = [
        "http/1.1"
    ]

    @field_validator("ciphers")
    @classmethod
    def _ciphers(cls, value: str) -> str:
        # OpenSSL's own parse, as the listener's context makes it: a list matching no suite
        # passed `quiesce check` and failed the service at start (or at a reload)
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(value)
        except ssl.SSLError:
            raise ValueError(
                f"OpenSSL matches no cipher suite in {value!r} (an OpenSSL cipher list, "
                f"e.g. the default {DEFAULT_CIPHERS!r})"
            ) from None
        return value

    @model_validator(mode="after")
    def _client_ca(self) -> ListenerTls:
        if self.verify != "none" and self.client_ca is None:
            raise ValueError(
                f"verify: {self.verify} needs client_ca (the CAs clients' "
                "certificates are checked against)"
            )
        if self.verify == "none" and self.client_ca is not None:
            raise ValueError(
                "client_ca is given but verify is none: say verify: optional or required"
            )
        return self


class PoolTls(_Model):
    """``pools.X.tls``: speak TLS to the pool's servers."""

    verify: bool = True
    ca: str | None = None  # None: the system's CAs
    sni: str | None = None  # None: the server's host name (nothing for an IP address)
    client_cert: str | None = None
    client_key: str | None = None

    @model_validator(mode="after")
    def _key_needs_cert(self) -> PoolTls:
        if self.client_key is not None and self.client_cert is None:
            raise ValueError("client_key needs client_cert")
        return self


def resolve(base_dir: Path, name: str) -> Path:
    p = Path(name)
    return p if p.is_absolute() else base_dir / p


def _readable(path: Path) -> str | None:
    try:
        with path.open("rb"):
            return None
    except OSError as exc:
        return f"cannot read {str(path)!r}: {exc.strerror}"


_PEM_CERT = re.compile(rb"-----BEGIN (?:TRUSTED )?CERTIFICATE-----")
_PEM_KEY = re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")


def load_pair(base_dir: Path, pair: CertificatePair) -> tuple[str, str] | None:
    """Why ``pair`` cannot serve (unreadable, not PEM, key not matching the cert), or None: the
    member at fault (``cert``, ``key``, or ``""`` for both) and the reason."""
    cert, key = resolve(base_dir, pair.cert), resolve(base_dir, pair.key)
    for member, path in (("cert", cert), ("key", key)):
        problem = _readable(path)
        if problem is not None:
            return member, problem
    if not _PEM_CERT.search(cert.read_bytes()):
        return "cert", f"{pair.cert!r} holds no certificate (PEM 'BEGIN CERTIFICATE' not found)"
    if not _PEM_KEY.search(key.read_bytes()):
        return "key", f"{pair.key!r} holds no private key (PEM 'BEGIN PRIVATE KEY' not found)"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            return "", f"the key {pair.key!r} does not match the certificate {pair.cert!r}"
        return "", f"cannot load {pair.cert!r} / {pair.key!r}: {exc.reason or exc}"
    except OSError as exc:
        return "", f"cannot load {pair.cert!r} / {pair.key!r}: {exc.strerror or exc}"
    return None


def _tls_sections(
    config: _HasTls,
) -> Iterator[tuple[str, ListenerTls | PoolTls]]:
    for name, svc in config.services.items():
        if svc.tls is not None:
            yield f"services.{name}.tls", svc.tls
    for name, pool in config.pools.items():
        if pool.tls is not None:
            yield f"pools.{name}.tls", pool.tls


def tls_problems(config: _HasTls, base_dir: Path) -> list[str]:
    """Every certificate, key and CA file of the config, loaded as the data plane will."""
    problems: list[str] = []
    for path, tls in _tls_sections(config):
        if isinstance(tls, ListenerTls):
            for i, pair in enumerate(tls.certificates):
                found = load_pair(base_dir, pair)
                if found is not None:
                    member, why = found
                    field = f"{path}.certificates[{i}]" + (f".{member}" if member else "")
                    problems.append(f"{field}: {why}")
            cas = [("client_ca", tls.client_ca)]
        else:
            cas = [("ca", tls.ca)]
            if tls.client_cert is not None:
                pair = CertificatePair(cert=tls.client_cert, key=tls.client_key or tls.client_cert)
                found = load_pair(base_dir, pair)
                if found is not None:
                    member, why = found
                    key_field = "client_key" if tls.client_key is not None else "client_cert"
                    field = key_field if member == "key" else "client_cert"
                    problems.append(f"{path}.{field}: {why}")
        for key, name in cas:
            if name is None:
                continue
            problem = _readable(resolve(base_dir, name))
            if problem is None:
                try:
                    ssl.create_default_context(cafile=str(resolve(base_dir, name)))
                except (ssl.SSLError, OSError) as exc:
                    problem = f"no CA certificate in {name!r}: {exc}"
            if problem is not None:
                problems.append(f"{path}.{key}: {problem}")
    return problems


def not_after(path: Path) -> datetime.datetime | None:
    """When the first certificate of a PEM file expires (None: unreadable)."""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None
    return cert.not_valid_after_utc


def tls_warnings(
    config: _HasTls, base_dir: Path, now: datetime.datetime | None = None
) -> list[str]:
    """Certificates that have expired (clients will refuse them) or expire within 14 days."""
    now = now or datetime.datetime.now(datetime.UTC)
    warnings: list[str] = []
    for path, tls in _tls_sections(config):
        if not isinstance(tls, ListenerTls):
            continue
        for i, pair in enumerate(tls.certificates):
            end = not_after(resolve(base_dir, pair.cert))
            if end is None:
                continue
            if end <= now:
                warnings.append(
                    f"{path}.certificates[{i}].cert: {pair.cert!r} expired on "
                    f"{end:%Y-%m-%d %H:%M} UTC: clients will refuse it"
                )
            elif end - now < datetime.timedelta(days=14):
                warnings.append(
                    f"{path}.certificates[{i}].cert: {pair.cert!r} expires on "
                    f"{end:%Y-%m-%d %H:%M} UTC"
                )
    return warnings


class _ServiceLike(Protocol):
    @property
    def tls(self) -> ListenerTls | None: ...


class _PoolLike(Protocol):
    @property
    def tls(self) -> PoolTls | None: ...


class _HasTls(Protocol):
    """What the checks read of a Config (a protocol: models.py imports this module)."""

    @property
    def services(self) -> Mapping[str, _ServiceLike]: ...

    @property
    def pools(self) -> Mapping[str, _PoolLike]: ...
