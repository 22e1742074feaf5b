"""The health manager's table of jobs (quiesce.health.manager._Jobs): a server's first job kept
by the server alone, the others by (server, monitor) (issue 21, memory at 100,000 servers);
it answers as a dict by (server, monitor) would, under random adds and removals."""

from __future__ import annotations

import random

import pytest

from quiesce.config import parse_config
from quiesce.health.manager import _Job, _Jobs
from quiesce.health.schedule import Schedule
from quiesce.state.registry import Registry, ServerRuntime


def registry() -> Registry:
    servers = [{"name": f"s{i}", "address": f"127.0.0.1:{1000 + i}"} for i in range(4)]
    return Registry(
        parse_config(
            {
                "healthmonitors": {m: {"type": "tcp"} for m in ("a", "b", "c")},
                "pools": {"p": {"healthmonitors": ["a"], "servers": servers}},
            }
        )
    )


@pytest.mark.parametrize("seed", range(25))
def test_the_jobs_answer_as_a_dict_by_server_and_monitor(seed: int) -> None:
    rnd = random.Random(seed)
    reg = registry()
    servers = list(reg.pool("p").servers)
    definition = reg.monitors["a"]
    jobs = _Jobs()
    ref: dict[tuple[ServerRuntime, str], _Job] = {}
    for _ in range(60):
        key = (rnd.choice(servers), rnd.choice(["a", "b", "c"]))
        if key in ref and rnd.random() < 0.5:
            del jobs[key]
            del ref[key]
        elif key not in ref:
            job = _Job(key[0], key[1], definition, Schedule(0.0, 60.0, 1.0))
            jobs[key] = ref[key] = job
        for k in [(s, m) for s in servers for m in "abc"]:
            assert jobs.get(k) is ref.get(k) and (k in jobs) == (k in ref)
        assert len(jobs) == len(ref)
        assert sorted(map(id, jobs.values())) == sorted(map(id, ref.values()))
        assert dict(jobs.items()) == ref and set(jobs) == set(ref)
    with pytest.raises(KeyError):
        del jobs[(servers[0], "x")]
    jobs.clear()
    assert len(jobs) == 0 and jobs.get((servers[0], "a")) is None
