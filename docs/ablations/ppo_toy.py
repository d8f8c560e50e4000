"""Learning per sample of Esper's PPO vs a Stable-Baselines3/MaskablePPO-style PPO on a cheap toy task.

    OMP_NUM_THREADS=1 .venv/bin/python docs/ablations/ppo_toy.py offset      # every variant, 5 seeds (~2 min)
    OMP_NUM_THREADS=1 .venv/bin/python docs/ablations/ppo_toy.py zero-mean   # the same on the other task
    OMP_NUM_THREADS=1 .venv/bin/python docs/ablations/ppo_toy.py offset esper sb3   # only some variants

The budget is the issue's: 60 updates of 4 envs x 20 steps (80 transitions per update), the same network
(`ActorCritic`, 128x128) and the same settings (lr 1e-3, 4 epochs, 4 minibatches, entropy 0.02, value 0.5,
grad norm 0.5, target KL 0.03, gamma 0.99, lambda 0.95). Seeds 0-4; seed s fixes the network init, the
acting RNG and the env for every variant (a paired design).

Task ("scaled stage task"): the state/mask/optimum structure of `StageTask` in tests/test_ppo.py (a stage
per slot written into the real `TensorSchema` one-hots, Tamiyo's real action mask, one rewarded action per
state) with the scales of Esper's own env: 20-step episodes that terminate (no truncation); a per-step
reward of 0.25 for the rewarded action, plus an action-independent terminal reward 6 + 0.5 N(0, 1) (like
`terminal_weight` x final accuracy), so returns are 6-11 and mostly not the policy's doing; `epoch_frac`
carries t / 20; the other features are distractors. Task "offset": fixed offsets U(0, 3) and scales
U(0.1, 2) (raw, not standardized, like the losses, accuracies and counters in Esper's observation). Task
"zero-mean": N(0, 1), as in StageTask. "const-offset" (every distractor 3 + N(0, 1)) and "scales" (N(0, 1)
times U(0.1, 2)) split "offset" into its two halves. Standardized, all four tasks are the same task.

Score: p_opt, the mean probability the final (stochastic) policy gives the rewarded action on 4000 fresh
states = the fraction of the achievable action-dependent return it gets (0.25 for a uniform policy over
the legal actions, 1 for the optimum). Also reported: the mean explained variance over the first 15
updates (how badly the critic starts).

The reference ("sb3") is written here from the math of sb3_contrib/ppo_mask/ppo_mask.py MaskablePPO.train
and stable_baselines3/common/buffers.py RolloutBuffer.compute_returns_and_advantage (read, not copied):
value loss F.mse_loss (no 1/2), KL checked per minibatch before the step against 1.5 x target_kl, constant
learning rate and entropy coefficient, and no observation normalization (a new user without VecNormalize);
"sb3-vecnorm" normalizes observations like VecNormalize(norm_reward=False): statistics updated with every
env step before the observation is normalized and stored.
"""
from __future__ import annotations

import sys
import time

import numpy as np
import torch
from scipy import stats

from esper.kasmina import KasminaConfig, schema_and_space
from esper.leyline import ADVANCEABLE_STAGES, Action, ActionKind, SeedStage
from esper.simic.config import PPOConfig
from esper.simic.learning.ppo import PPOLearner
from esper.simic.learning.rollout import TrajectoryBatch, compute_gae
from esper.tamiyo import action_mask
from esper.tamiyo.agent import PPOAgent, make_network
from esper.tamiyo.network import entropy, log_prob, sample

SCHEMA, SPACE = schema_and_space(KasminaConfig())
CPU = torch.device("cpu")
HIDDEN = (128, 128)
K, T, UPDATES, SEEDS = 4, 20, 60, [0, 1, 2, 3, 4]
TASKS = {"offset": ((0.0, 3.0), (0.1, 2.0)), "zero-mean": ((0.0, 0.0), (1.0, 1.0)),   # offset, scale: U(lo, hi)
         "const-offset": ((3.0, 3.0), (1.0, 1.0)), "scales": ((0.0, 0.0), (0.1, 2.0))}    # the two halves of "offset"
TASK = "offset"
STAGES = list(SeedStage)


