"""Reading message heads: the C fast path's functions (or None), and the head-size cap that
keeps httptools from buffering an unbounded header line.

The C accelerator (``quiesce._httpfast``) reads a whole common-case head in one call; every
message it declines (returns None for) is fed to httptools exactly as if it were not there.
"""

from __future__ import annotations

from typing import Protocol

import httptools

from quiesce import _accel

# The C accelerator's common-case head functions (quiesce._httpfast), or None: every message
# they decline (return None for) takes the httptools path, byte for byte as before.
fast_request = _accel.httpfast.request if _accel.httpfast is not None else None
fast_response = _accel.httpfast.response if _accel.httpfast is not None else None


class ClientError(Exception):
    """A request the proxy refuses to read further: answered with ``status`` and closed."""

    def __init__(self, status: int) -> None:
        self.status = status


class HeadTooLarge(httptools.HttpParserError):
    pass


class HeadCapped(Protocol):
    """A connection whose incoming heads are capped (client or upstream side)."""

    head_left: int  # head bytes still allowed; -1: in a body
    heads: int  # heads parsed so far
    closed: bool


def raw_headers(raw: bytes) -> list[tuple[bytes, bytes]]:
    """The header fields of a head the C fast path accepted (so well-formed: CRLF lines,
    ``name:`` and a value without trailing whitespace)."""
    fields = []
    for line in raw.split(b"\r\n")[1:-2]:
        name, _, value = line.partition(b":")
        fields.append((name, value.lstrip(b" \t")))
    return fields


def feed_capped(
    conn: HeadCapped,
    parser: httptools.HttpResponseParser | httptools.HttpRequestParser,
    data: bytes,
) -> None:
    """Feed ``data`` that goes past the head-size limit (``conn.head_left`` bytes): the head
    must end within it, else HttpParserError. httptools buffers an unfinished header line
    itself, without bound (and quadratically): only this limit keeps it small. Rare path:
    only a read that crosses the limit comes here."""
    base = 0
    while True:
        left = conn.head_left
        rest = len(data) - base
        if left < 0 or rest <= left:
            if left >= 0:
                conn.head_left = left - rest
            try:
                parser.feed_data(data[base:] if base else data)
            except httptools.HttpParserUpgrade as exc:
                raise httptools.HttpParserUpgrade(base + exc.args[0]) from None
            return
        heads = conn.heads
        try:
            parser.feed_data(data[base : base + left])
        except httptools.HttpParserUpgrade as exc:
            raise httptools.HttpParserUpgrade(base + exc.args[0]) from None
        if conn.heads == heads:
            raise HeadTooLarge("message head larger than the limit")
        if conn.closed:
            return
        base += left
