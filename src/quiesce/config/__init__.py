"""Configuration: one YAML file, validated into immutable models."""

from quiesce.config.loader import ConfigError, load_config, load_text, parse_config
from quiesce.config.models import Config

__all__ = ["Config", "ConfigError", "load_config", "load_text", "parse_config"]
