"""MorphogeneticEnv: one host training run as a Gymnasium environment.

    env = MorphogeneticEnv()                      # built-in synthetic task, reference host
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_masks().nonzero()[0][0])

One episode = one host trained for `max_epochs` steps; one step = apply the action, train
`batches_per_step` batches (default one epoch), evaluate on validation. The action mask is in
`info["action_mask"]` and `env.action_masks()`; an illegal action raises IllegalActionError.
`action_space.sample()` draws among the legal actions, so random agents and Gymnasium's env
checker exercise real transitions. Stepped by hand, it writes its own telemetry (step, seed,
diagnostic and episode events) to the process's hub; it knows no policy, so `policy_version` is -1.
"""
from __future__ import annotations

import weakref

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from esper.kasmina import KasminaConfig
from esper.nissa.records import emit_episode, emit_records
from esper.simic.config import EnvConfig
from esper.simic.environment.context import EnvContext, make_context
from esper.simic.environment.core import EnvCore
from esper.tolaria import TolariaConfig


class MaskedDiscrete(spaces.Discrete):
    """A Discrete space whose mask-less `sample()` draws from the env's current legal actions."""

    def __init__(self, n: int, env: "MorphogeneticEnv", seed: int | None = None) -> None:
        super().__init__(n, seed=seed)
        self._env = weakref.ref(env)      # a weak reference: copying the space must not copy the env

    def sample(self, mask=None, probability=None):
        env = self._env()
        if mask is None and probability is None and env is not None and env.core.model is not None:
            mask = env.action_masks().astype(np.int8)
        return super().sample(mask=mask, probability=probability)


class MorphogeneticEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, ctx: EnvContext | None = None, *, kasmina: KasminaConfig | None = None,
                 tolaria: TolariaConfig | None = None, env: EnvConfig | None = None, gamma: float = 0.99,
                 device: str | None = None, env_index: int = 0) -> None:
        super().__init__()
        self.ctx = ctx or make_context(kasmina or KasminaConfig(), tolaria or TolariaConfig(), env or EnvConfig(),
                                       gamma, device)
        self.core = EnvCore(self.ctx, env_index)
        self.observation_space = spaces.Box(-np.inf, np.inf, (self.ctx.schema.size,), np.float32)
        self.action_space = MaskedDiscrete(self.ctx.space.n, self)
        self._done = True

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        env_seed = seed if seed is not None else int(self.np_random.integers(2**62))
        episode_id = options.get("episode_id", f"env{self.core.env_index}-seed{env_seed}")
        self._done = False
        return self.core.reset(env_seed, episode_id, int(options.get("attempt", 0)))

    def step(self, action):
        if self._done:
            raise RuntimeError("the episode is over (or never started); call reset() first")
        core = self.core
        core.begin_step(int(action))
        for _ in range(core.batches_per_step):
            core.train_batch()
        core.evaluate()
        stats = core.device_stats().cpu().numpy()           # the step's one synchronisation
        obs, reward, terminated, truncated, info = core.finish_step(stats)
        emit_records(info["records"], policy_version=-1)
        if "episode" in info:
            emit_episode(info["episode"], policy="")
        self._done = terminated or truncated
        return obs, reward, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        if self.core.model is None:
            raise RuntimeError("call reset() before asking for the action mask")
        return self.core.action_mask()
