"""Seamless upgrade: the listening sockets handed from a running quiesce to its successor.

Theory of operation
-------------------
``quiesce run -c FILE --takeover`` (the *new* process) connects to the runtime socket of
the running one (the *old* process) and sends ``_takeover``. The old process answers with
one JSON line describing its listeners — every service's listening sockets, the admin
listener, the runtime socket's own Unix and TCP listeners — and the descriptors of those
sockets in the same ``sendmsg`` (``SCM_RIGHTS``), as HAProxy's ``expose-fd listeners`` and
``-x`` do. A second JSON line follows: every server's operational state (each monitor's
track, check counters, ``disable health``, a ``set weight``; quiesce.state.handover), which
the new process seeds its registry with before it accepts, so a server that was up serves
from the first request and needs ``failed_checks`` failures to go down, as in the old one.
From here on the old process refuses admin writes (API 503 ``handing over``, the runtime
socket's ``Handing over``...): the new process has read the state store already, and a write
it would not see must be sent again, to it; the writes it answered before are committed to the
store before it sends anything (``app.settle_writes``). Otherwise it goes on accepting on its
own copies. The new process refuses admin writes too until ``finish`` is confirmed
(:data:`TAKING_OVER`): until then its changes would be held, not recorded.

The new process starts on the sockets it received, matched to its config (a service by name
and ``listen``, or by the same ``listen`` under another name; the admin listener by
``admin.listen``; the runtime socket by its path), and binds fresh whatever the old process
did not have. Both processes accept from the same kernel queues for a moment. Then it sends
``finish`` on the same connection; the old process answers ``ok``, stops accepting (it
closes its own descriptors; the sockets stay open, with their queues, in the new process),
finishes what is in flight, closes idle keep-alive connections only after a response with
``Connection: close`` (``Service.shutdown(keep_idle=True)``) and exits 0.

If the new process fails before ``finish`` (a bad config, a port it cannot bind), it closes
the connection and the old one carries on as if nothing happened; its sockets were never
closed. The connection is the only channel: the runtime socket's path may already be
accepted on by the new process, so nothing is ever sent on a second connection.

Who may take the sockets: whoever can connect to the Unix socket (created 0600: its owner
and root), and the peer's uid is checked again (``SO_PEERCRED``: root or the old process's
own user). Never over ``admin.runtime_tcp``: descriptors cannot cross TCP, and that listener
has no authentication. And the other way: the new process takes sockets and state only from
a listener whose uid is root or its own (``SO_PEERCRED`` of the connection, in
:func:`request`), so another user who bound the path first hands it nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quiesce.core.errors import QuiesceError

log = logging.getLogger("quiesce")

COMMAND = "_takeover"
FINISH = "finish"
KEEP_PATH = "keep-path"  # "finish keep-path": the new process adopted the runtime socket
FINISH_TIMEOUT = 120.0  # seconds the old process waits for "finish" before carrying on
CLIENT_TIMEOUT = 10.0  # seconds the new process waits for each answer
MAX_HEADER = 1 << 20
MAX_STATE = 1 << 28  # the state line: ~60 bytes a monitored server
MAX_FDS = 1024
BUSY_ANSWERS = ("Another takeover is in progress.", "Takeover refused:")
"""How a quiesce that takes over refuses one now (the first line of its answer)."""
HANDING_OVER = (
    "handing over to a new process (quiesce run --takeover): this one no longer takes admin "
    "changes; send it again in a moment, it reaches the new process"
)
"""What the old process answers an admin write once it answered ``_takeover`` (the API's
503, the runtime socket's answer): the new process read the state store already."""
TAKING_OVER = (
    "taking over from pid {pid} (quiesce run --takeover): this process takes admin changes "
    "once it has; send it again in a moment"
)
"""What the new process answers an admin write until the old one confirmed ``finish`` and
its held events are recorded: a change it took before would be lost with an abandoned
takeover (the old process carries on without it) or a ``kill -9``, unrecorded."""


def write_refusal(app: Any) -> str | None:
    """Why ``app`` refuses admin writes now (either side of a takeover), or None: the API
    answers 503 ``handing over`` with it, the runtime socket says it (docs/upgrade.md)."""
    pid = getattr(app, "taking_over", None)
    if pid is not None:
        return TAKING_OVER.format(pid=pid)
    if getattr(app, "handing_over", False):
        return HANDING_OVER
    return None


class TakeoverError(QuiesceError):
    """The sockets of a running quiesce cannot be taken over (nothing listens on the
    path, not a quiesce, not allowed...): the message says why."""

    status_hint = 500


@dataclass
class Listening:
    """One listener: ``kind`` is ``service``, ``admin``, ``runtime`` or ``runtime_tcp``;
    ``listen`` the configured address (the runtime socket: its absolute path)."""

    kind: str
    name: str
    listen: str
    socks: list[socket.socket] = field(default_factory=list)


# the old process ---------------------------------------------------------------------------


def peer_uid(sock: Any) -> int | None:
    """The uid of the process at the other end of a Unix socket (``SO_PEERCRED``)."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return None
    return int(struct.unpack("3i", raw)[1])


def _header(pid: int, listeners: list[Listening], state: bool) -> bytes:
    body = {
        "quiesce": "takeover/1",
        "pid": pid,
        "state": state,  # a second line follows: quiesce.state.handover.snapshot()
        "listeners": [
            {"kind": x.kind, "name": x.name, "listen": x.listen, "count": len(x.socks)}
            for x in listeners
        ],
    }
    return json.dumps(body).encode() + b"\n"


async def serve(app: Any, runtime: Any, writer: asyncio.StreamWriter, reader: Any) -> None:
    """Answer ``_takeover`` on one runtime socket connection (the old process's side).
    ``app.listening()`` lists the listeners, ``app.handed_over(keep_path)`` starts the
    staged stop once the new process said ``finish``."""
    sock = writer.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX:
        writer.write(b"Permission denied: takeover only over the Unix runtime socket.\n\n")
        await writer.drain()
        return
    uid = peer_uid(sock)
    if uid is None or uid not in (0, os.geteuid()):
        log.warning("takeover refused: peer uid %s is neither root nor this process's", uid)
        writer.write(b"Permission denied.\n\n")
        await writer.drain()
        return
    if getattr(app, "takeover_busy", False):
        writer.write(BUSY_ANSWERS[0].encode() + b"\n\n")
        await writer.drain()
        return
    if getattr(app, "reloading", False):
        # a reload applies a file this process would hand over half-applied
        log.warning("takeover refused: a reload of the config file is in progress")
        writer.write(
            BUSY_ANSWERS[1].encode() + b" a reload of the config file is in progress in this "
            b"process; try again once it is done.\n\n"
        )
        await writer.drain()
        return
    app.takeover_busy = True  # admin writes are refused from here (App.handing_over)
    try:
        # every write answered (or being answered) so far is committed before the new
        # process can read the state store: it reads it once it has the descriptors
        settle = getattr(app, "settle_writes", None)
        if settle is not None:
            await settle()
        listeners: list[Listening] = app.listening()
        fds = [s.fileno() for x in listeners for s in x.socks]
        handover_state = getattr(app, "handover_state", None)
        state = handover_state() if handover_state is not None else None
        await writer.drain()  # nothing is buffered in the transport before the descriptors
        raw = socket.socket(fileno=os.dup(sock.fileno()))
        try:
            socket.send_fds(raw, [_header(os.getpid(), listeners, state is not None)], fds)
        finally:
            raw.close()  # a duplicate: the connection stays open
        if state is not None:
            writer.write(json.dumps(state, separators=(",", ":")).encode() + b"\n")
            await writer.drain()
        log.info(
            "takeover: %d listening socket(s) and the state of %d server(s) handed over; "
            "waiting for finish",
            len(fds),
            len(state["servers"]) if state is not None else 0,
        )
        try:
            line = await asyncio.wait_for(reader.readline(), FINISH_TIMEOUT)
        except (TimeoutError, ConnectionError, ValueError):
            line = b""
        words = line.decode("utf-8", "replace").split()
        if not words or words[0] != FINISH:
            log.warning("takeover abandoned by the new process: still serving")
            return
        writer.write(b"ok\n")
        await writer.drain()
        log.info("takeover: the new process accepts now; stopping accepting and finishing")
        app.handed_over(keep_path=KEEP_PATH in words[1:])
    finally:
        app.takeover_busy = False


# the new process ---------------------------------------------------------------------------


class Handover:
    """The old process's listeners, received; ``take`` what the new config matches,
    ``finish`` once serving, or ``abandon`` (the old process carries on)."""

    def __init__(
        self,
        conn: socket.socket,
        pid: int,
        listeners: list[Listening],
        state: dict[str, Any] | None = None,
    ) -> None:
        self.conn = conn
        self.pid = pid
        self.listeners = listeners
        # the old process's server state (quiesce.state.handover), None from an older one
        self.state = state
        self.taken: set[int] = set()

    def take(self, kind: str, name: str, listen: str) -> list[socket.socket] | None:
        """The sockets of the old listener of that kind and name with that address, or,
        for a service, of one with that address under another name; ``None``: bind."""
        candidates = [
            (i, x)
            for i, x in enumerate(self.listeners)
            if i not in self.taken and x.kind == kind and x.listen == listen
        ]
        candidates.sort(key=lambda c: c[1].name != name)
        if not candidates or (kind != "service" and candidates[0][1].name != name):
            return None
        i, x = candidates[0]
        self.taken.add(i)
        return x.socks

    def finish(self, keep_path: bool) -> None:
        """Tell the old process to stop accepting and finish; wait for its ``ok``."""
        self._close_untaken()
        line = f"{FINISH} {KEEP_PATH}\n" if keep_path else f"{FINISH}\n"
        try:
            self.conn.sendall(line.encode())
            answer = _read_line(self.conn)
        except OSError as exc:
            raise TakeoverError(
                f"the old process (pid {self.pid}) did not confirm: {exc}"
            ) from None
        finally:
            self.conn.close()
        if answer.strip() != b"ok":
            raise TakeoverError(
                f"the old process (pid {self.pid}) did not confirm: {answer[:200]!r}"
            )

    def abandon(self) -> None:
        """Close the connection (the old process carries on) and every socket received
        that is not in use (closing these copies closes nothing in the old process)."""
        self._close_untaken()
        self.conn.close()

    def _close_untaken(self) -> None:
        for i, x in enumerate(self.listeners):
            if i not in self.taken:
                for s in x.socks:
                    s.close()
                self.taken.add(i)


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n") and len(data) < MAX_HEADER:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def request(path: Path, timeout: float = CLIENT_TIMEOUT) -> Handover:
    """Connect to the old process's runtime socket at ``path`` and receive its listening
    sockets. Raises :class:`TakeoverError` with the reason."""
    if not path.exists():
        raise TakeoverError(
            f"no runtime socket at {path}: is the old quiesce running, with "
            "admin.runtime_socket at that path? (--takeover-socket names another)"
        )
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(timeout)
    try:
        conn.connect(str(path))
    except OSError as exc:
        conn.close()
        raise TakeoverError(
            f"cannot connect to the runtime socket {path}: {exc.strerror or exc} "
            "(no quiesce running there to take over from?)"
        ) from None
    # the other direction of serve()'s check: whoever could bind the path (a directory others
    # may write, a stale path) must not hand this process its sockets and server state
    uid = peer_uid(conn)
    if uid is None or uid not in (0, os.geteuid()):
        conn.close()
        raise TakeoverError(
            f"the process listening on {path} runs as uid {uid}, neither root nor this "
            f"process's ({os.geteuid()}): not taking sockets or state from it (did another "
            "user bind that path? keep admin.runtime_socket in a directory only quiesce's "
            "user can write)"
        )
    fds: list[int] = []
    try:
        conn.sendall(f"{COMMAND}\n".encode())
        data, fds, _flags, _addr = socket.recv_fds(conn, 65536, MAX_FDS)
        while data and b"\n" not in data and len(data) < MAX_HEADER:
            more, more_fds, _flags, _addr = socket.recv_fds(conn, 65536, MAX_FDS)
            fds += more_fds
            if not more:
                break
            data += more
    except OSError as exc:
        for fd in fds:
            os.close(fd)
        conn.close()
        raise TakeoverError(f"takeover over {path} failed: {exc.strerror or exc}") from None
    data, _, rest = data.partition(b"\n")
    try:
        header = json.loads(data)
        if not isinstance(header, dict) or header.get("quiesce") != "takeover/1":
            raise ValueError
        pid = int(header["pid"])
        specs = header["listeners"]
        if sum(int(x["count"]) for x in specs) != len(fds):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        for fd in fds:
            os.close(fd)
        conn.close()
        first = data.decode("utf-8", "replace").strip().splitlines()[:1]
        if first and first[0].startswith(BUSY_ANSWERS):
            # a quiesce that takes over, busy now (review 90 F18): its own words say why
            again = "" if "try again" in first[0] else " Try again once it is done."
            raise TakeoverError(
                f"the quiesce on {path} did not hand over its sockets: {first[0][:200]} "
                f"Nothing changed.{again}"
            ) from None
        said = f" (it answered: {first[0][:200]!r})" if first else ""
        raise TakeoverError(
            f"the process on {path} did not hand over its sockets{said}: "
            "not a quiesce that supports --takeover, or not allowed"
        ) from None
    listeners: list[Listening] = []
    it = iter(fds)
    for x in specs:
        socks = [socket.socket(fileno=next(it)) for _ in range(int(x["count"]))]
        listeners.append(Listening(str(x["kind"]), str(x["name"]), str(x["listen"]), socks))
    handover = Handover(conn, pid, listeners)
    if header.get("state"):
        try:
            handover.state = _read_state(conn, rest)
        except (OSError, ValueError) as exc:
            handover.abandon()  # every socket received closed (our copies only)
            raise TakeoverError(
                f"takeover over {path}: the old process's server state did not arrive: {exc}"
            ) from None
    return handover


def _read_state(conn: socket.socket, data: bytes) -> dict[str, Any]:
    """The second line of the old process's answer (its server state), ``data`` its start."""
    while not data.endswith(b"\n"):
        if len(data) > MAX_STATE:
            raise ValueError(f"over {MAX_STATE} bytes")
        chunk = conn.recv(1 << 20)
        if not chunk:
            raise ValueError("the connection ended")
        data += chunk
    state = json.loads(data)
    if not isinstance(state, dict):
        raise ValueError("not a JSON object")
    return state


__all__ = [
    "COMMAND",
    "HANDING_OVER",
    "TAKING_OVER",
    "Handover",
    "Listening",
    "TakeoverError",
    "peer_uid",
    "request",
    "serve",
    "write_refusal",
]
