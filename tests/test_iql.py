"""Offline IQL: loss math on synthetic data, then a real heuristic dataset generated in-process,
pretraining on it, export to a checkpoint PPO loads, and an `--init-from` launch end to end."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from esper.config import load_config
from esper.leyline.schema import SchemaMismatchError
from esper.nissa import TelemetryConfig, read_events, reset_hub
from esper.tamiyo.agent import PPOAgent, make_network
from esper.simic.learning.checkpoint import CheckpointError
from esper.simic.config import IQLConfig
from esper.kasmina import schema_and_space
from esper.simic.learning.iql import IQL, OfflineData, export_pretrained, load_transitions, table_to_data
from esper.pretrain import main as iql_main
from esper.simic.learning.pretrained import load_initial_policy
from esper.nissa import configure_run_telemetry
from esper.simic.learning.trainer import InProcessTrainer, make_learner
from esper.tamiyo.network import entropy, log_prob
from tiny import overrides
from launch_util import SMOKE, run

HIDDEN = [64, 64]
# Tiny data and a lifecycle short enough that the heuristic germinates, advances and culls inside a
# 12-step episode (with the smoke config's 8 steps and the default heuristic it only ever waits).
GEN = overrides("tolaria.training.batch_size=64", "simic.env.max_epochs=12", "tamiyo.heuristic.plateau_epochs=1",
                "tamiyo.heuristic.min_epoch_to_germinate=1", f"tamiyo.network.hidden={HIDDEN}",
                "simic.iql.batch_size=128")
ROUNDS, ENVS = 5, 4                 # 20 episodes, 240 transitions


def _cfg(*extra: str):
    return load_config(None, [*GEN, *extra])


def _spaces(cfg):
    return schema_and_space(cfg.kasmina)


# ---------------------------------------------------------------------------- loss math (synthetic)
def _iql(obs_size=3, num_actions=4, **cfg) -> IQL:
    return IQL(obs_size, num_actions, [16], IQLConfig(**cfg), gamma=0.9, seed=0)


def test_expectile_value_loss_matches_formula_and_is_asymmetric():
    iql = _iql(expectile=0.8)
    obs = torch.randn(6, 3)
    v = iql.ac.value(obs).detach()
    q_t = v + torch.tensor([1.0, -1.0, 2.0, -2.0, 0.5, 0.0])
    loss, _ = iql.value_loss(obs, q_t)
    u = q_t - v
    expected = (torch.where(u < 0, 0.2, 0.8) * u ** 2).mean()
    assert torch.allclose(loss, expected)
    over, _ = iql.value_loss(obs, v + 1.0)      # V below its target is penalised 0.8, above 0.2
    under, _ = iql.value_loss(obs, v - 1.0)
    assert over.item() == pytest.approx(4 * under.item(), rel=1e-5)


def test_expectile_regression_converges_to_the_expectile():
    # One state, targets 0 and 1 equally often: the τ-expectile v solves τ(1−v) = (1−τ)v, i.e. v = τ.
    iql = _iql(expectile=0.7, lr=3e-3)
    obs = torch.zeros(64, 3)
    q_t = torch.tensor([0.0, 1.0]).repeat(32)
    for _ in range(1500):
        loss, _ = iql.value_loss(obs, q_t)
        iql.value_opt.zero_grad()
        loss.backward()
        iql.value_opt.step()
    assert iql.ac.value(obs[:1]).item() == pytest.approx(0.7, abs=0.02)


def test_q_target_bootstraps_from_v_only_when_not_done():
    iql = _iql()
    obs, next_obs = torch.randn(4, 3), torch.randn(4, 3)
    actions = torch.tensor([0, 1, 2, 3])
    rewards = torch.tensor([1.0, 2.0, 3.0, 4.0])
    dones = torch.tensor([1.0, 0.0, 1.0, 0.0])
    y = rewards + 0.9 * (1 - dones) * iql.ac.value(next_obs).detach()
    q1, q2 = iql.q1.at(obs, actions).detach(), iql.q2.at(obs, actions).detach()
    expected = ((q1 - y) ** 2).mean() + ((q2 - y) ** 2).mean()
    assert torch.allclose(iql.q_loss(obs, actions, rewards, dones, next_obs), expected)


def test_actor_weights_are_clamped_and_illegal_actions_get_zero_probability():
    iql = _iql(temperature=2.0, max_weight=5.0)
    obs = torch.randn(3, 3)
    masks = torch.tensor([[True, False, True, False], [True, True, True, True], [False, False, False, True]])
    actions = torch.tensor([2, 1, 3])
    v = torch.zeros(3)
    q_t = torch.tensor([10.0, 0.0, -1.0])       # exp(20) clamps to 5
    loss, nll, w, ent = iql.actor_loss(obs, masks, actions, q_t, v)
    logits = iql.ac.logits(obs, masks).detach()
    logp = log_prob(logits, actions)
    weights = torch.tensor([5.0, 1.0, float(np.exp(-2.0))])
    assert torch.allclose(ent, entropy(logits).mean()) and ent.item() > 0
    assert torch.allclose(loss, -(weights * logp).mean() - iql.cfg.entropy_coef * ent)
    assert logp[2].item() == 0.0                # the only legal action
    probs = iql.action_probs(obs.numpy(), masks.numpy())
    assert (probs[~masks] == 0).all() and torch.allclose(probs.sum(-1), torch.ones(3))


def test_target_networks_move_by_polyak_rate():
    iql = _iql(tau=0.1)
    before = [p.clone() for p in iql.q1_target.parameters()]
    obs = torch.randn(8, 3)
    iql.step(obs, torch.zeros(8, dtype=torch.long), torch.ones(8, 4, dtype=torch.bool), torch.ones(8),
             torch.ones(8), obs)
    for b, t, p in zip(before, iql.q1_target.parameters(), iql.q1.parameters()):
        assert torch.allclose(t, 0.9 * b + 0.1 * p, atol=1e-6)


def test_iql_prefers_the_better_action_where_cloning_would_not():
    # Behaviour picks actions 0 and 1 equally; only action 1 pays. Behaviour cloning would be 50/50;
    # advantage weighting puts the policy on action 1. Action 2 is never legal.
    rng = np.random.default_rng(0)
    n = 512
    obs = rng.normal(size=(n, 3)).astype(np.float32)
    actions = rng.integers(0, 2, n)
    masks = np.tile(np.array([True, True, False, True]), (n, 1))
    data = OfflineData(obs, actions, masks, (actions == 1).astype(np.float32), np.ones(n, bool), obs, masks,
                       np.array([f"e{i}" for i in range(n)], dtype=object))
    iql = _iql(temperature=3.0, batch_size=128, lr=1e-3, tau=0.05)
    iql.train(data, steps=400, log=None)
    probs = iql.action_probs(obs, masks)
    assert (probs[:, 2] == 0).all()
    assert probs[:, 1].mean().item() > 0.8 and (probs.argmax(-1) == 1).all()
    assert np.mean(data.actions == 1) < 0.6     # the data itself is about 50/50


# ---------------------------------------------------------------------- a real heuristic dataset
@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Heuristic episodes run in-process with telemetry: the same transitions a launch writes."""
    run_dir = str(tmp_path_factory.mktemp("heuristic") / "run")
    cfg = _cfg()
    torch.manual_seed(0)
    trainer = InProcessTrainer.from_config(cfg, seed=0, num_envs=ENVS, steps_per_sample=cfg.simic.env.max_epochs,
                                           policy="heuristic", device="cpu")
    configure_run_telemetry(run_dir, TelemetryConfig(console=False), "gen", trainer.ctx.schema, trainer.ctx.space)
    try:
        for _ in range(ROUNDS):
            trainer.iterate()
    finally:
        reset_hub()                             # flush and close: the files become visible whole
    return run_dir, cfg


