"""Learning: sampling trajectories, PPO, checkpoints, offline IQL, and the in-process trainer (no Ray)."""
from __future__ import annotations

from esper.simic.learning.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from esper.simic.learning.ppo import PPOLearner, UpdateStats
from esper.simic.learning.rollout import TrajectoryBatch, compute_gae
from esper.simic.learning.sampler import Sampler
from esper.simic.learning.trainer import InProcessTrainer, make_learner

__all__ = ["CheckpointError", "InProcessTrainer", "PPOLearner", "Sampler", "TrajectoryBatch", "UpdateStats",
           "compute_gae", "load_checkpoint", "make_learner", "save_checkpoint"]
