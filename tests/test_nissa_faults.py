"""Faults in telemetry files and the report: a torn file costs its own rows only, files are fsynced
before they are published, and the report's table and seed-timeline legend show what is there."""
from __future__ import annotations

import errno
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from esper.leyline.events import STEP, transition_schema
from esper.leyline.version import IncompatibleVersionError
from esper.nissa import EventWriter, TelemetryConfig, configure_hub, events_dataset, read_events, reset_hub
from esper.nissa import plots
from esper.nissa.export import main as export_main
from esper.nissa.reader import TornFileWarning
from esper.nissa.report import build_report
from esper.storage import resolve_fs, write_bytes_atomic

pytestmark = pytest.mark.usefixtures("isolated_hub")

OBS = 4


def make_run(run_dir: str) -> None:
    """Three step files of 10 rows (epochs 0-29), one seed lifecycle, an episode, and two transition files."""
    hub = configure_hub(run_dir, TelemetryConfig(console=False, flush_rows=10), "runner-0",
                        transition_schema=transition_schema(OBS, 2, "fp"))
    for epoch in range(30):
        hub.emit("step", episode_id="e", attempt=0, epoch=epoch, val_acc=0.01 * epoch)
    for epoch, a, b in [(1, "DORMANT", "GERMINATED"), (1, "GERMINATED", "TRAINING"), (4, "TRAINING", "BLENDING")]:
        hub.emit("seed", episode_id="e", attempt=0, epoch=epoch, slot=0, blueprint="conv", from_stage=a, to_stage=b)
    hub.emit("episode", episode_id="e", attempt=0, episode_return=1.0, final_val_acc=0.3)
    for first in (0, 10):
        hub.emit_columns("transition", {"step": np.arange(first, first + 10), "obs": np.ones((10, OBS), np.float32),
                                        "mask": np.ones((10, 2), bool)})
    reset_hub()


def files(run_dir: str, event_type: str) -> list[str]:
    d = os.path.join(run_dir, "telemetry", event_type)
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".arrow"))


def footer_opens(path: str) -> bool:
    try:
        ds.IpcFileFormat().inspect(path, filesystem=pafs.LocalFileSystem())
    except (pa.ArrowInvalid, OSError):
        return False
    return True


