"""Faults that used to pass silently, through `python -m esper.launch` (each run starts its own local Ray)."""
from __future__ import annotations

import json
import time

import pytest

from launch_util import SMOKE, run

pytestmark = pytest.mark.e2e


def test_unknown_slot_layer_fails_at_config_load_before_ray_starts(tmp_path):
    t0 = time.monotonic()
    rc, out = run(["--config", SMOKE, "--run-dir", str(tmp_path / "run"), "--set", "kasmina.slots=[no_such_layer]"])
    assert rc == 2, out
    assert "kasmina.slots" in out and "no_such_layer" in out and "block0" in out      # names the valid layers
    assert "[esper] Ray" not in out and "Traceback" not in out and len(out.splitlines()) <= 3
    assert time.monotonic() - t0 < 20 and not (tmp_path / "run").exists()


def test_a_blueprint_that_does_not_fit_a_slot_fails_at_config_load(tmp_path):
    rc, out = run(["--config", SMOKE, "--set", "kasmina.blueprint_params.norm.groups=3", "--print-config"])
    assert rc == 2 and "norm" in out and "block0" in out and "Traceback" not in out, out


def test_a_run_whose_runner_dies_for_good_ends_in_error_with_a_nonzero_exit(tmp_path):
    run_dir = tmp_path / "run"
    rc, out = run(["--config", SMOKE, "--run-dir", str(run_dir), "--no-dashboard", "--set", "runtime.max_restarts=0",
                   "--set", "runtime.faults.kill_runner=0", "--set", "runtime.faults.at_sample_call=1"])
    assert rc == 1, out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stopped_by"].startswith("error: ") and "esper-runner-0" in summary["stopped_by"], summary
    assert summary["updates"] == 0 and "[esper] the run failed" in out


def test_an_existing_run_dir_without_resume_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("seed: 0\n")
    rc, out = run(["--config", SMOKE, "--run-dir", str(run_dir), "--no-dashboard"])
    assert rc == 2 and "already holds a run" in out and f"--resume {run_dir}" in out, out
    assert "[esper] Ray" not in out and sorted(p.name for p in run_dir.iterdir()) == ["config.yaml"]


def test_a_run_whose_actors_fail_to_start_ends_in_error(tmp_path):
    # Valid as a config, but the runners cannot load the data: their __init__ raises on every node.
    run_dir = tmp_path / "run"
    rc, out = run(["--config", SMOKE, "--run-dir", str(run_dir), "--no-dashboard", "--set", "runtime.max_restarts=0",
                   "--set", "tolaria.data.dataset=cifar10", "--set", f"tolaria.data.root={tmp_path / 'no-data'}"])
    assert rc == 1, out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stopped_by"].startswith("error: ") and summary["updates"] == 0, summary
    assert "CIFAR-10" in out or "cifar" in out.lower()
