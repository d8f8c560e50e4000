"""Quality gates G0–G5: each returns a GateResult with the checks made, the values seen and a reason."""
from __future__ import annotations

import math

from esper.kasmina.config import LifecycleConfig
from esper.leyline import GateResult


def _result(gate: str, checks: dict[str, bool], values: dict[str, float], what: str) -> GateResult:
    checks = {k: bool(v) for k, v in checks.items()}         # plain Python types: reports go to JSON/Arrow
    values = {k: float(v) for k, v in values.items()}
    failed = [name for name, ok in checks.items() if not ok]
    passed = not failed
    reason = f"{what}: passed" if passed else f"{what}: failed {', '.join(failed)}"
    return GateResult(gate, passed, checks, values, reason)


def g0_germinate(*, blueprint_known: bool, slot_free: bool, embargo_left: int) -> GateResult:
    checks = {"blueprint_exists": blueprint_known, "slot_free": slot_free, "no_embargo": embargo_left == 0}
    return _result("G0", checks, {"embargo_left": float(embargo_left)}, "germinate")


def g1_built(*, shape_ok: bool, finite: bool, placement_ok: bool) -> GateResult:
    checks = {"output_shape_matches": shape_ok, "output_finite": finite, "on_slot_device_dtype": placement_ok}
    return _result("G1", checks, {}, "seed built")


def _healthy(grad_norm: float, cfg: LifecycleConfig) -> bool:
    return math.isfinite(grad_norm) and cfg.grad_vanish_threshold <= grad_norm <= cfg.grad_explode_threshold


def g2_start_blending(*, epochs_in_stage: int, contribution: float | None, grad_norm: float,
                      cfg: LifecycleConfig) -> GateResult:
    """A TRAINING seed may start blending once it has trained long enough, its gradients are healthy and
    its preview (the counterfactual with the seed added at full strength) was measured and is finite.

    The preview's sign is recorded but not required: downstream BatchNorm statistics were gathered
    without the seed, so adding it at full strength before the host has adapted is pessimistic by
    construction (measured: previews of -0.1..-0.2 for seeds that help once blended). Whether the seed
    helps is judged after blending, where it counts: G3 (no regression), G4 and G5 (contribution).
    """
    c = float("nan") if contribution is None else contribution
    checks = {
        "min_epochs": epochs_in_stage >= cfg.min_training_epochs,
        "preview_measured": contribution is not None and math.isfinite(c),
        "gradients_healthy": _healthy(grad_norm, cfg),
    }
    values = {"epochs_in_stage": float(epochs_in_stage), "contribution": c, "seed_grad_norm": grad_norm}
    return _result("G2", checks, values, "start blending")


def g3_blend_done(*, alpha: float, val_acc: float, val_acc_at_entry: float, cfg: LifecycleConfig) -> GateResult:
    checks = {"alpha_reached_1": alpha >= 1.0, "no_regression": val_acc >= val_acc_at_entry - cfg.max_regression}
    values = {"alpha": alpha, "val_acc": val_acc, "val_acc_at_blend_start": val_acc_at_entry}
    return _result("G3", checks, values, "blend complete")


def g4_start_probation(*, recent_contributions: list[float], cfg: LifecycleConfig) -> GateResult:
    recent = recent_contributions[-cfg.shadow_steps:]
    checks = {
        "enough_shadow_steps": len(recent) >= cfg.shadow_steps,
        "contribution_above_threshold": bool(recent) and min(recent) >= cfg.contribution_threshold,
    }
    values = {"min_recent_contribution": min(recent) if recent else float("nan"),
              "threshold": cfg.contribution_threshold, "steps_measured": float(len(recent))}
    return _result("G4", checks, values, "start probation")


def g5_fossilize(*, epochs_in_stage: int, contribution: float | None, val_acc: float, val_acc_at_entry: float,
                 grad_norm: float, cfg: LifecycleConfig) -> GateResult:
    c = float("nan") if contribution is None else contribution
    checks = {
        "probation_served": epochs_in_stage >= cfg.probation_steps,
        "still_contributing": contribution is not None and c >= cfg.contribution_threshold,
        "no_regression": val_acc >= val_acc_at_entry - cfg.max_regression,
        "gradients_healthy": _healthy(grad_norm, cfg),
    }
    values = {"epochs_in_stage": float(epochs_in_stage), "contribution": c, "val_acc": val_acc,
              "val_acc_at_probation_start": val_acc_at_entry, "seed_grad_norm": grad_norm}
    return _result("G5", checks, values, "fossilize")
