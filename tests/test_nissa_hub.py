"""The telemetry hub: profiles, routing, errors, isolation, console and custom backends."""
from __future__ import annotations

import os

import numpy as np
import pytest

from esper.leyline.events import EVENT_TYPES, transition_schema
from esper.nissa import (
    ConsoleBackend, TelemetryConfig, UnknownEventError, UnknownFieldError, configure_hub, get_hub, read_events,
    reset_hub,
)
from esper.nissa.hub import make_process_id

TS = transition_schema(5, 3, "fp")


pytestmark = pytest.mark.usefixtures("isolated_hub")


class ListBackend:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []
        self.flushed = self.closed = 0

    def emit(self, event_type, row):
        self.events.append((event_type, dict(row)))

    def flush(self):
        self.flushed += 1

    def close(self):
        self.closed += 1


def emit_one_of_each(hub) -> None:
    hub.emit("step", episode_id="e", epoch=1, val_acc=0.5)
    hub.emit("seed", episode_id="e", epoch=1, slot=0, to_stage="GERMINATED")
    hub.emit("decision", episode_id="e", epoch=1, action=0, action_name="WAIT")
    hub.emit("episode", episode_id="e", episode_return=1.0)
    hub.emit("learner", policy_version=1, entropy=1.2)
    hub.emit("system", kind="stop", actor="runner-0")
    hub.emit("diagnostic", layer="fc.weight", grad_norm=0.1)
    hub.emit("transition", step=0, obs=np.zeros(5, np.float32), action=1)


def test_unconfigured_hub_is_a_valid_no_op():
    hub = get_hub()
    assert not any(hub.wants(et) for et in EVENT_TYPES)
    emit_one_of_each(hub)  # nothing happens, nothing raises
    hub.flush()
    with pytest.raises(UnknownEventError, match=r"unknown event type 'stpe'; valid types are \['step'"):
        hub.emit("stpe", epoch=1)


@pytest.mark.parametrize("profile", ["minimal", "standard", "research"])
def test_profiles_decide_what_is_written(tmp_path, profile):
    cfg = TelemetryConfig(profile=profile, console=False)
    hub = configure_hub(str(tmp_path), cfg, "test", transition_schema=TS)
    emit_one_of_each(hub)
    reset_hub()
    written = {et for et in EVENT_TYPES if (tmp_path / "telemetry" / et).exists()}
    assert written == set(cfg.events)
    if profile == "minimal":
        assert not written & {"decision", "transition", "diagnostic"}
        assert not hub.wants("decision")
    for et in written:
        assert read_events(str(tmp_path), et).num_rows == 1


def test_unknown_fields_error_with_and_without_a_file_backend(tmp_path):
    hub = configure_hub(str(tmp_path), TelemetryConfig(console=False), "t")
    with pytest.raises(UnknownFieldError, match="unknown field 'val_accuracy'"):
        hub.emit("step", val_accuracy=0.5)
    hub = configure_hub(None, TelemetryConfig(console=True), "t")  # console only: the hub checks names
    with pytest.raises(UnknownFieldError, match="unknown field 'returns'"):
        hub.emit("episode", returns=1.0)
    with pytest.raises(UnknownFieldError, match="unknown field 'losses'"):
        hub.emit_columns("learner", {"losses": [1.0]})


def test_transitions_need_a_schema(tmp_path):
    hub = configure_hub(str(tmp_path), TelemetryConfig(console=False), "t")
    with pytest.raises(ValueError, match="transition_schema"):
        hub.emit("transition", step=0)
    with pytest.raises(ValueError, match="transition_schema"):
        hub.emit_columns("transition", {"step": [0]})


def test_emit_columns_writes_batches(tmp_path):
    hub = configure_hub(str(tmp_path), TelemetryConfig(console=False), "t", transition_schema=TS)
    rng = np.random.default_rng(0)
    obs = rng.random((10, 5), dtype=np.float32)
    hub.emit_columns("transition", {"step": np.arange(10), "obs": obs, "action": np.arange(10) % 3})
    reset_hub()
    t = read_events(str(tmp_path), "transition")
    assert t.column("step").to_pylist() == list(range(10))
    np.testing.assert_array_equal(np.stack(t.column("obs").to_pylist()), obs)


def test_console_prints_summaries_only(tmp_path, capsys):
    hub = configure_hub(None, TelemetryConfig(console=True), "runner-1")
    assert not hub.wants("step") and hub.wants("episode")
    emit_one_of_each(hub)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3
    assert out[0].startswith("[runner-1] episode e#") and "return 1.000" in out[0]
    assert out[1].startswith("[runner-1] update v1") and "entropy 1.200" in out[1]
    assert out[2] == "[runner-1] stop runner-0"


def test_console_format_tolerates_odd_values():
    line = ConsoleBackend("p").format("episode", {"attempt": 1.0, "episode_return": float("nan")})
    assert "return -" in line and "#1.0" in line


def test_custom_backend_gets_wanted_events_and_lifecycle_calls(tmp_path):
    hub = configure_hub(None, TelemetryConfig(profile="minimal", console=False), "t", transition_schema=TS)
    backend = ListBackend()
    hub.add_backend(backend)
    emit_one_of_each(hub)
    hub.emit_columns("step", {"epoch": [1, 2]})
    assert [et for et, _ in backend.events] == ["step", "seed", "episode", "learner", "system", "step", "step"]
    assert backend.events[0][1] == {"episode_id": "e", "epoch": 1, "val_acc": 0.5}
    hub.flush()
    reset_hub()
    assert backend.flushed >= 1 and backend.closed == 1
    with pytest.raises(TypeError, match="has no emit"):
        get_hub().add_backend(object())


def test_reset_hub_isolates_and_closed_hub_drops(tmp_path):
    hub = configure_hub(str(tmp_path / "a"), TelemetryConfig(console=False), "t")
    hub.emit("step", epoch=1)
    reset_hub()
    assert get_hub() is not hub and not get_hub().wants("step")
    hub.emit("step", epoch=2)  # a stale reference writes nothing after close
    configure_hub(str(tmp_path / "b"), TelemetryConfig(console=False), "t").emit("step", epoch=3)
    reset_hub()
    assert read_events(str(tmp_path / "a"), "step").column("epoch").to_pylist() == [1]
    assert read_events(str(tmp_path / "b"), "step").column("epoch").to_pylist() == [3]


def test_configure_twice_flushes_the_first(tmp_path):
    configure_hub(str(tmp_path / "a"), TelemetryConfig(console=False), "t").emit("step", epoch=1)
    configure_hub(str(tmp_path / "b"), TelemetryConfig(console=False), "t")
    assert read_events(str(tmp_path / "a"), "step").num_rows == 1


def test_process_ids_are_unique_and_file_safe():
    ids = {make_process_id("runner/0 x") for _ in range(100)}
    assert len(ids) == 100
    for pid in ids:
        assert pid.startswith("runner_0_x-") and f"-{os.getpid()}-" in pid and "/" not in pid


def test_flush_due_flushes_old_buffers(tmp_path, monkeypatch):
    import esper.nissa.writer as writer_mod

    clock = [10**18]
    monkeypatch.setattr(writer_mod, "_time_ns", lambda: clock[0])
    hub = configure_hub(str(tmp_path), TelemetryConfig(console=False, flush_seconds=5), "t")
    hub.emit("step", epoch=1)
    hub.flush_due()
    assert not (tmp_path / "telemetry" / "step").exists()
    clock[0] += 6 * 10**9
    hub.flush_due()
    assert read_events(str(tmp_path), "step").num_rows == 1
