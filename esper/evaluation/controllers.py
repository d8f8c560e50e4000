"""Controllers: what drives an episode, as plain data that pickles (a Ray task can carry it).

    Static(1.0)                                  the reference host, always WAIT
    Static(1.5)                                  the reference host with every width ×1.5 (rounded, ≥ 1)
    Heuristic()                                  HeuristicTamiyo with its frozen defaults
    Schedule("block1", 1, "conv_enhance", 1)     germinate at step 1, then ADVANCE whenever legal
    Checkpoint.load(path, kasmina, name="ppo")   a trained policy, acting greedily

Each is a frozen dataclass with a stable `name` (the label in results), a `spec` (the text
`parse_controller` reads back: "static", "static:1.5", "heuristic", "schedule:SLOT:BLUEPRINT:STEP",
a checkpoint path), `to_dict()` (what it is, saved with results and grown artifacts), `identity()`
(what the result store hashes: `to_dict` minus where a file happens to live), `configure(run)` (the
run config it needs: a static host changes the host's widths, the others change nothing) and
`policy(ctx, seed)` (a fresh `tamiyo.Policy` for one episode). `parse_controller(text, cfg)` checks a
controller against a run config (slots, blueprints, episode length, a checkpoint's fit) before any
data loads; bad input is a `ControllerError` naming what would be valid.
"""
from __future__ import annotations

import copy
import hashlib
import io
import json
import os
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from esper.config import load_config
from esper.kasmina import KasminaConfig, build_host, schema_and_space
from esper.leyline import ActionSpace
from esper.simic.environment import EnvContext
from esper.simic.learning.checkpoint import load_checkpoint
from esper.storage import read_bytes, resolve_fs
from esper.tamiyo import Policy, ScheduledPolicy, TamiyoConfig
from esper.tamiyo.agent import PPOAgent, make_network
from esper.tamiyo.config import HeuristicConfig
from esper.tamiyo.policy import StaticPolicy

CONTROLLERS = "heuristic, static, static:W, schedule:SLOT:BLUEPRINT:STEP, or a checkpoint file (.pt) or run directory"


class ControllerError(ValueError):
    """A controller that cannot drive this run (the message names what would be valid)."""


