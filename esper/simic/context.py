"""What every environment on one device shares: settings, the data on the device, schema and action space."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from esper.kasmina import KasminaConfig, resolve_device
from esper.leyline import ActionSpace, TensorSchema
from esper.simic.config import EnvConfig
from esper.tolaria import DeviceData, Splits, TolariaConfig, load_splits


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

    @property
    def max_epochs(self) -> int:
        return self.env.max_epochs


def check_episode_fits(kasmina: KasminaConfig, env: EnvConfig) -> None:
    need = kasmina.lifecycle.shortest_path_to_fossil()
    if need > env.max_epochs:
        raise ValueError(f"simic.env.max_epochs={env.max_epochs} is shorter than the shortest path to FOSSILIZED "
                         f"({need} steps under kasmina.lifecycle)")


def schema_for(kasmina: KasminaConfig) -> TensorSchema:
    return TensorSchema(max_slots=len(kasmina.slots), blueprint_ids=kasmina.blueprints)


def make_context(kasmina: KasminaConfig, tolaria: TolariaConfig, env: EnvConfig, gamma: float,
                 device: str | torch.device | None = None, splits: Splits | None = None) -> EnvContext:
    """Load the data once and put it on the device; every env built from this context shares it."""
    check_episode_fits(kasmina, env)
    dev = resolve_device(str(device or tolaria.training.device))
    splits = splits if splits is not None else load_splits(tolaria.data)
    if splits.num_classes != kasmina.host.num_classes:
        raise ValueError(f"kasmina.host.num_classes={kasmina.host.num_classes} but the dataset "
                         f"{tolaria.data.dataset!r} has {splits.num_classes} classes")
    channels_last = tolaria.training.channels_last and dev.type == "cuda"
    data = DeviceData(splits, dev, channels_last=channels_last)
    return EnvContext(kasmina, tolaria, env, gamma, dev, data, schema_for(kasmina),
                      ActionSpace(len(kasmina.slots), kasmina.blueprints))
