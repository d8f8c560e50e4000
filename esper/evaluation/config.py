"""An evaluation task: which run, which widths, which schedules, which seeds, how much PPO.

    cfg = load_evaluation_config("configs/evaluate/synthetic.yaml")               # the full protocol
    cfg = load_evaluation_config("configs/evaluate/fashion_mnist.yaml", quick=True,
                                 overrides=["run.tolaria.data.root=~/data/fashion_mnist"])

The YAML (every key optional except `task`; an unknown key or bad value is an error naming it):

    task: synthetic                 # the results folder's name
    run:                            # a RunConfig override tree (esper.config), on top of `base`
      base: ../fashion_mnist.yaml   # optional run config file; relative to this file's folder
      simic: {env: {max_epochs: 20}}
    frontier: {param_ratios: [0.5, 0.75, 1.0, 1.5, 2.2, 3.0]}   # static hosts, × reference params
    schedules: {germinate_at: [1, 3, 5], blueprints: null, slots: null}   # null: all of the run's
    seeds: {train: [0, 1, 2, 3, 4], eval: [1000, ..., 1009], ppo: [100, 101, 102]}
    ppo: {total_updates: 60, envs: 4, overrides: {}}             # per PPO training run
    quick: {...}                    # any of the above, merged on top for --quick

Seeds: training seeds are for selection and tuning only (the schedule family is searched on them);
evaluation seeds score every controller and are used for nothing else; PPO training runs use their
own global seeds (`seeds.ppo`, the config's `seed`), from which their env seeds derive
(`simic.environment.derive_seed`, 63-bit, never the small evaluation seeds). Train and eval seeds,
and PPO and eval seeds, must be disjoint.

`quick` is deep-merged over the rest (mappings merge, lists and values replace) when
`quick=True`, and checked on every load, so a typo there fails even a full run. `overrides`
("a.b=c", the value parsed as YAML) apply last, to the merged tree.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from esper.config import ConfigError, RunConfig, config_to_dict, load_config, parse_override

from esper.evaluation.schedules import schedule_grid

TRAIN_SEEDS = [0, 1, 2, 3, 4]
EVAL_SEEDS = list(range(1000, 1010))
PPO_SEEDS = [100, 101, 102]


class EvaluationConfigError(ValueError):
    """An evaluation config that cannot be used; the message names the field and what would be valid."""


class FrontierConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    param_ratios: list[float] = Field([0.5, 0.75, 1.0, 1.5, 2.2, 3.0], min_length=2,
                                      description="static hosts' parameter counts as multiples of the reference "
                                                  "host's (must include 1.0, the reference)")

    @field_validator("param_ratios")
    @classmethod
    def _ratios(cls, v: list[float]) -> list[float]:
        if any(not r > 0 for r in v) or len(set(v)) != len(v):
            raise ValueError(f"must be distinct positive numbers, got {v}")
        if 1.0 not in v:
            raise ValueError(f"must include 1.0 (the reference host, the 'static' controller), got {v}")
        return sorted(v)


class ScheduleGridConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    germinate_at: list[int] = Field([1, 3, 5], min_length=1, description="germination steps")
    blueprints: list[str] | None = Field(None, description="blueprints to try; null = the run's kasmina.blueprints")
    slots: list[str] | None = Field(None, description="slots to try; null = the run's kasmina.slots")


def _seed_list(v: list[int]) -> list[int]:
    if any(s < 0 for s in v) or len(set(v)) != len(v):
        raise ValueError(f"must be distinct non-negative integers, got {v}")
    return v


class SeedsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train: list[int] = Field(TRAIN_SEEDS, min_length=1, description="env seeds for selection and tuning")
    eval: list[int] = Field(EVAL_SEEDS, min_length=2, description="env seeds every controller is scored on")
    ppo: list[int] = Field(PPO_SEEDS, min_length=1, description="global seeds of the PPO training runs")

    @field_validator("train", "eval", "ppo")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        return _seed_list(v)

    @model_validator(mode="after")
    def _disjoint(self) -> "SeedsConfig":
        for other in ("train", "ppo"):
            both = sorted(set(getattr(self, other)) & set(self.eval))
            if both:
                raise ValueError(f"seeds.{other} and seeds.eval must be disjoint (evaluation seeds are used for "
                                 f"nothing else); both hold {both}")
        return self


class PPOBudget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    total_updates: int = Field(60, ge=1, description="PPO updates per training run (runtime.total_updates; the "
                               "schedules' horizon stays simic.ppo.total_updates)")
    envs: int = Field(4, ge=1, description="envs per update (runtime.envs_per_runner); each runs whole episodes")
    overrides: dict[str, Any] = Field(default_factory=dict, description="RunConfig override tree for the PPO "
                                      "training runs only (e.g. {simic: {ppo: {lr: 0.0005}}})")


class EvaluationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str = Field(description="task name: the results folder (letters, digits, '-', '_')")
    run: dict[str, Any] = Field(default_factory=dict, description="RunConfig override tree, optional `base` file")
    frontier: FrontierConfig = FrontierConfig()
    schedules: ScheduleGridConfig = ScheduleGridConfig()
    seeds: SeedsConfig = SeedsConfig()
    ppo: PPOBudget = PPOBudget()
    transfer: list[str] = Field(default_factory=list, description="other tasks (their task names) whose PPO "
                                "policies are also run here zero-shot, each as its own rows; read from their results "
                                "folders beside this one (the -quick ones in quick mode), so evaluate them first")
    quick: dict[str, Any] = Field(default_factory=dict, description="overrides of this tree for --quick")

    _run: RunConfig = PrivateAttr()
    _is_quick: bool = PrivateAttr(default=False)

    @field_validator("task")
    @classmethod
    def _task(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", v):
            raise ValueError(f"must be letters, digits, '-' or '_' (it names a folder), got {v!r}")
        return v

    @field_validator("transfer")
    @classmethod
    def _transfer(cls, v: list[str]) -> list[str]:
        for name in v:
            cls._task(name)
        if len(set(v)) != len(v):
            raise ValueError(f"must be distinct task names, got {v}")
        return v

    @model_validator(mode="after")
    def _resolve(self) -> "EvaluationConfig":
        self._run = _run_config(self.run, "run")
        kas, max_epochs = self._run.kasmina, self._run.simic.env.max_epochs
        for name, chosen, valid in (("blueprints", self.schedules.blueprints, kas.blueprints),
                                    ("slots", self.schedules.slots, kas.slots)):
            bad = [x for x in chosen or [] if x not in valid]
            if bad:
                raise ValueError(f"schedules.{name}: {bad} not in the run's kasmina.{name} {list(valid)}")
        schedule_grid(kas, max_epochs, self.schedules.germinate_at, self.schedules.blueprints, self.schedules.slots)
        _run_config(_deep_merge(self.run, self.ppo.overrides), "ppo.overrides")
        return self

    # ---------------------------------------------------------------------------------- views
    @property
    def is_quick(self) -> bool:
        return self._is_quick

    @property
    def folder(self) -> str:
        """The results folder: the task name, with -quick for the quick variant (never mixed with the full)."""
        return self.folder_of(self.task)

    def folder_of(self, task: str) -> str:
        """Where `task`'s results are in this config's mode (a transfer source's folder)."""
        return f"{task}-quick" if self._is_quick else task

    def run_config(self) -> RunConfig:
        return self._run

    def run_dict(self) -> dict:
        """The resolved run config as a plain tree: what every evaluation episode runs (and the store hashes)."""
        return config_to_dict(self._run)

    def ppo_run_dict(self, ppo_seed: int) -> dict:
        """The run config one PPO training run uses: its global seed, the PPO budget (whole episodes per
        sample), and `ppo.overrides`."""
        max_epochs = self._run.simic.env.max_epochs
        tree = _deep_merge(self.run, self.ppo.overrides)
        # simic.ppo.total_updates (the lr/entropy schedules' horizon) is left to the PPO config: annealing to 0
        # over the run itself learned less (docs/ablations/ppo-reference-check.md).
        tree = _deep_merge(tree, {"seed": int(ppo_seed),
                                  "runtime": {"policy": "ppo", "total_updates": self.ppo.total_updates,
                                              "envs_per_runner": self.ppo.envs, "steps_per_sample": max_epochs}})
        return config_to_dict(_run_config(tree, "ppo"))

    def quick_variant(self) -> "EvaluationConfig":
        """This config with its `quick` section merged on top."""
        tree = _deep_merge(self.model_dump(mode="json", exclude={"quick"}), self.quick)
        out = _validate(tree, "quick")
        out._is_quick = True
        return out


# ------------------------------------------------------------------------------------------ loading
def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _run_config(tree: dict, where: str) -> RunConfig:
    """A RunConfig from an override tree with an optional `base` YAML file under it."""
    tree = dict(tree)
    base = tree.pop("base", None)
    loaded: dict = {}
    if base is not None:
        path = Path(str(base)).expanduser()
        if not path.is_file():
            raise ValueError(f"{where}.base: run config file {path} does not exist")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{where}.base: {path} must hold a mapping of sections")
    try:
        return load_config(None, (), base=_deep_merge(loaded, tree))
    except ConfigError as exc:
        raise ValueError(f"{where}: {exc}".replace("\n", "\n  ")) from None


def _format(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        lines.append(f"  {loc}: {msg}" if err["loc"] else f"  {msg}")
    return "\n".join(lines)


def _validate(tree: dict, what: str) -> EvaluationConfig:
    try:
        return EvaluationConfig.model_validate(tree)
    except ValidationError as exc:
        raise EvaluationConfigError(f"invalid evaluation config ({what}):\n{_format(exc)}") from None


def _absolute_base(tree: dict, folder: Path) -> None:
    run = tree.get("run")
    if isinstance(run, dict) and isinstance(run.get("base"), str) and not Path(run["base"]).expanduser().is_absolute():
        run["base"] = str((folder / run["base"]).resolve())


def evaluation_config_from_tree(tree: dict, *, quick: bool = False, overrides: Iterable[str] = (),
                                folder: str | Path = ".", what: str = "evaluation config") -> EvaluationConfig:
    """Validate a tree (relative `base` files resolve against `folder`); the quick section is checked always."""
    tree = _deep_merge({}, tree)
    for section in (tree, tree.get("quick") if isinstance(tree.get("quick"), dict) else {}):
        _absolute_base(section, Path(folder))
    full = _validate(tree, what)
    full.quick_variant()                                   # a typo in `quick` fails every load
    if quick:
        tree = _deep_merge(full.model_dump(mode="json", exclude={"quick"}), full.quick)
    for text in overrides:
        key, value = parse_override(text)
        node = tree
        for part in key[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise EvaluationConfigError(f"override {text!r}: {part} is a value, not a section")
        node[key[-1]] = value
    out = _validate(tree, f"{what} with overrides" if overrides else what)
    out._is_quick = quick
    return out


def load_evaluation_config(path: str | Path, *, quick: bool = False, overrides: Iterable[str] = ()) -> EvaluationConfig:
    p = Path(path)
    if not p.is_file():
        raise EvaluationConfigError(f"evaluation config {p} does not exist")
    tree = yaml.safe_load(p.read_text()) or {}
    if not isinstance(tree, dict):
        raise EvaluationConfigError(f"evaluation config {p} must hold a mapping, got {type(tree).__name__}")
    return evaluation_config_from_tree(tree, quick=quick, overrides=overrides, folder=p.parent, what=str(p))
