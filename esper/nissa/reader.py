"""Read telemetry back: a run's `telemetry/<event_type>/` directory as a `pyarrow.dataset`.

Each file carries its schema version, the Leyline version and (for transitions) the observation
fingerprint in its metadata; files this Esper cannot interpret are refused, naming the file.
"""
from __future__ import annotations

import pyarrow as pa
import pyarrow.dataset as ds

from esper.leyline.events import EVENT_SCHEMA_VERSION, EVENT_SCHEMAS, EVENT_TYPES, transition_schema
from esper.leyline.schema import SchemaMismatchError
from esper.leyline.version import IncompatibleVersionError, check_compatible
from esper.storage import list_files, resolve_fs


def event_dir(run_dir: str, event_type: str) -> str:
    """Where a run's files of one event type live (a URI when run_dir is one)."""
    return f"{run_dir.rstrip('/')}/telemetry/{event_type}"


def _meta(schema: pa.Schema) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}


def check_file_schema(schema: pa.Schema, event_type: str, where: str, obs_fingerprint: str | None = None) -> None:
    """Raise unless a file's schema metadata says it holds `event_type` rows this Esper can read."""
    meta = _meta(schema)
    if meta.get("esper.event") != event_type:
        raise ValueError(f"{where}: holds {meta.get('esper.event')!r} events, expected {event_type!r}")
    version = meta.get("esper.event_schema_version")
    if version != EVENT_SCHEMA_VERSION:
        raise IncompatibleVersionError(f"{where}: event schema version {version!r}; this Esper reads "
                                       f"version {EVENT_SCHEMA_VERSION!r}")
    check_compatible(meta.get("esper.leyline_version", "missing"), what=where)
    if obs_fingerprint is not None and meta.get("esper.obs_fingerprint") != obs_fingerprint:
        raise SchemaMismatchError(f"{where}: observations use schema {meta.get('esper.obs_fingerprint')}, "
                                  f"expected {obs_fingerprint}")


def events_dataset(run_dir: str, event_type: str, *, schema: pa.Schema | None = None,
                   obs_fingerprint: str | None = None) -> ds.Dataset:
    """All files of one event type as a dataset, each file's metadata checked.

    `schema` defaults to Leyline's (for `transition`, the first file's; every file must then share
    its observation fingerprint, or match `obs_fingerprint` when given).
    """
    if event_type not in EVENT_TYPES:
        raise KeyError(f"unknown event type {event_type!r}; valid types are {list(EVENT_TYPES)}")
    fs, base = resolve_fs(run_dir)
    files = list_files(fs, f"{base}/telemetry/{event_type}", ".arrow")
    schema = schema or EVENT_SCHEMAS.get(event_type)
    if not files:
        return ds.dataset((schema or transition_schema(0, 0, "none")).empty_table())
    dataset = ds.dataset(files, format="ipc", filesystem=fs, schema=schema)
    fragments = list(dataset.get_fragments())
    if event_type == "transition" and obs_fingerprint is None:
        obs_fingerprint = _meta(fragments[0].physical_schema).get("esper.obs_fingerprint")
    for frag in fragments:
        check_file_schema(frag.physical_schema, event_type, f"telemetry file {frag.path}", obs_fingerprint)
    return dataset


def read_events(run_dir: str, event_type: str, *, schema: pa.Schema | None = None,
                obs_fingerprint: str | None = None) -> pa.Table:
    """Every row of one event type written so far, sorted by time (an empty table if none yet)."""
    table = events_dataset(run_dir, event_type, schema=schema, obs_fingerprint=obs_fingerprint).to_table()
    return table.sort_by("time") if table.num_rows else table


def available_events(run_dir: str) -> list[str]:
    """Event types that have at least one file in the run directory."""
    fs, base = resolve_fs(run_dir)
    return [et for et in EVENT_TYPES if list_files(fs, f"{base}/telemetry/{et}", ".arrow")]
