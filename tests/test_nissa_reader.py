"""Reading telemetry back: Esper's reader, version checks, pandas/Polars/DuckDB, Parquet export."""
from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from esper.leyline.events import STEP, transition_schema
from esper.leyline.schema import SchemaMismatchError
from esper.leyline.version import IncompatibleVersionError
from esper.nissa import (
    EventWriter, TelemetryConfig, available_events, configure_hub, event_dir, events_dataset, read_events, reset_hub,
)
from esper.nissa.export import main as export_main

OBS = 6


pytestmark = pytest.mark.usefixtures("isolated_hub")


@pytest.fixture
def run_dir(tmp_path) -> str:
    """A run with three step files from two processes, episodes, and transitions."""
    d = str(tmp_path / "run")
    ts = transition_schema(OBS, 3, "fp-1")
    rng = np.random.default_rng(0)
    for proc in ("runner-0", "runner-1"):
        hub = configure_hub(d, TelemetryConfig(console=False, flush_rows=20), proc, transition_schema=ts)
        for i in range(30):
            hub.emit("step", episode_id=f"{proc}-e", epoch=i, val_acc=float(np.float32(i / 30)))
        hub.emit("episode", episode_id=f"{proc}-e", episode_return=1.0, final_val_acc=0.5)
        hub.emit_columns("transition", {"step": np.arange(5), "obs": rng.random((5, OBS), dtype=np.float32),
                                        "mask": np.ones((5, 3), bool)})
        reset_hub()
    return d


def test_read_events_sorted_with_schema_and_metadata(run_dir):
    t = read_events(run_dir, "step")
    assert t.num_rows == 60
    assert t.schema.equals(STEP, check_metadata=True)
    times = t.column("time").to_pylist()
    assert times == sorted(times)
    assert set(t.column("process").to_pylist()) == {"runner-0", "runner-1"}
    assert available_events(run_dir) == ["step", "episode", "transition"]


def test_no_files_yet_gives_an_empty_table_with_the_schema(tmp_path):
    t = read_events(str(tmp_path), "seed")
    assert t.num_rows == 0 and t.schema.names == read_events(str(tmp_path), "seed").schema.names
    assert "gate_passed" in t.schema.names
    assert read_events(str(tmp_path), "transition").num_rows == 0
    with pytest.raises(KeyError, match="unknown event type 'steps'"):
        read_events(str(tmp_path), "steps")


def test_directory_is_a_pyarrow_dataset(run_dir):
    dset = ds.dataset(event_dir(run_dir, "step"), format="ipc")
    assert dset.count_rows() == 60
    assert dset.to_table(filter=ds.field("epoch") >= 25).num_rows == 10
    assert events_dataset(run_dir, "transition").count_rows() == 10


def test_pandas_reads_a_file_and_the_dataset(run_dir):
    pd = pytest.importorskip("pandas")
    first = sorted(os.listdir(event_dir(run_dir, "step")))[0]
    df = pd.read_feather(os.path.join(event_dir(run_dir, "step"), first))
    assert len(df) == 20 and str(df["time"].dt.tz) == "UTC"
    assert len(events_dataset(run_dir, "step").to_table().to_pandas()) == 60


def test_polars_scans_the_directory(run_dir):
    pl = pytest.importorskip("polars")
    df = pl.scan_ipc(os.path.join(event_dir(run_dir, "step"), "*.arrow")).group_by("process").agg(
        pl.len().alias("n")).collect()
    assert dict(zip(df["process"].to_list(), df["n"].to_list())) == {"runner-0": 30, "runner-1": 30}
    obs = pl.scan_ipc(os.path.join(event_dir(run_dir, "transition"), "*.arrow")).select("obs").collect()
    assert obs["obs"].to_numpy().shape == (10, OBS)


def test_duckdb_queries_the_pyarrow_dataset(run_dir):
    duckdb = pytest.importorskip("duckdb")
    steps = events_dataset(run_dir, "step")  # noqa: F841 - DuckDB finds the local by name
    [(n, top)] = duckdb.sql("SELECT count(*), max(epoch) FROM steps WHERE process = 'runner-1'").fetchall()
    assert (n, top) == (30, 29)


def write_with_schema(run_dir: str, event_type: str, schema: pa.Schema, row: dict) -> None:
    w = EventWriter(pafs.LocalFileSystem(), run_dir, event_type, schema, f"odd-{len(row)}")
    w.append(row)
    w.close()


