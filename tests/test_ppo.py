"""PPO for Tamiyo: masked distributions, normalizer, GAE, learning on a stand-in task, the in-process
trainer on the built-in task, the exact on-policy ratio, checkpoints and weight loading.

Everything runs on CPU, seeded. Run with OMP_NUM_THREADS=1 on small machines.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import esper.simic.learning.ppo as ppo_module
from esper.config import load_config
from esper.kasmina import KasminaConfig
from esper.leyline import (ADVANCEABLE_STAGES, BLUEPRINT_IDS, Action, ActionKind, ActionSpace, SchemaMismatchError,
                           SeedStage, TensorSchema)
from esper.tamiyo.agent import PPOAgent, make_network
from esper.simic.learning.checkpoint import (CheckpointError, latest_version, load_checkpoint, reserve_versions,
                                    reserved_version, save_checkpoint)
from esper.simic.config import PPOConfig
from esper.kasmina import schema_and_space
from esper.tamiyo.normalizer import RunningMeanStd
from esper.simic.learning.ppo import PPOLearner
from esper.simic.learning.rollout import TrajectoryBatch, compute_gae
from esper.simic.learning.trainer import InProcessTrainer
from esper.tamiyo import action_mask
from esper.tamiyo.network import entropy, log_prob, masked_logits, sample
from tiny import overrides

CPU = torch.device("cpu")
SCHEMA = schema_and_space(KasminaConfig())[0]
SPACE = ActionSpace(3, BLUEPRINT_IDS)
HIDDEN = (128, 128)


# ----------------------------------------------------------------------------------- stand-in env
class StageTask:
    """A stand-in for the morphogenetic env with the real spaces, a known optimum and fast steps.

    Each state draws a stage per slot, written into the schema's `slotN.stage_*` one-hots; every
    other feature is Gaussian noise (distractors). The mask is Tamiyo's real mask for those stages
    (so it varies per state and always holds WAIT). Reward 1 for the rewarded action, else 0:
    GERMINATE(first DORMANT slot, 'attention') if a slot is dormant, otherwise ADVANCE(first
    advanceable slot) if there is one, otherwise WAIT. It is always legal. Episodes last `horizon`
    steps, so the optimal return is `horizon`.
    """

    STAGES = list(SeedStage)

    def __init__(self, num_envs: int, horizon: int = 3, seed: int = 0) -> None:
        self.K, self.horizon = num_envs, horizon
        self.rng = np.random.default_rng(seed)
        self.stage_cols = np.array([[SCHEMA.index(f"slot{i}.stage_{s.name.lower()}") for s in self.STAGES]
                                    for i in range(SPACE.num_slots)])
        self.t = np.zeros(num_envs, np.int64)
        self.illegal_actions = 0
        self.obs, self.masks, self.targets = self.draw(num_envs)

    def draw(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = np.full(len(self.STAGES), 0.8 / (len(self.STAGES) - 1))
        p[SeedStage.DORMANT] = 0.2
        stages = self.rng.choice(len(self.STAGES), size=(n, SPACE.num_slots), p=p)
        obs = self.rng.normal(size=(n, SCHEMA.size)).astype(np.float32)
        obs[:, self.stage_cols.reshape(-1)] = 0.0
        masks = np.zeros((n, SPACE.n), bool)
        targets = np.zeros(n, np.int64)
        for k in range(n):
            st = [SeedStage(int(s)) for s in stages[k]]
            for i, s in enumerate(st):
                obs[k, self.stage_cols[i, s]] = 1.0
            masks[k] = action_mask(st, SPACE)
            targets[k] = self.rewarded(st)
        return obs, masks, targets

    @staticmethod
    def rewarded(stages: list[SeedStage]) -> int:
        for i, s in enumerate(stages):
            if s is SeedStage.DORMANT:
                return SPACE.encode(Action(ActionKind.GERMINATE, i, "attention"))
        for i, s in enumerate(stages):
            if s in ADVANCEABLE_STAGES:
                return SPACE.encode(Action(ActionKind.ADVANCE, i))
        return 0

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.illegal_actions += int((~self.masks[np.arange(self.K), actions]).sum())
        rewards = (actions == self.targets).astype(np.float32)
        self.t += 1
        dones = self.t >= self.horizon
        self.t[dones] = 0
        self.obs, self.masks, self.targets = self.draw(self.K)
        return rewards, dones


def collect(agent: PPOAgent, env: StageTask, steps: int) -> TrajectoryBatch:
    K, D, A = env.K, SCHEMA.size, SPACE.n
    obs, masks = np.zeros((steps, K, D), np.float32), np.zeros((steps, K, A), bool)
    actions, logps = np.zeros((steps, K), np.int64), np.zeros((steps, K), np.float32)
    values, rewards, dones = np.zeros((steps, K), np.float32), np.zeros((steps, K), np.float32), np.zeros((steps, K), bool)
    for t in range(steps):
        decisions = agent.act(env.obs, env.masks)
        obs[t], masks[t] = env.obs, env.masks
        actions[t] = [d.index for d in decisions]
        logps[t] = [d.log_prob for d in decisions]
        values[t] = [d.value for d in decisions]
        rewards[t], dones[t] = env.step(actions[t])
    return TrajectoryBatch(obs, actions, masks, logps, values, rewards, dones, env.obs.copy(), agent.version)


def make_pair(cfg: PPOConfig | None = None, seed: int = 0) -> tuple[PPOLearner, PPOAgent]:
    """A learner and an acting agent (separate network copies) synced to the learner's weights."""
    torch.manual_seed(seed)
    learner = PPOLearner(make_network(SCHEMA, SPACE, HIDDEN), cfg or PPOConfig(), SCHEMA, SPACE, CPU, seed=seed)
    agent = PPOAgent(make_network(SCHEMA, SPACE, HIDDEN), SCHEMA, SPACE, CPU, seed=seed + 1)
    agent.load_weights(learner.weights())
    return learner, agent


