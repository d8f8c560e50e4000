"""Zero-shot transfer: another task's PPO policies, as they were trained there, evaluated on this task.

    policies = transfer_controllers(results_dir / "synthetic-cpu", kasmina, "synthetic-cpu")

The source is the results folder `esper evaluate` wrote for that task (its results.json lists each PPO run's
checkpoint and SHA-256). Nothing is retrained or tuned here: the policies act greedily on this task's
observation, which has the same layout when the slots and blueprints match (`Checkpoint.load` refuses
otherwise, naming both).
"""
from __future__ import annotations

from pathlib import Path

from esper.evaluation.controllers import Checkpoint, ControllerError
from esper.evaluation.results import load_results
from esper.kasmina import KasminaConfig


def transfer_controllers(source_dir: Path, kasmina: KasminaConfig, source: str) -> list[Checkpoint]:
    """The PPO policies of the evaluation in `source_dir`, named `zero-shot-<source>-s<seed>`."""
    if not (source_dir / "results.json").is_file():
        raise ControllerError(f"transfer: {source!r} has no results ({source_dir / 'results.json'} is missing); "
                              f"run esper evaluate on that task first, with the same --results")
    runs = load_results(source_dir)["ppo"]["runs"]
    if not runs:
        raise ControllerError(f"transfer: the evaluation in {source_dir} trained no PPO policy")
    out = []
    for run in runs:
        ctrl = Checkpoint.load(str(source_dir / run["checkpoint"]), kasmina, name=f"zero-shot-{source}-s{run['seed']}")
        if ctrl.sha256 != run["sha256"]:
            raise ControllerError(f"transfer: {source_dir / run['checkpoint']} changed since its evaluation "
                                  f"(SHA-256 {ctrl.sha256[:12]}, results.json says {run['sha256'][:12]})")
        out.append(ctrl)
    return out