def _with_meta(schema: pa.Schema, **updates: str) -> pa.Schema:
    meta = dict(schema.metadata)
    meta.update({k.encode(): v.encode() for k, v in updates.items()})
    return schema.with_metadata(meta)


def test_incompatible_versions_are_refused(tmp_path):
    d = str(tmp_path / "a")
    write_with_schema(d, "step", STEP, {"epoch": 1})
    assert read_events(d, "step").num_rows == 1
    write_with_schema(d, "step", _with_meta(STEP, **{"esper.leyline_version": "2.0.0"}), {"epoch": 2, "attempt": 0})
    with pytest.raises(IncompatibleVersionError, match=r"telemetry file .*odd-2-000000\.arrow.*Leyline 2\.0\.0"):
        read_events(d, "step")
    d = str(tmp_path / "b")
    write_with_schema(d, "step", _with_meta(STEP, **{"esper.event_schema_version": "99"}), {"epoch": 1})
    with pytest.raises(IncompatibleVersionError, match="event schema version '99'"):
        read_events(d, "step")
    d = str(tmp_path / "c")
    write_with_schema(d, "step", _with_meta(STEP, **{"esper.event": "seed"}), {"epoch": 1})
    with pytest.raises(ValueError, match="holds 'seed' events"):
        read_events(d, "step")


def test_observation_fingerprints_must_agree(tmp_path, run_dir):
    assert read_events(run_dir, "transition", obs_fingerprint="fp-1").num_rows == 10
    with pytest.raises(SchemaMismatchError, match="expected fp-2"):
        read_events(run_dir, "transition", obs_fingerprint="fp-2")
    write_with_schema(run_dir, "transition", transition_schema(OBS, 3, "fp-other"), {"step": 1})
    with pytest.raises(SchemaMismatchError, match="fp-other"):
        read_events(run_dir, "transition")


def test_parquet_export_reads_back(run_dir, tmp_path, capsys):
    out = str(tmp_path / "pq")
    assert export_main([run_dir, out, "--events", "step,episode,seed"]) == 0
    assert sorted(os.listdir(out)) == ["episode.parquet", "step.parquet"]
    back = pq.read_table(os.path.join(out, "step.parquet"))
    assert back.equals(read_events(run_dir, "step"))
    assert export_main([run_dir, str(tmp_path / "all")]) == 0
    assert pq.read_table(str(tmp_path / "all" / "transition.parquet")).column("obs").type == pa.list_(pa.float32(), OBS)
    assert export_main([str(tmp_path / "empty"), str(tmp_path / "x")]) == 1
    with pytest.raises(ValueError, match="unknown event type"):
        export_main([run_dir, out, "--events", "stepz"])


def test_episode_files_written_before_the_compute_columns_stay_readable(tmp_path):
    import datetime as dt

    import pyarrow as pa
    import pyarrow.ipc as ipc

    from esper.leyline import EpisodeSummary
    from esper.leyline.events import EPISODE
    from esper.nissa.records import emit_episode

    added = {"training_flops", "decision_flops", "evaluation_flops", "wall_seconds"}
    old = pa.schema([f for f in EPISODE if f.name not in added], metadata=EPISODE.metadata)
    (tmp_path / "telemetry" / "episode").mkdir(parents=True)
    row = {f.name: None for f in old} | {"time": dt.datetime.now(dt.timezone.utc), "process": "old",
                                          "episode_id": "old-0", "final_test_acc": 0.5}
    with ipc.new_file(str(tmp_path / "telemetry" / "episode" / "old-0.arrow"), old) as w:
        w.write_table(pa.Table.from_pylist([row], schema=old))
    configure_hub(str(tmp_path), TelemetryConfig(profile="standard", console=False), "new")
    emit_episode(EpisodeSummary(episode_id="new-0", attempt=0, env_seed=1, epochs=2, episode_return=1.0,
                                final_val_acc=0.5, final_test_acc=0.6, best_val_acc=0.6, seeds_germinated=0,
                                seeds_fossilized=0, seeds_culled=0, params_host=1, params_added=0, rollbacks=0,
                                training_flops=123), "ppo")
    reset_hub()
    rows = read_events(str(tmp_path), "episode").select(["episode_id", "final_test_acc", "training_flops"])
    assert sorted(rows.to_pylist(), key=lambda r: r["episode_id"]) == [
        {"episode_id": "new-0", "final_test_acc": pytest.approx(0.6), "training_flops": 123},
        {"episode_id": "old-0", "final_test_acc": 0.5, "training_flops": None}]
