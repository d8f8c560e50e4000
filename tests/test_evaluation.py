"""esper.evaluation: controllers, one episode, the static frontier, the schedule family's selection, the seeds,
the resumable result store, the task configs, and the whole protocol end to end (tiny, in process, no Ray)."""
from __future__ import annotations

import dataclasses
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest

from esper.simic.config import PPOConfig
from esper.config import config_to_dict, load_config
from esper.evaluation import (EVAL_SEEDS, TRAIN_SEEDS, Checkpoint, ControllerError, EpisodeRecord, EvaluationConfigError,
                              Frontier, Heuristic, InProcessExecutor, Job, ResultStore, Schedule, Static,
                              StoredExecutor, assemble_docs, context_for, evaluate, evaluation_config_from_tree, frontier_widths,
                              load_evaluation_config, parse_controller, run_episode, schedule_grid, select_best)
from esper.kasmina import schema_and_space
from esper.simic.environment import derive_seed
from esper.simic.learning.checkpoint import save_checkpoint
from esper.simic.learning.trainer import make_learner

from tiny import DATA, LIFECYCLE, MAX_EPOCHS

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "evaluate"
# The tests' tiny task (tests/tiny.py): a seed germinated at step 1 can fossilize by step 7 of 8.
TINY_RUN = {"tolaria": {"data": dict(DATA), "training": {"device": "cpu"}},
            "kasmina": {"lifecycle": dict(LIFECYCLE)},
            "simic": {"env": {"max_epochs": MAX_EPOCHS}, "ppo": {"device": "cpu"}}}
TINY_TASK = {"task": "tiny", "run": TINY_RUN, "frontier": {"param_ratios": [1.0, 2.5]},
             "schedules": {"germinate_at": [0, 1], "blueprints": ["conv_enhance"], "slots": ["block1"]},
             "seeds": {"train": [0, 1], "eval": [1000, 1001], "ppo": [100, 101]},
             "ppo": {"total_updates": 1, "envs": 1}}


def record(controller: str, seed: int, val: float, test: float, **kw) -> EpisodeRecord:
    base = dict(best_val_acc=val, training_flops=1, decision_flops=0, evaluation_flops=0, params_host=1,
                params_added=0, seeds_germinated=0, seeds_fossilized=0, seeds_culled=0)
    return EpisodeRecord(controller=controller, seed=seed, final_val_acc=val, final_test_acc=test, **{**base, **kw})


@pytest.fixture(scope="module")
def tiny_cfg():
    return load_config(None, (), base=TINY_RUN)


@pytest.fixture(scope="module")
def tiny_run(tiny_cfg):
    return config_to_dict(tiny_cfg)


# ------------------------------------------------------------------------------------------ frontier
def test_the_frontier_interpolates_linearly_in_log_flops():
    f = Frontier.from_points([(1e10, 0.7), (1e9, 0.5), (1e11, 0.8)])          # any order
    assert f.flops == (1e9, 1e10, 1e11)
    assert f.at(1e9) == pytest.approx(0.5) and f.at(1e10) == pytest.approx(0.7)
    assert f.at(10 ** 9.5) == pytest.approx(0.6)              # halfway in log10, not in FLOPs
    assert f.at(10 ** 10.25) == pytest.approx(0.725)
    assert f.at(5.5e9) != pytest.approx(0.6)                  # the linear midpoint is not the log midpoint
    assert math.isnan(f.at(9e8)) and math.isnan(f.at(1.01e11))   # outside the range: NaN, never clamped
    assert f.margin(10 ** 9.5, 0.65) == pytest.approx(0.05)
    assert math.isnan(f.margin(1e12, 0.9))
    np.testing.assert_allclose(f.at([1e9, 10 ** 10.5]), [0.5, 0.75])
    assert Frontier.from_points([(1e9, 0.4), (1e9, 0.6), (1e10, 0.7)]).acc == (0.5, 0.7)   # same FLOPs: averaged
    with pytest.raises(ValueError, match="2 distinct"):
        Frontier.from_points([(1e9, 0.5)])


