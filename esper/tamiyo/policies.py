"""Build any of Tamiyo's policies by kind: 'ppo', 'heuristic' or 'static' (the one list of kinds)."""
from __future__ import annotations

from typing import Literal, get_args

import torch

from esper.kasmina.config import LifecycleConfig
from esper.leyline import ActionSpace, TensorSchema
from esper.tamiyo.agent import PPOAgent, make_network
from esper.tamiyo.config import TamiyoConfig
from esper.tamiyo.heuristic import HeuristicTamiyo
from esper.tamiyo.policy import Policy, StaticPolicy

PolicyKind = Literal["ppo", "heuristic", "static"]
POLICY_KINDS: tuple[str, ...] = get_args(PolicyKind)


def make_policy(kind: str, schema: TensorSchema, space: ActionSpace, tamiyo: TamiyoConfig, *,
                lifecycle: LifecycleConfig, max_epochs: int, device: torch.device | str = "cpu",
                seed: int = 0) -> Policy:
    """A fresh policy of `kind` for this observation layout and action space. The heuristic needs the
    seed lifecycle and the episode length (its rules count epochs); PPO starts untrained (load weights)."""
    if kind == "ppo":
        return PPOAgent(make_network(schema, space, tamiyo.network.hidden), schema, space, torch.device(device),
                        seed=seed)
    if kind == "heuristic":
        return HeuristicTamiyo(tamiyo.heuristic, schema, space, lifecycle, max_epochs)
    if kind == "static":
        return StaticPolicy()
    raise ValueError(f"unknown policy {kind!r}; choose one of {list(POLICY_KINDS)}")
