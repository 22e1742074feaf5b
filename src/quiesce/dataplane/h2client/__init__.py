"""HTTP/2 to a pool's servers (``pools.X.protocol: h2``), on the sans-IO ``ngh2`` codec
(libnghttp2).

Modules
-------
``codec``  HTTP/1.1 request heads to HTTP/2 header lists, and HTTP/2 responses (trailers
           too) to the HTTP/1.1 bytes the exchange's Upstream parses; sans-IO
``channel`` what an exchange writes to (``Channel``, an Upstream's transport): one request
           at a time, each on a new stream of its server's link
``link``   one multiplexed connection per server (``Link``), the theory of operation
``links``  a connection table's links (``links_of``): opening one per server, resending a
           refused stream on the next, a server that takes no stream

It imports nothing of quiesce.dataplane.h1 (whose connect module opens channels here) nor of
quiesce.dataplane.h2 (the front end). docs/http2.md has the user's view.
"""
