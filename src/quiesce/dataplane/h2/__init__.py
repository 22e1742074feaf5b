"""The HTTP/2 front end of the L7 proxy, on libnghttp2 through its sans-IO binding ``ngh2``.

Modules
-------
``guard``    the frames a client sends, before the codec reads them: floods, the client's GOAWAY
``session``  one connection's protocol state without I/O: ``ngh2``, flow control, the request
             head an HTTP/2 request becomes
``stream``   one stream as one HTTP/1.1 exchange of the quiesce.dataplane.h1 machine
``conn``     the asyncio protocol of one HTTP/2 connection, and its end by GOAWAY

HTTP/2 starts by ALPN ``h2`` on a TLS listener whose ``tls.alpn`` offers it, and by prior
knowledge (the connection preface) on a cleartext one. Each stream is balanced, routed and
accounted as an HTTP/1.1 request is, and goes to the servers over the same HTTP/1.1
keep-alive pool (see ``stream``). docs/dataplane.md, "HTTP/2", has the limits and defences.
"""