@runtime_checkable
class Controller(Protocol):
    name: str

    @property
    def spec(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...

    def identity(self) -> dict[str, Any]: ...

    def configure(self, run: dict) -> dict: ...

    def policy(self, ctx: EnvContext, seed: int) -> Policy: ...


# ------------------------------------------------------------------------------------------ static
def scaled_widths(widths: tuple[int, ...] | list[int], multiplier: float) -> list[int]:
    """The reference host's widths × `multiplier`, rounded to integers ≥ 1."""
    return [max(1, int(round(w * multiplier))) for w in widths]


def host_params(cfg: Any, multiplier: float = 1.0) -> int:
    """Parameters of a composed run config's host (`esper.config.RunConfig`) with its widths × `multiplier`."""
    host = cfg.kasmina.host
    if multiplier != 1.0:
        host = host.model_copy(update={"widths": tuple(scaled_widths(host.widths, multiplier))})
    return sum(p.numel() for p in build_host(host, cfg.tolaria.data.input_shape[0]).parameters())


@dataclass(frozen=True)
class Static:
    """The host alone (always WAIT), its widths scaled by `width` (1.0: the reference host)."""

    width: float = 1.0

    def __post_init__(self) -> None:
        if not self.width > 0:
            raise ControllerError(f"a static host's width multiplier must be > 0, got {self.width}")

    @property
    def name(self) -> str:
        return self.spec

    @property
    def spec(self) -> str:
        return "static" if self.width == 1.0 else f"static:{self.width:g}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "static", "spec": self.spec, "width_multiplier": float(self.width)}

    def identity(self) -> dict[str, Any]:
        return self.to_dict()

    def configure(self, run: dict) -> dict:
        if self.width == 1.0:
            return run
        host = run["kasmina"]["host"]
        if host.get("kind", "cnn") != "cnn":
            raise ControllerError(f"{self.spec}: width multipliers scale the reference CNN "
                                  f"(kasmina.host.kind=cnn), this run's host is {host['kind']!r}")
        out = copy.deepcopy(run)
        out["kasmina"]["host"]["widths"] = scaled_widths(host["widths"], self.width)
        return out

    def param_count(self, run: dict) -> int:
        """The parameter count of this static host for a run config tree."""
        return host_params(load_config(None, (), base=run), self.width)

    def policy(self, ctx: EnvContext, seed: int) -> Policy:
        return StaticPolicy()


# ------------------------------------------------------------------------------------------ heuristic
@dataclass(frozen=True)
class Heuristic:
    """HeuristicTamiyo; `settings` are (field, value) pairs over `tamiyo.HeuristicConfig`'s defaults.
    The evaluation uses `Heuristic()`: the defaults, frozen before any PPO tuning."""

    settings: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        try:
            HeuristicConfig(**dict(self.settings))
        except Exception as exc:
            raise ControllerError(f"heuristic settings {dict(self.settings)}: {exc}") from None

    @classmethod
    def from_config(cls, heuristic: HeuristicConfig) -> "Heuristic":
        return cls(tuple(sorted(heuristic.model_dump(mode="json").items())))

    @property
    def config(self) -> HeuristicConfig:
        return HeuristicConfig(**dict(self.settings))

    @property
    def name(self) -> str:
        resolved = self.config.model_dump(mode="json")
        if resolved == HeuristicConfig().model_dump(mode="json"):
            return "heuristic"
        return "heuristic-" + hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()[:8]

    @property
    def spec(self) -> str:
        return "heuristic"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "heuristic", "spec": self.spec, "settings": self.config.model_dump(mode="json")}

    def identity(self) -> dict[str, Any]:
        return self.to_dict()

    def configure(self, run: dict) -> dict:
        return run

    def policy(self, ctx: EnvContext, seed: int) -> Policy:
        return ctx.make_policy("heuristic", TamiyoConfig(heuristic=self.config), seed=seed)


# ------------------------------------------------------------------------------------------ schedule
@dataclass(frozen=True)
class Schedule:
    """Germinate `blueprint` in slot `slot` (index `slot_index`) at step `germinate_at`, then ADVANCE
    whenever legal (`tamiyo.ScheduledPolicy`: the gates decide, it never culls)."""

    slot: str
    slot_index: int
    blueprint: str
    germinate_at: int

    @property
    def name(self) -> str:
        return self.spec

    @property
    def spec(self) -> str:
        return f"schedule:{self.slot}:{self.blueprint}:{self.germinate_at}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "schedule", "spec": self.spec, "slot": self.slot, "slot_index": self.slot_index,
                "blueprint": self.blueprint, "germinate_at": self.germinate_at}

    def identity(self) -> dict[str, Any]:
        return self.to_dict()

    def configure(self, run: dict) -> dict:
        return run

    def policy(self, ctx: EnvContext, seed: int) -> Policy:
        slots = list(ctx.kasmina.slots)
        if self.slot_index >= len(slots) or slots[self.slot_index] != self.slot:
            raise ControllerError(f"{self.spec}: this run's slots are {slots}, slot {self.slot_index} is not "
                                  f"{self.slot!r}")
        return ScheduledPolicy(ctx.space, self.germinate_at, self.slot_index, self.blueprint, ctx.max_epochs,
                               ctx.schema.index("epoch_frac"))


def make_schedule(slot: str | int, blueprint: str, germinate_at: int, kasmina: KasminaConfig,
                  max_epochs: int, *, spec: str | None = None) -> Schedule:
    """A schedule checked against the run's slots, blueprints and episode length."""
    slots, blueprints = list(kasmina.slots), list(kasmina.blueprints)
    what = spec or f"schedule:{slot}:{blueprint}:{germinate_at}"
    if isinstance(slot, str) and slot in slots:
        index = slots.index(slot)
    elif str(slot).isdigit() and int(slot) < len(slots):
        index = int(slot)
    else:
        raise ControllerError(f"{what!r}: unknown slot {str(slot)!r}; this config's slots (kasmina.slots) "
                              f"are {slots} (or their index 0..{len(slots) - 1})")
    if blueprint not in blueprints:
        raise ControllerError(f"{what!r}: blueprint {blueprint!r} is not one this config may germinate; "
                              f"kasmina.blueprints are {blueprints}")
    if not (isinstance(germinate_at, int) and 0 <= germinate_at < max_epochs):
        raise ControllerError(f"{what!r}: STEP must be an integer in [0, {max_epochs}) "
                              f"(simic.env.max_epochs={max_epochs}), got {germinate_at!r}")
    return Schedule(slots[index], index, blueprint, germinate_at)


