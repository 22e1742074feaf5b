"""``quiesce run``'s cyclic GC policy after start-up (issue 16): what start-up built frozen
out of the generations, the first generation's threshold raised (app.run.settle_gc)."""

from __future__ import annotations

import gc

from quiesce.app.run import GC_GEN0, settle_gc


def test_settle_gc_freezes_start_up_and_raises_the_first_threshold() -> None:
    before = gc.get_threshold()
    built = [[i] for i in range(1000)]  # start-up's objects: tracked, alive until exit
    try:
        settle_gc()
        assert gc.get_threshold() == (GC_GEN0, *before[1:])
        assert before[0] < GC_GEN0
        assert gc.get_freeze_count() >= len(built)
        assert not any(o is built for o in gc.get_objects())  # not walked by collections
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
