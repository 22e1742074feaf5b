"""The optional C accelerators are there when the machine could build them."""

from __future__ import annotations

import os

import pytest

from quiesce import _accel


@pytest.mark.skipif(
    not os.environ.get("QUIESCE_EXPECT_ACCEL") or _accel.PURE,
    reason="QUIESCE_EXPECT_ACCEL not set (scripts/test sets it when a C compiler is present)",
)
def test_the_c_accelerators_were_built() -> None:
    assert _accel.httpfast is not None, "quiesce._httpfast did not build: see pip's output"
    assert _accel.checkfast is not None, "quiesce._checkfast did not build: see pip's output"
    assert _accel.logfast is not None, "quiesce._logfast did not build: see pip's output"
    assert _accel.dbfast is not None, "quiesce._dbfast did not build: see pip's output"
    assert _accel.h2fast is not None, "quiesce._h2fast did not build: see pip's output"