def assert_synced(agent: PPOAgent, learner: PPOLearner) -> None:
    assert agent.version == learner.version
    a, b = agent.network.state_dict(), learner.network.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for k, v in learner.normalizer.state_dict().items():
        assert torch.equal(agent.normalizer.state_dict()[k], v), k


# --------------------------------------------------------------------------------------- 1. masks
def test_masked_sampling_never_illegal_and_zero_probability():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(256, SPACE.n, generator=g) * 3
    mask = torch.rand(256, SPACE.n, generator=g) < 0.3
    mask[:, 0] = True                                    # WAIT is always legal
    masked = masked_logits(logits, mask)
    probs = torch.softmax(masked, -1)
    assert torch.all(probs[~mask] == 0.0)
    assert torch.allclose(probs.sum(-1), torch.ones(256, dtype=probs.dtype))
    for _ in range(200):
        a = sample(masked, g)
        assert bool(mask[torch.arange(256), a].all())
    # log-probs of legal actions are finite and match the renormalized distribution
    legal_a = torch.multinomial(mask.float(), 1, generator=g).squeeze(-1)
    lp = log_prob(masked, legal_a)
    assert torch.isfinite(lp).all()
    ref = torch.stack([torch.log_softmax(logits[i][mask[i]], -1)[mask[i][:legal_a[i]].sum()] for i in range(256)])
    torch.testing.assert_close(lp, ref)


def test_masked_entropy_is_legal_entropy_and_finite_when_mostly_masked():
    g = torch.Generator().manual_seed(1)
    logits = (torch.randn(512, SPACE.n, generator=g) * 4).requires_grad_()
    mask = torch.zeros(512, SPACE.n, dtype=torch.bool)
    mask[:, 0] = True
    mask[256:] |= torch.rand(256, SPACE.n, generator=g) < 0.1       # rows 0..255: only WAIT is legal
    ent = entropy(masked_logits(logits, mask))
    assert torch.isfinite(ent).all()
    assert torch.all(ent[:256] == 0.0)
    ref = torch.stack([-(torch.softmax(logits[i][mask[i]], -1) * torch.log_softmax(logits[i][mask[i]], -1)).sum()
                       for i in range(512)])
    torch.testing.assert_close(ent, ref)
    ent.sum().backward()                                 # the entropy bonus's gradient is finite too
    assert torch.isfinite(logits.grad).all()
    assert torch.all(logits.grad[~mask] == 0.0)


