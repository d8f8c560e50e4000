"""The process-global telemetry hub: `get_hub().emit("step", epoch=3, val_acc=0.61, ...)` from anywhere.

Library code always emits; whether anything is written is decided once per process by
`configure_hub` (run directory, profile, console). Unconfigured, `get_hub()` is a valid no-op hub,
so tests and notebooks need no setup. Event types outside the profile cost one dict lookup.
"""
from __future__ import annotations

import atexit
import os
import re
import secrets
import socket
import threading
from functools import partial
from typing import Any, Callable, Mapping, Sequence

import pyarrow as pa

from esper.leyline import ActionSpace, TensorSchema
from esper.leyline.events import EVENT_SCHEMAS, EVENT_TYPES, transition_schema
from esper.nissa.backends import Backend, ConsoleBackend, FileBackend
from esper.nissa.config import TelemetryConfig
from esper.nissa.writer import AUTO_FIELDS, UnknownFieldError
from esper.storage import resolve_fs

_Sink = Callable[[Mapping[str, Any]], None]  # bound to one event type


class UnknownEventError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", text)[:48] or "x"


def make_process_id(process: str) -> str:
    """`<process>-<host>-<pid>-<token>`: the random token keeps ids unique across pid reuse and nodes."""
    return f"{_safe(process)}-{_safe(socket.gethostname())}-{os.getpid()}-{secrets.token_hex(4)}"


