"""HTTP/2 to a pool's servers (``pools.X.protocol: h2``), on the sans-IO ``ngh2`` codec
(libnghttp2).

Modules
-------
``codec``  HTTP/1.1 request heads to HTTP/2 header lists, and HTTP/2 responses (trailers
           too) to the HTTP/1.1 bytes the exchange's Upstream parses; sans-IO
``link``   one multiplexed connection per server (``Link``) and the channels the exchanges
           write to (``Channel``, an Upstream's transport)
``links``  a connection table's links (``links_of``): opening one per server, resending a
           refused stream on the next

It imports nothing of quiesce.dataplane.h1 (whose connect module opens channels here) nor of
quiesce.dataplane.h2 (the front end). docs/http2.md has the user's view.
"""
