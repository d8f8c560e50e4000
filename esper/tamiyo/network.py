"""Tamiyo's learned policy network: an actor and a critic over the flat, masked action space.

Illegal actions get logit -inf, so their probability is exactly 0 under sampling and in every
log-prob; entropy is taken over the legal actions only. The `FeatureExtractor` is the one
observation encoder shared by PPO and offline IQL, so the two cannot read the layout differently.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


def _layer(i: int, o: int, gain: float) -> nn.Linear:
    lin = nn.Linear(i, o)
    nn.init.orthogonal_(lin.weight, gain)
    nn.init.zeros_(lin.bias)
    return lin


class FeatureExtractor(nn.Module):
    """Normalised observation -> features: Linear + LayerNorm + tanh blocks."""

    def __init__(self, obs_size: int, hidden: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = obs_size
        for h in hidden:
            layers += [_layer(width, h, math.sqrt(2)), nn.LayerNorm(h), nn.Tanh()]
            width = h
        self.net = nn.Sequential(*layers)
        self.out_features = width

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


class ActorCritic(nn.Module):
    """Separate actor and critic trunks (a shared trunk lets value errors disturb the policy)."""

    def __init__(self, obs_size: int, num_actions: int, hidden: Sequence[int] = (128, 128)) -> None:
        super().__init__()
        self.obs_size, self.num_actions, self.hidden = obs_size, num_actions, list(hidden)
        self.actor_features = FeatureExtractor(obs_size, hidden)
        self.critic_features = FeatureExtractor(obs_size, hidden)
        self.policy_head = _layer(self.actor_features.out_features, num_actions, 0.01)
        self.value_head = _layer(self.critic_features.out_features, 1, 1.0)

    def logits(self, obs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_logits(self.policy_head(self.actor_features(obs)), mask)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.value_head(self.critic_features(obs)).squeeze(-1)

    def forward(self, obs: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.logits(obs, mask), self.value(obs)


def masked_logits(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return logits.masked_fill(~mask, float("-inf"))


def log_prob(masked: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(masked, -1).gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)


def entropy(masked: torch.Tensor) -> torch.Tensor:
    """Entropy over the legal actions (masked entries contribute exactly 0, not NaN)."""
    logp = torch.log_softmax(masked, -1)
    p = logp.exp()
    return -(p * logp.masked_fill(torch.isinf(masked), 0.0)).sum(-1)


def sample(masked: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    return torch.multinomial(torch.softmax(masked, -1), 1, generator=generator).squeeze(-1)
