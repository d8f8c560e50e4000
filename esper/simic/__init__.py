"""Simic: the gym. `simic.environment` holds the environments (what an episode is); `simic.learning`
holds what learns from them (sampler, PPO, checkpoints, IQL, the in-process trainer). Importing it registers
the env with Gymnasium: `gymnasium.make("esper/Morphogenetic-v0", ...)`, or, without importing esper first,
`gymnasium.make("esper.simic:esper/Morphogenetic-v0", ...)` (make imports the module before the look-up)."""
from __future__ import annotations

from esper.simic.config import EnvConfig, GovernorConfig, IQLConfig, PPOConfig, RewardConfig, SimicConfig
from esper.simic.environment import (ENV_ID, EnvContext, EnvCore, IllegalActionError, MorphogeneticEnv,
                                     SequentialEpisodes, VectorEnv, derive_seed, make_context)

__all__ = [
    "ENV_ID", "EnvConfig", "EnvContext", "EnvCore", "GovernorConfig", "IQLConfig", "IllegalActionError",
    "MorphogeneticEnv", "PPOConfig", "RewardConfig", "SequentialEpisodes", "SimicConfig", "VectorEnv", "derive_seed",
    "make_context",
]
