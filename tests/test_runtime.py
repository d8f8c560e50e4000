"""End-to-end tests of the Ray runtime through `python -m esper.launch` (each run starts its own local Ray)."""
from __future__ import annotations

import json
import signal
import urllib.request
from collections import Counter

import pytest
import torch

from esper.nissa import read_events
from launch_util import SMOKE, cleanup, run, start, wait_for_line

pytestmark = pytest.mark.e2e


def _summary(run_dir) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _episode_ids(run_dir) -> list[str]:
    return read_events(str(run_dir), "episode").column("episode_id").to_pylist()


def _versions(run_dir) -> list[int]:
    return read_events(str(run_dir), "learner").column("policy_version").to_pylist()


def test_smoke_run_sync(tmp_path):
    rc, out = run(["--config", SMOKE, "--run-dir", str(tmp_path / "run"), "--no-dashboard"])
    assert rc == 0, out
    run_dir = tmp_path / "run"
    s = _summary(run_dir)
    assert s["stopped_by"] == "target reached" and s["updates"] == 4 and s["policy_version"] == 4
    assert "[esper] update 4/4" in out
    assert json.loads((run_dir / "checkpoints" / "latest.json").read_text())["version"] == 4
    assert _versions(run_dir) == [1, 2, 3, 4]
    ids = _episode_ids(run_dir)
    assert len(ids) == s["episodes"] == len(set(ids)) > 0
    for event in ("step", "seed", "decision", "transition", "system"):
        assert read_events(str(run_dir), event).num_rows > 0, event
    assert (run_dir / "config.yaml").exists() and not list(run_dir.rglob("*.tmp*"))


def test_smoke_run_async(tmp_path):
    run_dir = tmp_path / "run"
    rc, out = run(["--config", SMOKE, "--run-dir", str(run_dir), "--no-dashboard", "--set", "runtime.mode=async",
                   "--set", "runtime.max_policy_lag=2"])
    assert rc == 0, out
    versions = _versions(run_dir)
    assert versions == sorted(set(versions)) and len(versions) == 4
    lags = read_events(str(run_dir), "learner").column("mean_policy_lag").to_pylist()
    assert all(0 <= lag <= 2 for lag in lags)


def test_runner_killed_mid_run_loses_no_completed_episode(tmp_path):
    run_dir = tmp_path / "run"
    rc, out = run(["--config", SMOKE, "--run-dir", str(run_dir), "--no-dashboard",
                   "--set", "runtime.faults.kill_runner=0", "--set", "runtime.faults.at_sample_call=2"])
    assert rc == 0, out
    s = _summary(run_dir)
    assert s["restarts"] == {"0": 1} and s["updates"] == 4
    kinds = Counter(read_events(str(run_dir), "system").column("kind").to_pylist())
    assert kinds["actor_failed"] == 1 and kinds["actor_restart"] == 1
    episodes = read_events(str(run_dir), "episode").to_pydict()
    ids = episodes["episode_id"]
    assert len(ids) == len(set(ids)) == s["episodes"]
    # The episodes interrupted by the crash were re-run under the same id with attempt 1.
    assert 1 in episodes["attempt"]


def test_killed_learner_restores_its_checkpoint_and_never_reuses_a_version(tmp_path):
    run_dir = tmp_path / "run"
    rc, out = run(["--config", SMOKE, "--run-dir", str(run_dir), "--no-dashboard",
                   "--set", "runtime.faults.kill_learner_at_update=3"])        # checkpoint_every=2 in smoke
    assert rc == 0, out
    s = _summary(run_dir)
    assert s["restarts"] == {"learner": 1} and s["updates"] == 4
    # The first life's learner events died in its unflushed buffer; its checkpoint of v2 survived.
    assert (run_dir / "checkpoints" / "policy-v00000002.pt").exists()
    versions = _versions(run_dir)
    assert versions == sorted(set(versions)) and min(versions) > 100   # past the reserved block
    assert s["policy_version"] == max(versions)
    starts = read_events(str(run_dir), "system").to_pydict()
    restart = [json.loads(d) for k, a, d in zip(starts["kind"], starts["actor"], starts["detail"])
               if k == "actor_restart" and a == "esper-learner"]
    assert len(restart) == 1 and restart[0]["restored_version"] == 2


