"""The last check results of one monitor on one server (:class:`Recent`), kept compactly: the
API's ``last_checks``, the live series' check counts and the metrics' check latency read them.
Sans-IO."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, MutableMapping, Sequence
from typing import Any, overload

from quiesce.core.checks import CheckResult, Reason
from quiesce.core.oper import AT_REST, MonitorTrack
from quiesce.core.states import Oper, Verdict

LAST_CHECKS = 10
_VERDICTS = tuple(Verdict)
_VERDICT_INDEX = {v: i for i, v in enumerate(_VERDICTS)}
_REASONS = tuple(Reason)
_REASON_INDEX = {r: i for i, r in enumerate(_REASONS)}
assert len(_VERDICTS) <= 7 and len(_REASONS) <= 256  # 3 and 8 bits of a row's word
_DETAILS_MAX = 4095
"""Check details kept by number ("RST", "connection refused": the same for many servers): up
to this many different ones in the process (12 bits, all ones left for :data:`_WHOLE`), then
a result with a new detail is kept whole."""
_DETAILS: list[str] = [""]
_DETAIL_INDEX: dict[str, int] = {"": 0}
_STATUS_MAX = 511
"""Status codes kept by number too (HTTP's, SMTP's, gRPC's: a few in a process): up to this
many different ones, None first (9 bits), then a result with a new code is kept whole."""
_STATUSES: list[int | None] = [None]
_STATUS_INDEX: dict[int | None, int] = {None: 0}
_WHOLE = 0xFFFFFFFF
"""A row's word when the result did not fit the packing: the whole result is kept."""
_ROW = struct.Struct("<ddI")
"""A row: its time, its latency (doubles, as given) and a word of its verdict (3 bits),
reason (8), detail (12) and status code (9), the last two numbers in the tables above."""
_SIZE = _ROW.size  # 20
_unpack = _ROW.unpack_from
_at = struct.Struct("<d").unpack_from


def _detail_index(detail: str) -> int | None:
    i = _DETAIL_INDEX.get(detail)
    if i is None and len(_DETAILS) < _DETAILS_MAX:
        i = _DETAIL_INDEX[detail] = len(_DETAILS)
        _DETAILS.append(detail)
    return i


def _status_index(status: int | None) -> int | None:
    i = _STATUS_INDEX.get(status)
    if i is None and type(status) is int and len(_STATUSES) < _STATUS_MAX:
        i = _STATUS_INDEX[status] = len(_STATUSES)
        _STATUSES.append(status)
    return i


class Recent(Sequence[CheckResult]):
    """The last :data:`LAST_CHECKS` results of one monitor, oldest first.

    Kept as rows of 20 bytes in one ``bytes`` (remade at each result: one a check interval):
    its time and latency as doubles, and its verdict, reason, detail and status code packed
    into a 32-bit word, the detail and code by number in tables of the process (issue 21:
    ten ``CheckResult`` objects in a list took 1,488 bytes a monitor; rows of three doubles
    in an ``array`` about 400, 112 with one result; these 240 and 64, and none before the
    first). Reading an item makes an equal ``CheckResult`` again. A result that does not
    pack (a time or latency that is not a float, a new detail or status code once its table
    is full, another monitor's) is kept whole beside the rows."""

    __slots__ = ("_rows", "_whole", "monitor", "track")

    def __init__(self, monitor: str | None = None) -> None:
        self.monitor = monitor
        # the monitor's track of the server (quiesce.core.oper), kept here rather than in a
        # dict of its own per server (ServerRuntime.tracks is a view of these)
        self.track: MonitorTrack = AT_REST[Oper.UNKNOWN]
        self._rows = b""
        # per row, once a result is kept whole: that result, None for the packed rows
        self._whole: list[CheckResult | None] | None = None

    def append(self, result: CheckResult) -> None:
        rows = self._rows
        if self.monitor is None:
            self.monitor = result.monitor
        at, latency = result.at, result.latency
        verdict = _VERDICT_INDEX.get(result.verdict)
        reason = _REASON_INDEX.get(result.reason)
        detail = _detail_index(result.detail)
        status = _status_index(result.status_code)
        whole: CheckResult | None = None
        if (
            verdict is None
            or reason is None
            or detail is None
            or status is None
            or type(at) is not float
            or type(latency) is not float
            or result.monitor != self.monitor
        ):
            word, whole = _WHOLE, result
            # its time in the row all the same (read by newest_at and newer), as a float
            at = float(at) if isinstance(at, (int, float)) else 0.0
            latency = 0.0
        else:
            word = verdict | reason << 3 | detail << 11 | status << 23
        if len(rows) >= _SIZE * LAST_CHECKS:
            rows = rows[_SIZE:]
            if self._whole is not None:
                del self._whole[0]
        self._rows = rows + _ROW.pack(at, latency, word)
        if self._whole is None and whole is not None:
            self._whole = [None] * (len(rows) // _SIZE)
        if self._whole is not None:
            self._whole.append(whole)

    def __len__(self) -> int:
        return len(self._rows) // _SIZE

    @overload
    def __getitem__(self, i: int) -> CheckResult: ...

    @overload
    def __getitem__(self, i: slice) -> list[CheckResult]: ...

    def __getitem__(self, i: int | slice) -> CheckResult | list[CheckResult]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        n = len(self._rows) // _SIZE
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("Recent index out of range")
        at, latency, word = _unpack(self._rows, _SIZE * i)
        if word == _WHOLE:
            assert self._whole is not None
            r = self._whole[i]
            assert r is not None
            return r
        return CheckResult(
            self.monitor or "",
            _VERDICTS[word & 7],
            _REASONS[word >> 3 & 255],
            at,
            latency,
            _STATUSES[word >> 23],
            _DETAILS[word >> 11 & 4095],
        )

    def __iter__(self) -> Iterator[CheckResult]:
        for i in range(len(self._rows) // _SIZE):
            yield self[i]

    def newest_at(self) -> float:
        """The time of the newest result (0.0: none), without making the result."""
        rows = self._rows
        return _at(rows, len(rows) - _SIZE)[0] if rows else 0.0

    def newer(self, since: float) -> Iterator[tuple[Verdict, float]]:
        """The verdict and latency of each result newer than ``since``, newest first (the
        live series' check counts), without making the results."""
        rows = self._rows
        i = len(rows)
        while i:
            i -= _SIZE
            at, latency, word = _unpack(rows, i)
            if not at > since:
                return
            if word == _WHOLE:
                assert self._whole is not None
                r = self._whole[i // _SIZE]
                assert r is not None
                yield r.verdict, r.latency
            else:
                yield _VERDICTS[word & 7], latency

    def __repr__(self) -> str:
        return f"Recent({self.monitor!r}, {list(self)!r})"


class Checks(MutableMapping[str, Recent]):
    """A server's recent checks by monitor (``ServerRuntime.last_checks``): the
    :class:`Recent` of each of its monitors, in the order they were added, found by its
    ``monitor``. One monitor's is held as it is, several in a tuple (issue 21: a dict of one
    took 184 bytes a server, this takes 48). A server has a few monitors at most: a lookup
    is a pass over them."""

    __slots__ = ("_r",)

    def __init__(self, recents: Iterable[Recent] = ()) -> None:
        self._r: Recent | tuple[Recent, ...] = ()
        for r in recents:
            self.setdefault(r.monitor or "", r)

    def values(self) -> tuple[Recent, ...]:  # type: ignore[override]
        """Each monitor's :class:`Recent` (a tuple: the live series reads them every second
        for every server)."""
        r = self._r
        return r if isinstance(r, tuple) else (r,)

    def __getitem__(self, monitor: str) -> Recent:
        r = self._r
        if isinstance(r, tuple):
            for x in r:
                if x.monitor == monitor:
                    return x
        elif r.monitor == monitor:
            return r
        raise KeyError(monitor)

    def get(self, monitor: str, default: Any = None) -> Any:
        r = self._r
        if not isinstance(r, tuple):
            return r if r.monitor == monitor else default
        for x in r:
            if x.monitor == monitor:
                return x
        return default

    def __contains__(self, monitor: object) -> bool:
        return any(x.monitor == monitor for x in self.values())

    def __setitem__(self, monitor: str, recent: Recent) -> None:
        if recent.monitor is None:
            recent.monitor = monitor
        elif recent.monitor != monitor:
            raise ValueError(f"the results of {recent.monitor!r} kept as {monitor!r}'s")
        rs = [recent if x.monitor == monitor else x for x in self.values()]
        if monitor not in self:
            rs.append(recent)
        self._r = rs[0] if len(rs) == 1 else tuple(rs)

    def __delitem__(self, monitor: str) -> None:
        if monitor not in self:
            raise KeyError(monitor)
        rs = tuple(x for x in self.values() if x.monitor != monitor)
        self._r = rs[0] if len(rs) == 1 else rs

    def __iter__(self) -> Iterator[str]:
        return iter([x.monitor or "" for x in self.values()])

    def __len__(self) -> int:
        r = self._r
        return len(r) if isinstance(r, tuple) else 1

    def __repr__(self) -> str:
        return f"Checks({list(self.values())!r})"


class Tracks(MutableMapping[str, MonitorTrack]):
    """A server's monitor tracks by monitor: a view of the ``track`` of each of its
    :class:`Recent` (``ServerRuntime.tracks``). Setting a monitor it does not have adds one."""

    __slots__ = ("_checks",)

    def __init__(self, checks: MutableMapping[str, Recent]) -> None:
        self._checks = checks

    def __getitem__(self, monitor: str) -> MonitorTrack:
        return self._checks[monitor].track

    def get(self, monitor: str, default: Any = None) -> Any:
        recent = self._checks.get(monitor)
        return default if recent is None else recent.track

    def __setitem__(self, monitor: str, track: MonitorTrack) -> None:
        recent = self._checks.get(monitor)
        if recent is None:
            recent = self._checks[monitor] = Recent(monitor)
        recent.track = track

    def __delitem__(self, monitor: str) -> None:
        del self._checks[monitor]

    def __iter__(self) -> Iterator[str]:
        return iter(self._checks)

    def __len__(self) -> int:
        return len(self._checks)


__all__ = ["LAST_CHECKS", "Checks", "Recent", "Tracks"]
