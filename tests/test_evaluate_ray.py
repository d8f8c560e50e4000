"""`esper evaluate` on Ray: episodes as Ray tasks, PPO trained through the runtime (coordinator, runners,
learner) in the same session, results written and assembled — on a tiny task, in its own process."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from launch_util import ROOT, launch_env
from tiny import DATA, LIFECYCLE, MAX_EPOCHS

pytestmark = pytest.mark.e2e

TASK = {"task": "tiny", "frontier": {"param_ratios": [1.0, 2.5]},
        "run": {"tolaria": {"data": dict(DATA), "training": {"device": "cpu"}},
                "kasmina": {"lifecycle": dict(LIFECYCLE)},
                "simic": {"env": {"max_epochs": MAX_EPOCHS}, "ppo": {"device": "cpu"}},
                "nissa": {"console": False}},
        "schedules": {"germinate_at": [1], "blueprints": ["conv_enhance"], "slots": ["block1"]},
        "seeds": {"train": [0], "eval": [1000, 1001], "ppo": [100]},
        "ppo": {"total_updates": 2, "envs": 1}}


def test_evaluate_runs_the_protocol_on_ray_and_trains_ppo_through_the_runtime(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TASK))
    results, docs = tmp_path / "results", tmp_path / "docs" / "results.md"
    proc = subprocess.run([sys.executable, "-m", "esper.cli", "evaluate", "--config", str(config), "--results",
                           str(results), "--docs", str(docs), "--address", "local", "--num-cpus", "2"],
                          cwd=ROOT, env=launch_env(), capture_output=True, text=True, timeout=300,
                          start_new_session=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "started a new local Ray" in proc.stdout
    out = json.loads((results / "tiny" / "results.json").read_text())
    assert out["executor"] == "ray-runtime" and out["store"]["episodes_run"] == 2 * 2 + 1 + 2 + 2 + 2
    run = out["ppo"]["runs"][0]
    assert [row["update"] for row in run["learning_curve"]] == [1, 2]       # from the runtime's learner telemetry
    ppo_dir = (results / "tiny" / run["checkpoint"]).parents[1]
    assert json.loads((ppo_dir / "summary.json").read_text())["stopped_by"] == "target reached"
    assert (ppo_dir / "telemetry" / "learner").is_dir() and (ppo_dir / "telemetry" / "episode").is_dir()
    names = {row["controller"] for row in out["controllers"]}
    assert {"heuristic", "ppo-s100"} <= names and any(n.startswith("best schedule") for n in names)
    assert docs.exists() and "tiny" in docs.read_text()


def test_evaluate_says_so_when_its_episodes_cannot_be_scheduled(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TASK))
    proc = subprocess.run([sys.executable, "-m", "esper.cli", "evaluate", "--config", str(config), "--results",
                           str(tmp_path / "results"), "--address", "local", "--num-cpus", "2",
                           "--cpus-per-episode", "4"], cwd=ROOT, env=launch_env(), capture_output=True, text=True,
                          timeout=120, start_new_session=True)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "needs 4 CPU, the cluster has 2" in proc.stderr


def test_a_bad_evaluation_config_is_refused_before_ray_starts(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({**TASK, "seeds": {"train": [0], "eval": [0, 1]}}))
    proc = subprocess.run([sys.executable, "-m", "esper.cli", "evaluate", "--config", str(config)], cwd=ROOT,
                          env=launch_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "error:" in proc.stderr and "Ray" not in proc.stdout, proc.stderr


def test_a_transfer_source_without_results_is_refused_before_ray_starts(tmp_path):
    config = tmp_path / "target.yaml"
    config.write_text(yaml.safe_dump({**TASK, "task": "target", "transfer": ["tiny"]}))
    proc = subprocess.run([sys.executable, "-m", "esper.cli", "evaluate", "--config", str(config),
                           "--results", str(tmp_path / "results")], cwd=ROOT, env=launch_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Ray" not in proc.stdout, proc.stderr
    assert "transfer from 'tiny'" in proc.stderr and "evaluate it first" in proc.stderr