@pytest.fixture(scope="module")
def trained(dataset):
    run_dir, cfg = dataset
    schema, space = _spaces(cfg)
    data = load_transitions([run_dir], schema, space)
    train, held = data.split(0.25, seed=0)
    iql = IQL(schema.size, space.n, HIDDEN, cfg.simic.iql, cfg.simic.ppo.gamma, seed=0)
    history = iql.train(train, steps=600, log_every=100, log=None)
    return iql, history, data, train, held


def test_dataset_reads_as_arrays_and_has_more_than_waits(dataset):
    run_dir, cfg = dataset
    schema, space = _spaces(cfg)
    data = load_transitions([run_dir, run_dir], schema, space)     # several run dirs concatenate
    n = read_events(run_dir, "transition").num_rows
    assert n == ROUNDS * ENVS * cfg.simic.env.max_epochs and len(data) == 2 * n
    assert data.obs.shape == data.next_obs.shape == (2 * n, schema.size) and data.obs.dtype == np.float32
    assert data.masks.shape == (2 * n, space.n) and data.masks.dtype == bool
    assert data.dones.sum() == 2 * ROUNDS * ENVS
    assert data.masks[np.arange(len(data)), data.actions].all()
    assert len(set(data.actions.tolist())) >= 3          # WAIT, GERMINATE and ADVANCE at least
    # Any Arrow table with the columns converts, variable-size lists too (e.g. from another reader).
    table = read_events(run_dir, "transition")
    loose = table.cast(pa.schema([pa.field(f.name, pa.list_(f.type.value_type)) if pa.types.is_fixed_size_list(f.type)
                                  else f for f in table.schema]))
    again = table_to_data(loose, schema, space, source=run_dir)
    assert np.array_equal(again.obs, data.obs[:n]) and np.array_equal(again.next_masks, data.next_masks[:n])
    with pytest.raises(ValueError, match=f"not {schema.size} long"):
        table_to_data(loose.set_column(loose.schema.get_field_index("obs"), "obs",
                                       pa.array([[0.0]] * n, pa.list_(pa.float32()))), schema, space)


