"""Offline pretraining of Tamiyo with Implicit Q-Learning (Kostrikov, Nair & Levine, 2021).

Data: the `transition` telemetry of finished runs (e.g. `python -m esper.launch --policy heuristic`),
read with `read_events(run_dir, "transition")`, every file's observation fingerprint checked against
this config's TensorSchema. In the order one training step runs:

  1. normalize obs and next obs with a RunningMeanStd fitted once on the training split's obs
  2. value, expectile regression towards the target critics (no max over actions, so no
     out-of-distribution action is ever queried):
        u = min(Q1'(s,a), Q2'(s,a)) − V(s);   L_V = mean |τ_e − 1(u < 0)| · u²      (τ_e = expectile)
  3. twin critics, one value per action of the flat space, read at the recorded action:
        y = r + γ (1 − done) V(s');           L_Q = mean (Q1(s,a) − y)² + (Q2(s,a) − y)²
  4. advantage-weighted policy extraction, over the recorded mask (illegal actions have prob 0):
        w = min(exp(β (min(Q1'(s,a), Q2'(s,a)) − V(s))), max_weight);   L_π = −mean w · log π(a|s) − α H(π(·|s))
     The entropy term (α = entropy_coef) matters for fine-tuning: the heuristic teacher is deterministic,
     so without it the actor's legal-action entropy goes to ~0 and PPO's own entropy bonus reopens
     exploration only slowly.
  5. Polyak-average the target critics: θ' ← (1 − τ) θ' + τ θ

The actor and V are the two halves of the `ActorCritic` PPO uses (same FeatureExtractor, same
layout), so `export_pretrained` writes a checkpoint that `--init-from` loads into PPO: the actor as
is, the critic warm-started from V, and the normalizer fitted here. γ is `simic.ppo.gamma`.

    python -m esper.simic.learning.iql --runs runs/heuristic-a runs/heuristic-b --out iql.pt --config configs/smoke.yaml
"""
from __future__ import annotations

import copy
import io
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import nn

from esper.leyline import ActionSpace, TensorSchema
from esper.leyline.schema import SchemaMismatchError
from esper.nissa.reader import read_events
from esper.storage import resolve_fs, write_bytes_atomic
from esper.simic.learning.checkpoint import checkpoint_payload
from esper.simic.config import IQLConfig
from esper.tamiyo.normalizer import RunningMeanStd
from esper.tamiyo.network import ActorCritic, FeatureExtractor, entropy, log_prob

PRETRAINED_KIND = "iql"


# ------------------------------------------------------------------------------------------ data
@dataclass
class OfflineData:
    """Transitions as 2-D/1-D numpy arrays (row i of every array is one transition)."""

    obs: np.ndarray            # (N, D) float32, raw
    actions: np.ndarray        # (N,) int64
    masks: np.ndarray          # (N, A) bool, the mask the action was chosen under
    rewards: np.ndarray        # (N,) float32
    dones: np.ndarray          # (N,) bool
    next_obs: np.ndarray       # (N, D) float32, raw (the episode's final obs when done)
    next_masks: np.ndarray     # (N, A) bool
    episode_ids: np.ndarray    # (N,) object: "<run>/<episode_id>#<attempt>", the unit of the held-out split
    sources: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.actions)

    def subset(self, rows: np.ndarray) -> "OfflineData":
        pick = lambda a: a[rows]  # noqa: E731
        return OfflineData(pick(self.obs), pick(self.actions), pick(self.masks), pick(self.rewards), pick(self.dones),
                           pick(self.next_obs), pick(self.next_masks), pick(self.episode_ids), list(self.sources))

    def split(self, holdout: float, seed: int = 0) -> tuple["OfflineData", "OfflineData"]:
        """(train, held-out) by whole episodes, so held-out transitions come from unseen episodes."""
        episodes = np.unique(self.episode_ids)
        n_out = int(round(holdout * len(episodes)))
        if holdout > 0 and len(episodes) > 1:
            n_out = min(max(n_out, 1), len(episodes) - 1)
        out = set(np.random.default_rng(seed).permutation(episodes)[:n_out].tolist())
        is_out = np.fromiter((e in out for e in self.episode_ids), bool, len(self))
        return self.subset(np.flatnonzero(~is_out)), self.subset(np.flatnonzero(is_out))