def test_network_masks_illegal_actions():
    torch.manual_seed(0)
    net = make_network(SCHEMA, SPACE, HIDDEN)
    env = StageTask(64, seed=3)
    logits, values = net(torch.as_tensor(env.obs), torch.as_tensor(env.masks))
    assert torch.all(torch.softmax(logits, -1)[~torch.as_tensor(env.masks)] == 0.0)
    assert values.shape == (64,) and torch.isfinite(values).all()


# ---------------------------------------------------------------------------------- 2. normalizer
def _devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", _devices())
def test_running_mean_std_matches_numpy(device):
    rng = np.random.default_rng(0)
    rms = RunningMeanStd(5, device)
    seen = []
    for n in (1, 7, 100, 3, 250):
        x = rng.normal(loc=[0, 1, -2, 10, 0.5], scale=[1, 2, 0.1, 5, 3], size=(n, 5)).astype(np.float32)
        rms.update(torch.as_tensor(x, device=device))
        seen.append(x.astype(np.float64))
        allx = np.concatenate(seen)
        np.testing.assert_allclose(rms.mean.cpu().numpy(), allx.mean(0), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(rms.var.cpu().numpy(), allx.var(0), rtol=1e-9, atol=1e-12)
        assert float(rms.count) == len(allx)
    rms.update(torch.zeros(0, 5, device=device))                    # an empty batch changes nothing
    assert float(rms.count) == len(allx)
    for t in (rms.mean, rms.var, rms.count):
        assert t.device.type == device
    x = torch.as_tensor(allx[:10], dtype=torch.float32, device=device)
    out = rms.normalize(x)
    assert out.device.type == device and out.dtype == torch.float32
    ref = (allx[:10] - allx.mean(0)) / np.sqrt(allx.var(0) + 1e-8)
    np.testing.assert_allclose(out.cpu().numpy(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", _devices())
def test_running_mean_std_state_dict_and_clip(device):
    rms = RunningMeanStd(3, device, clip=5.0)
    rms.update(torch.randn(50, 3, generator=torch.Generator().manual_seed(0)).to(device))
    state = rms.state_dict()
    assert all(v.device.type == "cpu" for v in state.values())
    other = RunningMeanStd(3, device, clip=5.0)
    other.load_state_dict(state)
    for a, b in zip((rms.mean, rms.var, rms.count), (other.mean, other.var, other.count)):
        assert torch.equal(a, b) and b.device.type == device
    with pytest.raises(ValueError, match="3"):
        RunningMeanStd(4).load_state_dict(state)
    big = torch.tensor([[1e6, -1e6, 0.0]], device=device)
    out = other.normalize(big)
    assert float(out[0, 0]) == 5.0 and float(out[0, 1]) == -5.0
    assert torch.isfinite(out).all()


# ---------------------------------------------------------------------------------------- 3. GAE
def gae_reference(rewards, values, dones, last_values, gamma, lam):
    """By definition: A_t = Σ_l (γλ)^l δ_{t+l}, stopping after the step that ends the episode."""
    T, K = rewards.shape
    adv = np.zeros((T, K))
    for k in range(K):
        for t in range(T):
            total, discount = 0.0, 1.0
            for u in range(t, T):
                next_v = 0.0 if dones[u, k] else (values[u + 1, k] if u + 1 < T else last_values[k])
                delta = rewards[u, k] + gamma * next_v - values[u, k]
                total += discount * delta
                if dones[u, k]:
                    break
                discount *= gamma * lam
            adv[t, k] = total
    return adv, adv + values


@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (1.0, 1.0), (0.9, 0.0), (1.0, 0.5)])
def test_gae_matches_reference(gamma, lam):
    rng = np.random.default_rng(int(gamma * 100 + lam * 10))
    T, K = 12, 5
    rewards, values = rng.normal(size=(T, K)), rng.normal(size=(T, K))
    dones = rng.random((T, K)) < 0.25
    dones[:, 0] = False                    # one env never ends: bootstraps from last_values
    dones[-1, 1] = True                    # one ends on the last step: no bootstrap at all
    last = rng.normal(size=K)
    ref_adv, ref_ret = gae_reference(rewards, values, dones, last, gamma, lam)
    f = lambda x: torch.as_tensor(x, dtype=torch.float64)  # noqa: E731
    adv, ret = compute_gae(f(rewards), f(values), torch.as_tensor(dones), f(last), gamma, lam)
    np.testing.assert_allclose(adv.numpy(), ref_adv, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ret.numpy(), ref_ret, rtol=1e-12, atol=1e-12)


def test_gae_lambda1_gamma1_is_monte_carlo_return():
    rewards = torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0]], dtype=torch.float64)
    values = torch.tensor([[0.5], [-1.0], [2.0], [0.0], [7.0]], dtype=torch.float64)
    dones = torch.tensor([[False], [True], [False], [False], [False]])
    last = torch.tensor([10.0], dtype=torch.float64)
    _, ret = compute_gae(rewards, values, dones, last, 1.0, 1.0)
    # episode 1 ends at t=1: 1+2, 2; episode 2 is cut at T and bootstraps from last value 10
    assert ret[:, 0].tolist() == [3.0, 2.0, 22.0, 19.0, 15.0]