# ------------------------------------------------------------------------------------------ checkpoint
@dataclass(frozen=True)
class Checkpoint:
    """A trained policy acting greedily (the most likely legal action), from one checkpoint file.

    Made by `Checkpoint.load`, which resolves a run directory to its latest file, checks that the
    policy fits the run's slots and blueprints and records the file's SHA-256: `policy()` refuses a
    file that changed since, so an episode stays a function of what the controller names."""

    path: str                     # the .pt file
    sha256: str
    policy_version: int
    hidden: tuple[int, ...]
    checkpoint_kind: str = "ppo"
    label: str = ""

    @classmethod
    def load(cls, path: str, kasmina: KasminaConfig, *, name: str = "") -> "Checkpoint":
        schema, space = schema_and_space(kasmina)
        try:
            payload = load_checkpoint(path, schema=schema, space=space)   # format, Leyline, fingerprint, space
        except Exception as exc:                                         # any unreadable or unfitting file
            theirs, their_cfg = _peek(path)
            if theirs is not None and theirs != space.describe():
                trained = their_cfg.get("kasmina", {})
                match = (f"it was trained with kasmina.slots={trained['slots']} and kasmina.blueprints="
                         f"{trained['blueprints']}: set both to match (--set), or use the config it was trained with"
                         if "slots" in trained and "blueprints" in trained else
                         "set kasmina.slots and kasmina.blueprints to match, or use the config it was trained with")
                raise ControllerError(
                    f"controller {path}: the checkpoint's policy was trained for {theirs['num_slots']} slot(s) and "
                    f"blueprints {theirs['blueprint_ids']}, but this config has {_fit(space)} "
                    f"(kasmina.slots={list(kasmina.slots)}). A trained policy fits only hosts with its slot count "
                    f"and blueprint set; {match}") from None
            raise ControllerError(f"controller {path}: cannot use this checkpoint: {exc}") from None
        state = payload.get("learner") or {}
        if "network" not in state or "normalizer" not in state:
            raise ControllerError(f"controller {path}: the checkpoint holds no policy network and normalizer")
        hidden = tuple(state.get("hidden") or [int(v.shape[0]) for k, v in state["network"].items()
                                               if k.startswith("actor_features.net.") and k.endswith(".weight")
                                               and v.dim() == 2])
        try:
            make_network(schema, space, list(hidden)).load_state_dict(state["network"])
        except RuntimeError as exc:
            raise ControllerError(f"controller {path}: the checkpoint's network does not load: {exc}") from None
        file = checkpoint_file(path)
        return cls(file, file_sha256(file), int(state.get("version", 0)), hidden,
                   str(payload.get("kind", "ppo")), name)

    @property
    def name(self) -> str:
        return self.label or f"checkpoint-{self.sha256[:8]}"

    @property
    def spec(self) -> str:
        return self.path

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "checkpoint", "spec": self.path, "name": self.name, "sha256": self.sha256,
                "checkpoint_kind": self.checkpoint_kind, "policy_version": self.policy_version,
                "hidden": list(self.hidden), "greedy": True}

    def identity(self) -> dict[str, Any]:
        out = self.to_dict()
        del out["spec"]                          # the same file moved is the same policy
        return out

    def configure(self, run: dict) -> dict:
        return run

    def policy(self, ctx: EnvContext, seed: int) -> Policy:
        if file_sha256(self.path) != self.sha256:
            raise ControllerError(f"checkpoint {self.path} changed since it was loaded (SHA-256 differs)")
        state = load_checkpoint(self.path, schema=ctx.schema, space=ctx.space)["learner"]
        agent = PPOAgent(make_network(ctx.schema, ctx.space, list(self.hidden)), ctx.schema, ctx.space,
                         torch.device("cpu"), seed=seed)
        agent.network.load_state_dict(state["network"])
        agent.normalizer.load_state_dict(state["normalizer"])
        agent.version = self.policy_version
        agent.greedy = True
        return agent


