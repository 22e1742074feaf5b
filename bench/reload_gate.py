"""How long runtime server changes wait for a live reload (review 14 R12, R13): the time the
reload's RuntimeGate (quiesce.admin.reload_gate) is closed, from the overrides it plans
against to the end of its apply, wall and CPU, for reloads adding and removing thousands of
servers (max_idle_per_server 1, no monitor). An in-process App started from a file, the
reload worker a real process; the first reload (the worker's start) is not counted.

    python3 bench/reload_gate.py
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.reload.test_runtime_during_reload import BASE, config_text

from quiesce.admin import reload_gate
from quiesce.app import App
from quiesce.config.loader import load_config


async def main() -> None:
    spans: list[tuple[float, float]] = []
    began: list[tuple[float, float]] = []
    hold, release = reload_gate.RuntimeGate.hold, reload_gate.RuntimeGate.release

    def timed_hold(self: reload_gate.RuntimeGate, admin: object) -> None:
        began.append((time.perf_counter(), time.process_time()))
        hold(self, admin)

    def timed_release(self: reload_gate.RuntimeGate) -> None:
        if began:
            wall, cpu = began.pop()
            spans.append((time.perf_counter() - wall, time.process_time() - cpu))
        release(self)

    reload_gate.RuntimeGate.hold = timed_hold  # type: ignore[method-assign]
    reload_gate.RuntimeGate.release = timed_release  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "quiesce.yaml"
        path.write_text(config_text(BASE))
        app = App(load_config(path), tmp, config_path=path)
        await app.start()
        try:
            await app.reload("bench")  # the worker started
            previous = 0
            for n in (2000, 4000, 2000, 6000):
                path.write_text(config_text(BASE, extra=n, prefix=f"g{n}_"))
                t0 = time.perf_counter()
                await app.reload("bench")
                total = time.perf_counter() - t0
                wall, cpu = spans[-1]
                print(
                    f"{n} servers added, {previous} removed: reload {total:.3f} s; gate "
                    f"closed {wall:.3f} s wall, {cpu:.3f} s CPU"
                )
                previous = n
        finally:
            await app.stop(1.0)


if __name__ == "__main__":
    asyncio.run(main())
