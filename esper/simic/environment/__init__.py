"""The environment: one host training run as an RL episode, single (Gymnasium `MorphogeneticEnv`) or K at
once on one device (`VectorEnv`), built on `EnvCore`'s phases; rewards, the governor, the observation.
Importing it registers `MorphogeneticEnv` with Gymnasium as `ENV_ID` ("esper/Morphogenetic-v0")."""
from __future__ import annotations

from esper.simic.environment.context import EnvContext, make_context
from esper.simic.environment.core import EnvCore, IllegalActionError, StepStatsLayout, derive_seed
from esper.simic.environment.env import ENV_ID, HorizonFromTimeLimit, MaskedDiscrete, MorphogeneticEnv
from esper.simic.environment.vector_env import SequentialEpisodes, VectorEnv

__all__ = ["ENV_ID", "EnvContext", "EnvCore", "HorizonFromTimeLimit", "IllegalActionError", "MaskedDiscrete",
           "MorphogeneticEnv", "SequentialEpisodes", "StepStatsLayout", "VectorEnv", "derive_seed", "make_context"]
