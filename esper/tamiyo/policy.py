"""The Policy protocol shared by the heuristic, the static baseline and the learned policy.

A policy sees exactly what the learner sees: a batch of observations laid out by the TensorSchema
and their action masks. It may keep per-environment state, which `reset` clears at episode starts.
"""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from esper.leyline import Action, ActionKind, ActionSpace, TamiyoDecision


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


class ScheduledPolicy:
    """A fixed growth schedule: germinate `blueprint` in `slot` at `germinate_at`, then advance whenever
    ADVANCE is legal (the gates decide), never cull. The baseline a learned schedule must beat."""

    name = "schedule"
    version = 0

    def __init__(self, space: ActionSpace, germinate_at: int, slot: int, blueprint: str, max_epochs: int,
                 epoch_index: int) -> None:
        self.space, self.germinate_at, self.max_epochs = space, germinate_at, max_epochs
        self.germinate = space.encode(Action(ActionKind.GERMINATE, slot, blueprint))
        self.advance = space.encode(Action(ActionKind.ADVANCE, slot))
        self.epoch_index = epoch_index           # where epoch/max_epochs sits in the observation

    def reset(self, env_indices: Sequence[int]) -> None:
        pass

    def act(self, obs: np.ndarray, masks: np.ndarray) -> list[TamiyoDecision]:
        out = []
        for o, m in zip(obs, masks):
            epoch = int(round(float(o[self.epoch_index]) * self.max_epochs))
            if epoch == self.germinate_at and m[self.germinate]:
                out.append(TamiyoDecision(self.space.decode(self.germinate), self.germinate,
                                          f"schedule: germinate at epoch {epoch}", 1.0))
            elif m[self.advance]:
                out.append(TamiyoDecision(self.space.decode(self.advance), self.advance, "schedule: advance", 1.0))
            else:
                out.append(TamiyoDecision(Action(ActionKind.WAIT), 0, "schedule: wait", 1.0))
        return out
