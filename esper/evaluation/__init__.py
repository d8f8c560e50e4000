"""The evaluation protocol without Ray: does learned growth beat the honest alternatives?

    from esper.evaluation import InProcessExecutor, evaluate
    results = evaluate("configs/evaluate/synthetic.yaml", InProcessExecutor(), "results/", quick=True)

One concept per module:

    controllers   static host at a width, heuristic, fixed schedule, trained checkpoint (plain data)
    episode       run_episode(run_config, controller, seed) -> EpisodeRecord: one pure episode
    frontier      the static frontier: accuracy vs training FLOPs, margins per seed
    schedules     the schedule family and its selection on training seeds by validation accuracy
    config        EvaluationConfig: the task, widths, grid, seeds, PPO budget, the quick variant
    executor      the Executor protocol and the serial InProcessExecutor
    store         the resumable result store (JSON per finished job, keyed by config + code + job)
    comparisons   summaries and paired comparisons (esper.stats)
    results       results.json, results.md, plots; assemble_docs for docs/results.md
    protocol      evaluate(): the whole protocol on one task

The Ray executor lives in esper.runtime (it imports this package, never the reverse).
"""
from __future__ import annotations

from esper.evaluation.config import (EVAL_SEEDS, PPO_SEEDS, TRAIN_SEEDS, EvaluationConfig, EvaluationConfigError,
                                     evaluation_config_from_tree, load_evaluation_config)
from esper.evaluation.controllers import (CONTROLLERS, Checkpoint, Controller, ControllerError, Heuristic, Schedule,
                                          Static, host_params, parse_controller)
from esper.evaluation.episode import EpisodeRecord, context_for, run_episode
from esper.evaluation.executor import LEARNING_CURVE_FILE, Executor, InProcessExecutor, Job, write_learning_curve
from esper.evaluation.frontier import Frontier, WidthPoint, frontier_widths, margins, seed_frontiers
from esper.evaluation.protocol import evaluate, resolve_config
from esper.evaluation.results import assemble_docs, load_results, render_markdown, write_task_results
from esper.evaluation.schedules import Selection, schedule_grid, select_best
from esper.evaluation.store import ResultStore, StoredExecutor, code_version, episode_key

__all__ = [
    "CONTROLLERS", "EVAL_SEEDS", "LEARNING_CURVE_FILE", "PPO_SEEDS", "TRAIN_SEEDS", "Checkpoint", "Controller",
    "ControllerError", "EpisodeRecord", "EvaluationConfig", "EvaluationConfigError", "Executor", "Frontier",
    "Heuristic", "InProcessExecutor", "Job", "ResultStore", "Schedule", "Selection", "Static", "StoredExecutor",
    "WidthPoint", "assemble_docs", "code_version", "context_for", "episode_key", "evaluate",
    "evaluation_config_from_tree", "frontier_widths", "host_params", "load_evaluation_config", "load_results",
    "margins", "parse_controller", "render_markdown", "resolve_config", "run_episode", "schedule_grid",
    "seed_frontiers", "select_best", "write_learning_curve", "write_task_results",
]
