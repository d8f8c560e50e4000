"""What the Ray dashboard shows of a run: actors with a repr that says what they are, tasks named by version.

Read through `ray.util.state` (the API behind the dashboard's Actors and Tasks views) from a driver that
runs two synchronous updates on a local Ray, in a subprocess so its Ray is started and stopped with it.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from launch_util import ROOT, SMOKE, launch_env

pytestmark = pytest.mark.e2e

DRIVER = r"""
import json, sys, time
import ray
from ray.util.state import list_actors, list_tasks
from esper.config import config_to_dict, load_config
from esper.runtime.actors import start_learner, start_runner
from esper.runtime.coordinator import Coordinator, RunState

run_dir, smoke = sys.argv[1], sys.argv[2]
info = ray.init(address="local", num_cpus=2, include_dashboard=True, namespace="esper-dashboard-test")
api = "http://" + info.dashboard_url          # this session's own: another Ray may run on the machine
cfg = load_config(smoke, ["runtime.total_updates=2", "runtime.runners=1", f"storage.run_dir={run_dir}"])
tree = config_to_dict(cfg)
learner = start_learner(tree, run_dir, None, {"num_cpus": 1}, 0)
runner = start_runner(0, tree, run_dir, 0, {"num_cpus": 1}, 0)
summary = Coordinator(cfg, run_dir, [runner], learner, RunState()).run()
actors = {a.name: a.repr_name for a in list_actors(address=api, filters=[("state", "=", "ALIVE")], detail=True)}
want = {"update v1 -> v2", "sample v1 runner 0"}
deadline = time.monotonic() + 30          # task events reach the state API asynchronously: poll, do not sleep
while True:
    tasks = sorted({t.name for t in list_tasks(address=api, detail=True, limit=1000)})
    if want <= set(tasks) or time.monotonic() > deadline:
        break
    time.sleep(0.5)
print("RESULT " + json.dumps({"summary": summary, "actors": actors, "tasks": tasks}))
ray.shutdown()
"""


def test_actors_have_a_repr_and_tasks_are_named_by_policy_version(tmp_path):
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(tmp_path / "run"), SMOKE], cwd=ROOT, env=launch_env(),
                          capture_output=True, text=True, timeout=240, start_new_session=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert proc.returncode == 0 and line, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(line.removeprefix("RESULT "))
    assert result["summary"]["stopped_by"] == "target reached" and result["summary"]["updates"] == 2
    runner, learner = result["actors"]["esper-runner-0"], result["actors"]["esper-learner"]
    assert runner.startswith("EnvRunner(runner=0, envs=") and "device=cpu" in runner and "run=run" in runner
    assert learner.startswith("Learner(ppo, device=cpu") and "run=run" in learner
    tasks = result["tasks"]
    assert {"sample v0 runner 0", "sample v1 runner 0", "update v0 -> v1", "update v1 -> v2"} <= set(tasks), tasks
