"""Trajectories as runners send them (numpy, through the object store) and GAE(λ)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class TrajectoryBatch:
    """T steps of K envs under one policy version. `dones[t, k]`: the episode ended with step t."""

    obs: np.ndarray            # (T, K, D) float32, raw (un-normalized)
    actions: np.ndarray        # (T, K) int64
    masks: np.ndarray          # (T, K, A) bool
    log_probs: np.ndarray      # (T, K) float32, behaviour policy
    values: np.ndarray         # (T, K) float32, behaviour critic (informational)
    rewards: np.ndarray        # (T, K) float32
    dones: np.ndarray          # (T, K) bool
    last_obs: np.ndarray       # (K, D): the observation after the last step (bootstrap)
    policy_version: int
    runner: int = 0
    episode_ids: list[list[str]] = field(default_factory=list)   # (T, K) for accounting

    @property
    def num_transitions(self) -> int:
        return int(self.actions.size)

    @staticmethod
    def concat_envs(batches: list["TrajectoryBatch"]) -> "TrajectoryBatch":
        """Stack several batches (same T) along the env axis."""
        if len({b.obs.shape[0] for b in batches}) != 1:
            raise ValueError("trajectory batches must share the number of steps T to be stacked")
        cat = lambda name, axis=1: np.concatenate([getattr(b, name) for b in batches], axis=axis)  # noqa: E731
        return TrajectoryBatch(cat("obs"), cat("actions"), cat("masks"), cat("log_probs"), cat("values"),
                               cat("rewards"), cat("dones"), cat("last_obs", 0),
                               min(b.policy_version for b in batches), -1)


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, last_values: torch.Tensor,
                gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns for (T, K) tensors; no bootstrap across an episode end."""
    T = rewards.shape[0]
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(last_values)
    next_values = last_values
    for t in reversed(range(T)):
        not_done = 1.0 - dones[t].to(rewards.dtype)     # not .float(): keeps float64 inputs exact
        delta = rewards[t] + gamma * next_values * not_done - values[t]
        running = delta + gamma * lam * not_done * running
        adv[t] = running
        next_values = values[t]
    return adv, adv + values