def test_frontier_widths_span_the_parameter_ratios(tiny_cfg):
    ratios = [0.5, 0.75, 1.0, 1.5, 2.2, 3.0]
    widths = frontier_widths(tiny_cfg, ratios)
    assert [w.target_ratio for w in widths] == ratios
    ref = next(w for w in widths if w.target_ratio == 1.0)
    assert ref.multiplier == 1.0 and ref.widths == tuple(tiny_cfg.kasmina.host.widths)
    assert all(abs(w.ratio - w.target_ratio) / w.target_ratio < 0.05 for w in widths)
    assert [w.params for w in widths] == sorted(w.params for w in widths)
    with pytest.raises(ValueError, match="same host widths"):
        frontier_widths(tiny_cfg, [1.0, 1.001])


# ------------------------------------------------------------------------------------------ schedules
def test_schedule_selection_reads_validation_on_training_seeds_only():
    train = [0, 1]
    recs = [
        # on the training seeds: A has the best validation accuracy, B the best test accuracy
        record("A", 0, 0.80, 0.10), record("A", 1, 0.70, 0.10),
        record("B", 0, 0.60, 0.99), record("B", 1, 0.60, 0.99),
        record("C", 0, 0.50, 0.50), record("C", 1, 0.50, 0.50),
        # on an evaluation seed C looks best on everything: it must not count
        record("C", 1000, 1.00, 1.00), record("A", 1000, 0.0, 0.0),
    ]
    best = select_best(recs, train)
    assert best.name == "A" and best.score == pytest.approx(0.75) and best.seeds == (0, 1)
    assert set(best.scores) == {"A", "B", "C"}
    # test accuracy is never read: scrambling it changes nothing
    scrambled = [dataclasses.replace(r, final_test_acc=float(np.random.default_rng(i).random()))
                 for i, r in enumerate(recs)]
    assert select_best(scrambled, train) == best
    # ties go to the name that sorts first, whatever the order of the records
    tie = [record("Z", 0, 0.5, 0.9), record("Y", 0, 0.5, 0.1)]
    assert select_best(tie, [0]).name == select_best(tie[::-1], [0]).name == "Y"
    with pytest.raises(ValueError, match="missing on training seeds"):
        select_best(recs[:-3], train)


def test_the_schedule_grid_is_blueprint_by_slot_by_step(tiny_cfg):
    grid = schedule_grid(tiny_cfg.kasmina, MAX_EPOCHS, [0, 1])
    kas = tiny_cfg.kasmina
    assert len(grid) == len(kas.blueprints) * len(kas.slots) * 2
    assert len({c.name for c in grid}) == len(grid)
    with pytest.raises(ValueError, match="cannot reach FOSSILIZED"):
        schedule_grid(kas, MAX_EPOCHS, [2])            # 2 + 7 > 8


# ------------------------------------------------------------------------------------------ seeds
def test_evaluation_seeds_are_fixed_and_disjoint_from_every_training_seed():
    assert len(EVAL_SEEDS) == 10 and not set(EVAL_SEEDS) & set(TRAIN_SEEDS)
    for path in CONFIGS.glob("*.yaml"):
        for quick in (False, True):
            cfg = load_evaluation_config(path, quick=quick)
            ev = set(cfg.seeds.eval)
            assert not ev & set(cfg.seeds.train) and not ev & set(cfg.seeds.ppo), path
            if not quick:
                assert cfg.seeds.eval == EVAL_SEEDS
            # PPO training runs draw their env seeds from their own global seed (InProcessTrainer, runtime)
            ppo_env_seeds = {derive_seed(derive_seed(s, 0), k, n) for s in cfg.seeds.ppo for k in range(8)
                             for n in range(200)}
            assert not ev & ppo_env_seeds
    with pytest.raises(EvaluationConfigError, match="seeds.train and seeds.eval must be disjoint"):
        evaluation_config_from_tree({**TINY_TASK, "seeds": {"train": [0, 1000], "eval": [1000, 1001]}})
    with pytest.raises(EvaluationConfigError, match="seeds.ppo and seeds.eval must be disjoint"):
        evaluation_config_from_tree({**TINY_TASK, "seeds": {"ppo": [1001], "eval": [1000, 1001]}})


