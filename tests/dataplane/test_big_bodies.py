"""Hundreds of MiB through the proxy both ways with RSS flat: nothing buffers a whole body.

The back end runs in this same process (it streams too), so the RSS sampled here is an upper
bound on the proxy's: a proxy holding a body would add the body's size.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.dataplane.backend import Backend
from tests.dataplane.conftest import make_config, start_proxy

pytestmark = pytest.mark.peers

SIZE = 300 * 1024 * 1024
ALLOWED_GROWTH = 64 * 1024 * 1024  # a buffered body would add 300 MiB


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@contextlib.asynccontextmanager
async def rss_peak() -> AsyncIterator[list[int]]:
    """Samples RSS every 20 ms; yields [baseline, peak]."""
    out = [rss(), rss()]

    async def sample() -> None:
        while True:
            out[1] = max(out[1], rss())
            await asyncio.sleep(0.02)

    task = asyncio.create_task(sample())
    try:
        yield out
    finally:
        task.cancel()
        out[1] = max(out[1], rss())


async def run(*cmd: str) -> bytes:
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err
    return out


async def test_big_download_and_upload_keep_rss_flat(backend: Backend, tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    with open(blob, "wb") as f:
        f.truncate(SIZE)  # sparse: costs no disk
    async with start_proxy(make_config([backend.address])) as p:
        # warm up the code paths so their one-off allocations are in the baseline
        await run("curl", "-sS", "-o", "/dev/null", p.url + "/size/1000000")
        async with rss_peak() as down:
            out = await run(
                "curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}", p.url + f"/size/{SIZE}"
            )
        assert int(out) == SIZE
        assert down[1] - down[0] < ALLOWED_GROWTH, down
        async with rss_peak() as up:
            out = await run("curl", "-sS", "-X", "POST", "-T", str(blob), p.url + "/sink")
        assert json.loads(out)["length"] == SIZE
        assert up[1] - up[0] < ALLOWED_GROWTH, up
        async with rss_peak() as chunked:  # chunked both ways: -T - streams stdin chunked
            out = await run(
                "sh",
                "-c",
                f"head -c {SIZE // 2} /dev/zero | curl -sS -T - -X POST {p.url}/echo | wc -c",
            )
        assert int(out) == SIZE // 2
        assert chunked[1] - chunked[0] < ALLOWED_GROWTH, chunked


@pytest.mark.one_path  # L4
async def test_l4_bulk_keeps_rss_flat(backend: Backend, tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    with open(blob, "wb") as f:
        f.truncate(SIZE)
    async with start_proxy(make_config([backend.address], protocol="tcp")) as p:
        url = f"http://127.0.0.1:{p.port}"
        await run("curl", "-sS", "-o", "/dev/null", url + "/size/1000000")
        async with rss_peak() as down:
            out = await run(
                "curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}", url + f"/size/{SIZE}"
            )
        assert int(out) == SIZE
        assert down[1] - down[0] < ALLOWED_GROWTH, down
        async with rss_peak() as up:
            out = await run("curl", "-sS", "-X", "POST", "-T", str(blob), url + "/sink")
        assert json.loads(out)["length"] == SIZE
        assert up[1] - up[0] < ALLOWED_GROWTH, up
