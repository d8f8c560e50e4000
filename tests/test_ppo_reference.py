"""Esper's PPO, step by step, against a small independent reference written from two well-known implementations.

The reference below follows the math of (read, not copied; cited per function):
  CleanRL            vwxyzjn/cleanrl  cleanrl/ppo.py (the single-file PPO Esper's learner is modelled on)
  Stable-Baselines3  DLR-RM/stable-baselines3  stable_baselines3/ppo/ppo.py PPO.train,
                     stable_baselines3/common/buffers.py RolloutBuffer.compute_returns_and_advantage,
                     stable_baselines3/common/on_policy_algorithm.py OnPolicyAlgorithm.collect_rollouts,
                     stable_baselines3/common/running_mean_std.py, common/vec_env/vec_normalize.py
  sb3-contrib        Stable-Baselines-Team/stable-baselines3-contrib  sb3_contrib/ppo_mask/ppo_mask.py
                     MaskablePPO.train, sb3_contrib/common/maskable/distributions.py MaskableCategorical

On one fixed synthetic batch (masks that vary per row, one row with only WAIT legal, episode ends mid-batch and
on the last step, a bootstrap observation; seeded, float64 so that agreement is to ~1e-12, not to float32
noise), Esper's `PPOLearner.update` must produce the reference's numbers where the two should agree: GAE
advantages and returns, the normalization the update sees, the behaviour ratio (1 on-policy), per-minibatch
advantage normalization (std with ddof 1), the clipped surrogate, the value loss, the legal-only entropy,
gradient-norm clipping, the Adam step, the early stop and the learning-rate schedule. Where Esper differs from
a reference on purpose, a test pins the difference (docs/ablations/ppo-reference-check.md explains each):

  - value loss: Esper (like CleanRL) minimises value_coef · ½·MSE; SB3/MaskablePPO minimise vf_coef · MSE,
    so Esper's value_coef c equals SB3's vf_coef c/2 (Esper's default 0.5 is SB3's 0.25).
  - early stop: Esper finishes the epoch and stops when the epoch's mean approx-KL > target_kl (CleanRL: the
    last minibatch's KL > target_kl, also after the epoch); SB3 checks each minibatch before its step
    against 1.5·target_kl and stops at once.
  - truncation: Esper's sampler stores terminated | truncated as `done` and bootstraps neither (CleanRL's
    convention); SB3 adds γ·V(final obs) to a truncated step's reward. Esper's training env never
    truncates (VectorEnv resets without a horizon), so this only matters for a hand-made TimeLimit.
  - observation normalization: Esper's normalizer starts as the identity (clipped at ±10) and is updated
    after each update with that update's observations; VecNormalize updates on every step before
    normalizing. The statistics and the transform are the same (Chan et al. merge, population variance,
    eps 1e-8, clip 10), except SB3's pseudo-count 1e-4.
  - schedules: the learning rate anneals like CleanRL's anneal_lr, but over `simic.ppo.total_updates`
    (200 by default), not over the run's length; CleanRL and SB3 do not anneal the entropy coefficient.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from esper.kasmina import KasminaConfig, schema_and_space
from esper.simic.config import PPOConfig
from esper.simic.learning.ppo import PPOLearner
from esper.simic.learning.rollout import TrajectoryBatch, compute_gae
from esper.tamiyo.network import ActorCritic, entropy, log_prob, masked_logits
from esper.tamiyo.normalizer import RunningMeanStd

CPU = torch.device("cpu")
SCHEMA, SPACE = schema_and_space(KasminaConfig())
D, A = SCHEMA.size, SPACE.n
T, K = 10, 3                     # 30 transitions
HIDDEN = (32, 32)
F64 = torch.float64


# ---------------------------------------------------------------------------------------- reference
def ref_gae(rewards: np.ndarray, values: np.ndarray, dones: np.ndarray, last_values: np.ndarray, gamma: float,
            lam: float) -> tuple[np.ndarray, np.ndarray]:
    """SB3 RolloutBuffer.compute_returns_and_advantage (CleanRL cleanrl/ppo.py has the same loop).

    Both store, at step t, whether obs[t] *starts* an episode (SB3 `episode_starts[t]`, CleanRL `dones[t]`)
    and take the last step's from the env's final `dones`; Esper stores whether step t *ended* one. So SB3's
    episode_starts[t + 1] is Esper's dones[t], and SB3's final `dones` is Esper's dones[T - 1].
    """
    n_steps = rewards.shape[0]
    episode_starts = np.zeros_like(dones, dtype=np.float64)
    episode_starts[1:] = dones[:-1]
    final_dones = dones[-1].astype(np.float64)
    adv = np.zeros_like(rewards)
    last_gae_lam = 0.0
    for step in reversed(range(n_steps)):
        if step == n_steps - 1:
            next_non_terminal, next_values = 1.0 - final_dones, last_values
        else:
            next_non_terminal, next_values = 1.0 - episode_starts[step + 1], values[step + 1]
        delta = rewards[step] + gamma * next_values * next_non_terminal - values[step]
        last_gae_lam = delta + gamma * lam * next_non_terminal * last_gae_lam
        adv[step] = last_gae_lam
    return adv, adv + values              # "TD(lambda) estimator": returns = advantages + values


def ref_normalize(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """VecNormalize._normalize_obs: clip((obs - mean) / sqrt(var + epsilon), -clip_obs, clip_obs), 1e-8 and 10."""
    return torch.clamp((x - mean) / torch.sqrt(var + 1e-8), -10.0, 10.0)


class RefRunningMeanStd:
    """stable_baselines3/common/running_mean_std.py RunningMeanStd (parallel algorithm, np.var: ddof 0)."""

    def __init__(self, size: int, epsilon: float = 1e-4) -> None:
        self.mean, self.var, self.count = np.zeros(size), np.ones(size), epsilon

    def update(self, arr: np.ndarray) -> None:
        batch_mean, batch_var, batch_count = arr.mean(0), arr.var(0), arr.shape[0]
        delta, tot = batch_mean - self.mean, self.count + batch_count
        m2 = self.var * self.count + batch_var * batch_count + delta ** 2 * self.count * batch_count / tot
        self.mean, self.var, self.count = self.mean + delta * batch_count / tot, m2 / tot, tot


def ref_dist(raw_logits: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MaskableCategorical.apply_masking: illegal logits set to -1e8 (not -inf); returns (log-probs, probs)."""
    logits = torch.where(mask, raw_logits, torch.tensor(-1e8, dtype=raw_logits.dtype))
    logp = torch.log_softmax(logits, -1)
    return logp, logp.exp()


