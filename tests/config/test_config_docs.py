"""docs/config.md is generated from the config models; it must match them."""

from __future__ import annotations

import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_config_docs_are_up_to_date() -> None:
    module = runpy.run_path(str(ROOT / "scripts" / "make_config_docs.py"))
    expected = module["render"]()
    actual = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert actual == expected, "run: python scripts/make_config_docs.py > docs/config.md"


def test_every_model_field_is_in_the_reference() -> None:
    text = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    for key in (
        "`state.etcd.node`",
        "`pools.NAME.persistence.cookie_name`",
        "`services.NAME.on_response_status.mark_server`",
        "`admin.tls.client_ca`",
    ):
        assert key in text, key
