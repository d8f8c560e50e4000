"""Grafting: attach SeedSlots to named layers of any nn.Module, without subclassing it.

Each slot runs as a forward hook on its layer, so the host's own code and state_dict keys stay as
they are; a torchvision ResNet works as well as the reference CNN. Channel counts are inferred by
one probe forward.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch
from torch import nn

from esper.kasmina.blueprints import create_seed
from esper.kasmina.config import KasminaConfig, LifecycleConfig
from esper.kasmina.host import build_host
from esper.kasmina.slot import SeedSlot


class _SlotHook:
    """A hook object (not a closure) so deepcopy/pickle of the model keep hooks pointing at their own slots."""

    def __init__(self, slot: SeedSlot) -> None:
        self.slot = slot

    def __call__(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return self.slot(output)


def _find_layers(host: nn.Module, names: Sequence[str]) -> list[nn.Module]:
    modules = dict(host.named_modules())
    missing = [n for n in names if n not in modules or n == ""]
    if missing:
        top = [n for n in modules if n and "." not in n]
        raise ValueError(f"kasmina.slots: unknown slot layer(s) {missing}; the host's top-level layers are {top} "
                         f"(any dotted name from named_modules() works too)")
    if len(set(names)) != len(names):
        raise ValueError(f"slot layers must be distinct, got {list(names)}")
    return [modules[n] for n in names]


def infer_shapes(host: nn.Module, layers: Sequence[nn.Module], input_shape: Sequence[int]) -> list[tuple[int, ...]]:
    """Output shape (C, H, W) of each layer for one input of `input_shape`."""
    shapes: dict[int, tuple[int, ...]] = {}
    handles = [m.register_forward_hook(lambda _m, _i, out, k=k: shapes.__setitem__(k, tuple(out.shape[1:])))
               for k, m in enumerate(layers)]
    was_training = host.training
    p = next(host.parameters())
    try:
        host.eval()
        with torch.no_grad():
            host(torch.zeros((1, *input_shape), device=p.device, dtype=p.dtype))
    finally:
        host.train(was_training)
        for h in handles:
            h.remove()
    for k, shape in shapes.items():
        if len(shape) != 3:
            raise ValueError(f"slot layer #{k} outputs shape {shape}; a slot needs a (C, H, W) feature map")
    return [shapes[k] for k in range(len(layers))]


def _check_blueprint_params(blueprint_params: dict[str, dict[str, Any]], slots: Sequence[SeedSlot]) -> None:
    """Build every configured blueprint for every slot's channel count on the meta device (no memory), so a
    shape setting that does not fit this host fails now, not at a GERMINATE in the middle of an episode."""
    for bp, params in blueprint_params.items():
        for slot in slots:
            try:
                with torch.device("meta"):
                    create_seed(bp, slot.channels, params)
            except ValueError as exc:
                raise ValueError(f"kasmina.blueprint_params.{bp}={params} does not fit slot {slot.name!r} "
                                 f"({slot.channels} channels): {exc}") from None


class MorphogeneticModel(nn.Module):
    """A host with seed slots grafted at named layers. `model.to(...)` moves slots and seeds too."""

    def __init__(self, host: nn.Module, slot_layers: Sequence[str], input_shape: Sequence[int],
                 lifecycle: LifecycleConfig | None = None, blueprint_params: dict[str, dict[str, Any]] | None = None
                 ) -> None:
        super().__init__()
        self.host = host
        lifecycle = lifecycle or LifecycleConfig()
        layers = _find_layers(host, slot_layers)
        shapes = infer_shapes(host, layers, input_shape)
        self.slots = nn.ModuleList(
            SeedSlot(i, name, shape[0], shape, lifecycle, blueprint_params) for i, (name, shape) in
            enumerate(zip(slot_layers, shapes)))
        _check_blueprint_params(blueprint_params or {}, self.slots)
        p = next(host.parameters())
        self.slots.to(device=p.device, dtype=p.dtype)
        for layer, slot in zip(layers, self.slots):
            layer.register_forward_hook(_SlotHook(slot))
        self.host_param_count = sum(q.numel() for q in host.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.host(x)

    def host_parameters(self) -> Iterator[nn.Parameter]:
        """The host's own parameters plus every fossilized seed's (fossils are part of the host)."""
        yield from self.host.parameters()
        for slot in self.slots:
            yield from slot.fossils.parameters()

    def seed_parameters(self, slot: int) -> list[nn.Parameter]:
        seed = self.slots[slot].seed
        return [] if seed is None else list(seed.parameters())

    def params_added(self) -> int:
        return sum(s.seed_param_count() + s.fossil_param_count() for s in self.slots)

    @property
    def graph_key(self) -> tuple[int, ...]:
        """Changes whenever any slot's forward structure changes (a captured step must be recaptured)."""
        return tuple(s.graph_version for s in self.slots)

    def reset_slots(self) -> None:
        for s in self.slots:
            s.reset()


def check_host_fits(cfg: KasminaConfig, input_shape: Sequence[int]) -> None:
    """Build the host with its slots on the meta device (no memory, no data) and every allowed blueprint at
    every slot, so a slot name or blueprint that does not fit fails when the config loads, not inside a run."""
    with torch.device("meta"):
        model = build_model(cfg, input_shape)
        for bp in cfg.blueprints:
            for slot in model.slots:
                try:
                    create_seed(bp, slot.channels, cfg.blueprint_params.get(bp, {}))
                except ValueError as exc:
                    raise ValueError(f"kasmina.blueprints: {bp!r} does not fit slot {slot.name!r} "
                                     f"({slot.channels} channels): {exc}") from None


def build_model(cfg: KasminaConfig, input_shape: Sequence[int]) -> MorphogeneticModel:
    host = build_host(cfg.host, in_channels=input_shape[0])
    return MorphogeneticModel(host, cfg.slots, input_shape, cfg.lifecycle, cfg.blueprint_params)