def ref_log_prob(raw_logits: torch.Tensor, mask: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    return ref_dist(raw_logits, mask)[0].gather(-1, actions[:, None]).squeeze(-1)


def ref_entropy(raw_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MaskableCategorical.entropy: -sum over legal actions of p·log p (masked entries contribute exactly 0)."""
    logp, p = ref_dist(raw_logits, mask)
    return -torch.where(mask, logp * p, torch.tensor(0.0, dtype=logp.dtype)).sum(-1)


def ref_clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> None:
    """torch.nn.utils.clip_grad_norm_ as CleanRL and SB3 call it: one global 2-norm over every parameter."""
    total = torch.sqrt(sum((p.grad.detach() ** 2).sum() for p in params))
    coef = min(max_norm / (float(total) + 1e-6), 1.0)
    for p in params:
        p.grad.mul_(coef)


def cleanrl_lr(lr: float, iteration: int, num_iterations: int) -> float:
    """cleanrl/ppo.py anneal_lr: frac = 1 - (iteration - 1) / num_iterations; lrnow = frac * lr."""
    return (1.0 - (iteration - 1.0) / num_iterations) * lr


def reference_update(net0: ActorCritic, mean: torch.Tensor, var: torch.Tensor, b: TrajectoryBatch, cfg: PPOConfig,
                     perms: list[torch.Tensor], lr: float, ent_coef: float, *, value_form: str = "cleanrl",
                     vf_coef: float | None = None, kl_rule: str = "esper", adv_ddof: int = 1) -> dict:
    """One PPO update (CleanRL's loop structure, SB3/MaskablePPO's losses) on a copy of `net0`.

    value_form "cleanrl": vf_coef · 0.5·mean((V - R)²) (cleanrl/ppo.py, clip_vloss off);
               "sb3":     vf_coef · F.mse_loss(R, V) (PPO.train / MaskablePPO.train).
    kl_rule "esper":   after each epoch, stop if the epoch's mean approx-KL > target_kl;
            "cleanrl": after each epoch, stop if the last minibatch's approx-KL > target_kl;
            "sb3":     before each minibatch's step, stop at once if its approx-KL > 1.5·target_kl.
    The rows are flattened t-major (index t·K + k) like Esper's, so Esper's permutations index the same rows
    (SB3's swap_and_flatten is k-major; the order is immaterial once shuffled).
    """
    net = copy.deepcopy(net0)
    vf_coef = cfg.value_coef if vf_coef is None else vf_coef
    opt = torch.optim.Adam(net.parameters(), lr=lr, eps=1e-5)         # CleanRL and SB3 both use eps=1e-5
    params = list(net.parameters())
    obs = ref_normalize(torch.as_tensor(b.obs), mean, var)
    n = b.num_transitions
    with torch.no_grad():
        values = net.value(obs).numpy()                               # the critic of this version
        last_v = net.value(ref_normalize(torch.as_tensor(b.last_obs), mean, var)).numpy()
    adv, ret = ref_gae(b.rewards, values, b.dones, last_v, cfg.gamma, cfg.gae_lambda)
    b_obs = obs.reshape(n, D)
    b_masks = torch.as_tensor(b.masks).reshape(n, A)
    b_act = torch.as_tensor(b.actions).reshape(n)
    b_logp = torch.as_tensor(b.log_probs).reshape(n)
    b_adv, b_ret = torch.as_tensor(adv).reshape(n), torch.as_tensor(ret).reshape(n)
    b_val = torch.as_tensor(values).reshape(n)
    mb = max(1, n // cfg.minibatches)
    log = {"pg": [], "v": [], "ent": [], "kl": [], "clip": [], "first_ratio": None}
    epochs_run, stop = 0, False
    for epoch in range(cfg.epochs):
        epochs_run += 1
        epoch_kls = []
        for s in range(0, n, mb):
            idx = perms[epoch][s:s + mb]
            raw = net.policy_head(net.actor_features(b_obs[idx]))
            value = net.value(b_obs[idx])
            logratio = ref_log_prob(raw, b_masks[idx], b_act[idx]) - b_logp[idx]
            ratio = logratio.exp()
            if log["first_ratio"] is None:
                log["first_ratio"] = ratio.detach().clone()
            with torch.no_grad():
                kl = ((ratio - 1) - logratio).mean()                  # http://joschu.net/blog/kl-approx.html (k3)
                clipfrac = ((ratio - 1.0).abs() > cfg.clip).double().mean()
            if kl_rule == "sb3" and cfg.target_kl is not None and float(kl) > 1.5 * cfg.target_kl:
                stop = True
                break
            a = b_adv[idx]
            if cfg.normalize_advantages and len(idx) > 1:             # SB3: "does not make sense if size == 1"
                a = (a - a.mean()) / (a.std(correction=adv_ddof) + 1e-8)
            pg = -torch.min(a * ratio, a * torch.clamp(ratio, 1 - cfg.clip, 1 + cfg.clip)).mean()
            if cfg.value_clip is not None:                            # CleanRL clip_vloss / SB3 clip_range_vf
                v_pred = b_val[idx] + torch.clamp(value - b_val[idx], -cfg.value_clip, cfg.value_clip)
                sq = torch.max((value - b_ret[idx]) ** 2, (v_pred - b_ret[idx]) ** 2)
            else:
                sq = (value - b_ret[idx]) ** 2
            v_loss = 0.5 * sq.mean() if value_form == "cleanrl" else sq.mean()
            ent = ref_entropy(raw, b_masks[idx]).mean()
            loss = pg - ent_coef * ent + vf_coef * v_loss
            opt.zero_grad()
            loss.backward()
            ref_clip_grad_norm(params, cfg.max_grad_norm)
            opt.step()
            for key, x in (("pg", pg), ("v", v_loss), ("ent", ent), ("kl", kl), ("clip", clipfrac)):
                log[key].append(float(x.detach()))
            epoch_kls.append(float(kl))
        if stop:
            break
        if cfg.target_kl is not None and kl_rule == "esper" and np.mean(epoch_kls) > cfg.target_kl:
            break
        if cfg.target_kl is not None and kl_rule == "cleanrl" and epoch_kls[-1] > cfg.target_kl:
            break
    ev = 1.0 - np.var(ret - values) / np.var(ret)                     # SB3 explained_variance (ddof 0)
    return {"net": net, "adv": adv, "ret": ret, "values": values, "epochs_run": epochs_run, "steps": len(log["pg"]),
            "explained_variance": ev, **{k: float(np.mean(v)) for k, v in log.items() if k != "first_ratio"},
            "first_ratio": log["first_ratio"]}


# ---------------------------------------------------------------------------------------- the batch
def make_case(cfg: PPOConfig, seed: int = 0) -> tuple[PPOLearner, TrajectoryBatch]:
    """A learner (float64, a non-trivial normalizer) and one on-policy batch sampled from it."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    net = ActorCritic(D, A, HIDDEN).double()
    learner = PPOLearner(net, cfg, SCHEMA, SPACE, CPU, seed=seed)
    loc, scale = rng.uniform(-2, 3, D), rng.uniform(0.1, 3, D)
    learner.normalizer.update(torch.as_tensor(rng.normal(loc, scale, (50, D))))     # as after earlier updates
    obs = rng.normal(loc, scale, (T, K, D))
    masks = rng.random((T, K, A)) < 0.3
    masks[..., 0] = True                                   # WAIT is always legal
    masks[2, 1, 1:] = False                                # a row where WAIT is the only legal action
    mean, var = learner.normalizer.mean, learner.normalizer.var
    with torch.no_grad():                                  # the runner: sample from this very policy
        o = ref_normalize(torch.as_tensor(obs), mean, var).reshape(T * K, D)
        m = torch.as_tensor(masks).reshape(T * K, A)
        raw = net.policy_head(net.actor_features(o))
        probs = ref_dist(raw, m)[1]
        actions = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(seed)).squeeze(-1)
        logps = ref_log_prob(raw, m, actions)
        values = net.value(o)
    rewards = rng.normal(0.5, 1.0, (T, K))
    dones = np.zeros((T, K), bool)
    dones[4, 0] = True                                     # env 0: ends mid-batch, then bootstraps at T
    dones[T - 1, 1] = True                                 # env 1: ends on the last step: no bootstrap
    dones[2, 2] = dones[7, 2] = True                       # env 2: two ends
    rewards[dones] += 10.0                                 # terminal rewards in Esper's units (~10)
    batch = TrajectoryBatch(obs, actions.reshape(T, K).numpy(), masks, logps.reshape(T, K).numpy(),
                            values.reshape(T, K).numpy(), rewards, dones, rng.normal(loc, scale, (K, D)),
                            learner.version)
    return learner, batch


def run_both(cfg: PPOConfig, seed: int = 0, **ref_kwargs):
    learner, batch = make_case(cfg, seed)
    net0 = copy.deepcopy(learner.network)
    mean, var = learner.normalizer.mean.clone(), learner.normalizer.var.clone()
    g = torch.Generator()
    g.set_state(learner.generator.get_state())
    perms = [torch.randperm(batch.num_transitions, generator=g) for _ in range(cfg.epochs)]   # Esper's order
    lr, ent_coef = learner.schedule()
    ref = reference_update(net0, mean, var, batch, cfg, perms, lr, ent_coef, **ref_kwargs)
    stats = learner.update([batch])
    return learner, batch, stats, ref


def assert_same_params(a: torch.nn.Module, b: torch.nn.Module, atol: float = 1e-9) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-7, atol=atol, err_msg=name)


def max_param_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max(float((p.detach() - q.detach()).abs().max()) for p, q in zip(a.parameters(), b.parameters()))


# -------------------------------------------------------------------------------------------- 1. GAE
@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (0.9, 0.0), (1.0, 1.0)])
def test_gae_and_returns_match_sb3_rollout_buffer(gamma, lam):
    rng = np.random.default_rng(7)
    rewards, values, last = rng.normal(size=(T, K)), rng.normal(size=(T, K)), rng.normal(size=K)
    dones = np.zeros((T, K), bool)
    dones[3, 0] = dones[T - 1, 1] = dones[0, 2] = dones[5, 2] = True
    ref_adv, ref_ret = ref_gae(rewards, values, dones, last, gamma, lam)
    f = lambda x: torch.as_tensor(x, dtype=F64)  # noqa: E731
    adv, ret = compute_gae(f(rewards), f(values), torch.as_tensor(dones), f(last), gamma, lam)
    np.testing.assert_allclose(adv.numpy(), ref_adv, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ret.numpy(), ref_ret, rtol=1e-12, atol=1e-12)
    # env 0 never ends after t=3, so its last step bootstraps from last_values; env 1 ends at T-1: it does not
    assert adv[T - 1, 0] == pytest.approx(rewards[T - 1, 0] + gamma * last[0] - values[T - 1, 0], abs=1e-12)
    assert adv[T - 1, 1] == pytest.approx(rewards[T - 1, 1] - values[T - 1, 1], abs=1e-12)