# ------------------------------------------------------------------------------------------ configs
def test_the_shipped_task_configs_load_with_five_widths_or_more_and_their_quick_variants():
    syn = load_evaluation_config(CONFIGS / "synthetic.yaml")
    fm = load_evaluation_config(CONFIGS / "fashion_mnist.yaml")
    for cfg in (syn, fm, syn.quick_variant(), fm.quick_variant()):
        ratios = cfg.frontier.param_ratios
        assert len(ratios) >= 5 and min(ratios) <= 0.55 and max(ratios) >= 3.0 and 1.0 in ratios
        run = cfg.run_config()
        need = run.kasmina.lifecycle.shortest_path_to_fossil()
        assert max(cfg.schedules.germinate_at) + need <= run.simic.env.max_epochs
    assert syn.run_config().tolaria.data.dataset == "synthetic" and syn.folder == "synthetic"
    quick = load_evaluation_config(CONFIGS / "synthetic.yaml", quick=True)
    assert quick.is_quick and quick.folder == "synthetic-quick"
    assert quick.run_config().tolaria.data.train_size == 512 and quick.run_config().tolaria.data.image_size == 16
    data = fm.run_config().tolaria.data
    assert data.dataset == "fashion_mnist" and data.root == "/usr/share/datasets/fashion-mnist"
    fq = load_evaluation_config(CONFIGS / "fashion_mnist.yaml", quick=True, overrides=["run.tolaria.data.root=/x/fm"])
    assert fq.run_config().tolaria.data.root == "/x/fm" and 0 < fq.run_config().tolaria.data.train_size <= 2048
    ppo = fq.ppo_run_dict(100)
    assert ppo["seed"] == 100 and ppo["runtime"]["total_updates"] == fq.ppo.total_updates
    assert ppo["runtime"]["steps_per_sample"] == fq.run_config().simic.env.max_epochs
    assert ppo["simic"]["ppo"]["total_updates"] == PPOConfig().total_updates     # the schedules keep their horizon


@pytest.mark.parametrize("tree, expected", [
    ({**TINY_TASK, "widths": [1]}, "widths: unknown field"),
    ({**TINY_TASK, "quick": {"seeds": {"evall": [1]}}}, "seeds.evall: unknown field"),
    ({**TINY_TASK, "run": {**TINY_RUN, "simic": {"env": {"max_epochs": 3}}}}, "run:"),
    ({**TINY_TASK, "schedules": {"germinate_at": [5]}}, "cannot reach FOSSILIZED"),
    ({**TINY_TASK, "schedules": {"blueprints": ["nope"]}}, "schedules.blueprints"),
    ({**TINY_TASK, "frontier": {"param_ratios": [0.5, 2.0]}}, "must include 1.0"),
    ({**TINY_TASK, "task": "a/b"}, "task"),
])
def test_bad_evaluation_configs_are_refused_naming_the_field(tree, expected):
    with pytest.raises(EvaluationConfigError, match="invalid evaluation config") as info:
        evaluation_config_from_tree(tree)
    assert expected in str(info.value)


# ------------------------------------------------------------------------------------------ controllers
def test_controllers_are_plain_data_with_stable_names(tiny_cfg):
    sched = parse_controller("schedule:1:conv_enhance:1", tiny_cfg)
    assert sched == Schedule("block1", 1, "conv_enhance", 1) and sched.name == "schedule:block1:conv_enhance:1"
    assert parse_controller(sched.spec, tiny_cfg) == sched
    for c in (Static(), Static(1.5), Heuristic(), sched):
        assert pickle.loads(pickle.dumps(c)) == c and json.dumps(c.to_dict())
        assert parse_controller(c.spec, tiny_cfg).name == c.name
    assert Static().name == "static" and Static(1.5).name == "static:1.5" and Heuristic().name == "heuristic"
    assert Heuristic(settings=(("plateau_epochs", 2),)).name.startswith("heuristic-")
    run = config_to_dict(tiny_cfg)
    assert Static(1.5).configure(run)["kasmina"]["host"]["widths"] == [12, 24, 48]
    assert Static().configure(run) is run and run["kasmina"]["host"]["widths"] == [8, 16, 32]
    assert Static().param_count(run) == 6418 and Static(1.5).param_count(run) > 2 * 6418
    with pytest.raises(ControllerError, match="static:W"):
        parse_controller("static:wide", tiny_cfg)