def test_iql_losses_fall(trained):
    _, history, *_ = trained
    first, last = history[0], history[-1]
    assert last.q_loss < 0.5 * first.q_loss, (first, last)
    assert last.v_loss < 0.5 * first.v_loss, (first, last)
    assert last.actor_loss < 0.5 * first.actor_loss, (first, last)
    assert last.nll < 0.5 * first.nll, (first, last)


def test_policy_matches_heuristic_far_above_chance_on_held_out_episodes(trained):
    iql, _, _, train, held = trained
    assert len(held) >= 36 and not set(held.episode_ids) & set(train.episode_ids)
    majority = int(np.bincount(train.actions).argmax())
    r = iql.agreement(held, majority)
    assert r["chance"] < 0.15
    assert r["agreement"] > 0.8 and r["agreement"] > 5 * r["chance"], r
    assert r["agreement"] > r["majority_baseline"], r       # more than always-WAIT
    assert r["agreement_non_wait"] > 0.5, r                  # it germinates and advances too


def test_entropy_term_keeps_the_policy_stochastic_without_changing_its_choices(trained):
    # The heuristic is deterministic: without the entropy term the actor's legal-action entropy falls
    # near 0, and PPO fine-tuning from it hardly explores. With it the greedy action is the same.
    iql, _, _, train, held = trained
    sharp = IQL(iql.ac.obs_size, iql.ac.num_actions, HIDDEN, iql.cfg.model_copy(update={"entropy_coef": 0.0}),
                iql.gamma, seed=0)
    sharp.train(train, steps=600, log_every=600, log=None)
    soft, hard = iql.agreement(held), sharp.agreement(held)
    assert iql.cfg.entropy_coef > 0
    assert soft["entropy"] > 3 * hard["entropy"] and soft["entropy"] < soft["max_entropy"], (soft, hard)
    assert soft["agreement"] >= hard["agreement"] - 0.05, (soft, hard)


