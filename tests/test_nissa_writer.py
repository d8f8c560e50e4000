"""EventWriter: exact round trips, flush triggers, file layout, errors."""
from __future__ import annotations

import datetime as dt
import os

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.ipc as ipc
import pytest

import esper.nissa.writer as writer_mod
from esper.leyline.events import DIAGNOSTIC, EVENT_SCHEMA_VERSION, STEP, SYSTEM, transition_schema
from esper.leyline.version import LEYLINE_VERSION
from esper.nissa.writer import EventWriter, UnknownFieldError

OBS, ACTIONS = 7, 4
TRANSITION = transition_schema(OBS, ACTIONS, "fp-test")


def make_writer(tmp_path, event_type="step", schema=STEP, **kw) -> EventWriter:
    kw.setdefault("flush_rows", 10_000)
    kw.setdefault("flush_seconds", 3600.0)
    return EventWriter(pafs.LocalFileSystem(), str(tmp_path), event_type, schema, "proc-1", **kw)


def read_dir(path) -> pa.Table:
    files = sorted(os.listdir(path))
    return pa.concat_tables([ipc.open_file(os.path.join(path, f)).read_all() for f in files])


def random_step_rows(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        rows.append({
            "episode_id": f"ep{i % 3}", "attempt": int(rng.integers(0, 3)), "env_index": i % 4, "epoch": i,
            "policy_version": int(rng.integers(0, 1 << 40)), "action": "WAIT" if i % 2 else "GERMINATE(slot=0)",
            # float32-representable values so the round trip is exact
            "val_acc": float(np.float32(rng.random())), "reward": float(np.float32(rng.normal())),
            "rolled_back": bool(i % 5 == 0), "params_added": int(rng.integers(0, 10**6)),
        })
    return rows


def test_rows_round_trip_exactly_with_nulls_and_auto_fields(tmp_path):
    rows = random_step_rows(50)
    w = make_writer(tmp_path, process="runner-3")
    for r in rows:
        w.append(r)
    path = w.flush()
    assert path.endswith("/telemetry/step/proc-1-000000.arrow")
    table = read_dir(tmp_path / "telemetry" / "step")
    assert table.schema.equals(STEP, check_metadata=True)
    got = table.to_pylist()
    for want, have in zip(rows, got):
        assert {k: have[k] for k in want} == want
        missing = set(STEP.names) - set(want) - {"time", "process"}
        assert all(have[k] is None for k in missing)
        assert have["process"] == "runner-3"
        assert have["time"].tzinfo is not None
        assert abs(have["time"] - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=5)
    assert [r["time"] for r in got] == sorted(r["time"] for r in got)


def test_transition_rows_and_columns_round_trip_exactly(tmp_path):
    rng = np.random.default_rng(1)
    w = make_writer(tmp_path, "transition", TRANSITION)
    obs = rng.random((6, OBS), dtype=np.float32)
    masks = rng.random((6, ACTIONS)) > 0.5
    buf = np.empty(OBS, np.float32)  # a reused buffer must not alias earlier rows
    for i in range(3):
        buf[:] = obs[i]
        w.append({"episode_id": "e", "step": i, "obs": buf, "action": i, "mask": masks[i],
                  "next_obs": obs[i + 1].tolist(), "reward": 0.5, "done": i == 2})
    w.append({"episode_id": "e", "step": 3, "obs": None, "action": 0})  # a null list row
    col_obs = obs[3:].copy()
    w.append_columns({"episode_id": ["f"] * 3, "step": np.arange(3), "obs": col_obs, "mask": masks[3:],
                      "action": np.array([1, 2, 3]), "reward": np.array([0.25, 0.5, 1.0])})
    col_obs[:] = -1  # mutating after emit changes nothing
    w.close()
    t = read_dir(tmp_path / "telemetry" / "transition")
    assert t.num_rows == 7
    got_obs = t.column("obs")
    np.testing.assert_array_equal(np.stack(got_obs.to_pylist()[:3]), obs[:3])
    assert got_obs[3].as_py() is None
    np.testing.assert_array_equal(np.stack(got_obs.to_pylist()[4:]), obs[3:])
    np.testing.assert_array_equal(np.stack(t.column("mask").to_pylist()[:3]), masks[:3])
    np.testing.assert_array_equal(np.stack(t.column("mask").to_pylist()[4:]), masks[3:])
    assert t.column("next_obs")[0].as_py() == obs[1].tolist()
    assert t.column("reward").to_pylist() == [0.5, 0.5, 0.5, None, 0.25, 0.5, 1.0]
    assert t.column("done").to_pylist()[:4] == [False, False, True, None]
    meta = ipc.open_file(str(tmp_path / "telemetry" / "transition" / "proc-1-000000.arrow")).schema.metadata
    assert meta[b"esper.obs_fingerprint"] == b"fp-test"
    assert meta[b"esper.event_schema_version"] == EVENT_SCHEMA_VERSION.encode()
    assert meta[b"esper.leyline_version"] == LEYLINE_VERSION.encode()


def test_flush_on_row_count_writes_sequenced_files(tmp_path):
    w = make_writer(tmp_path, flush_rows=10)
    for r in random_step_rows(25):
        w.append(r)
    d = tmp_path / "telemetry" / "step"
    assert sorted(os.listdir(d)) == ["proc-1-000000.arrow", "proc-1-000001.arrow"]
    assert w.buffered_rows == 5
    w.close()
    assert len(os.listdir(d)) == 3 and read_dir(d).num_rows == 25
    assert w.rows_written == 25 and w.files_written == 3


def test_flush_on_age_uses_row_time(tmp_path, monkeypatch):
    clock = [1_000_000_000_000_000]  # ns; injected so no test ever sleeps
    monkeypatch.setattr(writer_mod, "_time_ns", lambda: clock[0])
    w = make_writer(tmp_path, flush_seconds=2.0)
    w.append({"epoch": 0})
    clock[0] += 1_500_000_000
    w.append({"epoch": 1})
    assert w.files_written == 0
    assert w.flush_if_due() is None
    clock[0] += 600_000_000  # the oldest row is now 2.1 s old
    w.append({"epoch": 2})
    assert w.files_written == 1 and w.buffered_rows == 0
    w.append({"epoch": 3})
    clock[0] += 2_000_000_000
    assert w.flush_if_due() is not None
    assert read_dir(tmp_path / "telemetry" / "step").column("epoch").to_pylist() == [0, 1, 2, 3]


def test_empty_flush_writes_nothing(tmp_path):
    w = make_writer(tmp_path)
    assert w.flush() is None
    w.append_columns({"epoch": []})
    w.close()
    assert not (tmp_path / "telemetry").exists()


def test_unknown_and_automatic_fields_are_rejected_without_corrupting_the_buffer(tmp_path):
    w = make_writer(tmp_path)
    w.append({"epoch": 1})
    with pytest.raises(UnknownFieldError, match=r"unknown field 'val_accuracy'.*valid fields are \[.*'val_acc'"):
        w.append({"epoch": 2, "val_accuracy": 0.5})
    with pytest.raises(UnknownFieldError, match="set automatically"):
        w.append({"time": 0})
    with pytest.raises(UnknownFieldError, match="unknown field 'bogus'"):
        w.append_columns({"epoch": [1], "bogus": [2]})
    full = {f.name: None for f in STEP if f.name not in ("time", "process")}
    with pytest.raises(UnknownFieldError, match="'extra'"):  # every real field present plus one more
        w.append({**full, "extra": 1})
    w.close()
    assert read_dir(tmp_path / "telemetry" / "step").column("epoch").to_pylist() == [1]


def test_column_lengths_must_match(tmp_path):
    w = make_writer(tmp_path, "system", SYSTEM)
    with pytest.raises(ValueError, match="different lengths"):
        w.append_columns({"kind": ["a", "b"], "actor": ["x"]})


def test_a_value_of_the_wrong_type_drops_only_its_row(tmp_path):
    w = make_writer(tmp_path, "diagnostic", DIAGNOSTIC)
    w.append({"layer": "a", "grad_norm": 1.0})
    w.append({"layer": "b", "grad_norm": "not a number"})
    w.append({"layer": "c", "grad_norm": 3.0})
    with pytest.raises(TypeError, match="grad_norm"):
        w.flush()
    w.close()
    t = read_dir(tmp_path / "telemetry" / "diagnostic")
    assert t.column("layer").to_pylist() == ["a", "c"]


def test_wrong_obs_length_is_a_clear_error(tmp_path):
    w = make_writer(tmp_path, "transition", TRANSITION)
    with pytest.raises(TypeError, match="obs: expected rows of length 7"):
        w.append_columns({"obs": np.zeros((2, 5), np.float32)})
    w.append({"step": 0, "obs": np.zeros(OBS)})
    w.append({"step": 1, "obs": np.zeros(5)})
    with pytest.raises(TypeError, match=r"transition\.obs: .* does not convert"):
        w.flush()
    w.close()
    assert read_dir(tmp_path / "telemetry" / "transition").column("step").to_pylist() == [0]


def test_closed_writer_refuses_rows(tmp_path):
    w = make_writer(tmp_path)
    w.close()
    with pytest.raises(RuntimeError, match="closed"):
        w.append({"epoch": 1})


def test_small_and_large_column_batches_keep_order_in_one_record_batch_per_file(tmp_path):
    rng = np.random.default_rng(2)
    w = make_writer(tmp_path, "transition", TRANSITION)
    obs = rng.random((200, OBS), dtype=np.float32)
    w.append({"step": 0, "obs": obs[0]})
    w.append_columns({"step": np.arange(1, 5), "obs": obs[1:5]})          # small: joins the row buffer
    w.append_columns({"step": np.arange(5, 105), "obs": obs[5:105]})      # large: its own record batch
    w.append({"step": 105, "obs": obs[105]})
    w.append_columns({"step": list(range(106, 200)), "obs": list(obs[106:200])})
    w.close()
    path = tmp_path / "telemetry" / "transition" / "proc-1-000000.arrow"
    reader = ipc.open_file(str(path))
    assert reader.num_record_batches == 1
    t = reader.read_all()
    assert t.column("step").to_pylist() == list(range(200))
    np.testing.assert_array_equal(np.stack(t.column("obs").to_pylist()), obs)


def test_a_column_batch_that_does_not_convert_is_dropped_alone(tmp_path):
    w = make_writer(tmp_path, "diagnostic", DIAGNOSTIC)
    w.append_columns({"layer": ["a", "b"], "grad_norm": np.array([1.0, 2.0])})
    w.append_columns({"layer": ["c"], "grad_norm": ["oops"]})
    w.append_columns({"layer": ["d"], "grad_norm": [4.0]})
    with pytest.raises(TypeError, match=r"diagnostic\.grad_norm: .*1 append_columns call\(s\) dropped"):
        w.flush()
    w.close()
    t = read_dir(tmp_path / "telemetry" / "diagnostic")
    assert t.column("layer").to_pylist() == ["a", "b", "d"]
    assert t.column("grad_norm").to_pylist() == [1.0, 2.0, 4.0]
