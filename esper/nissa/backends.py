"""Where the hub sends events: Arrow files on a run directory, one-line console summaries, or your own.

A backend is any object with `emit(event_type, row)`, `flush()` and `close()`; optionally
`accepts(event_type) -> bool` (which types it wants), `emit_columns(event_type, columns)` (batches)
and `reset_after_fork(process_id)`.
"""
from __future__ import annotations

import math
import sys
from typing import Any, Callable, Mapping, Protocol, Sequence, TextIO, runtime_checkable

import pyarrow as pa
import pyarrow.fs as pafs

from esper.nissa.writer import EventWriter


@runtime_checkable
class Backend(Protocol):
    def emit(self, event_type: str, row: Mapping[str, Any]) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class FileBackend:
    """One EventWriter per event type, created on first use (so an unused type writes no directory)."""

    def __init__(self, fs: pafs.FileSystem, base_path: str, schemas: Mapping[str, pa.Schema], process: str,
                 process_id: str, flush_rows: int, flush_seconds: float) -> None:
        self.fs, self.base_path, self.schemas = fs, base_path, schemas
        self.process, self.process_id = process, process_id
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        self.writers: dict[str, EventWriter] = {}

    def writer(self, event_type: str) -> EventWriter:
        w = self.writers.get(event_type)
        if w is None:
            w = self.writers[event_type] = EventWriter(
                self.fs, self.base_path, event_type, self.schemas[event_type], self.process_id,
                self.flush_rows, self.flush_seconds, process=self.process)
        return w

    def sink(self, event_type: str) -> Callable[[Mapping[str, Any]], None]:
        """The writer's bound append (the hub calls it directly; nothing is written until a flush)."""
        return self.writer(event_type).append

    def emit(self, event_type: str, row: Mapping[str, Any]) -> None:
        self.writer(event_type).append(row)

    def emit_columns(self, event_type: str, columns: Mapping[str, Sequence[Any]]) -> None:
        self.writer(event_type).append_columns(columns)

    def flush(self) -> None:
        for w in self.writers.values():
            w.flush()

    def flush_due(self) -> None:
        for w in self.writers.values():
            w.flush_if_due()

    def close(self) -> None:
        # Flush every writer even if one fails, then report the first failure.
        errors = []
        for w in self.writers.values():
            try:
                w.close()
            except Exception as exc:  # noqa: BLE001 - re-raised below
                errors.append(exc)
        if errors:
            raise errors[0]

    def reset_after_fork(self, process_id: str) -> None:
        self.process_id = process_id
        for w in self.writers.values():
            w.reset_after_fork(process_id)


def _f(value: Any, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    try:
        return format(value, spec)
    except (TypeError, ValueError):  # e.g. a float where an int was expected: still print it
        return str(value)


class ConsoleBackend:
    """Prints one human line per episode, learner update and system event; ignores the rest."""

    TYPES = frozenset({"episode", "learner", "system"})

    def __init__(self, process: str, stream: TextIO | None = None) -> None:
        self.process = process
        self.stream = stream

    def accepts(self, event_type: str) -> bool:
        return event_type in self.TYPES

    def format(self, event_type: str, r: Mapping[str, Any]) -> str | None:
        g = r.get
        if event_type == "episode":
            return (f"[{self.process}] episode {g('episode_id')}#{_f(g('attempt'), 'd')} env {_f(g('env_index'), 'd')} "
                    f"policy {g('policy')}@v{_f(g('policy_version'), 'd')}: return {_f(g('episode_return'))} "
                    f"val {_f(g('final_val_acc'))} test {_f(g('final_test_acc'))} "
                    f"seeds +{_f(g('seeds_germinated'), 'd')}/fossil {_f(g('seeds_fossilized'), 'd')}"
                    f"/cull {_f(g('seeds_culled'), 'd')} params +{_f(g('params_added'), 'd')}")
        if event_type == "learner":
            return (f"[{self.process}] update v{_f(g('policy_version'), 'd')}: {_f(g('transitions'), 'd')} transitions, "
                    f"policy {_f(g('policy_loss'), '.4f')} value {_f(g('value_loss'), '.4f')} "
                    f"entropy {_f(g('entropy'))} kl {_f(g('approx_kl'), '.4f')} clip {_f(g('clip_fraction'), '.2f')} "
                    f"ev {_f(g('explained_variance'), '.2f')} ({_f(g('update_seconds'), '.2f')} s)")
        if event_type == "system":
            detail = g("detail")
            return f"[{self.process}] {g('kind')} {g('actor') or ''}{' ' + detail if detail else ''}".rstrip()
        return None

    def emit(self, event_type: str, row: Mapping[str, Any]) -> None:
        line = self.format(event_type, row)
        if line is not None:
            print(line, file=self.stream or sys.stdout, flush=True)

    def flush(self) -> None:
        (self.stream or sys.stdout).flush()

    def close(self) -> None:
        pass