def test_illegal_actions_get_probability_exactly_zero(trained):
    iql, _, data, _, _ = trained
    probs = iql.action_probs(data.obs, data.masks).numpy()
    assert (probs[~data.masks] == 0).all()
    rng = np.random.default_rng(1)
    masks = rng.random(data.masks.shape) < 0.3
    masks[:, 0] = True
    probs = iql.action_probs(data.obs, masks).numpy()
    assert (probs[~masks] == 0).all() and np.allclose(probs.sum(-1), 1)


def test_export_loads_into_ppo_and_the_agent_acts_like_the_iql_actor(trained, dataset, tmp_path):
    iql, _, data, _, held = trained
    _, cfg = dataset
    schema, space = _spaces(cfg)
    path = export_pretrained(str(tmp_path / "iql.pt"), iql, schema, space, extra={"note": "test"})
    ppo = make_learner(schema, space, cfg.simic, cfg.tamiyo, seed=3)
    assert load_initial_policy(ppo, path, schema, space) == {"note": "test"}
    assert ppo.version == 0 and ppo.updates_done == 0 and not ppo.optimizer.state
    for k, v in iql.ac.state_dict().items():
        assert torch.equal(ppo.network.state_dict()[k], v), k
    assert torch.equal(ppo.normalizer.mean, iql.normalizer.mean) and torch.equal(ppo.normalizer.var, iql.normalizer.var)

    agent = PPOAgent(make_network(schema, space, HIDDEN), schema, space, torch.device("cpu"))
    agent.load_weights(ppo.weights())
    agent.greedy = True
    decisions = agent.act(held.obs, held.masks)
    probs = iql.action_probs(held.obs, held.masks)
    assert [d.index for d in decisions] == probs.argmax(-1).tolist()
    chosen = probs.gather(-1, probs.argmax(-1, keepdim=True)).squeeze(-1)
    assert np.allclose([d.confidence for d in decisions], chosen.numpy(), atol=1e-6)
    o = agent.normalizer.normalize(torch.as_tensor(held.obs))
    assert torch.allclose(torch.softmax(agent.network.logits(o, torch.as_tensor(held.masks)), -1), probs, atol=1e-6)
    # V warm-starts PPO's critic
    assert torch.allclose(ppo.network.value(o), iql.ac.value(iql.normalizer.normalize(torch.as_tensor(held.obs))))
    # a PPO update runs from it
    ppo.update([_batch(data)])
    assert ppo.version == 1


