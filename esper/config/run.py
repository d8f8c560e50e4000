"""The run configuration: every package's settings composed into one model.

    cfg = load_config("configs/smoke.yaml", ["simic.env.max_epochs=10"])
    print(dump_config(cfg))

The defaults are the packages' pydantic defaults (the embedded default config, also shipped as
esper/configs/default.yaml). A YAML file overrides them; `--set a.b=c` overrides the file, with
the value parsed as YAML (so 3 is an int, true a bool, [1, 2] a list). Any unknown key or bad
value is an error naming the field and what it accepts.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from esper.kasmina.config import KasminaConfig
from esper.kasmina.graft import check_host_fits
from esper.nissa.config import StorageConfig, TelemetryConfig
from esper.config.runtime import RuntimeConfig
from esper.simic.config import SimicConfig, check_episode_fits
from esper.tamiyo.config import TamiyoConfig
from esper.tolaria.config import TolariaConfig

DEFAULT_CONFIG_PATH = Path(__file__).parent.parent / "configs" / "default.yaml"


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the field and what would be valid."""


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, description="global seed: runner and env seeds derive from it")
    storage: StorageConfig = StorageConfig()
    kasmina: KasminaConfig = KasminaConfig()
    tolaria: TolariaConfig = TolariaConfig()
    tamiyo: TamiyoConfig = TamiyoConfig()
    nissa: TelemetryConfig = TelemetryConfig()
    simic: SimicConfig = SimicConfig()
    runtime: RuntimeConfig = RuntimeConfig()

    @model_validator(mode="after")
    def _consistent(self) -> "RunConfig":
        check_episode_fits(self.kasmina.lifecycle, self.simic.env)
        check_host_fits(self.kasmina, self.tolaria.data.input_shape)      # slot names and blueprints, on meta
        # Settings for blueprints outside kasmina.blueprints are allowed (unknown ids are refused by kasmina):
        # the defaults hold settings for every blueprint, so `--set kasmina.blueprints=[norm]` must work.
        return self


def _format_errors(exc: ValidationError, model: type[BaseModel]) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            parent = _model_at(model, err["loc"][:-1])
            if parent is not None:
                msg = f"unknown field; valid fields here: {sorted(parent.model_fields)}"
        elif err["type"] != "value_error" and "input" in err and not isinstance(err["input"], dict):
            msg = f"{msg} (got {err['input']!r})"
        if not err["loc"] and err["type"] == "value_error":     # a check across sections names its own fields
            lines.append(f"  {msg.removeprefix('Value error, ')}")
            continue
        lines.append(f"  {loc}: {msg}")
    return "invalid configuration:\n" + "\n".join(lines)


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        model = field.annotation
    return model


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.field=value, e.g. simic.env.max_epochs=10")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"override {text!r} has an empty field name")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from None
    return path, value


def _set_path(tree: dict, path: list[str], value: Any, original: str) -> None:
    node = tree
    for i, part in enumerate(path[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {original!r}: {'.'.join(path[:i + 1])} is a value, not a section")
        node = child
    node[path[-1]] = value


def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | Path | None = None, overrides: Iterable[str] = (), *,
                base: dict | None = None) -> RunConfig:
    """Defaults, then the YAML file at `path` (if any), then `overrides` ("a.b=c")."""
    tree: dict = copy.deepcopy(base or {})          # never edit the caller's tree
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        with open(p) as f:
            loaded = yaml.safe_load(f) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping of sections, got {type(loaded).__name__}")
        tree = _deep_merge(tree, loaded)
    for text in overrides:
        key, value = parse_override(text)
        _set_path(tree, key, value, text)
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, RunConfig)) from None


def config_to_dict(cfg: RunConfig) -> dict:
    return cfg.model_dump(mode="json")


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def default_config() -> RunConfig:
    """The embedded default (the packages' own defaults)."""
    return RunConfig()
