"""The learned Tamiyo as a Policy: the network and the observation normalizer it acts through.

It loads `PolicyWeights` (one object per version, published by the learner) and refuses weights
made for another observation layout or action space.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from esper.leyline import ActionSpace, TamiyoDecision, TensorSchema
from esper.tamiyo.network import ActorCritic, PolicyWeights, log_prob, sample
from esper.tamiyo.normalizer import RunningMeanStd


def make_network(schema: TensorSchema, space: ActionSpace, hidden: Sequence[int]) -> ActorCritic:
    return ActorCritic(schema.size, space.n, hidden)


def export_weights(network: ActorCritic, normalizer: RunningMeanStd, version: int, schema: TensorSchema,
                   space: ActionSpace) -> PolicyWeights:
    return PolicyWeights.export(network, normalizer.state_dict(), version, schema.fingerprint, space.describe())


class PPOAgent:
    """Acts for K envs at once: one batched forward on the agent's device per step."""

    name = "ppo"

    def __init__(self, network: ActorCritic, schema: TensorSchema, space: ActionSpace, device: torch.device,
                 seed: int = 0) -> None:
        self.network = network.to(device).eval()
        self.normalizer = RunningMeanStd(schema.size, device)
        self.schema, self.space, self.device = schema, space, device
        self.version = 0
        self.greedy = False            # evaluation: the most likely legal action instead of a sample
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def reset(self, env_indices: Sequence[int]) -> None:
        pass

    @torch.no_grad()
    def act(self, obs: np.ndarray, masks: np.ndarray) -> list[TamiyoDecision]:
        o = self.normalizer.normalize(torch.as_tensor(obs, device=self.device))
        m = torch.as_tensor(masks, device=self.device)
        logits, values = self.network(o, m)
        actions = logits.argmax(-1) if self.greedy else sample(logits, self.generator)
        logp = log_prob(logits, actions)
        probs = torch.softmax(logits, -1).gather(-1, actions[:, None]).squeeze(-1)
        a, lp, v, p = (t.cpu().numpy() for t in (actions, logp, values, probs))   # one transfer per step
        how = "most likely under" if self.greedy else "sampled from"
        return [TamiyoDecision(self.space.decode(int(a[k])), int(a[k]), f"{how} policy v{self.version}",
                               float(p[k]), float(lp[k]), float(v[k])) for k in range(len(a))]

    def load_weights(self, weights: PolicyWeights) -> None:
        # Check before the same-version shortcut: weights for another schema or action space are
        # refused whatever version number they carry.
        self.schema.check_fingerprint(weights.schema_fingerprint, what="policy weights")
        if weights.action_space != self.space.describe():
            raise ValueError(f"policy weights are for action space {weights.action_space}, "
                             f"this env has {self.space.describe()}")
        if weights.version == self.version and self.version > 0:
            return
        self.network.load_state_dict(weights.network)
        self.normalizer.load_state_dict(weights.normalizer)
        self.version = int(weights.version)
