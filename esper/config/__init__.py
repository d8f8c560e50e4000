"""The run configuration: every package's settings composed into one model (`RunConfig`).

It sits below the runtime (docs/architecture.md, "Layers"): the runtime and the launcher import it,
never the reverse, so the runtime's own settings (`esper.config.runtime`) live here too — they are
plain data, and the composed config must hold them without importing the Ray code that reads them.
"""
from __future__ import annotations

from esper.config.run import (DEFAULT_CONFIG_PATH, ConfigError, RunConfig, config_to_dict, default_config,
                              dump_config, load_config, parse_override)
from esper.config.runtime import FaultInjection, RuntimeConfig

__all__ = [
    "DEFAULT_CONFIG_PATH", "ConfigError", "FaultInjection", "RunConfig", "RuntimeConfig", "config_to_dict",
    "default_config", "dump_config", "load_config", "parse_override",
]