def _fixed_list(table: pa.Table, name: str, width: int, dtype: type) -> np.ndarray:
    """A fixed-size-list column as one (N, width) array: flatten the child values, reshape (no Python loop)."""
    col = table.column(name)
    if col.null_count:
        raise ValueError(f"transition column {name!r} has {col.null_count} null rows")
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if not pa.types.is_fixed_size_list(arr.type):      # e.g. a variable-size list from another reader
        lengths = pc.list_value_length(arr)
        if len(arr) and (pc.min(lengths).as_py() != width or pc.max(lengths).as_py() != width):
            raise ValueError(f"transition column {name!r} has rows that are not {width} long")
    values = arr.flatten().to_numpy(zero_copy_only=False)
    if values.size != len(arr) * width:
        raise ValueError(f"transition column {name!r} holds {values.size} values for {len(arr)} rows, "
                         f"expected {width} per row")
    return values.reshape(len(arr), width).astype(dtype, copy=False)


def _column(table: pa.Table, name: str, dtype: type) -> np.ndarray:
    col = table.column(name)
    if col.null_count:
        raise ValueError(f"transition column {name!r} has {col.null_count} null rows")
    return col.to_numpy().astype(dtype, copy=False)


def table_to_data(table: pa.Table, schema: TensorSchema, space: ActionSpace, source: str = "") -> OfflineData:
    """Convert a `transition` table to arrays, checking its widths.

    Works on any Arrow table with the transition columns (read_events, a Parquet export, a Ray Data
    batch); only `load_transitions` checks the files' fingerprint metadata, which such tables may lack.
    """
    obs_size = getattr(table.schema.field("obs").type, "list_size", schema.size)      # fixed-size lists say
    mask_size = getattr(table.schema.field("mask").type, "list_size", space.n)
    if obs_size != schema.size:
        raise SchemaMismatchError(f"{source or 'transitions'}: observations have {obs_size} features, "
                                  f"this config's schema has {schema.size} (fingerprint {schema.fingerprint})")
    if mask_size != space.n:
        raise ValueError(f"{source or 'transitions'}: masks cover {mask_size} actions, this config's "
                         f"action space has {space.n} ({space.describe()})")
    episode = [f"{source}/{e}#{a}" for e, a in zip(table.column("episode_id").to_pylist(),
                                                    table.column("attempt").to_pylist())]
    data = OfflineData(
        obs=_fixed_list(table, "obs", schema.size, np.float32),
        actions=_column(table, "action", np.int64),
        masks=_fixed_list(table, "mask", space.n, bool),
        rewards=_column(table, "reward", np.float32),
        dones=_column(table, "done", bool),
        next_obs=_fixed_list(table, "next_obs", schema.size, np.float32),
        next_masks=_fixed_list(table, "next_mask", space.n, bool),
        episode_ids=np.array(episode, dtype=object),
        sources=[source] if source else [],
    )
    if len(data) and ((data.actions < 0) | (data.actions >= space.n)).any():
        raise ValueError(f"{source or 'transitions'}: action indices outside [0, {space.n})")
    if len(data) and not data.masks[np.arange(len(data)), data.actions].all():
        bad = int((~data.masks[np.arange(len(data)), data.actions]).sum())
        raise ValueError(f"{source or 'transitions'}: {bad} recorded actions are illegal under their own mask")
    return data


