"""Tamiyo: the brain. Signals, the heuristic controller, action masks, the Policy protocol, the policy network."""
from __future__ import annotations

from esper.tamiyo.config import HeuristicConfig, NetworkConfig, TamiyoConfig
from esper.tamiyo.heuristic import HeuristicTamiyo
from esper.tamiyo.masks import action_mask, describe_illegal
from esper.tamiyo.policy import Policy, ScheduledPolicy, StaticPolicy
from esper.tamiyo.signals import LARGE_LOSS, SignalTracker, TrackedSignals

__all__ = [
    "LARGE_LOSS", "HeuristicConfig", "HeuristicTamiyo", "NetworkConfig", "Policy", "ScheduledPolicy", "SignalTracker", "StaticPolicy",
    "TamiyoConfig", "TrackedSignals", "action_mask", "describe_illegal",
]
