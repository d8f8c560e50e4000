"""Simic's settings: the environment (episode length, reward, governor), PPO and IQL."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from esper.kasmina.config import LifecycleConfig


class RewardConfig(BaseModel):
    """One reward, its defaults in one place (docs/architecture.md, "The reward"). Accuracies are fractions in [0, 1]."""

    model_config = ConfigDict(extra="forbid")

    acc_gain_weight: float = Field(10.0, description="× change in validation accuracy this step")
    contribution_weight: float = Field(2.0, description="× counterfactual contribution of each active seed")
    param_rent: float = Field(0.05, ge=0, description="per step, × (params added / host params)")
    flops_rent: float = Field(0.0, ge=0, description="per step, × (this step's training FLOPs / the bare host's − 1): "
                              "compute priced as the static frontier measures it (docs/ablations/flops-rent.md)")
    shaping_weight: float = Field(0.1, ge=0, description="scale of the potential over seed stages (shaped with PPO's gamma)")
    terminal_weight: float = Field(10.0, description="× final validation accuracy, on the last step")


class GovernorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    loss_ceiling: float = Field(50.0, gt=0, description="a train loss above this counts as divergence")


class EnvConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_epochs: int = Field(25, ge=2, description="decisions per episode (one host training run)")
    auto_advance: bool = Field(False, description="the gates advance seeds: each step every seed that may advance "
                               "does so if its gate passes, and ADVANCE is masked; the agent chooses where, what "
                               "and when to germinate, and when to cull")
    agent_culls: bool = Field(True, description="False masks CULL: the agent only chooses where, what and when to "
                              "germinate; a seed leaves only by its gates (G1 culls, the others hold it back), the "
                              "governor (a diverging seed) or as a fossil (docs/ablations/agent-culls.md)")
    reward: RewardConfig = RewardConfig()
    governor: GovernorConfig = GovernorConfig()


class PPOConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gamma: float = Field(0.99, gt=0, le=1, description="discount; also the reward shaping's gamma (one value)")
    gae_lambda: float = Field(0.95, ge=0, le=1)
    clip: float = Field(0.2, gt=0)
    value_clip: float | None = Field(None, gt=0, description="clip the value update like the policy's, in return units; "
                                     "None = off (returns here are ~10, so a 0.2 clip would starve the critic)")
    epochs: int = Field(4, ge=1)
    minibatches: int = Field(4, ge=1)
    lr: float = Field(1e-3, gt=0)
    lr_schedule: Literal["constant", "linear"] = "linear"
    total_updates: int = Field(200, ge=1, description="horizon of the lr and entropy schedules")
    entropy_coef: float = Field(0.02, ge=0)
    entropy_coef_final: float = Field(0.002, ge=0)
    value_coef: float = Field(0.5, ge=0)
    max_grad_norm: float = Field(0.5, gt=0)
    target_kl: float | None = Field(0.03, gt=0, description="stop the update's epochs early past this approx KL")
    normalize_advantages: bool = True
    value_warm_start: bool = Field(False, description="before the first update, set the critic's output bias to the "
                                   "first batch's mean discounted return (returns are ~10 here; the critic starts at 0 "
                                   "and an Adam step moves a bias ~1e-3: docs/ablations/ppo-reference-check.md)")
    device: str = Field("auto", description="learner device")


class IQLConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expectile: float = Field(0.7, gt=0.5, lt=1)
    temperature: float = Field(3.0, gt=0, description="β in exp(β·A) for policy extraction")
    max_weight: float = Field(100.0, gt=0)
    entropy_coef: float = Field(0.3, ge=0, description="α in L_π − α·H(π): keeps the extracted policy stochastic, "
                                                       "so PPO fine-tuning from it can still explore")
    tau: float = Field(0.005, gt=0, le=1, description="target network Polyak rate")
    steps: int = Field(2000, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(1e-3, gt=0)


class SimicConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    env: EnvConfig = EnvConfig()
    ppo: PPOConfig = PPOConfig()
    iql: IQLConfig = IQLConfig()


def check_episode_fits(lifecycle: LifecycleConfig, env: EnvConfig) -> None:
    """An episode must be long enough for a seed to reach FOSSILIZED (the one check of episode length)."""
    need = lifecycle.shortest_path_to_fossil()
    if need > env.max_epochs:
        raise ValueError(
            f"simic.env.max_epochs={env.max_epochs} is shorter than the shortest path to FOSSILIZED "
            f"({need} steps from kasmina.lifecycle: 1 germinate + {lifecycle.min_training_epochs} "
            f"training + {lifecycle.blend_steps} blending + {lifecycle.shadow_steps} "
            f"shadowing + {lifecycle.probation_steps} probation + 1 advance); raise max_epochs or "
            f"shorten the lifecycle")
