"""``host:port`` addresses (``[::1]:80`` for IPv6)."""

from __future__ import annotations

import ipaddress
import socket


def split_address(value: str) -> tuple[str, int]:
    """Split ``host:port``; raises ValueError with an operator-facing message."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{value!r} is not an address (want host:port)")
    text = value.strip()
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
