"""The schedule family, and picking its best member honestly.

    grid = schedule_grid(cfg.kasmina, cfg.simic.env.max_epochs, germinate_at=[1, 3, 5])
    best = select_best(records_on_training_seeds, train_seeds=[0, 1, 2, 3, 4])
    best.name, best.score          # the schedule to run on the evaluation seeds, its mean val accuracy

A schedule germinates one blueprint in one slot at one step and then advances whenever the gates
allow (`controllers.Schedule`). The family is the grid blueprint × slot × germination step. A
single hand-picked schedule would be tuned on whatever run the author looked at; the family is
searched on the *training* seeds and judged by *final validation* accuracy, then only its winner
runs on the evaluation seeds. `select_best` reads nothing else: records on other seeds are
ignored, and test accuracy is never looked at, so the evaluation seeds' test scores stay held out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from esper.kasmina import KasminaConfig

from esper.evaluation.controllers import Schedule, make_schedule
from esper.evaluation.episode import EpisodeRecord


def schedule_grid(kasmina: KasminaConfig, max_epochs: int, germinate_at: Sequence[int],
                  blueprints: Sequence[str] | None = None, slots: Sequence[str] | None = None) -> list[Schedule]:
    """Every (blueprint, slot, step) schedule; blueprints and slots default to the run's own. Each
    germination step must leave room for the shortest path to FOSSILIZED within the episode."""
    need = kasmina.lifecycle.shortest_path_to_fossil()
    late = [s for s in germinate_at if s + need > max_epochs]
    if late:
        raise ValueError(f"schedules.germinate_at {late}: a seed germinated there cannot reach FOSSILIZED "
                         f"({need} steps, kasmina.lifecycle.shortest_path_to_fossil()) before the episode ends "
                         f"(simic.env.max_epochs={max_epochs}); use steps ≤ {max_epochs - need}")
    if len(set(germinate_at)) != len(germinate_at):
        raise ValueError(f"schedules.germinate_at must be distinct, got {list(germinate_at)}")
    return [make_schedule(slot, bp, int(step), kasmina, max_epochs)
            for bp in (blueprints or kasmina.blueprints)
            for slot in (slots or kasmina.slots)
            for step in germinate_at]


@dataclass(frozen=True)
class Selection:
    name: str                           # the best schedule
    score: float                        # its mean final validation accuracy over the training seeds
    scores: dict[str, float]            # every schedule's
    seeds: tuple[int, ...]              # the training seeds the scores are means over

    def to_dict(self) -> dict:
        return {"best": self.name, "score": self.score, "scores": self.scores, "seeds": list(self.seeds),
                "criterion": "mean final validation accuracy over the training seeds"}


def select_best(records: Iterable[EpisodeRecord], train_seeds: Sequence[int]) -> Selection:
    """The controller with the highest mean FINAL VALIDATION accuracy over `train_seeds`; records on
    other seeds are ignored and test accuracy is never read. Every controller present must have a
    record for every training seed. Ties go to the name that sorts first (deterministic)."""
    seeds = tuple(sorted(set(int(s) for s in train_seeds)))
    if not seeds:
        raise ValueError("select_best needs at least one training seed")
    vals: dict[str, dict[int, float]] = {}
    for r in records:
        if r.seed in seeds:
            vals.setdefault(r.controller, {})[r.seed] = r.final_val_acc
    if not vals:
        raise ValueError(f"no records on the training seeds {list(seeds)}")
    missing = {name: sorted(set(seeds) - set(v)) for name, v in vals.items() if set(v) != set(seeds)}
    if missing:
        raise ValueError(f"select_best: records missing on training seeds: {missing}")
    scores = {name: float(np.mean([v[s] for s in seeds])) for name, v in sorted(vals.items())}
    best = min(scores, key=lambda n: (-scores[n], n))
    return Selection(best, scores[best], scores, seeds)