def test_killed_run_resumes_without_reusing_versions(tmp_path):
    run_dir = tmp_path / "run"
    rc, out = run(["--config", SMOKE, "--run-dir", str(run_dir), "--no-dashboard",
                   "--set", "runtime.total_updates=8", "--set", "runtime.faults.kill_driver_after_updates=3"])
    assert rc == -signal.SIGKILL, out
    first = _versions(run_dir)                 # whatever the learner flushed before it died
    rc, out = run(["--resume", str(run_dir), "--no-dashboard", "--set", "runtime.faults.kill_driver_after_updates=null",
                   "--set", "runtime.total_updates=5"])
    assert rc == 0, out
    s = _summary(run_dir)
    # One count of updates: the resumed run continues from its checkpoint's (v2, 2 updates), not from the
    # driver's state.json (3 updates, written after the last checkpoint), so the two agree at the end.
    latest = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
    ckpt = torch.load(run_dir / "checkpoints" / latest["file"], weights_only=True)
    assert s["incarnation"] == 1 and s["updates"] == ckpt["learner"]["updates_done"] == 5
    versions = _versions(run_dir)
    resumed = versions[len(first):]
    assert resumed and min(resumed) > max([2, *first])  # restored from v2, never reusing anything published
    assert resumed == sorted(set(resumed))
    ids = _episode_ids(run_dir)
    assert len(ids) == len(set(ids))


def test_sigterm_leaves_checkpoint_and_complete_telemetry(tmp_path):
    run_dir = tmp_path / "run"
    proc = start(["--config", SMOKE, "--run-dir", str(run_dir), "--no-dashboard", "--set", "runtime.total_updates=50"])
    lines: list[str] = []
    try:
        assert wait_for_line(proc, "update 2/50", lines), "".join(lines)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        cleanup(proc)
    assert proc.returncode == 0, "".join(lines) + out
    s = _summary(run_dir)
    assert s["stopped_by"] == "SIGTERM"
    latest = json.loads((run_dir / "checkpoints" / "latest.json").read_text())["version"]
    assert latest == s["policy_version"] == max(_versions(run_dir))
    ids = _episode_ids(run_dir)
    assert len(ids) == len(set(ids)) == s["episodes"]
    kinds = read_events(str(run_dir), "system").column("kind").to_pylist()
    assert "stop" in kinds and "checkpoint" in kinds


def test_metrics_endpoint_serves_esper_metrics(tmp_path):
    port = 18000 + (hash(str(tmp_path)) % 1000)
    proc = start(["--config", SMOKE, "--run-dir", str(tmp_path / "run"), "--no-dashboard", "--metrics-port", str(port),
                  "--set", "runtime.total_updates=200"], RAY_metrics_report_interval_ms="500")
    lines: list[str] = []
    try:
        assert wait_for_line(proc, "update 2/200", lines), "".join(lines)
        body = ""
        for _ in range(120):                                   # the agent exports on its own schedule
            assert wait_for_line(proc, "update", lines)
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            if "ray_esper_policy_version" in body and "ray_esper_env_steps_total" in body:
                break
        for name in ("ray_esper_env_steps_total", "ray_esper_episodes_total", "ray_esper_policy_version",
                     "ray_esper_learner_entropy", "ray_esper_seeds_germinated_total"):
            assert name in body, name
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    finally:
        cleanup(proc)


TWO_NODES = """
import sys
from ray.cluster_utils import Cluster
from esper.launch import main
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
cluster.add_node(num_cpus=2)
cluster.wait_for_nodes()
try:
    rc = main(["--config", sys.argv[1], "--run-dir", sys.argv[2], "--address", cluster.address, *sys.argv[3:]])
finally:
    cluster.shutdown()
sys.exit(rc)
"""


def _two_node_run(tmp_path, *extra: str):
    import subprocess
    import sys

    from launch_util import ROOT, launch_env

    proc = subprocess.Popen([sys.executable, "-c", TWO_NODES, SMOKE, str(tmp_path / "run"), *extra], cwd=ROOT,
                            env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=300)
    finally:
        cleanup(proc)
    return proc.returncode, out


def test_two_node_cluster_writes_one_shared_run_dir(tmp_path):
    rc, out = _two_node_run(tmp_path, "--set", "storage.shared=true")
    assert rc == 0, out
    run_dir = tmp_path / "run"
    assert _summary(run_dir)["updates"] == 4
    starts = read_events(str(run_dir), "system").to_pydict()
    nodes = {json.loads(d).get("node") for k, d in zip(starts["kind"], starts["detail"]) if k == "actor_start"}
    nodes.discard(None)
    assert len(nodes) == 2, starts              # actors on both nodes wrote into the same directory
    processes = set(read_events(str(run_dir), "step").column("process").to_pylist())
    assert processes == {"runner-0", "runner-1"}


def test_two_node_cluster_refuses_node_local_run_dir(tmp_path):
    rc, out = _two_node_run(tmp_path)
    assert rc == 2 and "storage.run_dir" in out and "node-local" in out


def test_bad_config_is_a_clear_error(tmp_path):
    rc, out = run(["--config", SMOKE, "--set", "runtime.mode=fast", "--print-config"])
    assert rc == 2 and "runtime.mode" in out
    rc, out = run(["--set", "runtime.runnerz=2", "--print-config"])
    assert rc == 2 and "runtime.runnerz" in out and "envs_per_runner" in out
    rc, out = run(["--config", SMOKE, "--print-config", "--set", "runtime.mode=async"])
    assert rc == 0 and "mode: async" in out and "max_epochs: 8" in out