# ----------------------------------------------------------------------------------- 4. PPO learns
def evaluate(learner: PPOLearner, env: StageTask, n: int = 2000) -> tuple[float, float]:
    """(greedy accuracy, mean probability of the rewarded action) on fresh states."""
    obs, masks, targets = env.draw(n)
    with torch.no_grad():
        logits = learner.network.logits(learner.normalizer.normalize(torch.as_tensor(obs)), torch.as_tensor(masks))
    probs = torch.softmax(logits, -1)
    t = torch.as_tensor(targets)
    greedy = (logits.argmax(-1) == t).float().mean().item()
    return greedy, probs.gather(-1, t[:, None]).mean().item()


def test_ppo_learns_stage_task():
    cfg = PPOConfig(lr=2e-3, lr_schedule="constant", epochs=4, minibatches=4, entropy_coef=0.003,
                    entropy_coef_final=0.0, total_updates=40, target_kl=None, gamma=0.9)
    learner, agent = make_pair(cfg, seed=0)
    env = StageTask(32, horizon=3, seed=0)
    greedy0, p0 = evaluate(learner, env)
    for _ in range(40):
        batch = collect(agent, env, steps=6)
        stats = learner.update([batch])
        assert math.isfinite(stats.policy_loss) and math.isfinite(stats.value_loss)
        agent.load_weights(learner.weights())
    greedy, p_opt = evaluate(learner, env)
    assert env.illegal_actions == 0
    assert greedy0 < 0.5 and p0 < 0.3                  # not solved by the initial policy
    assert greedy >= 0.97, greedy                      # the greedy policy is (close to) optimal
    assert p_opt >= 0.85, p_opt                        # expected return >= 85% of the optimum
    # sampled return per episode approaches the optimum (horizon)
    batch = collect(agent, env, steps=30)
    assert env.illegal_actions == 0
    assert batch.rewards.sum() / batch.dones.sum() >= 0.85 * env.horizon


# ---------------------------------------------------------------------------- 5. real env trainer
def test_in_process_trainer_on_builtin_task(monkeypatch):
    cfg = load_config(None, overrides("simic.env.max_epochs=8"))
    trainer = InProcessTrainer.from_config(cfg, seed=0, num_envs=2, steps_per_sample=8, policy="ppo", device="cpu")
    learner, agent = trainer.learner, trainer.policy
    assert learner.space.describe() == SPACE.describe() and learner.schema.fingerprint == SCHEMA.fingerprint
    assert_synced(agent, learner)
    records = spy_first_step(learner, monkeypatch)
    episodes = 0
    for i in range(1, 4):
        stats, eps = trainer.iterate()
        episodes += len(eps)
        assert stats.policy_version == i == learner.version
        assert stats.transitions == 16 and stats.dropped_stale == 0 and stats.mean_policy_lag == 0.0
        for name in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction"):
            assert math.isfinite(getattr(stats, name)), name
        assert isinstance(stats.explained_variance, float) and math.isfinite(stats.explained_variance)
        assert 1 <= stats.epochs_run <= cfg.simic.ppo.epochs
        assert_synced(agent, learner)
    assert len(records) == 3
    for r in records:      # before the first gradient step of each update the ratio is exactly 1
        assert torch.equal(first_ratio(r), torch.ones_like(r.first))
        torch.testing.assert_close(r.used, r.stored, rtol=1e-5, atol=1e-5)
    assert episodes == 6                                 # 3 x 8 steps x 2 envs / max_epochs 8


