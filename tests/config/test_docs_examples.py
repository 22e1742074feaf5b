"""The whole configs the docs show load as they are (a ```yaml block of these pages is a
complete config file: quiesce.config.loader.parse_config takes it without a problem)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from quiesce.config.loader import parse_config

ROOT = Path(__file__).resolve().parents[2]
PAGES = ["docs/grpc.md"]  # pages whose yaml blocks are whole configs


def examples() -> list[tuple[str, str]]:
    out = []
    for page in PAGES:
        text = (ROOT / page).read_text(encoding="utf-8")
        blocks = re.findall(r"^```yaml\n(.*?)^```", text, re.M | re.S)
        assert blocks, page
        out += [(f"{page}#{i + 1}", block) for i, block in enumerate(blocks)]
    return out


@pytest.mark.parametrize(("where", "block"), examples(), ids=[w for w, _ in examples()])
def test_the_example_loads(where: str, block: str) -> None:
    parse_config(yaml.safe_load(block), where)
