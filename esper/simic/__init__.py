"""Simic: the gym. Environments (single and vectorized), rewards, the governor, PPO, checkpoints, IQL."""
from __future__ import annotations

from esper.simic.config import EnvConfig, GovernorConfig, IQLConfig, PPOConfig, RewardConfig, SimicConfig
from esper.simic.context import EnvContext, make_context, schema_for
from esper.simic.core import EnvCore, IllegalActionError, derive_seed
from esper.simic.env import MorphogeneticEnv
from esper.simic.vector_env import SequentialEpisodes, VectorEnv

__all__ = [
    "EnvConfig", "EnvContext", "EnvCore", "GovernorConfig", "IQLConfig", "IllegalActionError", "MorphogeneticEnv",
    "PPOConfig", "RewardConfig", "SequentialEpisodes", "SimicConfig", "VectorEnv", "derive_seed", "make_context",
    "schema_for",
]
