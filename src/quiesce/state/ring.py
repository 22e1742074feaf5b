"""The live series' storage (:class:`quiesce.state.series.Series`): one row a second for the
last ``size`` seconds, kept as runs rather than one slot a second (issue 21, memory at
scale). Sans-IO.

A second where nothing moved holds the same row as the second before it (zeros and the same
connections), so most seconds of most servers need no storage of their own: an *entry* is one
head second and the idle seconds after it, packed into one unsigned 64-bit word of an
``array('Q')`` (8 bytes however long the run). The word's low 2 bits are its kind, the next
15 the idle seconds after the head (``k``), the rest depends on the kind:

- ``GAP``: ``p >> 2`` seconds without a row (the timer missed them): no head, no ``k``;
- ``IDLE``: the head is an idle row too; the connections in bits 17 and up;
- ``CHECK``: the head is an idle row with a server's check results of the second (their
  count, failed, maintenance, and the slowest one's latency in whole µs: the series stores it
  in ms to 3 decimals), the connections those of the entry before;
- ``FULL``: the head is any other row, a tuple kept in a list beside the words.

Rows read back equal (``==``) the rows written. A row that does not fit its word (a count
over 63, a latency over 268 s) is kept whole as a ``FULL`` row. Writing a second that already
has a row, or an earlier one (a clock stepped back), first takes back that second and every
later one (:meth:`Ring._cut`). Entries older than ``size`` seconds behind the newest are
dropped as new ones come (with some slack, so that is seldom work).

A subclass says what an idle row is (:meth:`Ring._idle`) and where in a row the connections
(:attr:`Ring.CONN`) and the check fields (:attr:`Ring.TAIL`, four of them) are.
"""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING, Any, Self

GAP, IDLE, CHECK, FULL = 0, 1, 2, 3
_K = 0x7FFF << 2  # the idle seconds after the head
_KMAX = 0x7FFF
_ONE = 1 << 2  # one more idle second
_SHIFT = 17  # where IDLE's connections and CHECK's fields start
_SLACK = 64  # seconds kept past ``size`` before the oldest entries are dropped
_COUNT = 63  # CHECK's counts: 6 bits each
_US = (1 << 28) - 1  # CHECK's latency in µs: 28 bits
_CONNS = (1 << 47) - 1  # IDLE's connections: 47 bits

Row = tuple[Any, ...]

_AFTER: list[int] = [-1, 0]  # the second asked last and the one after it


def _after(second: int) -> int:
    """``second + 1``: one int object for every ring written in the same second (a tick
    writes them all; an int of its own took 28 bytes a ring, issue 21)."""
    after = _AFTER
    if after[0] != second:
        after[0], after[1] = second, second + 1
    return after[1]


if TYPE_CHECKING:
    _Words = array[int]
else:
    _Words = array


