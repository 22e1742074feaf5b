"""The demo's traffic task ends when the shutdown cancels it, even when the cancel lands
together with a refused connection (the listener has just closed): with ``asyncio.wait_for``
on Python 3.11 that cancel was swallowed, the task looped on refusals for ever, and
``quiesce demo`` hung on SIGTERM (seen in CI as a 20 s timeout)."""

from __future__ import annotations

import asyncio

import pytest

from quiesce.demo import DemoTraffic


def test_traffic_task_ends_on_a_cancel_that_lands_with_a_refusal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario() -> tuple[bool, int]:
        traffic = DemoTraffic(port=1, rate=1000.0)

        async def refused(host: str, port: int) -> object:
            # the shutdown cancels the task while its connect is being refused
            assert traffic.task is not None
            traffic.task.cancel()
            raise ConnectionRefusedError(111, "refused")

        monkeypatch.setattr(asyncio, "open_connection", refused)
        traffic.start()
        assert traffic.task is not None
        for _ in range(200):  # loop turns, not time: each try sleeps 1 ms
            if traffic.task.done():
                break
            await asyncio.sleep(0.001)
        done = traffic.task.done()
        if not done:
            traffic.task.cancel()  # do not leave it behind for the next cancel to lose
        return done and traffic.task.cancelled(), traffic.sent

    ended, tries = asyncio.run(scenario())
    assert ended, "the cancel was swallowed: the task kept trying"
    assert tries == 1


def test_a_busy_port_hint_names_both_port_options() -> None:
    from quiesce.demo import busy_port_hint

    for exc, which in (
        (OSError("[Errno 98] address already in use"), "the service port"),
        (OSError("admin 127.0.0.1:9900: [Errno 98] Address already in use"), "the admin port"),
    ):
        hint = busy_port_hint(exc)
        assert hint is not None and which in hint
        assert "--port 0 --admin-port 0" in hint
    assert busy_port_hint(OSError("permission denied")) is None
