"""Build any of Tamiyo's policies for an environment context: 'ppo', 'heuristic' or 'static'."""
from __future__ import annotations

import torch

from esper.simic.agent import PPOAgent, make_network
from esper.simic.context import EnvContext
from esper.tamiyo import HeuristicTamiyo, Policy, StaticPolicy, TamiyoConfig

POLICY_KINDS = ("ppo", "heuristic", "static")


def make_policy(kind: str, ctx: EnvContext, tamiyo: TamiyoConfig, seed: int = 0,
                device: torch.device | None = None) -> Policy:
    if kind == "ppo":
        net = make_network(ctx.schema, ctx.space, tamiyo.network.hidden)
        return PPOAgent(net, ctx.schema, ctx.space, device or ctx.device, seed=seed)
    if kind == "heuristic":
        return HeuristicTamiyo(tamiyo.heuristic, ctx.schema, ctx.space, ctx.kasmina.lifecycle, ctx.max_epochs)
    if kind == "static":
        return StaticPolicy()
    raise ValueError(f"unknown policy {kind!r}; choose one of {list(POLICY_KINDS)}")