def test_truncation_is_a_termination_like_cleanrl_not_a_bootstrap_like_sb3():
    """A truncated step (a TimeLimit cut) is stored as `done` by Esper's sampler (terminated | truncated) with
    no final observation kept, so GAE bootstraps nothing there: CleanRL's `next_done = terminations |
    truncations`. SB3's collect_rollouts instead adds γ·V(terminal_observation) to that step's reward."""
    rng = np.random.default_rng(3)
    gamma, lam = 0.99, 0.95
    rewards, values, last = rng.normal(size=(T, 1)), rng.normal(size=(T, 1)), rng.normal(size=1)
    trunc = np.zeros((T, 1), bool)
    trunc[5, 0] = True
    v_final = 4.0                                          # V(final obs of the truncated episode)
    f = lambda x: torch.as_tensor(x, dtype=F64)  # noqa: E731
    esper_adv, _ = compute_gae(f(rewards), f(values), torch.as_tensor(trunc), f(last), gamma, lam)
    cleanrl_adv, _ = ref_gae(rewards, values, trunc, last, gamma, lam)
    sb3_rewards = rewards.copy()
    sb3_rewards[5, 0] += gamma * v_final
    sb3_adv, _ = ref_gae(sb3_rewards, values, trunc, last, gamma, lam)
    np.testing.assert_allclose(esper_adv.numpy(), cleanrl_adv, atol=1e-12)
    # SB3 differs on the truncated episode's steps by the discounted bootstrap, and nowhere after it
    gap = sb3_adv[:, 0] - esper_adv.numpy()[:, 0]
    np.testing.assert_allclose(gap[:6], [gamma * v_final * (gamma * lam) ** (5 - t) for t in range(6)], atol=1e-12)
    np.testing.assert_allclose(gap[6:], 0.0, atol=1e-12)


