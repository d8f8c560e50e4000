"""`esper tune` (esper.runtime.tune): parameter specs and config checks before Ray starts, an objective
that reads validation accuracy and never test accuracy, and two tiny trials end to end on Ray Tune."""
from __future__ import annotations

import csv
import glob
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import esper.runtime.cluster as cluster
from esper.cli import main as cli_main
from esper.config import config_to_dict, load_config
from esper.leyline import EpisodeSummary
from esper.runtime import tune as esper_tune
from esper.runtime.tune import HELD_OUT_EVAL_SEEDS, METRIC, TuneError, parse_param, run_trial, validation_objective
from tiny import overrides

ROOT = Path(__file__).resolve().parents[1]
TINY = overrides("kasmina.lifecycle.blend_steps=1", "simic.env.max_epochs=6", "runtime.envs_per_runner=1",
                 "runtime.steps_per_sample=6", "tamiyo.network.hidden=[32,32]", "nissa.console=false")


def sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


# ------------------------------------------------------------------------------------------ specs
def test_every_spec_form_parses():
    assert parse_param("simic.ppo.lr=loguniform:1e-4:3e-3").values == (1e-4, 3e-3)     # YAML alone reads 1e-4 as str
    assert parse_param("simic.ppo.clip=uniform:0.1:0.3").kind == "uniform"
    p = parse_param("simic.ppo.epochs=randint:2:9")
    assert (p.kind, p.values, p.probes()) == ("randint", (2, 9), [2, 8])                # HIGH excluded, as in Tune
    assert parse_param("simic.ppo.epochs=choice:2,4,8").values == (2, 4, 8)
    assert parse_param("tamiyo.network.hidden=grid:[32,32],[64]").values == ([32, 32], [64])


@pytest.mark.parametrize("spec, needle", [
    ("simic.ppo.lr=normal:0:1", "unknown distribution"),
    ("simic.ppo.lr=loguniform:0:1", "0 < LOW"),
    ("simic.ppo.lr=uniform:3:1", "LOW < HIGH"),
    ("simic.ppo.lr=uniform:1", "two bounds"),
    ("simic.ppo.epochs=randint:1.5:4", "integers"),
    ("simic.ppo.epochs=choice:", "one or more"),
    ("simic.ppo.lr", "section.field=SPEC"),
])
def test_a_bad_spec_names_the_valid_forms(spec, needle):
    with pytest.raises(TuneError, match=needle) as exc:
        parse_param(spec)
    if needle in ("unknown distribution", "two bounds", "section.field=SPEC"):
        assert "loguniform:LOW:HIGH" in str(exc.value) and "grid:A,B,..." in str(exc.value)


@pytest.fixture
def no_ray(monkeypatch):
    """Fail the test if `esper tune` tries to start or join Ray."""
    import ray

    def refuse(*_a, **_k):
        raise AssertionError("Ray was started before the arguments were checked")

    monkeypatch.setattr(cluster, "connect", refuse)
    monkeypatch.setattr(ray, "init", refuse)
    yield
    assert not ray.is_initialized()


