"""Emitting what environments return: their per-step records and finished episodes.

An environment writes no telemetry itself (docs/architecture.md, "The environment knows no
policy"): `EnvCore.finish_step` returns `(event_type, row)` pairs in `info["records"]`. Its driver
emits them here, adding the tags only it knows — the Sampler the policy version, a hand-stepped
`MorphogeneticEnv` nothing. Episodes are emitted once, by whoever consumes them.
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

from esper.leyline import EpisodeSummary
from esper.nissa.hub import get_hub


def emit_records(records: Iterable[tuple[str, Mapping[str, Any]]], **tags: Any) -> None:
    """Emit each row its profile wants, with every tag its event schema has a column for."""
    hub = get_hub()
    for event_type, row in records:
        if hub.wants(event_type):
            names = hub.schemas[event_type].names
            hub.emit(event_type, **row, **{k: v for k, v in tags.items() if k in names})


def emit_episode(summary: EpisodeSummary, policy: str) -> None:
    hub = get_hub()
    if hub.wants("episode"):
        row = summary.to_dict()
        row["actions"] = json.dumps(row["actions"])
        hub.emit("episode", **row, policy=policy)
