"""The in-process trainer: one VectorEnv and one PPO learner in one process, no Ray.

It is the reference the Ray runtime is measured against (same Sampler, same learner), and the
harness tests and scripts use to check that PPO learns:

    trainer = InProcessTrainer.from_config(load_config("configs/smoke.yaml"))
    stats, episodes = trainer.iterate()
"""
from __future__ import annotations

from typing import Any

import torch

from esper.kasmina import KasminaConfig, resolve_device
from esper.leyline import ActionSpace, EpisodeSummary, TensorSchema
from esper.nissa.records import emit_episode
from esper.simic.config import SimicConfig
from esper.simic.environment.context import EnvContext, make_context
from esper.simic.environment.core import derive_seed
from esper.simic.environment.vector_env import SequentialEpisodes, VectorEnv
from esper.simic.learning.ppo import PPOLearner, UpdateStats
from esper.simic.learning.rollout import TrajectoryBatch
from esper.simic.learning.sampler import Sampler
from esper.tamiyo import TamiyoConfig
from esper.tamiyo.agent import make_network
from esper.tolaria import TolariaConfig


def make_learner(schema: TensorSchema, space: ActionSpace, simic: SimicConfig, tamiyo: TamiyoConfig,
                 seed: int) -> PPOLearner:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, 99))        # same network init in-process and on Ray
        net = make_network(schema, space, tamiyo.network.hidden)
    device = resolve_device(simic.ppo.device)
    return PPOLearner(net, simic.ppo, schema, space, device, seed=derive_seed(seed, 98))


class InProcessTrainer:
    def __init__(self, *, kasmina: KasminaConfig, tolaria: TolariaConfig, simic: SimicConfig, tamiyo: TamiyoConfig,
                 seed: int = 0, num_envs: int = 2, steps_per_sample: int = 8, policy: str = "ppo",
                 device: str | None = None, ctx: EnvContext | None = None) -> None:
        self.ctx = ctx or make_context(kasmina, tolaria, simic.env, simic.ppo.gamma, device)
        self.steps_per_sample = steps_per_sample
        self.vec = VectorEnv(self.ctx, num_envs, SequentialEpisodes(derive_seed(seed, 0), prefix="r0"))
        self.policy = self.ctx.make_policy(policy, tamiyo, seed=derive_seed(seed, 0, 1))
        self.learner = make_learner(self.ctx.schema, self.ctx.space, simic, tamiyo, seed) if policy == "ppo" else None
        if self.learner is not None:
            self.policy.load_weights(self.learner.weights())
        self.sampler = Sampler(self.vec, self.policy)

    @classmethod
    def from_config(cls, cfg: Any, *, num_envs: int | None = None, steps_per_sample: int | None = None,
                    policy: str | None = None, seed: int | None = None, device: str | None = None,
                    ctx: EnvContext | None = None) -> "InProcessTrainer":
        """From a composed run config (`esper.config.RunConfig`; taken by shape, as simic sits below it):
        envs, steps and policy default to its runtime section, the seed to its global seed."""
        rt = cfg.runtime
        return cls(kasmina=cfg.kasmina, tolaria=cfg.tolaria, simic=cfg.simic, tamiyo=cfg.tamiyo,
                   seed=cfg.seed if seed is None else seed,
                   num_envs=rt.envs_per_runner if num_envs is None else num_envs,
                   steps_per_sample=rt.steps_per_sample if steps_per_sample is None else steps_per_sample,
                   policy=rt.policy if policy is None else policy, device=device, ctx=ctx)

    def collect(self) -> tuple[TrajectoryBatch, list[EpisodeSummary]]:
        """One batch of trajectories; the episodes it finished are emitted here, once (this trainer consumes them)."""
        batch, episodes = self.sampler.sample(self.steps_per_sample)
        for e in episodes:
            emit_episode(e, self.policy.name)
        return batch, episodes

    def iterate(self) -> tuple[UpdateStats | None, list[EpisodeSummary]]:
        """Collect one batch and, for PPO, update and hand the new weights to the acting policy."""
        batch, episodes = self.collect()
        if self.learner is None:
            return None, episodes
        stats = self.learner.update([batch])
        self.policy.load_weights(self.learner.weights())
        return stats, episodes
