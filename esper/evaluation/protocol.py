"""The evaluation protocol: an honest measuring stick for learned growth, without Ray.

    results = evaluate("configs/evaluate/synthetic.yaml", InProcessExecutor(), "results/", quick=True)

On one task (an `EvaluationConfig`), in order:

1. Static frontier: the static host at every `frontier.param_ratios` width on the evaluation seeds;
   the schedule family (`schedules`) on the training seeds; the heuristic (frozen defaults) on the
   evaluation seeds — one batch of jobs, so a parallel executor runs them all at once.
2. The best schedule by mean final validation accuracy on the training seeds (`select_best`).
3. PPO: one training run per `seeds.ppo` seed (`executor.train_ppo`, budget `ppo`).
4. The best schedule and each PPO policy (greedy) on the evaluation seeds — a second batch.
5. Numbers (`comparisons`): per controller mean ± std of test and validation accuracy, FLOPs,
   parameters, fossils and the margin over the static frontier (per seed, `frontier`); paired
   comparisons of each PPO seed and of the PPO mean against the heuristic, the best schedule and the
   reference static host; written by `results.write_task_results` to RESULTS_DIR/<folder>/.

With `transfer`, the PPO policies another task's evaluation trained also run on the evaluation seeds in
step 4, zero-shot (`transfer`), and their mean is compared like PPO's and against this task's PPO.

The test split is read only to score: no decision, reward or selection sees it. Every finished job
is kept in the result store (`store`), so a second call does only what is missing — nothing, if
nothing changed — and a changed config, source file or checkpoint gets new keys.
"""
from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from esper.evaluation.comparisons import compare, mean_rows, rows_by_seed, summarize
from esper.evaluation.config import EvaluationConfig, load_evaluation_config
from esper.evaluation.controllers import Checkpoint, Heuristic, Static
from esper.evaluation.executor import LEARNING_CURVE_FILE, Executor, Job
from esper.evaluation.frontier import Frontier, frontier_widths, margins, seed_frontiers
from esper.evaluation.results import read_learning_curve, write_task_results
from esper.evaluation.schedules import schedule_grid, select_best
from esper.evaluation.store import Progress, ResultStore, StoredExecutor, code_version
from esper.evaluation.transfer import transfer_controllers


def resolve_config(task_config: EvaluationConfig | str | Path, quick: bool = False) -> EvaluationConfig:
    """A path is loaded (with its quick section if `quick`); a config is taken as is, or its quick variant."""
    if isinstance(task_config, (str, Path)):
        return load_evaluation_config(task_config, quick=quick)
    if quick and not task_config.is_quick:
        return task_config.quick_variant()
    return task_config


