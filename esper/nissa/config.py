"""Telemetry settings: a profile decides what is collected; flush policy decides when it is written."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from esper.leyline.events import EVENT_TYPES

Profile = Literal["minimal", "standard", "research"]

# What each profile writes. `minimal` adds no per-batch work and no per-decision rows.
PROFILE_EVENTS: dict[str, tuple[str, ...]] = {
    "minimal": ("step", "seed", "episode", "learner", "system"),
    "standard": EVENT_TYPES,
    "research": EVENT_TYPES,
}


class TelemetryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profile: Profile = "standard"
    flush_rows: int = Field(2048, ge=1, description="flush an event type's buffer when it holds this many rows")
    flush_seconds: float = Field(10.0, gt=0, description="... or when its oldest row is this old")
    console: bool = Field(True, description="print episode summaries and learner updates to stdout")
    sharpness_epsilon: float = Field(0.01, gt=0, description="research: relative weight perturbation for sharpness")
    diagnostics_every: int = Field(5, ge=1, description="standard/research: a gradient-diagnostics probe every N env steps")

    @property
    def events(self) -> tuple[str, ...]:
        return PROFILE_EVENTS[self.profile]

    @property
    def diagnostics(self) -> bool:
        return self.profile != "minimal"

    @property
    def quantiles(self) -> bool:
        return self.profile == "research"

    @classmethod
    def from_yaml(cls, path: str) -> "TelemetryConfig":
        import yaml

        with open(path) as f:
            return cls.model_validate(yaml.safe_load(f) or {})


class StorageConfig(BaseModel):
    """Where a run's config, checkpoints and telemetry go: a local path, an NFS path, or s3:// / gs://."""

    model_config = ConfigDict(extra="forbid")

    run_dir: str | None = Field(None, description="None = runs/<time>-<policy> under the working directory")
    shared: bool = Field(False, description="declare a local-looking path shared by every node (e.g. an NFS mount)")
