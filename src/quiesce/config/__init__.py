"""Configuration: one YAML file, validated into immutable models.

The names below load their modules on first use (PEP 562), so ``quiesce.config.durations`` and
``quiesce.config.addresses`` can be imported (by the CLI client, which must start fast) without
pydantic and the models."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quiesce.config.loader import ConfigError, load_config, load_text, parse_config
    from quiesce.config.models import Config

_WHERE = {
    "Config": "quiesce.config.models",
    "ConfigError": "quiesce.config.loader",
    "load_config": "quiesce.config.loader",
    "load_text": "quiesce.config.loader",
    "parse_config": "quiesce.config.loader",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'quiesce.config' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = ["Config", "ConfigError", "load_config", "load_text", "parse_config"]
