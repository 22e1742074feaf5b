"""Time to the first and the last byte of `show servers state`, 5 runs, over a running
quiesce's runtime Unix socket: ``python3 bench/scale_views/ttfb.py /path/to/runtime.sock``
(the socket of a ``quiesce run`` whose config has one pool of 10,000 servers,
``max_idle_per_server: 0``, no monitors). Prints (first ms, last ms, bytes) per run."""

import socket
import sys
import time

path = sys.argv[1]
res = []
for _ in range(5):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    t = time.perf_counter()
    s.sendall(b"show servers state\n")
    first = None
    n = 0
    while True:
        b = s.recv(65536)
        if not b:
            break
        if first is None:
            first = time.perf_counter() - t
        n += len(b)
    s.close()
    res.append((round((first or 0) * 1000, 1), round((time.perf_counter() - t) * 1000, 1), n))
print(res)