class Ring(_Words):
    """Rows of seconds ``[_base, _end)`` as entries (see the module's docstring). Subclasses
    set :attr:`CONN` and :attr:`TAIL` and define :meth:`_idle`.

    The entries' words are the ring itself, an ``array('Q')`` (issue 21: an array of its own
    beside the ring took 72 bytes more a ring). It compares and hashes by identity, and is
    true however many words it has: a ring, not a sequence of words to its users."""

    __slots__ = ("_base", "_conn0", "_end", "_ext", "_full", "_tconn", "size")

    CONN = 0  # the row's index of its connections
    TAIL = 0  # the row's index of its 4 check fields (a CHECK row's only non-idle ones)

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        return super().__new__(cls, "Q")  # type: ignore[return-value]  # typeshed: array[int]

    def __init__(self, size: int) -> None:
        self.size = size
        self._full: list[Row] | None = None  # the FULL entries' rows, oldest first
        self._base = 0  # the first second the entries cover
        self._end = 0  # the second after the last they cover
        self._conn0 = 0  # the connections in effect before the first entry
        self._tconn = 0  # the connections of the last entry's rows
        self._ext = False  # the last entry can take one more idle second

    def __eq__(self, other: object) -> bool:
        return self is other

    def __ne__(self, other: object) -> bool:
        return self is not other

    def __hash__(self) -> int:  # type: ignore[override]  # an array is not hashable
        return id(self) >> 4

    def __bool__(self) -> bool:
        return True

    @property
    def _p(self) -> array[int] | None:
        """The entries' words (None: none yet)."""
        return self if len(self) else None

    def _idle(self, connections: int) -> Row:
        """The row of a second where nothing moved, with these connections."""
        raise NotImplementedError

    # writing ------------------------------------------------------------------------------

    def _more(self, second: int) -> bool:
        """The fast path of an idle second: ``second`` is the next one and the last entry
        can take it (the caller knows the connections did not change)."""
        if self._ext and second == self._end:
            p = self
            p[-1] += _ONE
            self._end = _after(second)
            if p[-1] & _K == _K:
                self._ext = False
            return True
        return False

    def _more_n(self, second: int, n: int) -> int:
        """:meth:`_more` for the ``n`` seconds from ``second`` at once: how many of them the
        last entry took (as many calls of :meth:`_more` would; 0: none)."""
        if not (self._ext and second == self._end) or n <= 0:
            return 0
        k = self[-1] >> 2 & _KMAX
        take = min(n, _KMAX - k)
        self[-1] += take << 2
        self._end = _after(second + take - 1)
        if k + take == _KMAX:
            self._ext = False
        return take

    def _put(self, second: int, row: Row) -> None:
        """Store ``row`` as the row of ``second`` (at or after :attr:`_end`)."""
        p = self
        if not len(p):
            self._base = self._end = second
        elif second > self._end:
            gap = second - self._end
            if p[-1] & 3 == GAP:
                p[-1] += gap << 2
            else:
                p.append(gap << 2)
            self._end, self._ext = second, False
        conn = row[self.CONN]
        idle = self._idle(conn)
        word = -1
        if row is idle or row == idle:
            if self._ext and conn == self._tconn:
                p[-1] += _ONE
                self._end = _after(second)
                if p[-1] & _K == _K:
                    self._ext = False
                return
            if type(conn) is int and 0 <= conn <= _CONNS:
                word = conn << _SHIFT | IDLE
        elif conn == self._tconn and (not self.TAIL or row[0] == idle[0]):  # (else not a
            word = self._check_word(row, idle)  # CHECK row: one that moved, most written)
        if word < 0:
            if self._full is None:
                self._full = []
            self._full.append(row)
            word = FULL
        p.append(word)
        self._end, self._tconn, self._ext = _after(second), conn, True
        if self._end - self._base > self.size + _SLACK:
            self._prune()

    def _check_word(self, row: Row, idle: Row) -> int:
        """The CHECK word of ``row`` (-1: not an idle row with check results, or they do not
        fit)."""
        t = self.TAIL
        if row[:t] != idle[:t] or len(row) != t + 4:
            return -1
        n, failed, maint, ms = row[t:]
        if not (type(n) is int and type(failed) is int and type(maint) is int):
            return -1
        if not (0 <= n <= _COUNT and 0 <= failed <= _COUNT and 0 <= maint <= _COUNT):
            return -1
        us, has = 0, 0
        if ms is not None:
            if type(ms) is not float or not 0.0 <= ms <= _US / 1000.0:
                return -1
            us, has = round(ms * 1000.0), 1
            if us / 1000.0 != ms:  # not a whole µs: would not read back equal
                return -1
        return ((((us << 1 | has) << 6 | maint) << 6 | failed) << 6 | n) << _SHIFT | CHECK

    def _check_row(self, word: int, conn: int) -> Row:
        fields = word >> _SHIFT
        n, failed, maint = fields & 63, fields >> 6 & 63, fields >> 12 & 63
        ms = (fields >> 19) / 1000.0 if fields >> 18 & 1 else None
        return (*self._idle(conn)[: self.TAIL], n, failed, maint, ms)

    def _cut(self, second: int) -> Row | None:
        """Take back the rows of ``second`` and every later second; the row that was at
        ``second`` (None: none)."""
        p = self
        if not len(p) or second >= self._end:
            return None
        was = self._rows(second, second)[0]
        full = self._full
        while self._end > second and len(p):
            word = p[-1]
            kind = word & 3
            span = _span(word)
            start = self._end - span
            if start >= second:  # the whole entry goes
                p.pop()
                if kind == FULL:
                    assert full is not None
                    full.pop()
                self._end = start
            else:  # its last seconds go
                p[-1] -= (self._end - second) << 2
                self._end = second
        if not len(p):
            self._full = None
            self._base = self._end = 0
            self._tconn, self._ext = self._conn0, False
            return was
        self._ext = p[-1] & 3 != GAP and p[-1] & _K != _K
        self._tconn = self._conn_before(len(p))
        return was

    def _conn_before(self, i: int) -> int:
        """The connections in effect after entry ``i - 1``."""
        p, full = self, self._full
        fulls = 0
        for j in range(len(p) - 1, i - 1, -1):
            fulls += p[j] & 3 == FULL
        for j in range(i - 1, -1, -1):
            kind = p[j] & 3
            if kind == IDLE:
                return p[j] >> _SHIFT
            if kind == FULL:
                assert full is not None
                return int(full[len(full) - 1 - fulls][self.CONN])
        return self._conn0

    def _prune(self) -> None:
        """Drop what is older than ``size`` seconds behind the newest row."""
        p, full = self, self._full
        horizon = self._end - self.size
        start, i, fulls = self._base, 0, 0
        conn = self._conn0
        while i < len(p):
            word = p[i]
            kind = word & 3
            span = _span(word)
            if start + span > horizon:
                break
            if kind == IDLE:
                conn = word >> _SHIFT
            elif kind == FULL:
                assert full is not None
                conn = full[fulls][self.CONN]
                fulls += 1
            start += span
            i += 1
        del p[:i]
        if full is not None and fulls:
            del full[:fulls]
        self._base, self._conn0 = start, conn

    # reading ------------------------------------------------------------------------------

    def _rows(self, lo: int, hi: int) -> list[Row | None]:
        """The rows of seconds ``lo`` to ``hi`` (included), None where there is none (never
        written, missed, or more than ``size`` seconds behind the newest)."""
        out: list[Row | None] = [None] * (hi - lo + 1)
        p, full = self, self._full
        if not len(p):
            return out
        lo2 = max(lo, self._base, self._end - self.size)
        hi2 = min(hi, self._end - 1)
        if lo2 > hi2:
            return out
        i, start, fulls = len(p), self._end, 0  # back to the entry that holds lo2
        while i > 0 and start > lo2:
            i -= 1
            word = p[i]
            start -= _span(word)
            fulls += word & 3 == FULL
        fi = (0 if full is None else len(full)) - fulls  # its next FULL row
        conn = self._conn_before(i)
        idle_of, t = self._idle, start
        for j in range(i, len(p)):
            if t > hi2:
                break
            word = p[j]
            kind = word & 3
            if kind == GAP:
                t += word >> 2
                continue
            if kind == IDLE:
                conn = word >> _SHIFT
                head = idle_of(conn)
            elif kind == CHECK:
                head = self._check_row(word, conn)
            else:
                assert full is not None
                head = full[fi]
                fi += 1
                conn = head[self.CONN]
            if t >= lo2:
                out[t - lo] = head
            k = word >> 2 & _KMAX
            if k:
                idle = idle_of(conn)
                for s in range(max(t + 1, lo2), min(t + k, hi2) + 1):
                    out[s - lo] = idle
            t += 1 + k
        return out


def _span(word: int) -> int:
    """The seconds an entry covers."""
    return word >> 2 if word & 3 == GAP else 1 + (word >> 2 & _KMAX)
