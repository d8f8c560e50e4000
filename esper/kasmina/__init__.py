"""Kasmina: the body. Blueprints, seed slots and their gates, gradient isolation, grafting onto any host,
and grown networks saved and rebuilt (`load_grown`)."""
from __future__ import annotations

from esper.kasmina.blueprints import CATALOG, UnknownBlueprintError, create_seed, get_blueprint, param_count
from esper.kasmina.collector import GradientCollector, GradientHealth
from esper.kasmina.config import HostConfig, KasminaConfig, LifecycleConfig, schema_and_space
from esper.kasmina.device import resolve_device
from esper.kasmina.graft import MorphogeneticModel, build_model
from esper.kasmina.grown import (GROWN_FORMAT, LIVE_SEED_RULE, GrownModelError, build_grown, drop_live_seeds,
                                 grown_payload, grown_structure, load_grown, read_grown, save_grown)
from esper.kasmina.host import HostCNN, build_host
from esper.kasmina.isolation import GradientIsolationMonitor, isolated_output
from esper.kasmina.slot import SeedSlot

__all__ = [
    "CATALOG", "GROWN_FORMAT", "LIVE_SEED_RULE", "GradientCollector", "GradientHealth", "GradientIsolationMonitor",
    "GrownModelError", "HostCNN", "HostConfig", "KasminaConfig", "LifecycleConfig", "MorphogeneticModel", "SeedSlot",
    "UnknownBlueprintError", "build_grown", "build_host", "build_model", "create_seed", "drop_live_seeds",
    "get_blueprint", "grown_payload", "grown_structure", "isolated_output", "load_grown", "param_count", "read_grown",
    "resolve_device", "save_grown", "schema_and_space",
]