def evaluate(task_config: EvaluationConfig | str | Path, executor: Executor, results_dir: str | Path,
             quick: bool = False, progress: Progress | None = None) -> dict[str, Any]:
    """Run (or resume) the protocol on one task; write RESULTS_DIR/<folder>/results.{json,md} and plots;
    return what results.json holds. `progress(done, total, what)` is called after every job."""
    started = time.perf_counter()
    cfg = resolve_config(task_config, quick)
    run_cfg, run = cfg.run_config(), cfg.run_dict()
    task_dir = Path(results_dir).expanduser().resolve() / cfg.folder
    ex = StoredExecutor(executor, ResultStore(task_dir), progress)
    train, evals, ppo_seeds = list(cfg.seeds.train), list(cfg.seeds.eval), list(cfg.seeds.ppo)

    widths = frontier_widths(run_cfg, cfg.frontier.param_ratios)
    statics = [Static(w.multiplier) for w in widths]
    grid = schedule_grid(run_cfg.kasmina, run_cfg.simic.env.max_epochs, cfg.schedules.germinate_at,
                         cfg.schedules.blueprints, cfg.schedules.slots)
    heuristic = Heuristic()
    zero_shot = {src: transfer_controllers(task_dir.parent / cfg.folder_of(src), run_cfg.kasmina, src)
                 for src in cfg.transfer}           # before any work: a missing source is an error now
    n_zero_shot = sum(len(v) for v in zero_shot.values())
    E = len(evals)
    ex.expect(len(statics) * E + len(grid) * len(train) + E + E + len(ppo_seeds) * (1 + E) + n_zero_shot * E)

    # 1. frontier, schedule family (training seeds), heuristic
    first = ([Job(run, c, s) for c in statics for s in evals] + [Job(run, c, s) for c in grid for s in train]
             + [Job(run, heuristic, s) for s in evals])
    records = ex.run_episodes(first)
    n_static = len(statics) * E
    static_recs, family_recs = records[:n_static], records[n_static:n_static + len(grid) * len(train)]
    heuristic_recs = records[n_static + len(grid) * len(train):]

    # 2. selection on training seeds, by validation accuracy only
    selection = select_best(family_recs, train)
    best = next(c for c in grid if c.name == selection.name)

    # 3. PPO training runs
    ppo_runs, ppo_ctrls = [], []
    for s in ppo_seeds:
        entry = ex.train_ppo(cfg.ppo_run_dict(s), s)
        ppo_ctrls.append(Checkpoint.load(entry["checkpoint"], run_cfg.kasmina, name=f"ppo-s{s}"))
        ppo_runs.append({"seed": s, "controller": f"ppo-s{s}", "checkpoint": os.path.relpath(entry["checkpoint"], task_dir),
                         "sha256": entry["sha256"], "learning_curve": read_learning_curve(
                             os.path.join(entry["run_dir"], LEARNING_CURVE_FILE))})

    # 4. best schedule, PPO (greedy) and other tasks' PPO (zero-shot) on the evaluation seeds
    transferred = [c for ctrls in zero_shot.values() for c in ctrls]
    second = [Job(run, c, s) for c in [best] + ppo_ctrls + transferred for s in evals]
    second_recs = ex.run_episodes(second)
    n_ppo = len(ppo_ctrls) * E
    best_recs, ppo_recs, zero_shot_recs = second_recs[:E], second_recs[E:E + n_ppo], second_recs[E + n_ppo:]

    # 5. numbers
    frontiers = seed_frontiers(static_recs)
    all_eval = static_recs + heuristic_recs + ppo_recs + zero_shot_recs
    best_name = f"best schedule ({best.name})"

    def rows(recs, name):
        return rows_by_seed(recs, name, evals, margins([r for r in recs if r.controller == name], frontiers))

    table, by_name = [], {}
    for w, c in zip(widths, statics):
        by_name[c.name] = rows(static_recs, c.name)
        table.append(summarize(c.name, "static (frontier)", by_name[c.name], width=w.to_dict()))
    by_name["heuristic"] = rows(heuristic_recs, heuristic.name)
    table.append(summarize("heuristic", "heuristic (frozen defaults)", by_name["heuristic"]))
    by_name[best_name] = rows(best_recs, best.name)
    table.append(summarize(best_name, "best schedule", by_name[best_name], schedule=best.to_dict(),
                           train_val_acc=selection.score))
    for c in ppo_ctrls:
        by_name[c.name] = rows(ppo_recs, c.name)
        table.append(summarize(c.name, "PPO (greedy)", by_name[c.name], checkpoint=c.to_dict()))
    by_name["ppo-mean"] = mean_rows([by_name[c.name] for c in ppo_ctrls])
    table.append(summarize("ppo-mean", "PPO, mean over training seeds", by_name["ppo-mean"]))
    zero_shot_means = []
    for src, ctrls in zero_shot.items():
        for c in ctrls:
            by_name[c.name] = rows(zero_shot_recs, c.name)
            table.append(summarize(c.name, f"PPO zero-shot from {src}", by_name[c.name], checkpoint=c.to_dict()))
        mean_name = f"zero-shot-{src}-mean"
        by_name[mean_name] = mean_rows([by_name[c.name] for c in ctrls])
        table.append(summarize(mean_name, f"PPO zero-shot from {src}, mean over training seeds", by_name[mean_name]))
        zero_shot_means.append(mean_name)

    comparisons = []
    groups = {**{c.name: "per PPO seed" for c in ppo_ctrls}, "ppo-mean": "pooled",
              **{m: "zero-shot" for m in zero_shot_means}}
    for a, group in groups.items():
        for b in ("heuristic", best_name, "static") + (("ppo-mean",) if group == "zero-shot" else ()):
            comparisons.append(compare(a, by_name[a], b, by_name[b], group=group))
    mean_frontier = Frontier.from_points([(t["training_flops_mean"], t["final_test_acc_mean"]) for t in table
                                          if t["role"] == "static (frontier)"])
    results = {
        "task": cfg.task, "folder": cfg.folder, "quick": cfg.is_quick,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
                   f"cuda {'yes' if torch.cuda.is_available() else 'no'}",
        "executor": ex.name, "minutes": (time.perf_counter() - started) / 60, "store": ex.counts(),
        "code": code_version(), "config": cfg.model_dump(mode="json"), "run_config": run,
        "seeds": {"train": train, "eval": evals, "ppo": ppo_seeds},
        "episode": {"max_epochs": run_cfg.simic.env.max_epochs, "data": run_cfg.tolaria.data.model_dump(mode="json")},
        "frontier": {"widths": [{**w.to_dict(), "controller": c.name} for w, c in zip(widths, statics)],
                     "mean": mean_frontier.to_dict(),
                     "per_seed": {str(s): f.to_dict() for s, f in frontiers.items()},
                     "interpolation": "linear in log10(training FLOPs); NaN outside the measured range",
                     "margins": "per evaluation seed, against that seed's static hosts"},
        "selection": selection.to_dict(),
        "ppo": {"budget": cfg.ppo.model_dump(mode="json"), "runs": ppo_runs},
        "transfer": {src: [c.to_dict() for c in ctrls] for src, ctrls in zero_shot.items()},
        "controllers": table, "comparisons": comparisons,
        "records": {"evaluation": [r.to_dict() for r in all_eval + best_recs],
                    "selection": [r.to_dict() for r in family_recs]},
    }
    results["files"] = write_task_results(task_dir, results)
    return results
