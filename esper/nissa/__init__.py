"""Nissa: telemetry. Profiles, the event hub, Arrow IPC files on `pyarrow.fs`, readers, diagnostics, reports.

    from esper.nissa import configure_hub, get_hub, TelemetryConfig
    configure_hub("runs/x", TelemetryConfig(profile="standard"), process="runner-0")
    get_hub().emit("step", episode_id="e1", attempt=0, epoch=3, val_acc=0.61)
    read_events("runs/x", "step")          # a pyarrow.Table, sorted by time

The report (`esper.nissa.report`) is not imported here, and `DiagnosticTracker` loads torch only on
first use, so reading or exporting telemetry stays light.
"""
from __future__ import annotations

from esper.nissa.backends import Backend, ConsoleBackend, FileBackend
from esper.nissa.config import PROFILE_EVENTS, Profile, StorageConfig, TelemetryConfig
from esper.nissa.hub import (Hub, UnknownEventError, configure_hub, configure_run_telemetry, event_schemas, get_hub,
                             make_process_id, reset_hub)
from esper.nissa.reader import (TornFileWarning, available_events, check_file_schema, event_dir, events_dataset,
                                read_events)
from esper.nissa.writer import EventWriter, UnknownFieldError


def __getattr__(name: str) -> object:
    # Loaded on first use: the tracker pulls in torch; export is also a `python -m` entry point,
    # which must not be imported before runpy executes it.
    if name == "DiagnosticTracker":
        from esper.nissa.diagnostics import DiagnosticTracker

        return DiagnosticTracker
    if name == "export_parquet":
        from esper.nissa.export import export_parquet

        return export_parquet
    raise AttributeError(f"module 'esper.nissa' has no attribute {name!r}")


__all__ = [
    "PROFILE_EVENTS", "Backend", "ConsoleBackend", "DiagnosticTracker", "EventWriter", "FileBackend", "Hub",
    "Profile", "StorageConfig", "TelemetryConfig", "TornFileWarning", "UnknownEventError", "UnknownFieldError", "available_events",
    "check_file_schema", "configure_hub", "configure_run_telemetry", "event_schemas", "event_dir", "events_dataset", "export_parquet", "get_hub",
    "make_process_id", "read_events", "reset_hub",
]
