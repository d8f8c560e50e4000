"""The in-process trainer: one VectorEnv and one PPO learner in one process, no Ray.

It is the reference the Ray runtime is measured against (same Sampler, same learner), and the
harness tests use to check that PPO learns.
"""
from __future__ import annotations

import torch

from esper.kasmina import KasminaConfig, resolve_device
from esper.leyline import ActionSpace, EpisodeSummary, TensorSchema
from esper.simic.agent import make_network
from esper.simic.config import SimicConfig
from esper.simic.context import EnvContext, make_context
from esper.simic.core import derive_seed
from esper.simic.policies import make_policy
from esper.simic.ppo import PPOLearner, UpdateStats
from esper.simic.rollout import TrajectoryBatch
from esper.simic.sampler import Sampler
from esper.simic.vector_env import SequentialEpisodes, VectorEnv
from esper.tamiyo import TamiyoConfig
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
        self.policy = make_policy(policy, self.ctx, tamiyo, seed=derive_seed(seed, 0, 1))
        self.learner = make_learner(self.ctx.schema, self.ctx.space, simic, tamiyo, seed) if policy == "ppo" else None
        if self.learner is not None:
            self.policy.load_weights(self.learner.weights())
        self.sampler = Sampler(self.vec, self.policy)

    def collect(self) -> tuple[TrajectoryBatch, list[EpisodeSummary]]:
        return self.sampler.sample(self.steps_per_sample)

    def iterate(self) -> tuple[UpdateStats | None, list[EpisodeSummary]]:
        """Collect one batch and, for PPO, update and hand the new weights to the acting policy."""
        batch, episodes = self.collect()
        if self.learner is None:
            return None, episodes
        stats = self.learner.update([batch])
        self.policy.load_weights(self.learner.weights())
        return stats, episodes
