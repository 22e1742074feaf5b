"""The L7 HTTP/1.1 reverse proxy: a sans-IO exchange layer and thin asyncio shells.

Modules
-------
``exchange``   the request record; the exchange state machine; replay, retry, keep/close
``headers``    the header policy (hop-by-hop, Connection, X-Forwarded-*, framing checks)
``codec``      reading heads: the C fast path (quiesce._httpfast) or httptools, capped
``client``     ``ClientConnection``, the asyncio protocol of one client connection
``response``   its answering half: upstream events, the proxy's own answers, closing
``upstream``   ``Upstream``, the asyncio protocol of one connection to a server
``tunnel``     the byte relay after a 101 (WebSocket)
``retry``      sending a request again: the keep-alive race's resend, retries (pools.X.retries)
``pool``       the upstream keep-alive pool and which idle connection a request may take
``types``      the protocols the modules see each other through (no import cycles)

Persistence decisions (cookie, source_ip) are quiesce.dataplane.persistence (L4 uses them too);
parking idle connections is quiesce.dataplane.park, which asks ``ClientConnection.parkable()``.

Theory of operation
-------------------
A :class:`ClientConnection` parses requests with ``httptools.HttpRequestParser`` and serves
them one at a time, in order. A request whose head arrives while another is being served
(pipelining) is queued and reading from the client pauses, so at most one read's worth of
pipelined data is ever held. Each request is balanced afresh (``pool.pick``) and written to an
:class:`Upstream` — an idle keep-alive connection to the chosen server taken from the
connection table's pool, or a new one.

Bodies are streamed, never collected: a request body chunk goes straight to the upstream
transport (re-chunked when the client sent it chunked), a response body chunk straight to the
client. Back-pressure is the transports' own: when the upstream's write buffer fills
(``pause_writing``) the proxy stops reading the client, and when the client's fills it stops
reading the upstream. Bytes only wait in the proxy while an upstream connection is being
opened (and reading pauses past 256 KiB then).

One timer per client connection enforces the client header timeout (408), the keep-alive idle
timeout and the upstream response timeout (504); it is re-armed lazily — it fires, looks at
the state, and re-arms itself for the next deadline — so a keep-alive request costs no timer
operation. The connect timeout is a ``wait_for`` on the (rare) new upstream connection.

Failures map to one answer each and end only the request (or connection) concerned:
malformed request 400, request line too long 414, header block too large 431, slow header
408, upstream refused or reset before a byte was sent: retried once on another eligible
server, else 502 (by default: ``pools.X.retries`` says more, quiesce.dataplane.h1.retry); a
reused keep-alive upstream closed under us before any response byte, at once (the
keep-alive race, ``may_resend``): the request is resent on a fresh connection when it may be
sent twice and its body is still held (up to 64 KiB), else 502; malformed upstream response
502; connect or response timeout 504. Once the response head has been sent to the client,
an upstream failure can only abort the client (a
chunked response's head is held until its first chunk parses, at most one sweep, so a broken
chunk right behind it is still a 502).

Heads are capped while they arrive, both ways (``_feed_capped``): httptools buffers an
unfinished header line itself, so a head may take at most ``max_request_line +
max_header_size`` bytes of a client (else 431) and ``max_header_size`` of a server (else 502).
Ambiguous request framing (a last coding other than chunked, Transfer-Encoding with
Content-Length, two Content-Lengths, two Hosts) is refused with 400 before anything is sent;
``Connection`` never removes Content-Length, Transfer-Encoding or Host (either way), and
nothing a server sends past its response (a body on HEAD, 204 or 304) is passed on: the
connection is closed instead of pooled.
"""