class ScaledStageTask:
    """See the module docstring. Episodes last `horizon` steps and terminate."""

    def __init__(self, num_envs: int, seed: int, horizon: int = T, step_reward: float = 0.25,
                 terminal: float = 6.0) -> None:
        design = np.random.default_rng(12345)                    # the same feature scales in every run
        (o_lo, o_hi), (s_lo, s_hi) = TASKS[TASK]
        self.offset = design.uniform(o_lo, o_hi, SCHEMA.size).astype(np.float32)
        self.scale = design.uniform(s_lo, s_hi, SCHEMA.size).astype(np.float32)
        self.K, self.horizon, self.step_reward, self.terminal = num_envs, horizon, step_reward, terminal
        self.rng = np.random.default_rng(seed)
        self.stage_cols = np.array([[SCHEMA.index(f"slot{i}.stage_{s.name.lower()}") for s in STAGES]
                                    for i in range(SPACE.num_slots)])
        self.epoch_col = SCHEMA.index("epoch_frac")
        self.t = np.zeros(num_envs, np.int64)
        self.obs, self.masks, self.targets = self.draw(self.t)

    def draw(self, t: np.ndarray):
        n = len(t)
        p = np.full(len(STAGES), 0.8 / (len(STAGES) - 1))
        p[SeedStage.DORMANT] = 0.2
        stages = self.rng.choice(len(STAGES), size=(n, SPACE.num_slots), p=p)
        obs = (self.offset + self.scale * self.rng.normal(size=(n, SCHEMA.size))).astype(np.float32)
        obs[:, self.stage_cols.reshape(-1)] = 0.0
        obs[:, self.epoch_col] = t / self.horizon
        masks, targets = np.zeros((n, SPACE.n), bool), np.zeros(n, np.int64)
        for k in range(n):
            st = [SeedStage(int(s)) for s in stages[k]]
            for i, s in enumerate(st):
                obs[k, self.stage_cols[i, s]] = 1.0
            masks[k] = action_mask(st, SPACE)
            targets[k] = rewarded(st)
        return obs, masks, targets

    def step(self, actions: np.ndarray):
        rewards = self.step_reward * (actions == self.targets).astype(np.float32)
        self.t += 1
        dones = self.t >= self.horizon
        rewards[dones] += self.terminal + 0.5 * self.rng.normal(size=int(dones.sum()))
        self.t[dones] = 0
        self.obs, self.masks, self.targets = self.draw(self.t)
        return rewards, dones


def rewarded(stages: list[SeedStage]) -> int:
    for i, s in enumerate(stages):
        if s is SeedStage.DORMANT:
            return SPACE.encode(Action(ActionKind.GERMINATE, i, "attention"))
    for i, s in enumerate(stages):
        if s in ADVANCEABLE_STAGES:
            return SPACE.encode(Action(ActionKind.ADVANCE, i))
    return 0


