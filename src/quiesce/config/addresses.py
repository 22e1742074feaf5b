"""``host:port`` addresses (``[::1]:80`` for IPv6)."""

from __future__ import annotations

import ipaddress
import re
import socket

_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)\Z")
_DOTTED = re.compile(r"[0-9.]+\Z")


def check_host(host: str) -> None:
    """A host is an IP address or a host name (RFC 1123: letters, digits and hyphens in
    dot-separated labels of at most 63, 253 in all; underscores too, as container names
    have them); one of digits and dots alone must be a
    whole IPv4 address (``1.2.3`` is not ``1.2.0.3``, ``999.1.1.1`` no host at all: the
    system's resolver took both, the first as another host). Raises ValueError."""
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    if _DOTTED.match(host):
        raise ValueError(f"{host!r} is not an IPv4 address")
    name = host[:-1] if host.endswith(".") else host
    if len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        raise ValueError(
            f"{host!r} is neither an IP address nor a host name "
            "(letters, digits, hyphens, underscores and dots)"
        )


def split_address(value: str) -> tuple[str, int]:
    """Split ``host:port``; raises ValueError with an operator-facing message. The host is
    an IP address or a host name (:func:`check_host`; a name is resolved by the system at
    each connection)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{value!r} is not an address (want host:port)")
    text = value.strip()
    if "://" in text:
        raise ValueError(f"{value!r} is not an address (want host:port, without a scheme)")
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or not text[end + 1 :].startswith(":"):
            raise ValueError(f"{value!r} is not an address (want [v6addr]:port)")
        host, port_text = text[1:end], text[end + 2 :]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{value!r} is not an address (want host:port)")
        if ":" in host:
            raise ValueError(f"{value!r}: write IPv6 addresses as [addr]:port")
    if not port_text.isdigit():
        raise ValueError(f"{value!r}: port {port_text!r} is not a number")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port {port} is out of range")
    check_host(host)
    return host, port


def join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    """True when every address ``host`` names is a loopback address (a name is resolved)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)