def checkpoint_file(path: str) -> str:
    """A .pt file as given, or a run directory's latest checkpoint file."""
    if path.endswith(".pt"):
        return path
    fs, p = resolve_fs(path)
    pointer = json.loads(read_bytes(fs, f"{p}/checkpoints/latest.json"))
    return f"{path.rstrip('/')}/checkpoints/{pointer['file']}"


def file_sha256(path: str) -> str:
    fs, p = resolve_fs(path)
    return hashlib.sha256(read_bytes(fs, p)).hexdigest()


def _fit(space: ActionSpace) -> str:
    d = space.describe()
    return f"{d['num_slots']} slot(s) and blueprints {d['blueprint_ids']}"


def _peek(path: str) -> tuple[dict | None, dict]:
    """The action space and config a checkpoint was made for, read without load_checkpoint's checks
    (only to explain why it was refused); (None, {}) if the file cannot be read."""
    try:
        fs, p = resolve_fs(path)
        if not p.endswith(".pt"):
            p = f"{p}/checkpoints/{json.loads(read_bytes(fs, f'{p}/checkpoints/latest.json'))['file']}"
        payload = torch.load(io.BytesIO(read_bytes(fs, p)), map_location="cpu", weights_only=True)
        return payload.get("action_space"), json.loads(payload.get("config") or "{}")
    except Exception:
        return None, {}


# ------------------------------------------------------------------------------------------ parsing
def parse_controller(text: str, cfg: Any, *, name: str = "") -> Controller:
    """A controller from its spec, checked against a composed run config (`esper.config.RunConfig`,
    taken by shape); no data loads. `name` labels a checkpoint (default: checkpoint-<sha256[:8]>)."""
    max_epochs = cfg.simic.env.max_epochs
    if text == "heuristic":
        return Heuristic.from_config(cfg.tamiyo.heuristic)
    if text == "static" or text.startswith("static:"):
        try:
            width = float(text.split(":", 1)[1]) if ":" in text else 1.0
        except ValueError:
            width = -1.0
        if not width > 0:
            raise ControllerError(f"controller {text!r}: a static host is static or static:W with a width "
                                  f"multiplier W > 0, e.g. static:1.5")
        if width != 1.0 and cfg.kasmina.host.kind != "cnn":
            raise ControllerError(f"controller {text!r}: width multipliers scale the reference CNN "
                                  f"(kasmina.host.kind=cnn), this config's host is {cfg.kasmina.host.kind!r}")
        return Static(width)
    if text.startswith("schedule"):
        slots, blueprints = list(cfg.kasmina.slots), list(cfg.kasmina.blueprints)
        example = f"schedule:{slots[min(1, len(slots) - 1)]}:{blueprints[0]}:1"
        parts = text.split(":")
        if len(parts) != 4 or parts[0] != "schedule":
            raise ControllerError(f"controller {text!r}: a schedule is schedule:SLOT:BLUEPRINT:STEP, e.g. {example} "
                                  f"(slots {slots}, blueprints {blueprints})")
        _, slot, blueprint, step_text = parts
        try:
            step: Any = int(step_text)
        except ValueError:
            step = step_text
        return make_schedule(slot, blueprint, step, cfg.kasmina, max_epochs, spec=text)
    if text == "ppo":
        raise ControllerError(f"controller ppo: a learned controller is a checkpoint; pass its file (.pt) or run "
                              f"directory. Controllers: {CONTROLLERS}")
    if "://" not in text and not os.path.exists(text):
        raise ControllerError(f"controller {text!r} is not a controller and no such file or directory exists; "
                              f"choose {CONTROLLERS}")
    return Checkpoint.load(text, cfg.kasmina, name=name)
