"""Telemetry set-up for a process that runs environments or a learner."""
from __future__ import annotations

from esper.leyline import ActionSpace, TensorSchema
from esper.leyline.events import transition_schema
from esper.nissa import Hub, TelemetryConfig, configure_hub


def configure_run_telemetry(run_dir: str | None, cfg: TelemetryConfig, process: str, schema: TensorSchema,
                            space: ActionSpace) -> Hub:
    """This process's hub, with the transition schema for this run's observation layout."""
    return configure_hub(run_dir, cfg, process,
                         transition_schema=transition_schema(schema.size, space.n, schema.fingerprint))