@pytest.mark.parametrize("param, needles", [
    ("simic.ppo.lrr=grid:0.001,0.003", ["simic.ppo.lrr", "unknown field", "'lr'"]),       # the config's own error
    ("simic.ppo.epochs=choice:2,0", ["simic.ppo.epochs=0", "simic.ppo.epochs"]),           # every choice is checked
    ("simic.ppo.lr=grid:0.001,x", ["simic.ppo.lr"]),
    ("simic.ppo.lr=beta:1:2", ["unknown distribution", "loguniform:LOW:HIGH", "choice:A,B,..."]),
])
def test_bad_params_are_refused_before_ray_starts(param, needles, no_ray, capsys):
    t0 = time.perf_counter()
    rc = cli_main(["tune", *sets(TINY), "--param", "simic.ppo.gamma=uniform:0.9:0.99", "--param", param,
                   "--updates", "1", "--out", "/nonexistent/never-written"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: "), err
    for n in needles:
        assert n in err, (n, err)
    assert time.perf_counter() - t0 < 10


def test_bad_command_lines_are_refused_before_ray_starts(no_ray, capsys):
    base = ["tune", *sets(TINY), "--param", "simic.ppo.lr=grid:0.001,0.003"]
    for extra, needle in [(["--train-seeds", "0", str(HELD_OUT_EVAL_SEEDS[0])], "held-out"),
                          (["--train-seeds", "1", "1"], "distinct"),
                          (["--updates", "0"], "--updates"),
                          (["--set", "runtime.policy=heuristic"], "trains PPO"),
                          (["--param", "simic.ppo.lr=uniform:0.1:0.2"], "more than once"),
                          (["--set", "simic.env.max_epochs=3"], "max_epochs")]:
        assert cli_main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert needle in err, (extra, err)


def test_held_out_seeds_are_the_evaluation_protocols():
    from esper.evaluation import EVAL_SEEDS, load_evaluation_config

    assert HELD_OUT_EVAL_SEEDS == tuple(EVAL_SEEDS)
    for task in ("synthetic", "fashion_mnist"):
        assert set(load_evaluation_config(ROOT / "configs" / "evaluate" / f"{task}.yaml").seeds.eval) <= set(EVAL_SEEDS)


# ------------------------------------------------------------------------------------------ the objective
def summary(seed: int, val: float, test: float) -> EpisodeSummary:
    return EpisodeSummary(episode_id=f"e{seed}", attempt=0, env_seed=seed, epochs=6, episode_return=1.0,
                          final_val_acc=val, final_test_acc=test, best_val_acc=val, seeds_germinated=0,
                          seeds_fossilized=0, seeds_culled=0, params_host=10, params_added=0, rollbacks=0)


def test_the_objective_is_mean_validation_accuracy():
    eps = [summary(0, 0.25, 0.9), summary(1, 0.75, 0.1)]
    assert validation_objective(eps) == pytest.approx(0.5)                 # the test mean is also 0.5: swap
    assert validation_objective([summary(0, 0.2, 0.9), summary(1, 0.4, 0.8)]) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        validation_objective([])


@pytest.fixture
def test_reads(monkeypatch):
    """Record every read of EpisodeSummary.final_test_acc made by code in esper/runtime/tune.py."""
    slot = EpisodeSummary.__dict__["final_test_acc"]            # the slot's member descriptor
    tune_file = os.path.realpath(esper_tune.__file__)
    reads: list[int] = []

    class Guard:
        def __get__(self, obj, owner=None):
            if obj is None:
                return self
            frame = sys._getframe(1)
            if os.path.realpath(frame.f_code.co_filename) == tune_file:
                reads.append(frame.f_lineno)
            return slot.__get__(obj, owner)

        def __set__(self, obj, value):
            slot.__set__(obj, value)

    monkeypatch.setattr(EpisodeSummary, "final_test_acc", Guard())
    return reads


def test_the_guard_sees_a_read_from_the_tune_module(test_reads):
    e = summary(0, 0.5, 0.25)
    assert e.final_test_acc == 0.25 and test_reads == []                   # reads from here are not counted
    assert eval(compile("e.final_test_acc", esper_tune.__file__, "eval")) == 0.25
    assert len(test_reads) == 1                                            # one from tune.py would be


def test_a_trial_reports_validation_accuracy_and_never_reads_test(test_reads):
    base = config_to_dict(load_config(None, TINY))
    reports: list[dict] = []
    final = run_trial({"simic.ppo.lr": 0.002}, base=base, updates=2, train_seeds=[0, 3], report=reports.append)
    assert test_reads == [], f"esper/runtime/tune.py read final_test_acc at lines {test_reads}"
    assert len(reports) == 3 and reports[-1] == final
    for r in reports[:2]:                                    # one per update: training signals and the metric
        assert not r["evaluated"]
        for k in ("episode_return", "explained_variance", "entropy", METRIC):
            assert isinstance(r[k], float)
        assert r["learning_rate"] == pytest.approx(0.002, rel=0.05)       # the sampled lr (annealed)
    assert [r["update"] for r in reports] == [1, 2, 2]
    assert final["evaluated"] and 0.0 <= final[METRIC] <= 1.0
    assert final[METRIC] == pytest.approx((final["val_acc_seed0"] + final["val_acc_seed3"]) / 2)
    assert not [k for r in reports for k in r if "test" in k.lower()]


def test_the_greedy_evaluation_uses_the_episodes_validation_accuracy(monkeypatch):
    """The final val_acc is the objective of the greedy episodes, whatever their test accuracy says."""
    base = config_to_dict(load_config(None, TINY))
    fake = {0: summary(0, 0.125, 0.999), 3: summary(3, 0.375, 0.001)}
    monkeypatch.setattr(esper_tune, "greedy_episodes", lambda trainer, seeds: {s: fake[s] for s in seeds})
    final = run_trial({}, base=base, updates=1, train_seeds=[0, 3], report=lambda m: None)
    assert final[METRIC] == pytest.approx(0.25) and final["val_acc_seed3"] == 0.375


# ------------------------------------------------------------------------------------------ end to end
@pytest.mark.e2e
def test_esper_tune_runs_two_tiny_trials(tmp_path):
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "esper.cli", "tune", *sets(TINY), "--param", "simic.ppo.lr=grid:0.001,0.003",
           "--updates", "1", "--train-seeds", "0", "1", "--out", str(tmp_path / "sweeps"), "--name", "two",
           "--address", "local", "--num-cpus", "2"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)       # whatever the run left in its own session
        except ProcessLookupError:
            pass
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, out[-4000:]
    assert "started a new local Ray" in out and "[tune] best trial" in out
    exp = tmp_path / "sweeps" / "two"
    trials = sorted(p for p in exp.iterdir() if p.is_dir())
    assert len(trials) == 2, trials
    lrs = set()
    for t in trials:
        rows = [json.loads(line) for line in (t / "result.json").read_text().splitlines() if line.strip()]
        assert len(rows) == 2                                                 # one update, then the evaluation
        assert [r["evaluated"] for r in rows] == [False, True]
        assert all(METRIC in r and "explained_variance" in r and "entropy" in r for r in rows)
        assert math.isfinite(rows[-1][METRIC])
        lrs.add(rows[-1]["config"]["simic.ppo.lr"])
        with open(t / "progress.csv") as f:
            progress = list(csv.DictReader(f))
        assert len(progress) == 2 and METRIC in progress[0]
        assert glob.glob(str(t / "events.out.tfevents*")), f"no TensorBoard event file in {t}"
    assert lrs == {0.001, 0.003}
    best = json.loads((exp / "best.json").read_text())
    assert best["metric"] == METRIC and best["mode"] == "max" and len(best["trials"]) == 2
    assert best["best"][METRIC] == max(t[METRIC] for t in best["trials"])
    assert best["best"]["values"]["simic.ppo.lr"] in (0.001, 0.003)
    assert f"--set simic.ppo.lr={best['best']['values']['simic.ppo.lr']}" in best["best"]["launch"]
    print(f"esper tune, two trials: {wall:.1f}s")
    assert wall < 60, f"two tiny trials took {wall:.0f}s"
