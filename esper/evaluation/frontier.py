"""The static frontier: what a plain host buys with compute, the line every grown model is held to.

    widths = frontier_widths(cfg, [0.5, 0.75, 1.0, 1.5, 2.2, 3.0])   # width multipliers by parameter ratio
    host_params(cfg, widths[0].multiplier)                           # a static host's parameter count
    f = Frontier.from_points([(r.training_flops, r.final_test_acc) for r in static_records_of_one_seed])
    f.at(flops)              # test accuracy of a static host trained with that many FLOPs
    f.margin(flops, acc)     # acc − f.at(flops): > 0 means better than widening the host

Points are (training FLOPs, test accuracy) of the static host at several widths, same task, same
episode length. The multipliers are chosen by parameter count, not width: parameters grow roughly
with the square of the width, so each target ratio of the reference host's parameters (0.5× … 3×)
gets the multiplier on a 0.01 grid whose rounded widths come closest to it.

Choices (and why):
- Interpolation is linear in log10(FLOPs) (`np.interp`): FLOPs span a factor of ~6, accuracy moves
  roughly with the log of compute. It is the static hosts' measured curve, not an upper envelope.
- Outside the measured FLOP range `at` is NaN, not clamped: a clamp above the range would compare
  a grown model with a smaller host (flattering it), below the range with a larger one. Margins that
  are NaN are reported as "outside the frontier" and left out of means.
- Margins are per seed: each evaluation seed's controller result against the frontier built from the
  static hosts on the same seed (same data order and initialisation), so the margin is a paired
  difference like every other comparison; means and spreads are over seeds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from esper.config import RunConfig

from esper.evaluation.controllers import host_params, scaled_widths
from esper.evaluation.episode import EpisodeRecord


@dataclass(frozen=True)
class Frontier:
    flops: tuple[float, ...]          # ascending, distinct
    acc: tuple[float, ...]

    @classmethod
    def from_points(cls, points: Iterable[tuple[float, float]]) -> "Frontier":
        """From (FLOPs, accuracy) points in any order; points at the same FLOPs are averaged."""
        by: dict[float, list[float]] = {}
        for f, a in points:
            if not (f > 0 and math.isfinite(f)):
                raise ValueError(f"frontier points need positive finite FLOPs, got {f}")
            by.setdefault(float(f), []).append(float(a))
        if len(by) < 2:
            raise ValueError(f"a frontier needs points at ≥ 2 distinct FLOP counts, got {sorted(by)}")
        xs = sorted(by)
        return cls(tuple(xs), tuple(float(np.mean(by[x])) for x in xs))

    @property
    def range(self) -> tuple[float, float]:
        return self.flops[0], self.flops[-1]

    def at(self, flops: float | Sequence[float]) -> Any:
        """Accuracy at `flops`, linear in log10(FLOPs); NaN outside [min, max] of the points."""
        x = np.log10(np.asarray(flops, dtype=np.float64))
        lx = np.log10(np.asarray(self.flops))
        y = np.interp(x, lx, np.asarray(self.acc))
        y = np.where((x < lx[0]) | (x > lx[-1]) | np.isnan(x), np.nan, y)
        return float(y) if y.ndim == 0 else y

    def margin(self, flops: float | Sequence[float], acc: float | Sequence[float]) -> Any:
        d = np.asarray(acc, dtype=np.float64) - np.asarray(self.at(flops), dtype=np.float64)
        return float(d) if d.ndim == 0 else d

    def to_dict(self) -> dict[str, list[float]]:
        return {"training_flops": list(self.flops), "test_acc": list(self.acc)}


# ------------------------------------------------------------------------------------------ widths
@dataclass(frozen=True)
class WidthPoint:
    multiplier: float             # the reference widths × this, rounded
    widths: tuple[int, ...]
    params: int
    target_ratio: float           # wanted params / reference params
    ratio: float                  # what the rounded widths give

    def to_dict(self) -> dict[str, Any]:
        return {"multiplier": self.multiplier, "widths": list(self.widths), "params": self.params,
                "target_ratio": self.target_ratio, "ratio": self.ratio}


def frontier_widths(cfg: RunConfig, param_ratios: Sequence[float]) -> list[WidthPoint]:
    """For each ratio r, the width multiplier (0.01 grid; exactly 1.0 for r = 1) whose host's parameter
    count is closest to r × the reference host's. Two ratios landing on the same widths is an error."""
    if cfg.kasmina.host.kind != "cnn":
        raise ValueError(f"the static frontier scales the reference CNN's widths (kasmina.host.kind=cnn), "
                         f"this config's host is {cfg.kasmina.host.kind!r}")
    memo: dict[tuple[int, ...], int] = {}

    def params(m: float) -> int:
        widths = tuple(scaled_widths(cfg.kasmina.host.widths, m))
        if widths not in memo:
            memo[widths] = host_params(cfg, m)
        return memo[widths]

    base = params(1.0)
    out: list[WidthPoint] = []
    for r in sorted(float(r) for r in param_ratios):
        if r == 1.0:
            best = 1.0
        else:
            grid = np.round(np.arange(max(0.01, math.sqrt(r) / 1.6), math.sqrt(r) * 1.6, 0.01), 2)
            best = min((float(m) for m in grid), key=lambda m: (abs(params(m) - r * base), m))
        widths = tuple(scaled_widths(cfg.kasmina.host.widths, best))
        n = params(best)
        if out and out[-1].widths == widths:
            raise ValueError(f"parameter ratios {out[-1].target_ratio} and {r} give the same host widths {widths}; "
                             f"space them further apart")
        out.append(WidthPoint(best, widths, n, r, n / base))
    return out


# ------------------------------------------------------------------------------------------ margins
def seed_frontiers(static_records: Iterable[EpisodeRecord]) -> dict[int, Frontier]:
    """One frontier per env seed, from that seed's static hosts (training FLOPs, test accuracy)."""
    by_seed: dict[int, list[tuple[float, float]]] = {}
    for r in static_records:
        by_seed.setdefault(r.seed, []).append((float(r.training_flops), r.final_test_acc))
    return {seed: Frontier.from_points(points) for seed, points in sorted(by_seed.items())}


def margins(records: Iterable[EpisodeRecord], frontiers: dict[int, Frontier]) -> dict[int, float]:
    """Per seed: the record's test accuracy minus its seed's frontier at its training FLOPs (NaN outside)."""
    out = {}
    for r in records:
        if r.seed not in frontiers:
            raise ValueError(f"no static frontier for seed {r.seed} (have {sorted(frontiers)})")
        out[r.seed] = frontiers[r.seed].margin(float(r.training_flops), r.final_test_acc)
    return out
