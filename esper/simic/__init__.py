"""Simic: the gym. `simic.environment` holds the environments (what an episode is); `simic.learning`
holds what learns from them (sampler, PPO, checkpoints, IQL, the in-process trainer)."""
from __future__ import annotations

from esper.simic.config import EnvConfig, GovernorConfig, IQLConfig, PPOConfig, RewardConfig, SimicConfig
from esper.simic.environment import (EnvContext, EnvCore, IllegalActionError, MorphogeneticEnv, SequentialEpisodes,
                                     VectorEnv, derive_seed, make_context)

__all__ = [
    "EnvConfig", "EnvContext", "EnvCore", "GovernorConfig", "IQLConfig", "IllegalActionError", "MorphogeneticEnv",
    "PPOConfig", "RewardConfig", "SequentialEpisodes", "SimicConfig", "VectorEnv", "derive_seed", "make_context",
]
