"""The run report: PNGs and report.md from a small generated run, and honest notes for missing data."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from esper.nissa import TelemetryConfig, configure_hub, reset_hub
from esper.nissa.report import build_report

PNG = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("isolated_hub")


def make_run(run_dir: str, seed: int = 0) -> None:
    """Three episodes of 10 epochs, a seed lifecycle per episode, decisions under 3 policy versions, 3 updates."""
    rng = np.random.default_rng(seed)
    hub = configure_hub(run_dir, TelemetryConfig(console=False), "runner-0")
    lifecycle = [(1, "DORMANT", "GERMINATED"), (2, "GERMINATED", "TRAINING"), (4, "TRAINING", "BLENDING"),
                 (6, "BLENDING", "SHADOWING"), (7, "SHADOWING", "PROBATIONARY"), (9, "PROBATIONARY", "FOSSILIZED")]
    for ep in range(3):
        eid = f"ep{ep}"
        for epoch in range(10):
            hub.emit("step", episode_id=eid, attempt=0, env_index=0, epoch=epoch,
                     val_acc=float(0.1 + 0.08 * epoch + rng.normal(0, 0.01)), reward=0.01)
            kind = "GERMINATE(slot=0, blueprint=conv_enhance)" if epoch == 1 else rng.choice(["WAIT", "ADVANCE(slot=0)"])
            hub.emit("decision", episode_id=eid, attempt=0, epoch=epoch, policy="ppo", policy_version=ep,
                     action=0, action_name=str(kind), confidence=0.5)
        for epoch, a, b in lifecycle:
            hub.emit("seed", episode_id=eid, attempt=0, epoch=epoch, slot=ep % 2, blueprint="conv_enhance",
                     from_stage=a, to_stage=b)
        hub.emit("episode", episode_id=eid, attempt=0, episode_return=1.0 + ep, final_val_acc=0.8, final_test_acc=0.78,
                 seeds_germinated=1, seeds_fossilized=1, seeds_culled=0)
        hub.emit("learner", policy_version=ep + 1, transitions=30, policy_loss=0.1 / (ep + 1), value_loss=0.5,
                 entropy=1.5 - 0.1 * ep, approx_kl=0.01, clip_fraction=0.1, explained_variance=0.2 * ep)
    reset_hub()


def test_report_writes_pngs_and_markdown(tmp_path):
    run_dir, out = str(tmp_path / "run"), str(tmp_path / "out")
    make_run(run_dir)
    md = build_report(run_dir, out)
    assert md == os.path.join(out, "report.md")
    for name in ("val_acc.png", "seed_timeline.png", "actions.png", "learner.png"):
        with open(os.path.join(out, name), "rb") as f:
            assert f.read(8) == PNG, name
    text = open(md).read()
    for image in ("val_acc.png", "seed_timeline.png", "actions.png", "learner.png"):
        assert f"({image})" in text
    assert "3 episodes" in text and "fossilized 3" in text
    assert "GERMINATE 10.0%" in text  # 3 of 30 decisions
    assert "3 updates, last policy version 3" in text
    assert "section skipped" not in text


def test_missing_event_types_skip_their_sections(tmp_path):
    run_dir = str(tmp_path / "run")
    hub = configure_hub(run_dir, TelemetryConfig(profile="minimal", console=False), "runner-0")
    for epoch in range(5):
        hub.emit("step", episode_id="e", attempt=0, epoch=epoch, val_acc=0.1 * epoch)
    reset_hub()
    md = build_report(run_dir)  # default: <run_dir>/report
    text = open(md).read()
    assert os.path.exists(os.path.join(run_dir, "report", "val_acc.png"))
    for missing in ("episode", "seed", "decision", "learner"):
        assert f"_No `{missing}` events in this run" in text
    assert not os.path.exists(os.path.join(run_dir, "report", "actions.png"))


def test_report_command_line(tmp_path):
    run_dir, out = str(tmp_path / "run"), str(tmp_path / "out")
    make_run(run_dir, seed=1)
    proc = subprocess.run([sys.executable, "-m", "esper.nissa.report", run_dir, "--out", out],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == os.path.join(out, "report.md")
    assert sorted(os.listdir(out)) == ["actions.png", "learner.png", "report.md", "seed_timeline.png", "val_acc.png"]


def test_report_on_a_run_without_telemetry_fails_clearly(tmp_path, capsys):
    from esper.nissa.report import main

    assert main([str(tmp_path / "nothing-here")]) == 1
    assert "no telemetry under" in capsys.readouterr().err
    assert not (tmp_path / "nothing-here").exists()
