"""The last check results of a monitor (quiesce.state.recent.Recent): stored packed, read back
equal to the results given, oldest first, at most LAST_CHECKS."""

from __future__ import annotations

import random
from collections.abc import Callable, MutableMapping
from itertools import takewhile

import pytest

from quiesce.core.checks import CheckResult, Reason
from quiesce.core.oper import AT_REST, MonitorTrack, Thresholds
from quiesce.core.states import Oper, Verdict
from quiesce.state.recent import LAST_CHECKS, Checks, Recent, Tracks


def results(seed: int, n: int) -> list[CheckResult]:
    rnd = random.Random(seed)
    out = []
    at = 1_765_000_000.0
    for _ in range(n):
        at += rnd.choice([0.001, 1.0, 60.0, 0.1234567])
        r = CheckResult(
            "m",
            rnd.choice(list(Verdict)),
            rnd.choice(list(Reason)),
            rnd.choice([at, int(at)]) if rnd.random() < 0.1 else at,  # an int time: kept whole
            rnd.choice([0.0, 0.000123, rnd.random(), 3, 1e-9]),
            rnd.choice([None, 0, 200, 503, 999, 2**41, -1]),
            rnd.choice(["", "", "RST", "connection refused", f"got {rnd.random()}"]),
        )
        out.append(r)
    return out


@pytest.mark.parametrize("seed", range(20))
def test_results_read_back_equal_oldest_first_last_ten(seed: int) -> None:
    given = results(seed, 25)
    recent = Recent("m")
    for k, r in enumerate(given, 1):
        recent.append(r)
        kept = given[max(0, k - LAST_CHECKS) : k]
        assert list(recent) == kept
        assert len(recent) == len(kept) and recent[-1] == r and recent[0] == kept[0]
        # the same types as given (a JSON view shows 1000 and 1000.0 differently)
        assert [type(x.at) for x in recent] == [type(x.at) for x in kept]
        assert [type(x.latency) for x in recent] == [type(x.latency) for x in kept]
        assert recent[-2:] == kept[-2:]
        assert recent.newest_at() == r.at
        since = kept[len(kept) // 2].at
        # from the newest back while newer (times only grow, but for the int times here)
        newer = takewhile(lambda x, t=since: x.at > t, reversed(kept))
        assert list(recent.newer(since)) == [(x.verdict, x.latency) for x in newer]


def test_an_empty_ring() -> None:
    recent = Recent("m")
    assert len(recent) == 0 and not list(recent) and recent.newest_at() == 0.0
    assert list(recent.newer(0.0)) == []
    with pytest.raises(IndexError):
        recent[-1]


def test_a_result_of_another_monitor_is_kept_whole() -> None:
    recent = Recent("m")
    other = CheckResult("n", Verdict.PASS, Reason.OK, 1.0, 0.5)
    recent.append(other)
    assert recent[0] is other


def test_status_codes_past_the_table_are_kept_whole_and_read_back_equal() -> None:
    """Status codes are kept by number in a table of the process (511 at most): past it a
    result is kept whole, and reads back equal all the same."""
    recent = Recent("m")
    given = [
        CheckResult("m", Verdict.PASS, Reason.OK, 1000.0 + k, 0.001 * k, 10_000 + k, "")
        for k in range(600)
    ]
    for k, r in enumerate(given, 1):
        recent.append(r)
        assert list(recent) == given[max(0, k - LAST_CHECKS) : k]
        assert recent.newest_at() == r.at
    assert recent._whole is not None and recent[-1] is given[-1]  # past the table: whole
    assert list(recent.newer(1595.5)) == [(Verdict.PASS, 0.001 * k) for k in (599, 598, 597, 596)]
    # 20 bytes a row, the last ten kept
    assert len(recent._rows) == 20 * LAST_CHECKS


def _a_dict() -> MutableMapping[str, Recent]:
    return {"m": Recent("m")}


def _a_checks() -> MutableMapping[str, Recent]:
    return Checks([Recent("m")])


@pytest.mark.parametrize("make", [_a_dict, _a_checks])
def test_a_servers_tracks_are_a_view_of_its_recent_checks(
    make: Callable[[], MutableMapping[str, Recent]],
) -> None:
    checks = make()
    tracks = Tracks(checks)
    assert tracks["m"] is AT_REST[Oper.UNKNOWN] and tracks.get("x") is None and len(tracks) == 1
    tracks["m"] = MonitorTrack(Oper.UP, 2)
    assert checks["m"].track == MonitorTrack(Oper.UP, 2) and dict(tracks) == {
        "m": checks["m"].track
    }
    tracks["n"] = AT_REST[Oper.DOWN]  # a monitor it did not have: added, no results yet
    assert list(checks) == ["m", "n"] and len(checks["n"]) == 0 and "n" in tracks
    del tracks["m"]
    assert list(checks) == ["n"] and "m" not in tracks


def test_tracks_at_rest_are_shared() -> None:
    up = MonitorTrack(Oper.DOWN, 1).feed(
        Verdict.PASS, Thresholds(successful_checks=2, failed_checks=3)
    )
    assert up is AT_REST[Oper.UP]


@pytest.mark.parametrize("seed", range(30))
def test_a_servers_checks_behave_as_a_dict_of_them(seed: int) -> None:
    """Checks (ServerRuntime.last_checks, 48 bytes for one monitor) against a dict under the
    same random adds, replacements, deletions and lookups."""
    rnd = random.Random(seed)
    names = ["a", "b", "c", "d"]
    start = rnd.sample(names, rnd.randint(0, 3))
    ref: dict[str, Recent] = {m: Recent(m) for m in start}
    checks = Checks(ref.values())
    for _ in range(40):
        m = rnd.choice(names)
        op = rnd.randrange(4)
        if op == 0:
            r = Recent(m)
            checks[m] = r
            ref[m] = r
        elif op == 1 and m in ref:
            del checks[m]
            del ref[m]
        elif op == 1:
            with pytest.raises(KeyError):
                del checks[m]
        elif op == 2:
            r = Recent(m)
            assert checks.setdefault(m, r) is ref.setdefault(m, r)
        else:
            assert checks.get(m) is ref.get(m)
            assert (m in checks) == (m in ref)
        assert list(checks) == list(ref) and len(checks) == len(ref)
        assert list(checks.values()) == list(ref.values()) and dict(checks) == ref
        assert bool(checks) == bool(ref) and checks == ref
    with pytest.raises(KeyError):
        checks["x"]


def test_checks_keep_a_recent_under_its_own_monitor() -> None:
    checks = Checks()
    blank = Recent()
    checks["m"] = blank  # no monitor yet: it takes the key's
    assert blank.monitor == "m" and checks["m"] is blank
    with pytest.raises(ValueError, match="kept as"):
        checks["n"] = Recent("m")