def test_training_env_terminates_and_never_truncates():
    """Why the truncation convention does not bite in training: VectorEnv resets each env without a horizon,
    so every episode runs max_epochs steps and ends `terminated` (a true terminal: the terminal reward is paid
    and the observation carries epoch / max_epochs)."""
    from esper.config import load_config
    from esper.simic.environment.context import make_context
    from esper.simic.environment.vector_env import SequentialEpisodes, VectorEnv
    from tiny import overrides
    cfg = load_config(None, overrides("simic.env.max_epochs=8"))
    ctx = make_context(cfg.kasmina, cfg.tolaria, cfg.simic.env, cfg.simic.ppo.gamma, "cpu")
    vec = VectorEnv(ctx, 2, SequentialEpisodes(0, prefix="ref"))
    vec.reset()
    assert [c.horizon for c in vec.cores] == [ctx.max_epochs] * 2


# ----------------------------------------------------------------------------------- 2. normalizer
def test_normalizer_matches_sb3_running_mean_std_and_vecnormalize_transform():
    rng = np.random.default_rng(0)
    esper, ref = RunningMeanStd(D), RefRunningMeanStd(D)
    fresh = torch.as_tensor(rng.normal(0, 30, (5, D)))
    # before any update Esper's normalizer is the identity clipped at ±10 (its count is 0, SB3's 1e-4):
    # the first rollout acts on raw observations (VecNormalize would already have normalized it)
    torch.testing.assert_close(esper.normalize(fresh), fresh.clamp(-10, 10) / math.sqrt(1 + 1e-8))
    for n in (80, 80, 7, 160):
        x = rng.normal(rng.uniform(-3, 3, D), rng.uniform(0.1, 4, D), (n, D))
        esper.update(torch.as_tensor(x))
        ref.update(x)
    # the same moments up to SB3's pseudo-count (1e-4 of a sample of mean 0 and variance 1)
    np.testing.assert_allclose(esper.mean.numpy(), ref.mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(esper.var.numpy(), ref.var, rtol=1e-5, atol=1e-5)
    assert float(esper.count) == 327 and ref.count == pytest.approx(327.0001)
    # and exactly the same transform for the same statistics (eps 1e-8, clip 10)
    torch.testing.assert_close(esper.normalize(fresh), ref_normalize(fresh, esper.mean, esper.var),
                               rtol=1e-12, atol=1e-12)


def test_update_normalizes_with_the_runners_stats_then_merges_the_batch():
    """Timing: the update sees the statistics the runners acted with (so the on-policy ratio is 1); the batch's
    observations (not the bootstrap observation) are merged only after the update."""
    cfg = PPOConfig(epochs=1, minibatches=1)
    learner, batch = make_case(cfg)
    before = RefRunningMeanStd(D, epsilon=0.0)
    before.mean, before.var, before.count = (learner.normalizer.mean.numpy().copy(),
                                             learner.normalizer.var.numpy().copy(), float(learner.normalizer.count))
    learner.update([batch])
    before.update(batch.obs.reshape(-1, D))
    np.testing.assert_allclose(learner.normalizer.mean.numpy(), before.mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(learner.normalizer.var.numpy(), before.var, rtol=1e-12, atol=1e-12)
    assert float(learner.normalizer.count) == before.count == 50 + T * K


# ------------------------------------------------------------------------------- 3. the update itself
CASES = {
    "defaults": PPOConfig(),                              # 30 rows / 4: 7+7+7+7+2, like SB3's last partial batch
    "one-minibatch": PPOConfig(minibatches=1, epochs=3),
    "kl-stop-fires": PPOConfig(target_kl=0.01, epochs=8, lr=3e-3),   # stops after epoch 3 of 8
    "tiny-minibatches": PPOConfig(minibatches=10, epochs=2),   # 3 rows each: ddof matters most here
    "value-clip": PPOConfig(value_clip=0.5),
    "no-adv-norm": PPOConfig(normalize_advantages=False, entropy_coef=0.1),
    "no-kl-stop": PPOConfig(target_kl=None, epochs=6, lr=3e-3),
}


@pytest.mark.parametrize("case", list(CASES))
def test_update_matches_reference_step_by_step(case):
    cfg = CASES[case].model_copy(update={"device": "cpu"})
    learner, batch, stats, ref = run_both(cfg)
    # 3b: on-policy, the first minibatch's ratio is 1 (the reference sees it to rounding: its stored
    # log-probs came from a full-batch forward; Esper's is exactly 1, tests/test_ppo.py)
    torch.testing.assert_close(ref["first_ratio"], torch.ones_like(ref["first_ratio"]), rtol=0, atol=1e-12)
    assert stats.epochs_run == ref["epochs_run"]
    if case == "kl-stop-fires":
        assert 1 < stats.epochs_run < cfg.epochs
    assert stats.transitions == batch.num_transitions
    for name, key in (("policy_loss", "pg"), ("value_loss", "v"), ("entropy", "ent"), ("approx_kl", "kl"),
                      ("clip_fraction", "clip"), ("explained_variance", "explained_variance")):
        # the learner sums its reported stats in a float32 tensor: agreement to float32 rounding
        assert getattr(stats, name) == pytest.approx(ref[key], rel=1e-6, abs=1e-7), name
    assert_same_params(learner.network, ref["net"])


def test_value_coef_is_half_of_sb3_vf_coef():
    """Esper's value_coef · ½·MSE (CleanRL) is SB3's vf_coef · MSE with vf_coef = value_coef / 2."""
    cfg = PPOConfig(device="cpu")
    learner, _, _, ref = run_both(cfg, value_form="sb3", vf_coef=cfg.value_coef / 2)
    assert_same_params(learner.network, ref["net"])
    learner, _, _, ref = run_both(cfg, value_form="sb3", vf_coef=cfg.value_coef)       # SB3 with the same number
    assert max_param_diff(learner.network, ref["net"]) > 1e-5


@pytest.mark.parametrize("other", [{"adv_ddof": 0}, {"kl_rule": "sb3"}, {"value_form": "sb3"}])
def test_the_comparison_would_see_a_different_rule(other):
    """The step-by-step test is sensitive: population std for the advantages, SB3's KL rule or SB3's value loss
    at the same coefficient each move the parameters well past the tolerance."""
    cfg = PPOConfig(minibatches=10, epochs=2, target_kl=0.002, device="cpu")
    learner, _, stats, ref = run_both(cfg, **other)
    assert max_param_diff(learner.network, ref["net"]) > 1e-5


def test_masked_log_prob_and_entropy_match_maskable_categorical():
    g = torch.Generator().manual_seed(0)
    raw = torch.randn(64, A, generator=g, dtype=F64) * 3
    mask = torch.rand(64, A, generator=g) < 0.3
    mask[:, 0] = True
    mask[:8, 1:] = False                                   # only WAIT legal: entropy exactly 0
    actions = torch.multinomial(mask.double(), 1, generator=g).squeeze(-1)
    masked = masked_logits(raw, mask)                      # Esper: -inf; MaskableCategorical: -1e8
    torch.testing.assert_close(log_prob(masked, actions), ref_log_prob(raw, mask, actions), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(entropy(masked), ref_entropy(raw, mask), rtol=1e-12, atol=1e-12)
    assert torch.all(entropy(masked)[:8] == 0.0)


# --------------------------------------------------------------------------------- 4. early stopping
def test_kl_early_stop_finishes_the_epoch_where_sb3_stops_at_once():
    """A tiny target_kl: Esper (and CleanRL) stop after the first epoch's `minibatches` steps; SB3 takes the first
    step (its KL is 0 on-policy) and stops before the second, whose KL already exceeds 1.5·target_kl."""
    cfg = PPOConfig(target_kl=1e-9, epochs=4, minibatches=3, device="cpu")
    learner, _, stats, ref = run_both(cfg)
    assert stats.epochs_run == ref["epochs_run"] == 1 and ref["steps"] == 3
    assert_same_params(learner.network, ref["net"])
    _, _, _, cleanrl = run_both(cfg, kl_rule="cleanrl")
    assert cleanrl["epochs_run"] == 1 and cleanrl["steps"] == 3
    _, _, _, sb3 = run_both(cfg, kl_rule="sb3")
    assert sb3["epochs_run"] == 1 and sb3["steps"] == 1


def test_kl_rules_on_a_stop_mid_run():
    """target_kl 0.01 at lr 3e-3 on the fixed batch: Esper runs 3 of 8 epochs (15 gradient steps); CleanRL's
    last-minibatch rule would stop after 2 epochs (10 steps), SB3's per-minibatch 1.5x rule at the start of the
    third (10 steps). Esper's rule is the most lenient of the three by at most one epoch."""
    cfg = PPOConfig(target_kl=0.01, epochs=8, lr=3e-3, device="cpu")
    learner, _, stats, ref = run_both(cfg)
    assert (stats.epochs_run, ref["steps"]) == (3, 15)
    assert_same_params(learner.network, ref["net"])
    assert run_both(cfg, kl_rule="cleanrl")[3]["steps"] == 10
    assert run_both(cfg, kl_rule="sb3")[3]["steps"] == 10


def test_no_early_stop_under_a_loose_target():
    cfg = PPOConfig(target_kl=10.0, epochs=3, device="cpu")
    learner, _, stats, ref = run_both(cfg)
    assert stats.epochs_run == ref["epochs_run"] == 3


# ------------------------------------------------------------------------------------- 5. schedules
def test_lr_anneals_like_cleanrl_over_simic_total_updates():
    cfg = PPOConfig(lr=1e-3, lr_schedule="linear", total_updates=10, entropy_coef=0.02, entropy_coef_final=0.002)
    learner = PPOLearner(ActorCritic(D, A, HIDDEN), cfg, SCHEMA, SPACE, CPU)
    for u in range(10):
        learner.updates_done = u
        lr, ent = learner.schedule()
        assert lr == pytest.approx(cleanrl_lr(1e-3, u + 1, 10), rel=1e-12)          # iteration = updates_done + 1
        assert ent == pytest.approx(0.02 + u / 10 * (0.002 - 0.02), rel=1e-12)    # Esper's own: no reference anneals it
    # the horizon is simic.ppo.total_updates, not the run's length: with the default 200, a 60-update run
    # (docs/results.md) ends at 70.5% of the initial lr and entropy_coef 0.0147 (CleanRL would be at 1/60 of lr)
    learner = PPOLearner(ActorCritic(D, A, HIDDEN), PPOConfig(), SCHEMA, SPACE, CPU)
    learner.updates_done = 59
    lr, ent = learner.schedule()
    assert lr == pytest.approx(0.705e-3) and ent == pytest.approx(0.01469)
    # and Esper floors the rate at 1% of lr, where CleanRL's last iteration would be lr / num_iterations
    learner.updates_done = 199
    assert learner.schedule()[0] == pytest.approx(1e-5) and cleanrl_lr(1e-3, 200, 200) == pytest.approx(5e-6)
