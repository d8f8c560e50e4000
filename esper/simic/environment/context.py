"""What every environment on one device shares: settings, the data on the device, schema and action space."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from esper.kasmina import KasminaConfig, resolve_device, schema_and_space
from esper.leyline import ActionSpace, TensorSchema
from esper.simic.config import EnvConfig, check_episode_fits
from esper.tamiyo import Policy, TamiyoConfig
from esper.tamiyo.policies import make_policy
from esper.tolaria import DeviceData, Splits, TolariaConfig, load_splits
from esper.tolaria.flops import FlopCounter


@dataclass
class EnvContext:
    kasmina: KasminaConfig
    tolaria: TolariaConfig
    env: EnvConfig
    gamma: float
    device: torch.device
    data: DeviceData
    schema: TensorSchema
    space: ActionSpace
    flops: FlopCounter = field(init=False)     # per-architecture FLOP counts, shared by every env on this context

    def __post_init__(self) -> None:
        self.flops = FlopCounter(self.data.input_shape)

    @property
    def max_epochs(self) -> int:
        return self.env.max_epochs

    def make_policy(self, kind: str, tamiyo: TamiyoConfig, seed: int = 0) -> Policy:
        """A policy of `kind` for these envs (their layout, action space, lifecycle and episode length)."""
        return make_policy(kind, self.schema, self.space, tamiyo, lifecycle=self.kasmina.lifecycle,
                           max_epochs=self.max_epochs, device=self.device, seed=seed)


def make_context(kasmina: KasminaConfig, tolaria: TolariaConfig, env: EnvConfig, gamma: float,
                 device: str | torch.device | None = None, splits: Splits | None = None) -> EnvContext:
    """Load the data once and put it on the device; every env built from this context shares it."""
    check_episode_fits(kasmina.lifecycle, env)
    dev = resolve_device(str(device or tolaria.training.device))
    splits = splits if splits is not None else load_splits(tolaria.data)
    if splits.num_classes != kasmina.host.num_classes:
        raise ValueError(f"kasmina.host.num_classes={kasmina.host.num_classes} but the dataset "
                         f"{tolaria.data.dataset!r} has {splits.num_classes} classes")
    channels_last = tolaria.training.channels_last and dev.type == "cuda"
    data = DeviceData(splits, dev, channels_last=channels_last)
    return EnvContext(kasmina, tolaria, env, gamma, dev, data, *schema_and_space(kasmina))