# What a crash, a power loss before fsync, or a bad copy leaves in a published file.
DAMAGE = {
    "truncated": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
    "garbage": lambda data: bytes(range(256)) * 8,
    # A zero-filled block in the middle: the footer still opens, the record batch does not read.
    "hole": lambda data: data[: len(data) // 3] + bytes(len(data) // 2 - len(data) // 3) + data[len(data) // 2:],
    # Bytes scribbled over the data buffers (string offsets among them): the file reads, but its values
    # are invalid, and computing on them (the sort by time) would crash the process.
    "scribbled": lambda data: data[: len(data) // 2] + b"\xff" * (len(data) // 5)
    + data[len(data) // 2 + len(data) // 5:],
}


def damage(path: str, kind: str) -> None:
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(DAMAGE[kind](data))


def torn_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, TornFileWarning)]


# -- a torn file -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_torn_file_is_skipped_with_a_warning_naming_it(tmp_path, kind):
    run = str(tmp_path / "run")
    make_run(run)
    torn = files(run, "step")[1]
    damage(torn, kind)
    assert footer_opens(torn) == (kind in ("hole", "scribbled"))  # refused on opening, or on reading
    if kind == "scribbled":
        assert ipc.open_file(torn).read_all().num_rows == 10  # reads: only validating its values tells
    with pytest.warns(TornFileWarning) as record:
        t = read_events(run, "step")
    [message] = torn_warnings(record)  # one warning per torn file
    assert message.startswith(f"skipping unreadable telemetry file {torn}: ")
    assert t.column("epoch").to_pylist() == list(range(10)) + list(range(20, 30))  # every intact row
    assert t.schema.equals(STEP, check_metadata=True)


def test_a_torn_first_transition_file_leaves_the_fingerprint_to_the_next(tmp_path):
    run = str(tmp_path / "run")
    make_run(run)
    damage(files(run, "transition")[0], "truncated")
    with pytest.warns(TornFileWarning, match="transition"):
        t = read_events(run, "transition", obs_fingerprint="fp")
    assert t.column("step").to_pylist() == list(range(10, 20))
    with pytest.warns(TornFileWarning):
        assert read_events(run, "transition", columns=["time"]).num_rows == 10


def test_every_file_torn_gives_an_empty_table_with_the_schema(tmp_path):
    run = str(tmp_path / "run")
    make_run(run)
    damage(files(run, "step")[0], "truncated")
    for path in files(run, "step")[1:]:
        damage(path, "hole")
    with pytest.warns(TornFileWarning) as record:
        t = read_events(run, "step")
    assert len(torn_warnings(record)) == 3
    assert t.num_rows == 0 and t.schema.equals(STEP, check_metadata=True)


def test_events_dataset_leaves_out_a_file_that_does_not_open(tmp_path):
    duckdb = pytest.importorskip("duckdb")
    run = str(tmp_path / "run")
    make_run(run)
    torn = files(run, "step")[0]
    damage(torn, "truncated")
    with pytest.warns(TornFileWarning, match=re.escape(torn)):
        steps = events_dataset(run, "step")
    assert torn not in steps.files and len(steps.files) == 2
    assert steps.count_rows() == 20
    [(n, low)] = duckdb.sql("SELECT count(*), min(epoch) FROM steps").fetchall()
    assert (n, low) == (20, 10)


def test_an_intact_file_of_the_wrong_version_is_still_refused(tmp_path):
    run = str(tmp_path / "run")
    make_run(run)
    damage(files(run, "step")[0], "truncated")
    meta = {**STEP.metadata, b"esper.event_schema_version": b"99"}
    w = EventWriter(pafs.LocalFileSystem(), run, "step", STEP.with_metadata(meta), "old-esper")
    w.append({"epoch": 99})
    w.close()
    with pytest.warns(TornFileWarning), pytest.raises(IncompatibleVersionError, match=r"old-esper.*version '99'"):
        read_events(run, "step")


def test_in_progress_temp_files_are_not_read_and_not_warned_about(tmp_path):
    run = str(tmp_path / "run")
    make_run(run)
    d = os.path.join(run, "telemetry", "step")
    with open(os.path.join(d, ".runner-0-000009.arrow.tmp-0123abcd"), "wb") as f:
        f.write(b"ARROW1\0\0half a file")  # what a writer killed mid-write leaves
    with warnings.catch_warnings():
        warnings.simplefilter("error", TornFileWarning)
        assert read_events(run, "step").num_rows == 30


def test_report_and_export_warn_and_finish_on_a_run_with_a_torn_file(tmp_path):
    run = str(tmp_path / "run")
    make_run(run)
    damage(files(run, "step")[2], "truncated")
    damage(files(run, "seed")[0], "hole")  # the only seed file: its section has nothing to show
    with pytest.warns(TornFileWarning) as record:
        md = build_report(run, str(tmp_path / "report"))
    assert len(torn_warnings(record)) == 2
    text = open(md).read()
    assert table_rows(text)["step"] == 20
    assert "_Every `seed` file in this run is unreadable (see the warnings); section skipped._" in text
    assert os.path.exists(tmp_path / "report" / "val_acc.png")

    out = str(tmp_path / "pq")
    with pytest.warns(TornFileWarning):
        assert export_main([run, out]) == 0
    assert pq.read_table(os.path.join(out, "step.parquet")).column("epoch").to_pylist() == list(range(20))
    assert pq.read_table(os.path.join(out, "seed.parquet")).num_rows == 0
    assert pq.read_table(os.path.join(out, "transition.parquet")).num_rows == 20


# -- fsync before publishing -------------------------------------------------------------------------

def record_fsyncs(monkeypatch, target: str) -> list[tuple[str, int, bool]]:
    """Replace os.fsync by one that records (file|dir, inode, whether `target` exists yet), then syncs."""
    calls, real = [], os.fsync

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        calls.append(("dir" if stat.S_ISDIR(st.st_mode) else "file", st.st_ino, os.path.exists(target)))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def ino(path) -> int:
    return os.stat(path).st_ino


def test_a_local_file_is_fsynced_before_its_rename_and_its_directory_after(tmp_path, monkeypatch):
    fs, base = resolve_fs(str(tmp_path))
    target = tmp_path / "new" / "dir" / "file.bin"
    calls = record_fsyncs(monkeypatch, str(target))
    write_bytes_atomic(fs, f"{base}/new/dir/file.bin", b"x" * 4096)
    assert target.read_bytes() == b"x" * 4096
    assert calls == [
        ("dir", ino(tmp_path), False),              # the new directory `new` is durable in its parent
        ("dir", ino(tmp_path / "new"), False),      # and `dir` in `new`
        ("file", ino(target), False),               # the bytes, before the name exists (same inode, renamed)
        ("dir", ino(tmp_path / "new" / "dir"), True),  # the rename, after it
    ]
    calls.clear()
    write_bytes_atomic(fs, f"{base}/new/dir/file.bin", b"y")  # an existing directory: no mkdir syncs
    assert [kind for kind, _, _ in calls] == ["file", "dir"] and calls[0][1] == ino(target)


def test_telemetry_files_are_fsynced_when_the_writer_flushes(tmp_path, monkeypatch):
    w = EventWriter(pafs.LocalFileSystem(), str(tmp_path), "step", STEP, "p")
    w.append({"epoch": 1})
    w.flush()  # the directory exists from now on
    path = tmp_path / "telemetry" / "step" / "p-000001.arrow"
    calls = record_fsyncs(monkeypatch, str(path))
    w.append({"epoch": 2})
    assert w.flush() == str(path)
    assert calls == [("file", ino(path), False), ("dir", ino(path.parent), True)]


def test_a_file_that_cannot_be_synced_is_not_published(tmp_path, monkeypatch):
    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    fs, base = resolve_fs(str(tmp_path))
    with pytest.raises(OSError, match="Input/output error"):
        write_bytes_atomic(fs, f"{base}/file.bin", b"data")
    assert os.listdir(tmp_path) == []  # no file, no temp file


def test_a_directory_fsync_the_filesystem_does_not_support_is_not_a_failure(tmp_path, monkeypatch):
    real = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")  # e.g. some FUSE filesystems
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    fs, base = resolve_fs(str(tmp_path))
    write_bytes_atomic(fs, f"{base}/file.bin", b"data")
    assert (tmp_path / "file.bin").read_bytes() == b"data"


KILLED_AT_THIRD_SYNC = textwrap.dedent(r'''
    import os, signal, stat, sys
    from esper.nissa import TelemetryConfig, configure_hub

    hub = configure_hub(sys.argv[1], TelemetryConfig(console=False, flush_rows=10), "proc")
    real, synced = os.fsync, []

    def fsync(fd):
        if stat.S_ISREG(os.fstat(fd).st_mode):
            synced.append(fd)
            if len(synced) == 3:  # the power goes: the third file is written, not yet renamed
                os.kill(os.getpid(), signal.SIGKILL)
        real(fd)

    os.fsync = fsync
    for i in range(100):
        hub.emit("step", epoch=i)
''')


def test_a_write_killed_before_its_rename_publishes_nothing(tmp_path):
    proc = subprocess.run([sys.executable, "-c", KILLED_AT_THIRD_SYNC, str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    listing = os.listdir(tmp_path / "telemetry" / "step")
    assert len([f for f in listing if f.endswith(".arrow")]) == 2
    assert [f for f in listing if f.startswith(".") and ".tmp-" in f]  # the synced temp file, hidden
    with warnings.catch_warnings():
        warnings.simplefilter("error", TornFileWarning)
        assert read_events(str(tmp_path), "step").column("epoch").to_pylist() == list(range(20))


def test_filesystems_without_fsync_are_not_synced(monkeypatch):
    calls = record_fsyncs(monkeypatch, "/nonexistent")
    fs = pafs._MockFileSystem()  # the generic rename path; object stores take the single-upload path
    write_bytes_atomic(fs, "bucket/run/latest", b"v1")
    assert calls == []


# -- the report --------------------------------------------------------------------------------------

def table_rows(markdown: str) -> dict[str, int]:
    """The `| event | rows |` table of report.md."""
    return {m[1]: int(m[2]) for m in re.finditer(r"^\| (\w+) \| (\d+) \|$", markdown, re.M)}


def test_the_report_event_table_counts_transitions(tmp_path):
    run = str(tmp_path / "run")
    make_run(run)
    text = open(build_report(run, str(tmp_path / "report"))).read()
    assert table_rows(text) == {"episode": 1, "seed": 3, "step": 30, "transition": 20}


def seed_rows(episodes: list[list[tuple[int, str, str]]]) -> pa.Table:
    rows = [{"time": t, "episode_id": f"ep{k}", "attempt": 0, "epoch": epoch, "slot": 0,
             "from_stage": a, "to_stage": b}
            for k, ep in enumerate(episodes) for t, (epoch, a, b) in enumerate(ep, start=100 * k)]
    return pa.Table.from_pylist(rows)


# A real slot's moves: an action and the end-of-step tick can both move a seed within one step.
CULLED_RUN = [(1, "DORMANT", "GERMINATED"), (1, "GERMINATED", "TRAINING"), (3, "TRAINING", "BLENDING"),
              (5, "BLENDING", "SHADOWING"), (6, "SHADOWING", "CULLED"), (6, "CULLED", "EMBARGOED"),
              (8, "EMBARGOED", "RESETTING"), (9, "RESETTING", "DORMANT")]
FOSSIL_RUN = [(1, "DORMANT", "GERMINATED"), (1, "GERMINATED", "TRAINING"), (3, "TRAINING", "BLENDING"),
              (5, "BLENDING", "SHADOWING"), (6, "SHADOWING", "PROBATIONARY"), (8, "PROBATIONARY", "FOSSILIZED"),
              (8, "FOSSILIZED", "DORMANT")]


def stages_visible(fig) -> set[str]:
    """Stages whose colour is painted inside the plot areas (the legend hidden while rendering)."""
    for legend in fig.legends:
        legend.set_visible(False)
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)
    height = pixels.shape[0]
    inside = []
    for ax in fig.axes:
        box = ax.get_window_extent()
        inside.append(pixels[int(height - box.y1) + 2: int(height - box.y0) - 2, int(box.x0) + 2: int(box.x1) - 2])
    inside = np.concatenate([p.reshape(-1, 3) for p in inside])
    return {stage for stage, color in plots.STAGE_COLORS.items()
            if (np.abs(inside - np.round(np.array(color) * 255)).max(axis=1) <= 1).any()}


def test_seed_timeline_legend_shows_exactly_the_colours_drawn(tmp_path):
    # Four culled episodes are plotted; the fifth, the only one with a fossil, is not.
    seeds = seed_rows([CULLED_RUN] * 4 + [FOSSIL_RUN])
    fig, n = plots.seed_timeline_figure(seeds, None, episodes=4)
    try:
        assert n == 4
        legend = {t.get_text().upper() for t in fig.legends[0].get_texts()}
        expected = {"GERMINATED", "TRAINING", "BLENDING", "SHADOWING", "CULLED", "EMBARGOED", "RESETTING", "DORMANT"}
        assert legend == expected
        assert stages_visible(fig) == expected  # the instant GERMINATED and CULLED too
    finally:
        plots.plt.close(fig)
    fig, _ = plots.seed_timeline_figure(seed_rows([FOSSIL_RUN]), None)
    try:
        legend = {t.get_text().upper() for t in fig.legends[0].get_texts()}
        assert legend == stages_visible(fig) == {"GERMINATED", "TRAINING", "BLENDING", "SHADOWING", "PROBATIONARY",
                                                 "FOSSILIZED", "DORMANT"}
    finally:
        plots.plt.close(fig)
    assert plots.plot_seed_timeline(seeds, None, str(tmp_path / "t.png")) == 4
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"


def test_val_acc_legend_lists_only_the_seed_markers_drawn():
    steps = pa.Table.from_pylist([{"time": e, "episode_id": "ep0", "attempt": 0, "epoch": e, "val_acc": 0.1 * e}
                                  for e in range(10)])
    fig, _ = plots.val_acc_figure(steps, seed_rows([FOSSIL_RUN]))
    try:
        labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        assert labels == ["ep0#0", "germinated", "fossilized"]  # no culled: nothing was culled
    finally:
        plots.plt.close(fig)
