"""The Policy protocol shared by the heuristic, the static baseline and the learned policy.

A policy sees exactly what the learner sees: a batch of observations laid out by the TensorSchema
and their action masks. It may keep per-environment state, which `reset` clears at episode starts.
"""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from esper.leyline import Action, ActionKind, TamiyoDecision


@runtime_checkable
class Policy(Protocol):
    name: str
    version: int

    def reset(self, env_indices: Sequence[int]) -> None:
        """Episodes start in these environments."""

    def act(self, obs: np.ndarray, masks: np.ndarray) -> list[TamiyoDecision]:
        """One decision per row of `obs` (K, schema.size) with `masks` (K, num_actions)."""


class StaticPolicy:
    """Always WAIT: the host trains with no growth. The floor every controller must beat."""

    name = "static"
    version = 0

    def reset(self, env_indices: Sequence[int]) -> None:
        pass

    def act(self, obs: np.ndarray, masks: np.ndarray) -> list[TamiyoDecision]:
        return [TamiyoDecision(Action(ActionKind.WAIT), 0, "static host: never grows", 1.0) for _ in range(len(obs))]
