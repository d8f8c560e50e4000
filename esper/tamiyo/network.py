"""Tamiyo's learned policy network: an actor and a critic over the flat, masked action space.

Illegal actions get logit -inf, so their probability is exactly 0 under sampling and in every
log-prob; entropy is taken over the legal actions only. The `FeatureExtractor` is the one
observation encoder shared by PPO and offline IQL, so the two cannot read the layout differently.
`PolicyWeights` is the typed record one version of the network travels as.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
from torch import nn


def _layer(i: int, o: int, gain: float) -> nn.Linear:
    lin = nn.Linear(i, o)
    nn.init.orthogonal_(lin.weight, gain)
    nn.init.zeros_(lin.bias)
    return lin


class FeatureExtractor(nn.Module):
    """Normalized observation -> features: Linear + LayerNorm + tanh blocks."""

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


@dataclass(frozen=True)
class PolicyWeights:
    """One published policy version: what the learner broadcasts and every acting copy loads.

    Plain CPU tensors, dicts and strings, so it crosses the Ray object store and `to_dict()` goes into
    checkpoints that load with `weights_only=True`. `schema_fingerprint` and `action_space` say what
    observation layout and action space the network was made for; loading checks both.
    """

    version: int
    network: dict[str, torch.Tensor]
    normalizer: dict[str, torch.Tensor]
    schema_fingerprint: str
    action_space: dict
    hidden: tuple[int, ...]

    @classmethod
    def export(cls, network: ActorCritic, normalizer_state: dict[str, torch.Tensor], version: int,
               schema_fingerprint: str, action_space: dict) -> "PolicyWeights":
        return cls(int(version), {k: v.detach().cpu().clone() for k, v in network.state_dict().items()},
                   normalizer_state, schema_fingerprint, action_space, tuple(network.hidden))

    def to_dict(self) -> dict:
        return {**asdict(self), "hidden": list(self.hidden)}

    @classmethod
    def from_dict(cls, d: dict) -> "PolicyWeights":
        return cls(int(d["version"]), d["network"], d["normalizer"], d["schema_fingerprint"], d["action_space"],
                   tuple(d["hidden"]))