def load_transitions(run_dirs: Sequence[str], schema: TensorSchema, space: ActionSpace) -> OfflineData:
    """Every transition of one or several runs. Each file's obs fingerprint must equal `schema`'s."""
    if isinstance(run_dirs, str):
        run_dirs = [run_dirs]
    parts = []
    for run_dir in run_dirs:
        table = read_events(run_dir, "transition", obs_fingerprint=schema.fingerprint)
        if table.num_rows == 0:
            raise ValueError(f"{run_dir}: no transition telemetry (expected files under "
                             f"{run_dir.rstrip('/')}/telemetry/transition/; was it run with nissa.profile=minimal?)")
        parts.append(table_to_data(table, schema, space, source=run_dir))
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
    return OfflineData(cat("obs"), cat("actions"), cat("masks"), cat("rewards"), cat("dones"), cat("next_obs"),
                       cat("next_masks"), cat("episode_ids"), [s for p in parts for s in p.sources])


# -------------------------------------------------------------------------------------- networks
class QNetwork(nn.Module):
    """Q(s, ·): the PPO FeatureExtractor and one output per action of the flat action space."""

    def __init__(self, obs_size: int, num_actions: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.features = FeatureExtractor(obs_size, hidden)
        self.head = nn.Linear(self.features.out_features, num_actions)
        nn.init.orthogonal_(self.head.weight, 1.0)
        nn.init.zeros_(self.head.bias)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(obs))

    def at(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self(obs).gather(-1, actions.unsqueeze(-1)).squeeze(-1)


@dataclass
class IQLStats:
    step: int
    q_loss: float
    v_loss: float
    actor_loss: float
    nll: float               # −mean log π(a|s) on the batch: how well the actor imitates (unweighted)
    mean_weight: float
    mean_v: float
    entropy: float           # mean entropy of π over the legal actions (nats)

    def line(self) -> str:
        return (f"step {self.step:6d}  q {self.q_loss:9.4f}  v {self.v_loss:8.4f}  actor {self.actor_loss:8.4f}  "
                f"nll {self.nll:6.3f}  w {self.mean_weight:6.2f}  V {self.mean_v:7.3f}  H {self.entropy:5.3f}")


class IQL:
    """The learner: an ActorCritic (actor = policy, critic = V) plus twin Q networks and their targets."""

    def __init__(self, obs_size: int, num_actions: int, hidden: Sequence[int], cfg: IQLConfig, gamma: float,
                 device: torch.device | str = "cpu", seed: int = 0) -> None:
        self.cfg, self.gamma, self.device = cfg, gamma, torch.device(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.ac = ActorCritic(obs_size, num_actions, hidden).to(self.device)
            self.q1 = QNetwork(obs_size, num_actions, hidden).to(self.device)
            self.q2 = QNetwork(obs_size, num_actions, hidden).to(self.device)
        self.q1_target, self.q2_target = copy.deepcopy(self.q1), copy.deepcopy(self.q2)
        for p in [*self.q1_target.parameters(), *self.q2_target.parameters()]:
            p.requires_grad_(False)
        self.normalizer = RunningMeanStd(obs_size, self.device)
        ac = self.ac
        self.actor_opt = torch.optim.Adam([*ac.actor_features.parameters(), *ac.policy_head.parameters()], lr=cfg.lr)
        self.value_opt = torch.optim.Adam([*ac.critic_features.parameters(), *ac.value_head.parameters()], lr=cfg.lr)
        self.q_opt = torch.optim.Adam([*self.q1.parameters(), *self.q2.parameters()], lr=cfg.lr)
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.steps_done = 0

    # ---- losses (each a function of one minibatch of normalized tensors) ----
    def target_q(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.min(self.q1_target.at(obs, actions), self.q2_target.at(obs, actions))

    def value_loss(self, obs: torch.Tensor, q_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = self.ac.value(obs)
        u = q_t - v
        weight = (self.cfg.expectile - (u < 0).float()).abs()
        return (weight * u.square()).mean(), v

    def q_loss(self, obs: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, dones: torch.Tensor,
               next_obs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            y = rewards + self.gamma * (1.0 - dones) * self.ac.value(next_obs)
        return (self.q1.at(obs, actions) - y).square().mean() + (self.q2.at(obs, actions) - y).square().mean()

    def actor_loss(self, obs: torch.Tensor, masks: torch.Tensor, actions: torch.Tensor, q_t: torch.Tensor,
                   v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, nll, mean weight, mean entropy over the legal actions)."""
        weight = torch.exp(self.cfg.temperature * (q_t - v.detach())).clamp(max=self.cfg.max_weight)
        logits = self.ac.logits(obs, masks)
        logp = log_prob(logits, actions)
        ent = entropy(logits).mean()
        loss = -(weight * logp).mean() - self.cfg.entropy_coef * ent
        return loss, -logp.mean().detach(), weight.mean().detach(), ent.detach()

    @torch.no_grad()
    def _polyak(self) -> None:
        tau = self.cfg.tau
        for net, target in ((self.q1, self.q1_target), (self.q2, self.q2_target)):
            for p, tp in zip(net.parameters(), target.parameters()):
                tp.lerp_(p, tau)

    def step(self, obs, actions, masks, rewards, dones, next_obs) -> torch.Tensor:
        """One IQL step on a minibatch (already normalized); returns the stats as one device tensor."""
        q_t = self.target_q(obs, actions)
        v_loss, v = self.value_loss(obs, q_t)
        self.value_opt.zero_grad(set_to_none=True)
        v_loss.backward()
        self.value_opt.step()

        q_loss = self.q_loss(obs, actions, rewards, dones, next_obs)
        self.q_opt.zero_grad(set_to_none=True)
        q_loss.backward()
        self.q_opt.step()

        a_loss, nll, w, ent = self.actor_loss(obs, masks, actions, q_t, v)
        self.actor_opt.zero_grad(set_to_none=True)
        a_loss.backward()
        self.actor_opt.step()

        self._polyak()
        self.steps_done += 1
        return torch.stack([q_loss.detach(), v_loss.detach(), a_loss.detach(), nll, w, v.detach().mean(), ent])

    # ---- training loop ----
    def fit_normalizer(self, data: OfflineData) -> None:
        self.normalizer.update(torch.as_tensor(data.obs, device=self.device))

    def tensors(self, data: OfflineData) -> dict[str, torch.Tensor]:
        dev, norm = self.device, self.normalizer.normalize
        return {"obs": norm(torch.as_tensor(data.obs, device=dev)),
                "actions": torch.as_tensor(data.actions, device=dev),
                "masks": torch.as_tensor(data.masks, device=dev),
                "rewards": torch.as_tensor(data.rewards, device=dev),
                "dones": torch.as_tensor(data.dones, device=dev).float(),
                "next_obs": norm(torch.as_tensor(data.next_obs, device=dev))}

    def train(self, data: OfflineData, steps: int | None = None, log_every: int = 200,
              log: Callable[[str], None] | None = print) -> list[IQLStats]:
        """Fit the normalizer on `data` (once, if not yet fitted), then run `steps` IQL steps on it.

        Returns one IQLStats per `log_every` steps: the mean of that window's minibatch losses.
        """
        if len(data) == 0:
            raise ValueError("no transitions to train on")
        if float(self.normalizer.count) == 0:
            self.fit_normalizer(data)
        steps = steps or self.cfg.steps
        t = self.tensors(data)
        n, bs = len(data), min(self.cfg.batch_size, len(data))
        history: list[IQLStats] = []
        window = torch.zeros(7, device=self.device)
        count, start = 0, time.perf_counter()
        for i in range(1, steps + 1):
            idx = torch.randint(0, n, (bs,), generator=self.generator).to(self.device)
            window += self.step(t["obs"][idx], t["actions"][idx], t["masks"][idx], t["rewards"][idx],
                                t["dones"][idx], t["next_obs"][idx])
            count += 1
            if i % log_every == 0 or i == steps:
                stats = IQLStats(self.steps_done, *(window / count).tolist())
                history.append(stats)
                if log is not None:
                    log(f"[iql] {stats.line()}  ({time.perf_counter() - start:.1f}s)")
                window.zero_()
                count = 0
        return history

    # ---- evaluation ----
    @torch.no_grad()
    def action_probs(self, obs_raw: np.ndarray | torch.Tensor, masks: np.ndarray | torch.Tensor) -> torch.Tensor:
        o = self.normalizer.normalize(torch.as_tensor(obs_raw, device=self.device))
        return torch.softmax(self.ac.logits(o, torch.as_tensor(masks, device=self.device)), -1)

    @torch.no_grad()
    def agreement(self, data: OfflineData, majority_action: int | None = None) -> dict:
        """How often the greedy legal action equals the recorded one, beside chance and a majority baseline."""
        return action_agreement(self.action_probs(data.obs, data.masks).cpu().numpy(), data, majority_action)


def action_agreement(probs: np.ndarray, data: OfflineData, majority_action: int | None = None) -> dict:
    greedy = probs.argmax(-1)
    hit = greedy == data.actions
    legal = data.masks.sum(-1)
    out = {"transitions": int(len(data)), "agreement": float(hit.mean()) if len(data) else float("nan"),
           "chance": float((1.0 / legal).mean()) if len(data) else float("nan")}
    non_wait = data.actions != 0
    out["agreement_non_wait"] = float(hit[non_wait].mean()) if non_wait.any() else float("nan")
    out["non_wait"] = int(non_wait.sum())
    # How stochastic the policy is, beside the most it could be (uniform over the legal actions).
    # log p is a valid masked-logit tensor (illegal actions: −inf), so the PPO entropy function applies.
    out["entropy"] = float(entropy(torch.from_numpy(probs).log()).mean()) if len(data) else float("nan")
    out["max_entropy"] = float(np.log(legal).mean()) if len(data) else float("nan")
    if majority_action is not None:
        out["majority_action"] = int(majority_action)
        out["majority_baseline"] = float((data.actions == majority_action).mean()) if len(data) else float("nan")
    return out


# ---------------------------------------------------------------------------------------- export
def pretrained_payload(iql: IQL, schema: TensorSchema, space: ActionSpace, *, config: dict | None = None,
                       extra: dict | None = None) -> dict:
    """The checkpoint `--init-from` loads: esper.simic.learning.checkpoint's format with a version-0 learner state
    holding only the ActorCritic (actor from IQL's policy, critic from IQL's V) and the normalizer,
    plus `kind: "iql"` and the IQL critics (for inspection or continued offline training)."""
    cpu = lambda m: {k: v.detach().cpu().clone() for k, v in m.state_dict().items()}  # noqa: E731
    learner = {"network": cpu(iql.ac), "normalizer": iql.normalizer.state_dict(), "version": 0,
               "hidden": list(iql.ac.hidden)}
    critics = {"q1": cpu(iql.q1), "q2": cpu(iql.q2), "q1_target": cpu(iql.q1_target),
               "q2_target": cpu(iql.q2_target), "steps_done": iql.steps_done}
    return checkpoint_payload(learner, schema=schema, space=space, config=config, extra=extra,
                              kind=PRETRAINED_KIND, iql=critics)


def export_pretrained(path: str, iql: IQL, schema: TensorSchema, space: ActionSpace, *, config: dict | None = None,
                      extra: dict | None = None) -> str:
    """Write the checkpoint atomically to `path` (local, NFS, s3://, gs://). Returns the path."""
    buf = io.BytesIO()
    torch.save(pretrained_payload(iql, schema, space, config=config, extra=extra), buf)
    fs, p = resolve_fs(path)
    write_bytes_atomic(fs, p, buf.getvalue())
    return path