def _learner_logps(learner: PPOLearner, b: TrajectoryBatch) -> torch.Tensor:
    obs = learner.normalizer.normalize(torch.as_tensor(b.obs).reshape(-1, b.obs.shape[-1]))
    with torch.no_grad():
        logits = learner.network.logits(obs, torch.as_tensor(b.masks).reshape(-1, b.masks.shape[-1]))
    return log_prob(logits, torch.as_tensor(b.actions).reshape(-1))


# ------------------------------------------------------------------------------- 6. exact ratio 1
def spy_first_step(learner: PPOLearner, monkeypatch) -> list[SimpleNamespace]:
    """Wrap `learner.update`; for each call record the first minibatch's rows (`idx`), the stored
    behaviour log-probs, the behaviour log-probs the update used and the first gradient step's log-probs."""
    records: list[SimpleNamespace] = []
    calls: dict[str, torch.Tensor] = {}

    def log_prob_spy(logits, actions):
        out = log_prob(logits, actions)
        if torch.is_grad_enabled() and "first" not in calls:     # the forward of the first gradient step
            calls["first"] = out.detach().clone()
        return out

    recompute = learner._on_policy_logps

    def recompute_spy(*args):
        calls["used"] = recompute(*args).clone()
        return calls["used"]

    update = learner.update

    def update_spy(batches, max_policy_lag=None):
        calls.clear()
        g = torch.Generator()
        g.set_state(learner.generator.get_state())
        n = sum(b.num_transitions for b in batches)
        idx = torch.randperm(n, generator=g)[:max(1, n // learner.cfg.minibatches)]
        stored = torch.cat([torch.as_tensor(b.log_probs).reshape(-1) for b in batches])
        stats = update(batches, max_policy_lag)
        records.append(SimpleNamespace(idx=idx, stored=stored, used=calls.get("used", stored), first=calls["first"]))
        return stats

    monkeypatch.setattr(ppo_module, "log_prob", log_prob_spy)
    monkeypatch.setattr(learner, "_on_policy_logps", recompute_spy)
    monkeypatch.setattr(learner, "update", update_spy)
    return records


def first_ratio(r: SimpleNamespace) -> torch.Tensor:
    return (r.first - r.used[r.idx]).exp()


@pytest.mark.parametrize("K,T,minibatches", [(2, 8, 1), (2, 16, 4), (8, 16, 4), (3, 5, 2), (64, 32, 1)])
def test_on_policy_ratio_is_exactly_one_before_first_step(K, T, minibatches, monkeypatch):
    learner, agent = make_pair(PPOConfig(minibatches=minibatches), seed=K + T)
    env = StageTask(K, seed=K)
    for _ in range(2):                                   # non-trivial normalizer and weights, version > 0
        learner.update([collect(agent, env, T)])
        agent.load_weights(learner.weights())
    batch = collect(agent, env, T)
    stored = torch.as_tensor(batch.log_probs).reshape(-1)
    # the learner's policy is the behaviour policy: same log-probs up to float rounding
    torch.testing.assert_close(_learner_logps(learner, batch), stored, rtol=1e-5, atol=1e-5)
    records = spy_first_step(learner, monkeypatch)
    learner.update([batch])
    (r,) = records
    assert r.first.shape == r.idx.shape
    assert torch.equal(first_ratio(r), torch.ones_like(r.first))      # exactly 1, not approximately
    torch.testing.assert_close(r.used, stored, rtol=1e-5, atol=1e-5)


def test_on_policy_ratio_exact_despite_runner_rounding_but_off_policy_kept(monkeypatch):
    learner, agent = make_pair(PPOConfig(minibatches=2), seed=3)
    env = StageTask(8, seed=3)
    learner.update([collect(agent, env, 8)])
    agent.load_weights(learner.weights())
    batch = collect(agent, env, 8)
    records = spy_first_step(learner, monkeypatch)
    snapshot = copy.deepcopy(learner.state_dict())       # state_dict() aliases the live parameters

    def run(log_probs: np.ndarray, version: int) -> SimpleNamespace:
        learner.load_state_dict(copy.deepcopy(snapshot))
        learner.update([TrajectoryBatch(batch.obs, batch.actions, batch.masks, log_probs, batch.values,
                                        batch.rewards, batch.dones, batch.last_obs, version)])
        return records[-1]

    # a runner on another device or batch size: log-probs off in the last bits -> still exactly 1
    r = run(batch.log_probs + np.float32(3e-6), batch.policy_version)
    assert torch.equal(first_ratio(r), torch.ones_like(r.first))
    # log-probs that are not this policy's (beyond rounding) are kept: the importance ratio is not faked
    shifted = batch.log_probs - np.float32(0.5)
    r = run(shifted, batch.policy_version)
    assert torch.equal(r.used, torch.as_tensor(shifted).reshape(-1))
    torch.testing.assert_close(first_ratio(r), torch.full_like(r.first, math.exp(0.5)))
    # stale data (an older version): stored behaviour log-probs, untouched
    r = run(batch.log_probs, batch.policy_version - 1)
    assert torch.equal(r.used, torch.as_tensor(batch.log_probs).reshape(-1))


# ---------------------------------------------------------------------------------- 7. checkpoints
def _state_equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_state_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_state_equal(x, y) for x, y in zip(a, b))
    return a == b


def test_checkpoint_round_trip_next_update_is_bit_identical(tmp_path):
    run_dir = str(tmp_path / "run")
    learner, agent = make_pair(PPOConfig(), seed=5)
    env = StageTask(8, seed=5)
    learner.update([collect(agent, env, 8)])
    agent.load_weights(learner.weights())
    batch = collect(agent, env, 8)
    path = save_checkpoint(run_dir, learner.state_dict(), schema=SCHEMA, space=SPACE, config={"a": 1},
                           extra={"episodes": 3})
    assert Path(path).name == "policy-v00000001.pt"

    torch.manual_seed(123)                               # a different init, overwritten by the load
    restored = PPOLearner(make_network(SCHEMA, SPACE, HIDDEN), PPOConfig(), SCHEMA, SPACE, CPU, seed=999)
    payload = load_checkpoint(run_dir, schema=SCHEMA, space=SPACE)
    assert payload["config"] == {"a": 1} and payload["extra"] == {"episodes": 3}
    restored.load_state_dict(payload["learner"])
    assert restored.version == learner.version == 1 and restored.updates_done == 1

    s1, s2 = learner.update([batch]), restored.update([batch])
    d1, d2 = s1.to_dict(), s2.to_dict()
    d1.pop("update_seconds"), d2.pop("update_seconds")
    assert d1 == d2
    assert _state_equal(learner.state_dict(), restored.state_dict())


def test_checkpoint_checks_schema_space_and_latest(tmp_path):
    run_dir = str(tmp_path / "run")
    learner, _ = make_pair(seed=0)
    assert latest_version(run_dir) is None
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(run_dir, schema=SCHEMA, space=SPACE)
    save_checkpoint(run_dir, learner.state_dict(), schema=SCHEMA, space=SPACE)
    learner.version = 7
    save_checkpoint(run_dir, learner.state_dict(), schema=SCHEMA, space=SPACE)
    ckpt = tmp_path / "run" / "checkpoints"
    assert json.loads((ckpt / "latest.json").read_text()) == {"version": 7, "file": "policy-v00000007.pt"}
    assert latest_version(run_dir) == 7
    assert sorted(p.name for p in ckpt.glob("*.pt")) == ["policy-v00000000.pt", "policy-v00000007.pt"]
    assert load_checkpoint(run_dir, schema=SCHEMA, space=SPACE)["learner"]["version"] == 7
    assert load_checkpoint(str(ckpt / "policy-v00000000.pt"), schema=SCHEMA, space=SPACE)["learner"]["version"] == 0
    assert not list(ckpt.glob(".*")) and not list(ckpt.glob("*.tmp*"))       # no temp files left behind

    with pytest.raises(SchemaMismatchError):
        load_checkpoint(run_dir, schema=TensorSchema(max_slots=2), space=SPACE)
    with pytest.raises(CheckpointError, match="action space"):
        load_checkpoint(run_dir, schema=SCHEMA, space=ActionSpace(3, ("norm", "attention", "depthwise")))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(str(ckpt / "policy-v00000003.pt"), schema=SCHEMA, space=SPACE)


def test_reserve_versions(tmp_path):
    run_dir = str(tmp_path / "run")
    assert reserved_version(run_dir) == 0
    assert reserve_versions(run_dir, 0) == 100 and reserved_version(run_dir) == 100
    assert reserve_versions(run_dir, 99) == 100
    assert reserve_versions(run_dir, 100) == 200 and reserved_version(run_dir) == 200
    assert reserve_versions(run_dir, 250) == 300 and reserved_version(run_dir) == 300
    # a learner restored from an old checkpoint starts past everything that may have been published
    learner, _ = make_pair(seed=0)
    save_checkpoint(run_dir, learner.state_dict(), schema=SCHEMA, space=SPACE)   # version 0
    restored_version = max(load_checkpoint(run_dir, schema=SCHEMA, space=SPACE)["learner"]["version"],
                           reserved_version(run_dir))
    assert restored_version == 300


# --------------------------------------------------------------------------------- 8. load_weights
def test_agent_load_weights_rejects_other_schema_or_space():
    learner, agent = make_pair(seed=0)
    env = StageTask(4, seed=0)
    learner.update([collect(agent, env, 4)])
    agent.load_weights(learner.weights())
    assert agent.version == 1
    weights = learner.weights()
    bad_schema = dataclasses.replace(weights, schema_fingerprint=TensorSchema(max_slots=2).fingerprint)
    with pytest.raises(SchemaMismatchError):
        agent.load_weights(bad_schema)                   # same version as the agent's: still checked
    bad_space = dataclasses.replace(weights, action_space=ActionSpace(2, BLUEPRINT_IDS).describe())
    with pytest.raises(ValueError, match="action space"):
        agent.load_weights(bad_space)
    fresh = PPOAgent(make_network(SCHEMA, SPACE, HIDDEN), SCHEMA, SPACE, CPU)
    for bad in (bad_schema, bad_space):
        with pytest.raises(ValueError):
            fresh.load_weights(bad)
    assert fresh.version == 0
    fresh.load_weights(weights)
    assert_synced(fresh, learner)


def test_value_warm_start_sets_the_critic_bias_to_the_first_batch_mean_return_once():
    cfg = PPOConfig(value_warm_start=True, epochs=1, lr=1e-12, gamma=0.9)       # lr ~0: see the bias it starts from
    learner, agent = make_pair(cfg, seed=0)
    env = StageTask(4, seed=0)
    batch = collect(agent, env, 6)
    r, d = torch.tensor(batch.rewards, dtype=torch.float64), torch.tensor(batch.dones)
    expected = compute_gae(r, torch.zeros_like(r), d, torch.zeros(r.shape[1], dtype=torch.float64), 0.9, 1.0)[1]
    learner.update([batch])
    assert learner.network.value_head.bias.item() == pytest.approx(float(expected.mean()), rel=1e-5)
    learner.network.value_head.bias.data.fill_(-3.0)
    agent.load_weights(learner.weights())
    learner.update([collect(agent, env, 6)])                                    # not again after the first
    assert learner.network.value_head.bias.item() == pytest.approx(-3.0, abs=1e-6)
