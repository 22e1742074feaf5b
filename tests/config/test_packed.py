"""``quiesce run``'s config load (quiesce.config.packed.load_packed): the parsed config copied
once the parse is freed, so the process does not keep the parse's memory (issue 21). Equal to
what load_config returns; the resident set it leaves, measured in fresh processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from quiesce.config.loader import ConfigError, load_config
from quiesce.config.packed import load_packed

pytestmark = pytest.mark.peers  # child Python processes

SERVERS = 20_000


def write(path: Path, servers: int) -> Path:
    lines = ["healthmonitors:", "  hc: {type: tcp}", "pools:", "  p:", "    healthmonitors: [hc]"]
    lines.append("    servers:")
    lines += [
        f"      - {{name: s{i}, address: 127.0.0.1:{1000 + i % 50000}}}" for i in range(servers)
    ]
    lines += ["services:", "  www: {listen: 127.0.0.1:0, pool: p}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_packed_config_equals_the_loaded_one(tmp_path: Path) -> None:
    path = write(tmp_path / "q.yaml", 300)
    packed, loaded = load_packed(path), load_config(path)
    assert packed == loaded and packed.pools["p"].servers[7] == loaded.pools["p"].servers[7]
    servers = packed.pools["p"].servers
    # what the models share stays shared: the set of keys given, the empty monitor list
    assert servers[0].__pydantic_fields_set__ is servers[1].__pydantic_fields_set__
    assert servers[0].healthmonitors is servers[1].healthmonitors == []
    (tmp_path / "bad.yaml").write_text("pools: {p: {servers: [{name: a}]}}\n")
    with pytest.raises(ConfigError):
        load_packed(tmp_path / "bad.yaml")


RSS = """
import re, sys
from pathlib import Path
def rss():
    return int(re.search(r"VmRSS:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1))
from quiesce.config.loader import load_config
from quiesce.config.packed import load_packed
load = load_packed if sys.argv[2] == "packed" else load_config
before = rss()
config = load(sys.argv[1])
print((rss() - before) * 1024)
"""


def test_a_packed_config_leaves_far_less_resident(tmp_path: Path) -> None:
    path = write(tmp_path / "q.yaml", SERVERS)

    def resident(how: str) -> float:
        out = subprocess.run(
            [sys.executable, "-c", RSS, str(path), how], capture_output=True, text=True, check=True
        )
        return int(out.stdout) / SERVERS

    plain, packed = resident("plain"), resident("packed")
    # 2,040 bytes a server loaded (0.5 KiB of it live), 1,070 packed (100,000 servers)
    assert packed < 0.75 * plain, (plain, packed)
