"""Types of the optional C extension ``quiesce._httpfast`` (src/quiesce/_ext/httpfast.c): the
C twin of quiesce.dataplane.h1.codec.HttptoolsHeads (the ``HeadCodec`` seam). Each function
returns a plain tuple with the fields of ``RequestHead`` / ``ResponseHead``, in order, or
None when it declines the message."""

def request(
    data: bytes, peer: bytes, max_line: int, max_header: int, forwarded: bytes = ..., /
) -> tuple[bytes, bytes, bool, bool, bytes | None, bytes | None, bytes] | None:
    """(method, url, http10, keep_alive, host, cookie, head) of one whole bodyless request;
    ``forwarded``: the CRLF-terminated lines after X-Forwarded-For (default
    ``X-Forwarded-Proto: http``)."""

def response(data: bytes, max_header: int, extra: bytes, /) -> tuple[int, bool, bytes] | None:
    """(status, keep_alive, out) of one whole Content-Length response."""

class Traffic:
    """A server's or a service's traffic counters (quiesce.state.traffic.PyTraffic's twin)."""

    bytes_in: int
    bytes_out: int
    timed: int
    ctime_at: int
    rtime_sum: float
    ttime_sum: float
    ctime_sum: float

def account(
    server: Traffic | None, service: Traffic, nin: int, nout: int, rtime: float, ttime: float, /
) -> None:
    """One request's client bytes to both records; its times to the server's when rtime >= 0."""
