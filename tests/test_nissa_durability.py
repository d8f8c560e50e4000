"""What survives a stop: clean exits lose nothing, killed processes lose only unflushed rows,
concurrent and forked writers never collide. Each case runs in its own Python process."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pyarrow.ipc as ipc
import pytest

from esper.nissa import read_events

SCRIPT = textwrap.dedent(r'''
    import os, signal, sys, time
    import numpy as np
    from esper.leyline.events import transition_schema
    from esper.nissa import TelemetryConfig, configure_hub, get_hub, reset_hub

    mode, run_dir = sys.argv[1], sys.argv[2]
    flush_rows = int(sys.argv[3]) if len(sys.argv) > 3 else 1_000_000
    cfg = TelemetryConfig(console=False, flush_rows=flush_rows, flush_seconds=3600)
    hub = configure_hub(run_dir, cfg, sys.argv[4] if len(sys.argv) > 4 else "proc",
                        transition_schema=transition_schema(4, 2, "fp"))

    class KillMidWrite:
        """Filesystem proxy: the n-th file's stream writes half its bytes, then the process is SIGKILLed."""
        def __init__(self, fs, n):
            self.fs, self.n, self.type_name = fs, n, fs.type_name
        def create_dir(self, *a, **k):
            return self.fs.create_dir(*a, **k)
        def move(self, *a):
            return self.fs.move(*a)
        def delete_file(self, *a):
            return self.fs.delete_file(*a)
        def open_output_stream(self, path):
            self.n -= 1
            stream = self.fs.open_output_stream(path)
            if self.n:
                return stream
            class Half:
                def __enter__(s): return s
                def __exit__(s, *e): return False
                def write(s, data):
                    stream.write(memoryview(data)[: len(data) // 2]); stream.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
            return Half()

    if mode == "clean_exit":
        for i in range(1000):
            hub.emit("step", epoch=i)
        for i in range(10):
            hub.emit("transition", step=i, obs=np.full(4, i, np.float32))
        # no close(): the atexit handler must flush
    elif mode == "kill_after_flushes":
        for i in range(35):            # flush_rows=10: three files, five rows buffered
            hub.emit("step", epoch=i)
        os.kill(os.getpid(), signal.SIGKILL)
    elif mode == "kill_mid_write":
        writer = hub.backends[0].writers["step"]
        writer.fs = KillMidWrite(writer.fs, 3)
        for i in range(100):           # dies while writing the third file
            hub.emit("step", epoch=i)
    elif mode == "concurrent":
        # Start together (spin on a condition, no sleeps) so the two writers interleave.
        me = sys.argv[5]
        open(os.path.join(run_dir, f"ready-{me}"), "w").close()
        deadline = time.monotonic() + 60
        while not all(os.path.exists(os.path.join(run_dir, f"ready-{k}")) for k in ("0", "1")):
            assert time.monotonic() < deadline, "the other writer never started"
        for i in range(1000):
            hub.emit("step", epoch=i, env_index=int(me))
        reset_hub()
        print(hub.process_id, hub.backends[0].writers["step"].files_written)
    elif mode == "fork":
        for i in range(5):
            hub.emit("step", epoch=i, env_index=0)
        pid = os.fork()
        if pid == 0:
            for i in range(3):
                get_hub().emit("step", epoch=100 + i, env_index=1)
            reset_hub()
            os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
        for i in range(5, 7):
            hub.emit("step", epoch=i, env_index=0)
''')


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def arrow_files(run_dir, event_type="step") -> list[str]:
    d = os.path.join(run_dir, "telemetry", event_type)
    return sorted(f for f in os.listdir(d) if f.endswith(".arrow"))


def test_clean_exit_loses_nothing(tmp_path):
    run("clean_exit", str(tmp_path))
    assert read_events(str(tmp_path), "step").column("epoch").to_pylist() == list(range(1000))
    assert read_events(str(tmp_path), "transition").column("step").to_pylist() == list(range(10))


def test_sigkill_loses_only_the_unflushed_buffer(tmp_path):
    proc = run("kill_after_flushes", str(tmp_path), "10", check=False)
    assert proc.returncode == -signal.SIGKILL
    files = arrow_files(tmp_path)
    assert len(files) == 3
    for f in files:  # every file written before the kill is complete on its own
        assert ipc.open_file(os.path.join(tmp_path, "telemetry", "step", f)).read_all().num_rows == 10
    assert read_events(str(tmp_path), "step").column("epoch").to_pylist() == list(range(30))


def test_sigkill_during_a_write_leaves_no_visible_partial_file(tmp_path):
    proc = run("kill_mid_write", str(tmp_path), "10", check=False)
    assert proc.returncode == -signal.SIGKILL
    listing = os.listdir(tmp_path / "telemetry" / "step")
    hidden = [f for f in listing if f.startswith(".")]
    assert len(hidden) == 1 and ".tmp-" in hidden[0]  # the half-written temp file is there, hidden
    assert len(arrow_files(tmp_path)) == 2
    assert read_events(str(tmp_path), "step").column("epoch").to_pylist() == list(range(20))
    import pyarrow.dataset as ds
    assert ds.dataset(str(tmp_path / "telemetry" / "step"), format="ipc").count_rows() == 20


def test_two_concurrent_processes_never_share_a_file(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, "concurrent", str(tmp_path), "20", "runner", me],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for me in ("0", "1")]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(out.split())
    (id0, n0), (id1, n1) = outs
    assert id0 != id1 and int(n0) == int(n1) == 50
    files = arrow_files(tmp_path)
    assert len(files) == 100  # nothing overwritten
    assert sum(f.startswith(id0) for f in files) == 50 and sum(f.startswith(id1) for f in files) == 50
    t = read_events(str(tmp_path), "step")
    for me in (0, 1):
        epochs = [e for e, env in zip(t.column("epoch").to_pylist(), t.column("env_index").to_pylist()) if env == me]
        assert sorted(epochs) == list(range(1000))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_gets_its_own_id_and_does_not_duplicate_rows(tmp_path):
    run("fork", str(tmp_path))
    t = read_events(str(tmp_path), "step")
    rows = sorted(zip(t.column("env_index").to_pylist(), t.column("epoch").to_pylist()))
    assert rows == [(0, i) for i in range(7)] + [(1, 100), (1, 101), (1, 102)]
    prefixes = {f.rsplit("-", 1)[0] for f in arrow_files(tmp_path)}
    assert len(prefixes) == 2
