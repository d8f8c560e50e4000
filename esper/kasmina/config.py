"""Kasmina's settings: the reference host, where slots go, blueprint shapes, and the seed lifecycle."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from esper.leyline import BLUEPRINT_IDS, ActionSpace, TensorSchema


class HostConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field("cnn", description="'cnn' (the reference host) or 'resnet18' (torchvision)")
    widths: tuple[int, int, int] = Field((8, 16, 32), description="channels of the three CNN blocks; (8,16,32) ≈ 6k params")
    num_classes: int = Field(10, ge=2)

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if v not in ("cnn", "resnet18"):
            raise ValueError(f"host.kind must be 'cnn' or 'resnet18', got {v!r}")
        return v


class LifecycleConfig(BaseModel):
    """Durations and thresholds of the seed stages and gates G0–G5 (docs/architecture.md, "The seed lifecycle")."""

    model_config = ConfigDict(extra="forbid")

    min_training_epochs: int = Field(2, ge=1, description="G2: steps a seed trains in isolation before it may blend")
    blend_steps: int = Field(3, ge=1, description="steps over which alpha ramps 0 -> 1")
    shadow_steps: int = Field(2, ge=1, description="G4: steps the contribution must stay >= threshold")
    probation_steps: int = Field(2, ge=1, description="G5: steps a seed is watched before it may fossilize")
    embargo_steps: int = Field(3, ge=1, description="cooldown of a slot after a cull")
    contribution_threshold: float = Field(0.0, description="G4/G5: counterfactual val-accuracy gain a seed must show")
    max_regression: float = Field(0.05, ge=0.0, description="G2/G3/G5: tolerated val-accuracy drop")
    grad_vanish_threshold: float = Field(1e-7, gt=0.0, description="seed gradient norm below this is vanishing")
    grad_explode_threshold: float = Field(1e3, gt=0.0, description="gradient norm above this is exploding")

    def shortest_path_to_fossil(self) -> int:
        """Decision steps from GERMINATE to FOSSILIZED: germinate, train, blend, shadow, probation, advance."""
        return 1 + self.min_training_epochs + self.blend_steps + self.shadow_steps + self.probation_steps + 1


class KasminaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: HostConfig = HostConfig()
    slots: list[str] = Field(["block0", "block1", "block2"], min_length=1,
                             description="names of the host layers whose outputs get a seed slot")
    blueprints: list[str] = Field(list(BLUEPRINT_IDS), min_length=1, description="blueprints Tamiyo may germinate")
    blueprint_params: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"conv_enhance": {"width_multiplier": 2.0, "kernel_size": 3},
                                 "depthwise": {"kernel_size": 3}, "attention": {"reduction": 4}, "norm": {"groups": 1}},
        description="per-blueprint shape settings (see esper.kasmina.blueprints)")
    lifecycle: LifecycleConfig = LifecycleConfig()

    @field_validator("blueprints")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = [b for b in v if b not in BLUEPRINT_IDS]
        if unknown:
            raise ValueError(f"unknown blueprint(s) {unknown}; known: {list(BLUEPRINT_IDS)}")
        return v

    @field_validator("blueprint_params")
    @classmethod
    def _known_params(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from esper.kasmina.blueprints import UnknownBlueprintError, validate_params

        for bp, params in v.items():
            try:
                validate_params(bp, params)
            except UnknownBlueprintError as exc:   # a KeyError: pydantic would let it escape unreported
                raise ValueError(str(exc)) from None
        return v


def schema_and_space(cfg: KasminaConfig) -> tuple[TensorSchema, ActionSpace]:
    """The observation layout and action space for these slots and blueprints: the one place both are built."""
    return (TensorSchema(max_slots=len(cfg.slots), blueprint_ids=cfg.blueprints),
            ActionSpace(len(cfg.slots), cfg.blueprints))
