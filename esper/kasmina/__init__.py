"""Kasmina: the body. Blueprints, seed slots and their gates, gradient isolation, grafting onto any host."""
from __future__ import annotations

from esper.kasmina.blueprints import CATALOG, UnknownBlueprintError, create_seed, get_blueprint, param_count
from esper.kasmina.collector import GradientCollector, GradientHealth
from esper.kasmina.config import HostConfig, KasminaConfig, LifecycleConfig, schema_and_space
from esper.kasmina.device import resolve_device
from esper.kasmina.graft import MorphogeneticModel, build_model
from esper.kasmina.host import HostCNN, build_host
from esper.kasmina.isolation import GradientIsolationMonitor, isolated_output
from esper.kasmina.slot import SeedSlot

__all__ = [
    "CATALOG", "GradientCollector", "GradientHealth", "GradientIsolationMonitor", "HostCNN", "HostConfig",
    "KasminaConfig", "LifecycleConfig", "MorphogeneticModel", "SeedSlot", "UnknownBlueprintError", "build_host",
    "build_model", "create_seed", "get_blueprint", "isolated_output", "param_count", "resolve_device", "schema_and_space",
]
