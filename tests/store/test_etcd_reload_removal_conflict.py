"""Review 90 F13 on etcd: a reload's answer is the reload's outcome. A runtime change made on
the same node while the reload's writes were being confirmed, whose own write lost to another
node's newer change, is answered 409 to its caller, and not to the reload's (which applied
fully). In-process Apps on a real etcd, driven through the REST API; the reload is held at the
end of its apply (``Reloader._written``) and A's etcd writer stopped while the runtime change
is made, so A's write loses to B's deterministically."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from quiesce.app.reload import Reloader
from tests.store.test_etcd import ETCD, Etcd, node_config, until
from tests.store.test_etcd_reload_hold import api, etcd_store, started

pytestmark = [
    pytest.mark.skipif(not Path(ETCD).exists(), reason="etcd server not installed"),
    pytest.mark.peers,
]


def config(head: str, weight: int = 1) -> str:
    return head + (
        f"pools:\n  web:\n    servers:\n"
        f"      - {{name: s0, address: 127.0.0.1:9000, weight: {weight}}}\n"
        "      - {name: g7, address: 127.0.0.1:9001}\n"
        "services:\n  www: {listen: 127.0.0.1:0, pool: web}\n"
    )


async def test_a_reload_is_not_answered_by_another_requests_conflict(
    tmp_path: Path, etcd: Etcd, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"/quiesce-test/{tmp_path.name}/"
    ha, hb = node_config(etcd, prefix, "A"), node_config(etcd, prefix, "B")
    a = await started(tmp_path / "a", config(ha))
    b = await started(tmp_path / "b", config(hb))
    reached, go = asyncio.Event(), asyncio.Event()
    written = Reloader._written

    async def held(self: Reloader) -> None:  # the reload applied, its writes being confirmed
        reached.set()
        await go.wait()
        await written(self)

    monkeypatch.setattr(Reloader, "_written", held)
    store = etcd_store(a)
    try:
        (tmp_path / "a" / "quiesce.yaml").write_text(config(ha, weight=5))
        async with api(a) as http_a, api(b) as http_b:
            reload = asyncio.create_task(http_a.post("/reload"))
            await until(lambda: reached.is_set() or reload.done(), 30)
            assert reached.is_set(), reload.result().text
            assert a.registry.pools["web"].server("s0").weight == 5  # applied
            writer = store._tasks[0]
            assert writer.get_name() == "quiesce etcd writer"
            writer.cancel()  # A's writes wait in its queue
            await until(writer.done)
            patch_a = asyncio.create_task(http_a.patch("/servers/web/g7", json={"weight": 2}))
            await until(lambda: a.registry.pools["web"].server("g7").weight == 2)
            patched = await http_b.patch("/servers/web/g7", json={"weight": 3})
            assert patched.status_code == 200, patched.text  # B's write is in etcd first
            store._tasks[0] = asyncio.create_task(store._run_writer())
            go.set()
            lost = await patch_a
            assert lost.status_code == 409, lost.text  # the runtime change's caller
            assert "web/g7" in lost.json()["detail"]
            answer = await reload
            assert answer.status_code == 200, answer.text  # the reload applied fully
            assert answer.json()["reloaded"] is True
        await until(lambda: a.registry.pools["web"].server("g7").weight == 3)
    finally:
        go.set()
        await b.stop(1.0)
        await a.stop(1.0)
