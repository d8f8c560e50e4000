"""Read telemetry back: a run's `telemetry/<event_type>/` directory as a `pyarrow.dataset`.

Each file carries its schema version, the Leyline version and (for transitions) the observation
fingerprint in its metadata; files this Esper cannot interpret are refused, naming the file. A file
that is not a whole Arrow IPC file (torn by a crash or power loss before files were fsynced, cut
short by a copy, overwritten) is skipped with a `TornFileWarning` naming it: every intact row is
still read. In-progress writes are hidden temp files, which `list_files` never returns.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.ipc as ipc

from esper.leyline.events import EVENT_SCHEMA_VERSION, EVENT_SCHEMAS, EVENT_TYPES, transition_schema
from esper.leyline.schema import SchemaMismatchError
from esper.leyline.version import IncompatibleVersionError, check_compatible
from esper.storage import list_files, resolve_fs

# What pyarrow raises for a file that is not a whole Arrow IPC file: ArrowInvalid ("File is too
# small", "Not an Arrow file", "Unexpected empty message") or, on a local disk, OSError (a footer that
# fails flatbuffer verification, a read past the end). On an object store an OSError may be a network
# failure, not a torn file: it is raised there, so a transient error never silently drops data.
def _unreadable_errors(fs: pafs.FileSystem) -> tuple[type[BaseException], ...]:
    return (pa.ArrowInvalid, OSError) if isinstance(fs, pafs.LocalFileSystem) else (pa.ArrowInvalid,)


class TornFileWarning(UserWarning):
    """A telemetry file could not be opened or read (truncated, empty, garbage); it was skipped."""


_Torn = list[tuple[str, BaseException]]  # (path, why) of each skipped file


def _warn_torn(torn: _Torn) -> None:
    """One warning per skipped file, pointing at the caller of the public function that calls this."""
    for path, exc in torn:
        warnings.warn(f"skipping unreadable telemetry file {path}: {exc}", TornFileWarning, stacklevel=3)


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


def _open_schemas(fs: pafs.FileSystem, files: Sequence[str], torn: _Torn) -> dict[str, pa.Schema]:
    """Each file that opens as an Arrow IPC file (its footer is whole), with its schema; the others
    added to `torn`."""
    fmt, schemas = ds.IpcFileFormat(), {}
    for path in files:
        try:
            schemas[path] = fmt.inspect(path, filesystem=fs)
        except _unreadable_errors(fs) as exc:
            torn.append((path, exc))
    return schemas


def _dataset(run_dir: str, event_type: str, schema: pa.Schema | None, obs_fingerprint: str | None,
             torn: _Torn) -> ds.Dataset:
    """`events_dataset`, adding the files that do not open to `torn` instead of warning."""
    if event_type not in EVENT_TYPES:
        raise KeyError(f"unknown event type {event_type!r}; valid types are {list(EVENT_TYPES)}")
    fs, base = resolve_fs(run_dir)
    found = _open_schemas(fs, list_files(fs, f"{base}/telemetry/{event_type}", ".arrow"), torn)
    schema = schema or EVENT_SCHEMAS.get(event_type)
    if not found:
        return ds.dataset((schema or transition_schema(0, 0, "none")).empty_table())
    first = next(iter(found.values()))
    if event_type == "transition" and obs_fingerprint is None:
        obs_fingerprint = _meta(first).get("esper.obs_fingerprint")
    for path, physical in found.items():
        check_file_schema(physical, event_type, f"telemetry file {path}", obs_fingerprint)
    return ds.dataset(list(found), format="ipc", filesystem=fs, schema=schema or first)


def events_dataset(run_dir: str, event_type: str, *, schema: pa.Schema | None = None,
                   obs_fingerprint: str | None = None) -> ds.Dataset:
    """All readable files of one event type as a dataset, each file's metadata checked.

    `schema` defaults to Leyline's (for `transition`, the first file's; every file must then share
    its observation fingerprint, or match `obs_fingerprint` when given). A file that does not open
    is left out with a `TornFileWarning`; one whose metadata is wrong raises. (A file whose footer
    is whole but whose body is not still fails when the dataset is scanned; `read_events` skips it.)
    """
    torn: _Torn = []
    try:
        return _dataset(run_dir, event_type, schema, obs_fingerprint, torn)
    finally:
        _warn_torn(torn)  # also when another file's metadata is refused


def _unreadable(fs: pafs.FileSystem, path: str) -> BaseException | None:
    """Why the file at `path` does not read back as a whole, valid Arrow IPC file, or None if it does."""
    try:
        with fs.open_input_file(path) as f:
            ipc.open_file(f).read_all().validate(full=True)
    except _unreadable_errors(fs) as exc:
        return exc
    return None


def _read_file_by_file(dataset: ds.FileSystemDataset, columns: Sequence[str] | None, torn: _Torn) -> pa.Table:
    """The dataset's rows, leaving out (and adding to `torn`) each file that does not read back whole."""
    parts = []
    for frag in dataset.get_fragments():
        why = _unreadable(dataset.filesystem, frag.path)
        if why is not None:
            torn.append((frag.path, why))
            continue
        # The file itself reads, so an error here (e.g. a column that does not cast) is real: raise.
        parts.append(frag.to_table(schema=dataset.schema, columns=columns))
    if parts:
        return pa.concat_tables(parts)
    empty = dataset.schema.empty_table()
    return empty.select(columns) if columns is not None else empty


def _read(dataset: ds.Dataset, columns: Sequence[str] | None, torn: _Torn) -> pa.Table:
    try:
        table = dataset.to_table(columns=columns)
        # IPC reading trusts the bytes: scribbled offsets read "fine" and crash a later sort or
        # take, so check every value before anything computes on them.
        table.validate(full=True)
        return table
    except (pa.ArrowInvalid, OSError) as exc:
        if not isinstance(dataset, ds.FileSystemDataset) or not isinstance(exc, _unreadable_errors(dataset.filesystem)):
            raise
        # Some file opened but its body does not read: find it, file by file, and leave it out.
        return _read_file_by_file(dataset, columns, torn)


def read_events(run_dir: str, event_type: str, *, schema: pa.Schema | None = None,
                obs_fingerprint: str | None = None, columns: Sequence[str] | None = None) -> pa.Table:
    """Every row of one event type written so far, sorted by time (an empty table if none yet).

    `columns` reads only those (e.g. `["time"]` to count rows without loading observations). An
    unreadable file is skipped with a `TornFileWarning`; every other file's rows are returned.
    """
    torn: _Torn = []
    try:
        table = _read(_dataset(run_dir, event_type, schema, obs_fingerprint, torn), columns, torn)
    finally:
        _warn_torn(torn)
    return table.sort_by("time") if table.num_rows and "time" in table.column_names else table


def available_events(run_dir: str) -> list[str]:
    """Event types that have at least one file in the run directory."""
    fs, base = resolve_fs(run_dir)
    return [et for et in EVENT_TYPES if list_files(fs, f"{base}/telemetry/{et}", ".arrow")]