# ------------------------------------------------------------------------------------------ one episode
def test_run_episode_is_a_pure_function_of_config_controller_and_seed(tiny_run):
    sched = Schedule("block1", 1, "conv_enhance", 1)
    a, b = run_episode(tiny_run, sched, 1000), run_episode(tiny_run, sched, 1000)
    assert a == b                                       # everything but wall_seconds (not compared)
    assert dataclasses.replace(a, wall_seconds=0.0).to_dict() == dataclasses.replace(b, wall_seconds=0.0).to_dict()
    assert a.controller == sched.name and a.seed == 1000 and a.epochs == MAX_EPOCHS
    assert a.seeds_germinated == 1 and a.params_added > 0 and a.training_flops > 0 and a.decision_flops > 0
    assert 0.0 <= a.final_test_acc <= 1.0 and a.wall_seconds > 0
    c = run_episode(tiny_run, sched, 1001)
    assert c != a
    static, wide = run_episode(tiny_run, Static(), 1000), run_episode(tiny_run, Static(2.0), 1000)
    assert static.params_added == 0 and static.decision_flops == 0
    assert wide.params_host > 3 * static.params_host and wide.training_flops > 3 * static.training_flops
    assert EpisodeRecord.from_dict(json.loads(json.dumps(a.to_dict()))) == a


def test_a_checkpoint_from_a_fresh_learner_acts_greedily(tiny_cfg, tiny_run, tmp_path):
    schema, space = schema_and_space(tiny_cfg.kasmina)
    learner = make_learner(schema, space, tiny_cfg.simic, tiny_cfg.tamiyo, seed=0)
    path = save_checkpoint(str(tmp_path), learner.state_dict(), schema=schema, space=space, config=tiny_run)
    ctrl = Checkpoint.load(str(tmp_path), tiny_cfg.kasmina, name="ppo-fresh")     # a run dir: its latest file
    assert ctrl.path == path and ctrl.name == "ppo-fresh" and len(ctrl.sha256) == 64
    assert pickle.loads(pickle.dumps(ctrl)) == ctrl and "spec" not in ctrl.identity()
    policy = ctrl.policy(context_for(tiny_cfg), 0)
    assert policy.greedy
    a, b = run_episode(tiny_run, ctrl, 1000), run_episode(tiny_run, ctrl, 1000)
    assert a == b and a.controller == "ppo-fresh" and a.epochs == MAX_EPOCHS
    other = load_config(None, ["kasmina.slots=[block0, block1]"], base=TINY_RUN)
    with pytest.raises(ControllerError, match="trained for 3 slot"):
        Checkpoint.load(path, other.kasmina)
    Path(path).write_bytes(Path(path).read_bytes() + b"\0")
    with pytest.raises(ControllerError, match="changed since"):
        run_episode(tiny_run, ctrl, 1000)


# ------------------------------------------------------------------------------------------ store
class Counting(InProcessExecutor):
    def __init__(self):
        super().__init__()
        self.jobs = self.trainings = 0

    def run_episodes(self, jobs, on_result=None):
        self.jobs += len(jobs)
        return super().run_episodes(jobs, on_result)

    def train_ppo(self, run_config, ppo_seed, run_dir):
        self.trainings += 1
        return super().train_ppo(run_config, ppo_seed, run_dir)


