"""Configuration loading: one loader (jsonargparse over the config dataclasses) for YAML files,
dotted KEY=VALUE overrides and CLI flags, and the README's configuration reference built from it."""

from .loader import ConfigLoadError, check, load, read_yaml, split_override

__all__ = ["ConfigLoadError", "check", "load", "read_yaml", "split_override"]
