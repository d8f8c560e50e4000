"""One evaluation episode: `run_episode(run_config, controller, seed) -> EpisodeRecord`.

    record = run_episode(config_to_dict(cfg), Heuristic(), 1000)

A pure function of its arguments, so a Ray task can run it anywhere: the env seed fixes the host's
initialisation and the data order (a paired design: every controller faces the same run on the same
seed), the controller is plain data and builds a fresh policy, and the seed germinations draw from
seeded generators. Two calls with the same arguments give the same record except `wall_seconds`
(records compare equal: that field is excluded) — on the same device type and torch thread count
(CPU float reductions can depend on the thread count).

Loading data is the slow part, so each process keeps the loaded splits per data config and one
`EnvContext` per (kasmina, tolaria, env, gamma) config in a small module-level cache: a static host
at another width gets its own context on the same loaded splits.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from esper.config import RunConfig, load_config
from esper.leyline import EpisodeSummary
from esper.simic.environment import EnvContext, MorphogeneticEnv, make_context
from esper.tolaria import Splits, load_splits

from esper.evaluation.controllers import Controller

_CONTEXTS: OrderedDict[str, EnvContext] = OrderedDict()
_SPLITS: OrderedDict[str, Splits] = OrderedDict()
MAX_CACHED = 16


@dataclass(frozen=True)
class EpisodeRecord:
    """One finished evaluation episode, as plain data (JSON in the result store)."""

    controller: str               # the controller's name
    seed: int                     # the env seed
    final_val_acc: float
    final_test_acc: float         # held-out: never used for a decision, a reward or a selection
    best_val_acc: float
    training_flops: int           # forward + backward of every batch trained (tolaria.flops)
    decision_flops: int           # counterfactual evaluations only growth needs
    evaluation_flops: int         # validation and test passes
    params_host: int
    params_added: int
    seeds_germinated: int
    seeds_fossilized: int
    seeds_culled: int
    epochs: int = 0
    episode_return: float = 0.0
    rollbacks: int = 0
    wall_seconds: float = field(default=0.0, compare=False)      # timing, not what happened

    @classmethod
    def from_summary(cls, controller: str, summary: EpisodeSummary) -> "EpisodeRecord":
        s = summary
        return cls(controller=controller, seed=int(s.env_seed), final_val_acc=float(s.final_val_acc),
                   final_test_acc=float(s.final_test_acc), best_val_acc=float(s.best_val_acc),
                   training_flops=int(s.training_flops), decision_flops=int(s.decision_flops),
                   evaluation_flops=int(s.evaluation_flops), params_host=int(s.params_host),
                   params_added=int(s.params_added), seeds_germinated=int(s.seeds_germinated),
                   seeds_fossilized=int(s.seeds_fossilized), seeds_culled=int(s.seeds_culled),
                   epochs=int(s.epochs), episode_return=float(s.episode_return), rollbacks=int(s.rollbacks),
                   wall_seconds=float(s.wall_seconds))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EpisodeRecord":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def total_flops(self) -> int:
        return self.training_flops + self.decision_flops + self.evaluation_flops


def _key(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)


def context_for(cfg: RunConfig) -> EnvContext:
    """This process's EnvContext for the config's task, host and episode (cached; data loads once)."""
    key = _key([cfg.kasmina.model_dump(mode="json"), cfg.tolaria.model_dump(mode="json"),
                cfg.simic.env.model_dump(mode="json"), cfg.simic.ppo.gamma])
    ctx = _CONTEXTS.get(key)
    if ctx is not None:
        _CONTEXTS.move_to_end(key)
        return ctx
    data_key = _key(cfg.tolaria.data.model_dump(mode="json"))
    splits = _SPLITS.get(data_key)
    if splits is None:
        splits = _SPLITS[data_key] = load_splits(cfg.tolaria.data)
        while len(_SPLITS) > MAX_CACHED:
            _SPLITS.popitem(last=False)
    ctx = _CONTEXTS[key] = make_context(cfg.kasmina, cfg.tolaria, cfg.simic.env, cfg.simic.ppo.gamma, splits=splits)
    while len(_CONTEXTS) > MAX_CACHED:
        _CONTEXTS.popitem(last=False)
    return ctx


def clear_cache() -> None:
    _CONTEXTS.clear()
    _SPLITS.clear()


def run_episode(run_config: dict, controller: Controller, seed: int) -> EpisodeRecord:
    """One full episode (`simic.env.max_epochs` steps) with env seed `seed` on the run config's task,
    driven by `controller` (which may change the config first: a static host's widths)."""
    cfg = load_config(None, (), base=controller.configure(run_config))
    ctx = context_for(cfg)
    policy = controller.policy(ctx, int(seed))
    env = MorphogeneticEnv(ctx)
    obs, info = env.reset(seed=int(seed), options={"episode_id": f"eval-{controller.name}-seed{seed}"})
    policy.reset([0])
    while True:
        decision = policy.act(obs[None], info["action_mask"][None])[0]
        obs, _reward, terminated, truncated, info = env.step(decision.index)
        if terminated or truncated:
            return EpisodeRecord.from_summary(controller.name, info["esper_episode"])