class Hub:
    """Routes events to backends. One lock serialises emits and flushes, so an actor's control thread
    can flush while its main thread emits (an uncontended lock costs ~0.1 µs per event)."""

    def __init__(self, cfg: TelemetryConfig, process: str, *, run_dir: str | None = None,
                 transition_schema: pa.Schema | None = None, backends: Sequence[Backend] = (),
                 process_id: str | None = None) -> None:
        self.cfg, self.process, self.run_dir = cfg, process, run_dir
        self.process_id = process_id or make_process_id(process)
        self.schemas = event_schemas(transition_schema)
        self.backends: list[Backend] = list(backends)
        self.closed = False
        self._lock = threading.RLock()
        self._routes: dict[str, tuple[_Sink, ...]] = {}
        self._build_routes()

    # -- routing -----------------------------------------------------------------------------------

    def _build_routes(self) -> None:
        """Per event type, the tuple of callables an emit runs; () for types the profile drops."""
        wanted = set(self.cfg.events) if not self.closed else set()
        self._targets: dict[str, list[Backend]] = {}
        for et in EVENT_TYPES:
            targets = [b for b in self.backends if et in wanted and getattr(b, "accepts", lambda _e: True)(et)]
            self._targets[et] = targets
            # The file backend hands out its writer's bound `append`: an emit is then one dict lookup
            # and one call per backend.
            sinks: list[_Sink] = [b.sink(et) if isinstance(b, FileBackend) and et in self.schemas
                                  else partial(b.emit, et) for b in targets]
            if sinks and et not in self.schemas:
                sinks = [partial(self._missing_schema, et)]
            elif sinks and not isinstance(targets[0], FileBackend):
                sinks.insert(0, partial(self._check_fields, et))  # the writer checks names itself; others don't
            self._routes[et] = tuple(sinks)

    def add_backend(self, backend: Backend) -> None:
        for name in ("emit", "flush", "close"):
            if not callable(getattr(backend, name, None)):
                raise TypeError(f"a telemetry backend needs emit(event_type, row), flush() and close(); "
                                f"{type(backend).__name__} has no {name}()")
        self.backends.append(backend)
        self._build_routes()

    def wants(self, event_type: str) -> bool:
        """False when an emit of this type would be dropped, so callers can skip building the row."""
        return bool(self._route(event_type))

    def _route(self, event_type: str) -> tuple[_Sink, ...]:
        try:
            return self._routes[event_type]
        except KeyError:
            raise UnknownEventError(f"unknown event type {event_type!r}; valid types are {list(EVENT_TYPES)}") from None

    def _missing_schema(self, event_type: str, row: Mapping[str, Any]) -> None:
        raise ValueError(f"{event_type!r} events need a schema: configure_hub(..., transition_schema="
                         f"esper.leyline.events.transition_schema(obs_size, num_actions, fingerprint))")

    def _check_fields(self, event_type: str, row: Mapping[str, Any]) -> None:
        names = self.schemas[event_type].names
        bad = [k for k in row if k not in names or k in AUTO_FIELDS]
        if bad:
            raise UnknownFieldError(f"{event_type}: unknown field {bad[0]!r}; valid fields are "
                                    f"{sorted(n for n in names if n not in AUTO_FIELDS)}")

    # -- emitting ----------------------------------------------------------------------------------

    def emit(self, event_type: str, **fields: Any) -> None:
        """Record one event; `time` and `process` are added, missing fields are null."""
        try:
            route = self._routes[event_type]
        except KeyError:
            route = self._route(event_type)  # raises with the list of valid types
        if route:
            with self._lock:
                for sink in route:
                    sink(fields)

    def emit_columns(self, event_type: str, columns: Mapping[str, Sequence[Any]]) -> None:
        """Record many events at once (e.g. a rollout's transitions): one array per field."""
        route = self._route(event_type)
        if not route:
            return
        if isinstance(route[0], partial) and route[0].func in (self._missing_schema, self._check_fields):
            route[0](columns)  # both look only at the names
        with self._lock:
            self._emit_columns(event_type, columns)

    def _emit_columns(self, event_type: str, columns: Mapping[str, Sequence[Any]]) -> None:
        for backend in self._targets[event_type]:
            if hasattr(backend, "emit_columns"):
                backend.emit_columns(event_type, columns)
            else:  # a backend without batch support sees the rows one by one
                n = len(next(iter(columns.values()), ()))
                for i in range(n):
                    backend.emit(event_type, {k: v[i] for k, v in columns.items()})

    # -- lifecycle ---------------------------------------------------------------------------------

    def flush(self) -> None:
        with self._lock:
            for b in self.backends:
                b.flush()

    def flush_due(self) -> None:
        """Flush buffers whose oldest row is older than flush_seconds; call it from idle loops."""
        with self._lock:
            for b in self.backends:
                if hasattr(b, "flush_due"):
                    b.flush_due()

    def close(self) -> None:
        """Flush and close every backend; later emits are dropped (types are still checked)."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._build_routes()
        errors = []
        for b in self.backends:
            try:
                b.close()
            except Exception as exc:  # noqa: BLE001 - close the others, then re-raise
                errors.append(exc)
        if errors:
            raise errors[0]

    def _after_fork_in_child(self) -> None:
        self.process_id = make_process_id(self.process)
        for b in self.backends:
            if hasattr(b, "reset_after_fork"):
                b.reset_after_fork(self.process_id)


def event_schemas(transition_schema: pa.Schema | None = None) -> dict[str, pa.Schema]:
    """Every event type's schema; `transition` only once a run's observation layout gives it one."""
    schemas = dict(EVENT_SCHEMAS)
    if transition_schema is not None:
        schemas["transition"] = transition_schema
    return schemas


def _null_hub() -> Hub:
    return Hub(TelemetryConfig(profile="minimal", console=False), "unconfigured")


_hub: Hub = _null_hub()
_configured = False


def configure_hub(run_dir: str | None, cfg: TelemetryConfig, process: str, *,
                  transition_schema: pa.Schema | None = None) -> Hub:
    """Make this process's hub: Arrow files under `run_dir` (None: no files) and console lines if
    `cfg.console`. A previously configured hub is flushed and closed first."""
    global _hub, _configured
    reset_hub()
    process_id = make_process_id(process)
    backends: list[Backend] = []
    if run_dir is not None:
        fs, base = resolve_fs(run_dir)
        backends.append(FileBackend(fs, base, event_schemas(transition_schema), process, process_id, cfg.flush_rows,
                                    cfg.flush_seconds))
    if cfg.console:
        backends.append(ConsoleBackend(process))
    hub = Hub(cfg, process, run_dir=run_dir, transition_schema=transition_schema, backends=backends,
              process_id=process_id)
    _hub, _configured = hub, True
    return hub


def configure_run_telemetry(run_dir: str | None, cfg: TelemetryConfig, process: str, schema: TensorSchema,
                            space: ActionSpace) -> Hub:
    """This process's hub, with the transition schema for this run's observation layout and action space."""
    return configure_hub(run_dir, cfg, process,
                         transition_schema=transition_schema(schema.size, space.n, schema.fingerprint))


def get_hub() -> Hub:
    return _hub


def reset_hub() -> None:
    """Flush and close the current hub and go back to the unconfigured no-op hub."""
    global _hub, _configured
    old, _hub, _configured = _hub, _null_hub(), False
    old.close()


def _after_fork_in_child() -> None:
    if _configured:
        _hub._after_fork_in_child()


atexit.register(reset_hub)
os.register_at_fork(after_in_child=_after_fork_in_child)
