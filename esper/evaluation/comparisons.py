"""From records to numbers: per-controller summaries, paired comparisons, margins vs the frontier.

Everything is per evaluation seed and paired: controller a and b on the same seed faced the same
data order and host initialisation, so their difference is the measurement (`esper.stats.paired`:
one-sided paired t, Wilcoxon, wins/ties/losses). "PPO (mean)" is the mean over the PPO training
seeds of each evaluation seed's result: one value per evaluation seed, so it pairs like any other
controller and its spread is over evaluation seeds (the PPO training seeds are reported one by one
beside it). Pooling the PPO seeds' pairs instead would count each evaluation seed several times as
if independent.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from esper.stats import is_significant, mean_std, paired

from esper.evaluation.episode import EpisodeRecord

NUMERIC = ("final_test_acc", "final_val_acc", "best_val_acc", "training_flops", "decision_flops",
           "evaluation_flops", "params_host", "params_added", "seeds_germinated", "seeds_fossilized",
           "seeds_culled", "wall_seconds", "margin")


def rows_by_seed(records: Sequence[EpisodeRecord], name: str, seeds: Sequence[int],
                 margins: dict[int, float] | None = None) -> list[dict[str, float]]:
    """One row per seed (in `seeds` order) of `name`'s numbers, with its margin; every seed must be there."""
    by = {r.seed: r for r in records if r.controller == name}
    missing = [s for s in seeds if s not in by]
    if missing:
        raise ValueError(f"{name}: no records for seeds {missing}")
    out = []
    for s in seeds:
        row = {k: float(v) for k, v in by[s].to_dict().items() if k in NUMERIC}
        row["margin"] = float((margins or {}).get(s, math.nan))
        row["seed"] = s
        out.append(row)
    return out


def mean_rows(groups: Sequence[list[dict[str, float]]]) -> list[dict[str, float]]:
    """Per seed, the mean over groups (e.g. the PPO training seeds) of every number."""
    out = []
    for rows in zip(*groups):
        seed = rows[0]["seed"]
        if any(r["seed"] != seed for r in rows):
            raise ValueError("mean_rows: groups must list the same seeds in the same order")
        out.append({"seed": seed, **{k: float(np.mean([r[k] for r in rows])) for k in NUMERIC}})
    return out


def summarize(name: str, role: str, rows: list[dict[str, float]], **extra: Any) -> dict[str, Any]:
    """Mean ± std (ddof 1) over seeds of each number; margins outside the frontier (NaN) are left out."""
    col = {k: [r[k] for r in rows] for k in NUMERIC}
    out: dict[str, Any] = {"controller": name, "role": role, "n": len(rows), **extra}
    for k in NUMERIC:
        m, s = mean_std(col[k], ignore_nan=(k == "margin"))
        out[f"{k}_mean"], out[f"{k}_std"] = m, s
    out["margin_n"] = int(sum(not math.isnan(v) for v in col["margin"]))
    out["per_seed"] = {str(r["seed"]): {"test_acc": r["final_test_acc"], "val_acc": r["final_val_acc"],
                                        "training_flops": r["training_flops"], "margin": r["margin"]} for r in rows}
    return out


def compare(a_name: str, a_rows: list[dict[str, float]], b_name: str, b_rows: list[dict[str, float]],
            *, key: str = "final_test_acc", group: str = "") -> dict[str, Any]:
    """`esper.stats.paired` of a − b on `key`, seed by seed; with whether it is significant (p_t < 0.05)."""
    if [r["seed"] for r in a_rows] != [r["seed"] for r in b_rows]:
        raise ValueError(f"{a_name} and {b_name} must be compared on the same seeds in the same order")
    cmp = paired([r[key] for r in a_rows], [r[key] for r in b_rows], a=a_name, b=b_name)
    return {**cmp.to_dict(), "metric": key, "group": group, "significant": is_significant(cmp),
            "seeds": [r["seed"] for r in a_rows]}