def _batch(data: OfflineData):
    from esper.simic.learning.rollout import TrajectoryBatch

    T = 12
    n = len(data) // T * T
    shape = lambda a: a[:n].reshape(T, n // T, *a.shape[1:])  # noqa: E731
    return TrajectoryBatch(shape(data.obs), shape(data.actions), shape(data.masks), np.zeros((T, n // T), np.float32),
                           np.zeros((T, n // T), np.float32), shape(data.rewards), shape(data.dones),
                           data.next_obs[n - n // T:n], 0)


def test_fingerprint_and_shape_mismatches_are_clear_errors(trained, dataset, tmp_path):
    iql, *_ = trained
    run_dir, cfg = dataset
    schema, space = _spaces(cfg)
    other = _cfg("kasmina.blueprints=[norm]")
    o_schema, o_space = _spaces(other)
    with pytest.raises(SchemaMismatchError, match=o_schema.fingerprint):
        load_transitions([run_dir], o_schema, o_space)
    path = export_pretrained(str(tmp_path / "iql.pt"), iql, schema, space)
    with pytest.raises(SchemaMismatchError, match=schema.fingerprint):
        load_initial_policy(make_learner(o_schema, o_space, other.simic, other.tamiyo, 0), path, o_schema, o_space)
    wide = _cfg("tamiyo.network.hidden=[32]")
    with pytest.raises(CheckpointError, match=r"tamiyo\.network\.hidden"):
        load_initial_policy(make_learner(schema, space, wide.simic, wide.tamiyo, 0), path, schema, space)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_initial_policy(make_learner(schema, space, cfg.simic, cfg.tamiyo, 0), str(tmp_path / "no.pt"),
                            schema, space)


def test_init_from_an_ordinary_ppo_checkpoint_takes_weights_only(dataset, tmp_path):
    from esper.simic.learning.checkpoint import save_checkpoint

    _, cfg = dataset
    schema, space = _spaces(cfg)
    old = make_learner(schema, space, cfg.simic, cfg.tamiyo, seed=1)
    old.version, old.updates_done = 7, 7
    old.normalizer.update(torch.randn(32, schema.size))
    save_checkpoint(str(tmp_path / "ppo"), old.state_dict(), schema=schema, space=space)
    new = make_learner(schema, space, cfg.simic, cfg.tamiyo, seed=2)
    load_initial_policy(new, str(tmp_path / "ppo"), schema, space)          # a run dir: its latest checkpoint
    assert new.version == 0 and new.updates_done == 0
    assert all(torch.equal(v, new.network.state_dict()[k]) for k, v in old.network.state_dict().items())
    assert torch.equal(new.normalizer.mean, old.normalizer.mean)


def test_cli_refuses_data_of_another_schema(dataset, capsys):
    run_dir, _ = dataset
    assert iql_main(["--runs", run_dir, "--out", "/nonexistent/x.pt", "--set", "kasmina.blueprints=[norm]"]) == 2
    assert "observations use schema" in capsys.readouterr().err


# ------------------------------------------------------------------- CLI + --init-from, end to end
@pytest.mark.e2e
def test_cli_pretrains_and_launch_fine_tunes_from_it(dataset, tmp_path, capsys):
    run_dir, cfg = dataset
    ckpt = str(tmp_path / "iql.pt")
    sets = [x for s in GEN for x in ("--set", s)]
    assert iql_main(["--runs", run_dir, "--out", ckpt, "--steps", "300", "--log-every", "100", *sets]) == 0
    out = capsys.readouterr().out
    assert "[iql] step    300" in out and "held_out: greedy action agrees" in out and "chance" in out

    fine = tmp_path / "fine"
    rc, log = run(["--config", SMOKE, "--run-dir", str(fine), "--no-dashboard", "--init-from", ckpt,
                   "--set", f"tamiyo.network.hidden={HIDDEN}", "--set", "runtime.total_updates=2"])
    assert rc == 0, log
    assert read_events(str(fine), "learner").column("policy_version").to_pylist() == [1, 2]

    # The runners' first round acted with exactly the pretrained weights: their recorded behaviour
    # log-probs (policy version 0) are what the exported network and normalizer give, not a fresh init's.
    schema, space = _spaces(cfg)
    t = read_events(str(fine), "transition").to_pydict()
    first = [i for i, v in enumerate(t["policy_version"]) if v == 0]
    assert first
    obs = torch.tensor([t["obs"][i] for i in first])
    masks = torch.tensor([t["mask"][i] for i in first])
    actions = torch.tensor([t["action"][i] for i in first])
    recorded = torch.tensor([t["log_prob"][i] for i in first])

    def logps(ppo):
        with torch.no_grad():
            return log_prob(ppo.network.logits(ppo.normalizer.normalize(obs), masks), actions)

    pre = make_learner(schema, space, cfg.simic, cfg.tamiyo, seed=0)
    fresh = logps(pre)
    load_initial_policy(pre, ckpt, schema, space)
    assert torch.allclose(logps(pre), recorded, atol=1e-4), (logps(pre), recorded)
    assert not torch.allclose(fresh, recorded, atol=1e-2)