def test_the_store_runs_only_missing_jobs_and_keys_on_the_config(tiny_run, tmp_path):
    store, ex = ResultStore(tmp_path), Counting()
    jobs = [Job(tiny_run, Static(), 1000), Job(tiny_run, Heuristic(), 1000)]
    first = StoredExecutor(ex, store).run_episodes(jobs[:1])
    again = StoredExecutor(ex, store)
    both = again.run_episodes(jobs)
    assert ex.jobs == 2 and again.counts()["episodes_run"] == 1 and again.counts()["episodes_reused"] == 1
    assert both[0] == first[0] and [r.controller for r in both] == ["static", "heuristic"]
    changed = {**tiny_run, "tolaria": {**tiny_run["tolaria"],
                                       "training": {**tiny_run["tolaria"]["training"], "lr": 0.05}}}
    StoredExecutor(ex, store).run_episodes([Job(changed, Static(), 1000)])
    assert ex.jobs == 3 and len(list((tmp_path / "episodes").glob("*.json"))) == 3


class Shuffled:
    """An executor that breaks the protocol: results out of job order."""

    name = "shuffled"

    def run_episodes(self, jobs, on_result=None):
        return [record(c.name, s, 0.5, 0.5) for _, c, s in jobs][::-1]

    def train_ppo(self, run_config, ppo_seed, run_dir):
        raise AssertionError("not called")


def test_results_out_of_job_order_are_refused(tiny_run, tmp_path):
    jobs = [Job(tiny_run, Static(), 1000), Job(tiny_run, Static(), 1001)]
    with pytest.raises(RuntimeError, match="must be in job order"):
        StoredExecutor(Shuffled(), ResultStore(tmp_path)).run_episodes(jobs)
    assert not list(tmp_path.rglob("*.json"))               # nothing wrong was stored


