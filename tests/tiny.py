"""The tiny task the tests that train a real host share: synthetic 16-pixel data (256 training images) and a
seed lifecycle short enough to reach FOSSILIZED in 7 steps, so a whole episode takes well under a second.

    from tiny import DATA, LIFECYCLE, MAX_EPOCHS, overrides
    cfg = load_config(None, overrides("simic.env.max_epochs=9"))
"""
from __future__ import annotations

from esper.kasmina import LifecycleConfig

DATA = {"train_size": 256, "val_size": 128, "test_size": 128, "image_size": 16}
LIFECYCLE = {"min_training_epochs": 1, "blend_steps": 2, "shadow_steps": 1, "probation_steps": 1, "embargo_steps": 1}
MAX_EPOCHS = LifecycleConfig(**LIFECYCLE).shortest_path_to_fossil() + 1          # 8
RELAXED_GATES = {"contribution_threshold": -1e9, "max_regression": 1.0}       # gates that never refuse on a number


def overrides(*extra: str) -> list[str]:
    """`--set` strings for the tiny data and lifecycle on the CPU, then `extra` (which win)."""
    return ([f"tolaria.data.{k}={v}" for k, v in DATA.items()]
            + [f"kasmina.lifecycle.{k}={v}" for k, v in LIFECYCLE.items()]
            + ["tolaria.training.device=cpu", "simic.ppo.device=cpu", *extra])
