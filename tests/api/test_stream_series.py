"""``/events/stream?series=…``: the parsing of its ``KIND:NAME`` list (issue 19, item 1); the
stream itself is driven against a real quiesce in tests/e2e/test_series.py."""

from __future__ import annotations

import pytest

from quiesce.frontends.api.deps import ApiError
from quiesce.frontends.api.events import MAX_SERIES, series_specs


def test_series_specs() -> None:
    assert series_specs(None) == []
    assert series_specs("server:web/web1, pool:web,service:www") == [
        ("server", "web/web1"),
        ("pool", "web"),
        ("service", "www"),
    ]
    assert series_specs("server:a:b/c") == [("server", "a:b/c")]  # the first colon splits


@pytest.mark.parametrize(
    "value",
    ["web", "host:web", "pool:", ":web", "pool:web,", "pool:" + "x" * 301],
)
def test_bad_series_specs_are_a_422_naming_series(value: str) -> None:
    with pytest.raises(ApiError) as err:
        series_specs(value)
    assert err.value.status == 422 and str(err.value.detail).startswith("series: ")


def test_at_most_max_series() -> None:
    assert len(series_specs(",".join(["pool:web"] * MAX_SERIES))) == MAX_SERIES
    with pytest.raises(ApiError, match="at most"):
        series_specs(",".join(["pool:web"] * (MAX_SERIES + 1)))