# ------------------------------------------------------------------------------------------ end to end
def test_evaluate_end_to_end_writes_results_and_resumes(tmp_path, isolated_hub):
    seen = []
    cfg = evaluation_config_from_tree(TINY_TASK)
    ex = Counting()
    res = evaluate(cfg, ex, tmp_path, progress=lambda done, total, what: seen.append((done, total)))
    n_episodes = 2 * 2 + 2 * 2 + 2 + 2 + 2 * 2          # statics, family, heuristic, best, PPO on eval seeds
    assert ex.jobs == n_episodes and ex.trainings == 2
    assert seen[-1] == (n_episodes + 2, n_episodes + 2) and [d for d, _ in seen] == list(range(1, n_episodes + 3))

    task = tmp_path / "tiny"
    loaded = json.loads((task / "results.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert loaded["task"] == "tiny" and loaded["seeds"]["eval"] == [1000, 1001] and not loaded["quick"]
    names = [c["controller"] for c in loaded["controllers"]]
    assert names[:2] == ["static", "static:1.6"] and "heuristic" in names and "ppo-mean" in names
    best = loaded["selection"]["best"]
    assert f"best schedule ({best})" in names and loaded["selection"]["seeds"] == [0, 1]
    # the best schedule is the one with the highest mean validation accuracy on the training seeds
    fam = [r for r in loaded["records"]["selection"]]
    assert {r["seed"] for r in fam} == {0, 1}
    means = {n: np.mean([r["final_val_acc"] for r in fam if r["controller"] == n]) for n in {r["controller"] for r in fam}}
    assert means[best] == max(means.values())
    assert {r["seed"] for r in loaded["records"]["evaluation"]} == {1000, 1001}
    pairs = {(c["a"], c["b"]) for c in loaded["comparisons"]}
    for a in ("ppo-s100", "ppo-s101", "ppo-mean"):
        assert (a, "heuristic") in pairs and (a, f"best schedule ({best})") in pairs
    assert all(c["n"] == 2 and c["wins"] + c["ties"] + c["losses"] == 2 for c in loaded["comparisons"])
    static = next(c for c in loaded["controllers"] if c["controller"] == "static")
    assert static["margin_mean"] == pytest.approx(0.0)       # the frontier passes through its own points
    for run in loaded["ppo"]["runs"]:
        assert (task / run["checkpoint"]).is_file() and len(run["learning_curve"]) == 1
        assert {"update", "mean_return", "explained_variance", "entropy"} <= set(run["learning_curve"][0])
    md = (task / "results.md").read_text()
    for text in ("## Controllers", "## Best schedule", "## Paired comparisons", "not significant",
                 "![test accuracy vs training FLOPs](accuracy_vs_flops.png)", "ppo_learning.png", best):
        assert text in md
    for png in ("accuracy_vs_flops.png", "ppo_learning.png"):
        assert (task / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a second run executes nothing; the results are the same
    again = evaluate(cfg, ex, tmp_path)
    assert ex.jobs == n_episodes and ex.trainings == 2
    assert again["store"] == {"episodes_run": 0, "episodes_reused": n_episodes, "ppo_trained": 0, "ppo_reused": 2}
    assert json.dumps(again["controllers"], sort_keys=True) == json.dumps(res["controllers"], sort_keys=True)

    # one changed config value: everything runs again, beside (never mixed with) the old results
    changed = evaluation_config_from_tree({**TINY_TASK, "run": {**TINY_RUN, "tolaria": {
        **TINY_RUN["tolaria"], "training": {"device": "cpu", "lr": 0.05}}}})
    third = evaluate(changed, ex, tmp_path)
    assert third["store"]["episodes_run"] == n_episodes and third["store"]["ppo_trained"] == 2
    assert ex.jobs == 2 * n_episodes

    # the docs page links copies of the plots inside the docs tree
    docs = tmp_path / "docs"
    page = assemble_docs(tmp_path, docs / "results.md")
    text = page.read_text()
    assert "](results/tiny/accuracy_vs_flops.png)" in text and (docs / "results/tiny/accuracy_vs_flops.png").is_file()


def test_quick_mode_merges_the_quick_section_and_says_so(tmp_path):
    tree = {**TINY_TASK, "seeds": {**TINY_TASK["seeds"], "eval": [1000, 1001, 1002]},
            "quick": {"seeds": {"eval": [1000, 1001]}, "frontier": {"param_ratios": [1.0, 2.5]}}}
    full = evaluation_config_from_tree(tree)
    quick = full.quick_variant()
    assert quick.is_quick and quick.folder == "tiny-quick" and quick.seeds.eval == [1000, 1001]
    assert full.seeds.eval == [1000, 1001, 1002] and not full.is_quick
    assert evaluation_config_from_tree(tree, quick=True).seeds.eval == [1000, 1001]


def test_another_tasks_policies_run_zero_shot_as_their_own_rows(tmp_path, isolated_hub):
    source = {**TINY_TASK, "seeds": {**TINY_TASK["seeds"], "ppo": [100]}}
    target = evaluation_config_from_tree({**source, "task": "tiny-target", "transfer": ["tiny"]})
    with pytest.raises(ControllerError, match="'tiny' has no results .* run esper evaluate on that task first"):
        evaluate(target, Counting(), tmp_path)            # refused before any episode runs
    assert not (tmp_path / "tiny-target").exists()
    evaluate(evaluation_config_from_tree(source), InProcessExecutor(), tmp_path)
    res = evaluate(target, InProcessExecutor(), tmp_path)
    rows = {c["controller"]: c for c in res["controllers"]}
    assert rows["zero-shot-tiny-s100"]["role"] == "PPO zero-shot from tiny" and rows["zero-shot-tiny-s100"]["n"] == 2
    assert "zero-shot-tiny-mean" in rows
    src_ckpt = json.loads((tmp_path / "tiny" / "results.json").read_text())["ppo"]["runs"][0]["sha256"]
    assert res["transfer"]["tiny"][0]["sha256"] == src_ckpt                  # the very policy trained there
    pairs = {(c["a"], c["b"]) for c in res["comparisons"] if c["group"] == "zero-shot"}
    assert ("zero-shot-tiny-mean", "ppo-mean") in pairs and ("zero-shot-tiny-mean", "heuristic") in pairs
    assert "zero-shot-tiny-mean" in (tmp_path / "tiny-target" / "results.md").read_text()
    with pytest.raises(EvaluationConfigError, match="transfer"):
        evaluation_config_from_tree({**source, "transfer": ["tiny", "tiny"]})
