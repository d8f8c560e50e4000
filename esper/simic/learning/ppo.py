"""PPO for Tamiyo, in the order it runs (after CleanRL's single-file PPO):

  0. first update only, with `value_warm_start`: the critic's output bias := the batch's mean return
  1. normalize observations with the normalizer the runners used (updated only after step 6)
  2. values of every state and of the bootstrap state from the current critic
  3. GAE(λ) advantages and returns
  3b. on-policy rows (batch version == ours): recompute the behaviour log-probs with this network, in
     the first epoch's minibatches, so the first step's ratio is exactly 1 (see `_on_policy_logps`)
  4. for `epochs` passes over shuffled minibatches:
       ratio = exp(logπ(a|s) − logπ_behaviour(a|s))          (exactly 1 before the first step, on-policy)
       policy loss  = mean max(−A·ratio, −A·clip(ratio, 1±ε))    (A normalized per minibatch)
       value loss   = ½ mean max((V−R)², (V_old + clip(V−V_old, ±ε_v) − R)²)
       loss = policy − c_ent·entropy + c_v·value;  clip grad norm;  Adam step
     stop early once the epoch's mean approx-KL exceeds target_kl
  5. report explained variance, approx KL, clip fraction, entropy, losses
  6. update the observation normalizer; publish version + 1
Learning rate and entropy coefficient anneal linearly over `total_updates`.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from esper.leyline import ActionSpace, TensorSchema
from esper.tamiyo.agent import PolicyWeights, export_weights
from esper.simic.config import PPOConfig
from esper.tamiyo.normalizer import RunningMeanStd
from esper.simic.learning.rollout import TrajectoryBatch, compute_gae
from esper.tamiyo.network import ActorCritic, entropy, log_prob


@dataclass(kw_only=True)
class UpdateStats:
    policy_version: int
    transitions: int
    dropped_stale: int
    policy_loss: float
    value_loss: float
    entropy: float
    approx_kl: float
    clip_fraction: float
    explained_variance: float
    learning_rate: float
    entropy_coef: float
    epochs_run: int
    mean_policy_lag: float
    update_seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


class PPOLearner:
    def __init__(self, network: ActorCritic, cfg: PPOConfig, schema: TensorSchema, space: ActionSpace,
                 device: torch.device, seed: int = 0) -> None:
        self.network = network.to(device)
        self.cfg, self.schema, self.space, self.device = cfg, schema, space, device
        self.normalizer = RunningMeanStd(schema.size, device)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=cfg.lr, eps=1e-5)
        self.version = 0
        self.updates_done = 0
        self.generator = torch.Generator(device="cpu").manual_seed(seed)

    def weights(self) -> PolicyWeights:
        return export_weights(self.network, self.normalizer, self.version, self.schema, self.space)

    def schedule(self) -> tuple[float, float]:
        """(learning rate, entropy coefficient) for the next update."""
        frac = min(self.updates_done / self.cfg.total_updates, 1.0)
        lr = self.cfg.lr * (1.0 - frac) if self.cfg.lr_schedule == "linear" else self.cfg.lr
        ent = self.cfg.entropy_coef + frac * (self.cfg.entropy_coef_final - self.cfg.entropy_coef)
        return max(lr, self.cfg.lr * 0.01), ent

    def update(self, batches: list[TrajectoryBatch], max_policy_lag: int | None = None) -> UpdateStats:
        start = time.perf_counter()
        cfg, dev = self.cfg, self.device
        lags = [self.version - b.policy_version for b in batches]
        keep = [max_policy_lag is None or lag <= max_policy_lag for lag in lags]
        fresh = [b for b, k in zip(batches, keep) if k]
        dropped = sum(b.num_transitions for b in batches) - sum(b.num_transitions for b in fresh)
        if not fresh:
            raise ValueError(f"every trajectory batch is older than max_policy_lag={max_policy_lag} (lags {lags})")
        t = {name: [torch.tensor(getattr(b, name), device=dev) for b in fresh]   # copies: Ray hands out read-only arrays
             for name in ("obs", "actions", "masks", "log_probs", "rewards", "dones", "last_obs")}
        obs_raw = torch.cat([o.reshape(-1, o.shape[-1]) for o in t["obs"]])
        if cfg.value_warm_start and self.updates_done == 0:
            self._warm_start_value(t["rewards"], t["dones"])

        # 1-3: normalize, values, GAE (per batch: each has its own time axis)
        advs, rets, vals = [], [], []
        with torch.no_grad():
            for i in range(len(fresh)):
                o = self.normalizer.normalize(t["obs"][i])
                v = self.network.value(o)
                last_v = self.network.value(self.normalizer.normalize(t["last_obs"][i]))
                a, r = compute_gae(t["rewards"][i], v, t["dones"][i], last_v, cfg.gamma, cfg.gae_lambda)
                advs.append(a.reshape(-1))
                rets.append(r.reshape(-1))
                vals.append(v.reshape(-1))
        flat = lambda name: torch.cat([x.reshape(-1, *x.shape[2:]) for x in t[name]])  # noqa: E731
        obs = self.normalizer.normalize(obs_raw)
        actions, masks, old_logp = flat("actions"), flat("masks"), flat("log_probs")
        on_policy = torch.cat([torch.full((b.num_transitions,), self.version == b.policy_version, device=dev)
                               for b in fresh])
        any_on_policy = any(self.version == b.policy_version for b in fresh)
        advantages, returns, old_values = torch.cat(advs), torch.cat(rets), torch.cat(vals)

        # 4: optimise
        lr, ent_coef = self.schedule()
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        n = len(actions)
        mb_size = max(1, n // cfg.minibatches)
        sums = torch.zeros(5, device=dev)         # pg, v, ent, kl, clip: summed on device, read once
        kl_sum = torch.zeros((), device=dev)
        steps = epochs_run = 0
        for _ in range(cfg.epochs):
            epochs_run += 1
            perm = torch.randperm(n, generator=self.generator).to(dev)
            if epochs_run == 1 and any_on_policy:
                old_logp = self._on_policy_logps(obs, masks, actions, old_logp, on_policy, perm, mb_size)
            kl_sum.zero_()
            epoch_steps = 0
            for s in range(0, n, mb_size):
                idx = perm[s:s + mb_size]
                logits, value = self.network(obs[idx], masks[idx])
                new_logp = log_prob(logits, actions[idx])
                logratio = new_logp - old_logp[idx]
                ratio = logratio.exp()
                with torch.no_grad():
                    kl = ((ratio - 1) - logratio).mean()
                    clipped = ((ratio - 1.0).abs() > cfg.clip).float().mean()
                adv = advantages[idx]
                if cfg.normalize_advantages and len(idx) > 1:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip, 1 + cfg.clip)).mean()
                if cfg.value_clip is not None:
                    v_clip = old_values[idx] + (value - old_values[idx]).clamp(-cfg.value_clip, cfg.value_clip)
                    v_loss = 0.5 * torch.max((value - returns[idx]) ** 2, (v_clip - returns[idx]) ** 2).mean()
                else:
                    v_loss = 0.5 * ((value - returns[idx]) ** 2).mean()
                ent = entropy(logits).mean()
                loss = pg_loss - ent_coef * ent + cfg.value_coef * v_loss
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.network.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                sums += torch.stack([pg_loss.detach(), v_loss.detach(), ent.detach(), kl, clipped])
                kl_sum += kl
                steps += 1
                epoch_steps += 1
            if cfg.target_kl is not None and float(kl_sum) / epoch_steps > cfg.target_kl:   # one sync per epoch
                break

        # 5-6: report, normalizer, new version
        var_ret = float(returns.var()) if n > 1 else 0.0
        explained = 1.0 - float((returns - old_values).var()) / var_ret if var_ret > 0 else float("nan")
        self.normalizer.update(obs_raw)
        self.version += 1
        self.updates_done += 1
        pg, vl, en, kl, cf = (sums / steps).tolist()
        return UpdateStats(policy_version=self.version, transitions=n, dropped_stale=dropped, policy_loss=pg,
                           value_loss=vl, entropy=en, approx_kl=kl, clip_fraction=cf, explained_variance=explained,
                           learning_rate=lr, entropy_coef=ent_coef, epochs_run=epochs_run,
                           mean_policy_lag=float(np.mean([lag for lag, k in zip(lags, keep) if k])),
                           update_seconds=time.perf_counter() - start)

    @torch.no_grad()
    def _warm_start_value(self, rewards: list[torch.Tensor], dones: list[torch.Tensor]) -> None:
        """The critic's output bias := the mean discounted reward-to-go of the first batch (no bootstrap)."""
        returns = []
        for r, d in zip(rewards, dones):
            zeros = torch.zeros_like(r)
            _, ret = compute_gae(r, zeros, d, zeros[0], self.cfg.gamma, 1.0)
            returns.append(ret.reshape(-1))
        self.network.value_head.bias.fill_(float(torch.cat(returns).mean()))

    @torch.no_grad()
    def _on_policy_logps(self, obs: torch.Tensor, masks: torch.Tensor, actions: torch.Tensor, old_logp: torch.Tensor,
                         on_policy: torch.Tensor, perm: torch.Tensor, mb_size: int) -> torch.Tensor:
        """Behaviour log-probs of on-policy rows, recomputed minibatch by minibatch in the first epoch's order.

        Those rows were sampled from exactly this network and normalizer, so this changes nothing but
        float rounding: a matmul's result depends on the batch size (CPU MKL included) and the device,
        so the runner's log-prob (K rows at a time) can differ in the last bit from the learner's (a
        minibatch). Recomputed with the same shapes as the first gradient step's forward, that step's
        ratio is exactly 1 (the sync-mode invariant, docs/architecture.md). A row whose stored log-prob is not
        within rounding of ours was not sampled from this policy after all and keeps its stored value.
        """
        out = old_logp.clone()
        for s in range(0, len(perm), mb_size):
            idx = perm[s:s + mb_size]
            mine = log_prob(self.network.logits(obs[idx], masks[idx]), actions[idx])
            same = on_policy[idx] & torch.isclose(mine, old_logp[idx], rtol=1e-4, atol=1e-4)
            out[idx] = torch.where(same, mine, old_logp[idx])
        return out

    # ---------------------------------------------------------------------------- checkpoint state
    def state_dict(self) -> dict:
        return {"network": self.network.state_dict(), "optimizer": self.optimizer.state_dict(),
                "normalizer": self.normalizer.state_dict(), "version": self.version,
                "updates_done": self.updates_done, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.normalizer.load_state_dict(state["normalizer"])
        self.version = int(state["version"])
        self.updates_done = int(state["updates_done"])
        self.generator.set_state(state["generator"])
