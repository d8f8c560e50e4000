"""The blueprint catalog: seed architectures that start as near-identity residuals (last layer zero).

A seed maps the host activation h (N, C, H, W) to a residual s(h) of the same shape; the slot
decides how s reaches the host's forward value (see esper.kasmina.isolation).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from esper.leyline import BLUEPRINT_IDS


class UnknownBlueprintError(KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class _NormSeed(nn.Module):
    """GroupNorm followed by a per-channel scale that starts at zero."""

    def __init__(self, channels: int, groups: int = 1) -> None:
        super().__init__()
        if not isinstance(groups, int) or groups < 1:
            raise ValueError(f"norm: groups must be a positive integer, got {groups!r}")
        if channels % groups:
            raise ValueError(f"norm blueprint: groups={groups} must divide channels={channels}")
        self.norm = nn.GroupNorm(groups, channels)
        self.scale = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.norm(h) * self.scale


class _SqueezeExciteSeed(nn.Module):
    """Channel attention: s(h) = h * tanh(fc2(relu(fc1(mean(h))))), fc2 zero so s starts at 0."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        if not isinstance(reduction, int) or reduction < 1:
            raise ValueError(f"attention: reduction must be a positive integer, got {reduction!r}")
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        g = torch.tanh(self.fc2(torch.relu(self.fc1(h.mean((2, 3), keepdim=True)))))
        return h * g


def _depthwise(channels: int, kernel_size: int = 3) -> nn.Module:
    _odd(kernel_size, "depthwise")
    last = nn.Conv2d(channels, channels, 1)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(
        nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=False),
        nn.BatchNorm2d(channels), nn.ReLU(), last)


def _conv_enhance(channels: int, width_multiplier: float = 2.0, kernel_size: int = 3) -> nn.Module:
    _odd(kernel_size, "conv_enhance")
    if width_multiplier <= 0:
        raise ValueError(f"conv_enhance: width_multiplier must be > 0, got {width_multiplier}")
    width = max(1, round(channels * width_multiplier))
    last = nn.Conv2d(width, channels, kernel_size, padding=kernel_size // 2)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(nn.Conv2d(channels, width, kernel_size, padding=kernel_size // 2, bias=False),
                         nn.BatchNorm2d(width), nn.ReLU(), last)


def _odd(k: int, name: str) -> None:
    if not isinstance(k, int) or k < 1 or k % 2 == 0:
        raise ValueError(f"{name}: kernel_size must be a positive odd integer, got {k!r}")


@dataclass(frozen=True)
class Blueprint:
    id: str
    description: str
    build: Callable[..., nn.Module]
    params: tuple[str, ...]        # accepted shape settings


CATALOG: dict[str, Blueprint] = {
    "norm": Blueprint("norm", "GroupNorm + zero-initialised per-channel scale", _NormSeed, ("groups",)),
    "attention": Blueprint("attention", "squeeze-excitation channel gate", _SqueezeExciteSeed, ("reduction",)),
    "depthwise": Blueprint("depthwise", "depthwise k×k conv + pointwise conv", _depthwise, ("kernel_size",)),
    "conv_enhance": Blueprint("conv_enhance", "two k×k convs through a wider hidden layer", _conv_enhance,
                              ("width_multiplier", "kernel_size")),
}
assert tuple(CATALOG) == BLUEPRINT_IDS, "kasmina's catalog must implement exactly leyline's BLUEPRINT_IDS"


def get_blueprint(blueprint_id: str) -> Blueprint:
    try:
        return CATALOG[blueprint_id]
    except KeyError:
        raise UnknownBlueprintError(f"unknown blueprint {blueprint_id!r}; known blueprints: {list(CATALOG)}") from None


def validate_params(blueprint_id: str, params: dict[str, Any]) -> None:
    bp = get_blueprint(blueprint_id)
    unknown = sorted(set(params) - set(bp.params))
    if unknown:
        raise ValueError(f"blueprint {blueprint_id!r} has no setting(s) {unknown}; its settings are {list(bp.params)}")


def create_seed(blueprint_id: str, channels: int, params: dict[str, Any] | None = None) -> nn.Module:
    """Build a seed for `channels` channels; `params` are the blueprint's shape settings."""
    params = dict(params or {})
    validate_params(blueprint_id, params)
    return get_blueprint(blueprint_id).build(channels, **params)


def param_count(blueprint_id: str, channels: int, params: dict[str, Any] | None = None) -> int:
    return sum(p.numel() for p in create_seed(blueprint_id, channels, params).parameters())