# ----------------------------------------------------------------------------------------- Esper
def run_esper(seed: int, cfg: PPOConfig, normalize_obs: bool | str = True, value_bias: bool = False,
              steps: int = T, updates: int = UPDATES) -> dict:
    """Esper's PPOLearner and PPOAgent. `normalize_obs=False`: the normalizer stays the identity (clipped at
    ±10); "oracle": fitted once on 20,000 fresh states before training, then frozen (no timing, no drift);
    `value_bias`: before the first update the critic's output bias is set to the first batch's mean
    discounted return (a warm start of the value scale); `steps` x `updates`: the rollout length and count."""
    torch.manual_seed(seed)
    learner = PPOLearner(make_network(SCHEMA, SPACE, HIDDEN), cfg, SCHEMA, SPACE, CPU, seed=seed)
    if normalize_obs == "oracle":
        oracle = ScaledStageTask(1, 777)
        learner.normalizer.update(torch.as_tensor(oracle.draw(np.random.default_rng(3).integers(0, T, 20000))[0]))
    if normalize_obs is not True:
        learner.normalizer.update = lambda x: None                   # frozen from here on
    agent = PPOAgent(make_network(SCHEMA, SPACE, HIDDEN), SCHEMA, SPACE, CPU, seed=seed + 1)
    agent.load_weights(learner.weights())
    env = ScaledStageTask(K, seed)
    evs = []
    for u in range(updates):
        obs, masks = np.zeros((steps, K, SCHEMA.size), np.float32), np.zeros((steps, K, SPACE.n), bool)
        acts, logps = np.zeros((steps, K), np.int64), np.zeros((steps, K), np.float32)
        vals, rews = np.zeros((steps, K), np.float32), np.zeros((steps, K), np.float32)
        dones = np.zeros((steps, K), bool)
        for t in range(steps):
            ds = agent.act(env.obs, env.masks)
            obs[t], masks[t] = env.obs, env.masks
            acts[t], logps[t], vals[t] = [d.index for d in ds], [d.log_prob for d in ds], [d.value for d in ds]
            rews[t], dones[t] = env.step(acts[t])
        if value_bias and u == 0:
            zeros = torch.zeros(steps, K)
            _, mc = compute_gae(torch.as_tensor(rews), zeros, torch.as_tensor(dones), zeros[0], cfg.gamma, 1.0)
            with torch.no_grad():
                learner.network.value_head.bias.fill_(float(mc.mean()))
            agent.load_weights(learner.weights())
            vals[:] = 0.0
        stats = learner.update([TrajectoryBatch(obs, acts, masks, logps, vals, rews, dones, env.obs.copy(),
                                                agent.version)])
        evs.append(stats.explained_variance)
        agent.load_weights(learner.weights())
    return {"p_opt": p_opt(env, lambda o: learner.normalizer.normalize(o), learner.network),
            "ev15": np.mean(evs[:15 * T // steps])}


# ----------------------------------------------------------------------------- SB3-style reference
class VecNormalizeObs:
    """SB3's RunningMeanStd (count starts at 1e-4) and VecNormalize's obs transform (clip 10, eps 1e-8)."""

    def __init__(self, size: int, enabled: bool) -> None:
        self.mean, self.var, self.count, self.enabled = np.zeros(size), np.ones(size), 1e-4, enabled

    def update(self, x: np.ndarray) -> None:
        if not self.enabled:
            return
        b_mean, b_var, n = x.mean(0), x.var(0), x.shape[0]
        delta, tot = b_mean - self.mean, self.count + n
        self.mean = self.mean + delta * n / tot
        self.var = (self.var * self.count + b_var * n + delta ** 2 * self.count * n / tot) / tot
        self.count = tot

    def __call__(self, x):
        if not self.enabled:
            return torch.as_tensor(x)
        x = torch.as_tensor(x)
        return ((x - torch.as_tensor(self.mean, dtype=x.dtype)) /
                torch.sqrt(torch.as_tensor(self.var, dtype=x.dtype) + 1e-8)).clamp(-10, 10)


def run_sb3(seed: int, cfg: PPOConfig, vecnorm: bool = False, reward_norm: bool = False) -> dict:
    """MaskablePPO.train's math, constant lr and entropy coefficient. `vecnorm`: VecNormalize's observations;
    `reward_norm`: also its rewards (divided by the running std of the discounted return, clipped at 10)."""
    torch.manual_seed(seed)
    net = make_network(SCHEMA, SPACE, HIDDEN)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, eps=1e-5)
    gen = torch.Generator().manual_seed(seed)
    act_gen = torch.Generator().manual_seed(seed + 1)
    norm = VecNormalizeObs(SCHEMA.size, vecnorm)
    env = ScaledStageTask(K, seed)
    norm.update(env.obs)                                              # VecNormalize.reset updates too
    ret_rms, running = VecNormalizeObs(1, True), np.zeros(K)
    evs = []
    n, mb = K * T, K * T // cfg.minibatches
    for _ in range(UPDATES):
        obs = torch.zeros(T, K, SCHEMA.size)
        masks = torch.zeros(T, K, SPACE.n, dtype=torch.bool)
        acts, logps, vals = torch.zeros(T, K, dtype=torch.long), torch.zeros(T, K), torch.zeros(T, K)
        rews, dones = torch.zeros(T, K), torch.zeros(T, K, dtype=torch.bool)
        for t in range(T):
            o, m = norm(env.obs).float(), torch.as_tensor(env.masks)
            with torch.no_grad():
                logits, v = net(o, m)
                a = sample(logits, act_gen)
            obs[t], masks[t], acts[t], logps[t], vals[t] = o, m, a, log_prob(logits, a), v
            r, d = env.step(a.numpy())
            norm.update(env.obs)                                      # before the next obs is normalized
            if reward_norm:                                           # VecNormalize._update_reward, then scale
                running = running * cfg.gamma + r
                ret_rms.update(running[:, None])
                r = np.clip(r / np.sqrt(ret_rms.var[0] + 1e-8), -10, 10)
                running[d] = 0.0
            rews[t], dones[t] = torch.as_tensor(r), torch.as_tensor(d)
        with torch.no_grad():
            last_v = net.value(norm(env.obs).float())
        adv, ret = compute_gae(rews, vals, dones, last_v, cfg.gamma, cfg.gae_lambda)  # = RolloutBuffer's (tested)
        f = lambda x: x.reshape(n, *x.shape[2:])                     # noqa: E731
        b_obs, b_masks, b_acts, b_logp, b_adv, b_ret = map(f, (obs, masks, acts, logps, adv, ret))
        stop = False
        for _epoch in range(cfg.epochs):
            perm = torch.randperm(n, generator=gen)
            for s in range(0, n, mb):
                idx = perm[s:s + mb]
                logits, value = net(b_obs[idx], b_masks[idx])
                new_logp = log_prob(logits, b_acts[idx])
                logratio = new_logp - b_logp[idx]
                ratio = logratio.exp()
                a_mb = b_adv[idx]
                a_mb = (a_mb - a_mb.mean()) / (a_mb.std() + 1e-8)
                pg = -torch.min(a_mb * ratio, a_mb * ratio.clamp(1 - cfg.clip, 1 + cfg.clip)).mean()
                v_loss = ((value - b_ret[idx]) ** 2).mean()                  # F.mse_loss: no 1/2
                loss = pg - cfg.entropy_coef * entropy(logits).mean() + cfg.value_coef * v_loss
                with torch.no_grad():
                    kl = float(((ratio - 1) - logratio).mean())
                if cfg.target_kl is not None and kl > 1.5 * cfg.target_kl:
                    stop = True
                    break
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.max_grad_norm)
                opt.step()
            if stop:
                break
        evs.append(1 - float((b_ret - f(vals)).var() / b_ret.var()))
    return {"p_opt": p_opt(env, norm, net), "ev15": np.mean(evs[:15])}


def p_opt(env: ScaledStageTask, normalize, net) -> float:
    rng_state = env.rng.bit_generator.state
    env.rng = np.random.default_rng(999)                              # the same fresh states for every run
    obs, masks, targets = env.draw(np.random.default_rng(998).integers(0, T, 4000))
    env.rng.bit_generator.state = rng_state
    with torch.no_grad():
        logits = net.logits(normalize(torch.as_tensor(obs)).float(), torch.as_tensor(masks))
    return float(torch.softmax(logits, -1).gather(-1, torch.as_tensor(targets)[:, None]).mean())


# ------------------------------------------------------------------------------------------ main
BASE = PPOConfig(device="cpu")                                        # Esper's defaults (total_updates 200)
with_ = BASE.model_copy
VARIANTS = {
    "esper": lambda s: run_esper(s, BASE),
    "esper-nonorm": lambda s: run_esper(s, BASE, normalize_obs=False),
    "esper-oracle": lambda s: run_esper(s, BASE, normalize_obs="oracle"),
    "esper-vbias": lambda s: run_esper(s, BASE, value_bias=True),
    "esper-vc1": lambda s: run_esper(s, with_(update={"value_coef": 1.0})),          # = SB3's vf_coef 0.5
    "esper-nokl": lambda s: run_esper(s, with_(update={"target_kl": None})),
    "esper-const": lambda s: run_esper(s, with_(update={"lr_schedule": "constant",
                                                        "entropy_coef_final": BASE.entropy_coef})),
    "esper-sched60": lambda s: run_esper(s, with_(update={"total_updates": UPDATES})),
    "esper-mb2": lambda s: run_esper(s, with_(update={"minibatches": 2})),
    "esper-ep8": lambda s: run_esper(s, with_(update={"epochs": 8})),
    "esper-T40": lambda s: run_esper(s, BASE, steps=2 * T, updates=UPDATES // 2),     # same 4800 samples
    "sb3": lambda s: run_sb3(s, BASE),
    "sb3-vecnorm": lambda s: run_sb3(s, BASE, vecnorm=True),
    "sb3-vecnorm-rew": lambda s: run_sb3(s, BASE, vecnorm=True, reward_norm=True),
}


def main(task: str, names: list[str]) -> None:
    global TASK
    TASK = task
    torch.set_num_threads(1)
    print(f"task {task}: {K} envs x {T} steps x {UPDATES} updates, seeds {SEEDS}")
    results = {}
    for name in names:
        start = time.perf_counter()
        rows = [VARIANTS[name](s) for s in SEEDS]
        results[name] = rows
        p = np.array([r["p_opt"] for r in rows])
        ev = np.array([r["ev15"] for r in rows])
        print(f"{name:16s} p_opt {p.mean():.3f} ± {p.std(ddof=1):.3f}  per seed {np.round(p, 3).tolist()}  "
              f"EV(first 15) {ev.mean():+.2f}  ({time.perf_counter() - start:.0f} s)", flush=True)
    if "esper" in results:
        base = np.array([r["p_opt"] for r in results["esper"]])
        for name, rows in results.items():
            if name == "esper":
                continue
            x = np.array([r["p_opt"] for r in rows])
            d, res = x - base, stats.ttest_rel(x, base)              # two-sided paired t, n = 5 seeds
            print(f"{name:16s} - esper: {d.mean():+.3f} ± {d.std(ddof=1):.3f}  t={res.statistic:+.2f} "
                  f"p={res.pvalue:.3f}  wins {int((d > 0).sum())}/{len(d)}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "offset", sys.argv[2:] or list(VARIANTS))
