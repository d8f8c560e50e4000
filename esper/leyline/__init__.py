"""Leyline: the contracts every Esper package shares. Imports no torch at module level."""
from __future__ import annotations

from esper.leyline.actions import BLUEPRINT_IDS, Action, ActionKind, ActionSpace
from esper.leyline.reports import EpisodeSummary, GateResult, SeedEvent, TamiyoDecision
from esper.leyline.schema import DEFAULT_SCHEMA, TENSOR_SCHEMA_SIZE, SchemaMismatchError, TensorSchema
from esper.leyline.signals import FastTrainingSignals, SlotSignals
from esper.leyline.stages import (
    ACTIVE_STAGES,
    ADVANCEABLE_STAGES,
    LIVE_STAGES,
    VALID_TRANSITIONS,
    IllegalTransitionError,
    SeedStage,
    check_transition,
)
from esper.leyline.version import LEYLINE_VERSION, IncompatibleVersionError, check_compatible

__all__ = [
    "ACTIVE_STAGES", "ADVANCEABLE_STAGES", "BLUEPRINT_IDS", "DEFAULT_SCHEMA", "LEYLINE_VERSION", "LIVE_STAGES",
    "TENSOR_SCHEMA_SIZE", "VALID_TRANSITIONS", "Action", "ActionKind", "ActionSpace", "EpisodeSummary",
    "FastTrainingSignals", "GateResult", "IllegalTransitionError", "IncompatibleVersionError", "SchemaMismatchError",
    "SeedEvent", "SeedStage", "SlotSignals", "TamiyoDecision", "TensorSchema", "check_compatible", "check_transition",
]
