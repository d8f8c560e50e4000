"""Gymnasium's and the RL libraries' conventions: `RecordEpisodeStatistics` owns `info["episode"]` (Esper's
summary is `info["esper_episode"]`), spaces pickle, async vector envs run, the env is registered (`make`,
`make_vec`), a `TimeLimit` cut still reports the accuracies, and Gymnasium's env checker passes. Tiny CPU
settings: 16×16 synthetic images, 256 training images, 8-step episodes.
"""
from __future__ import annotations

import copy
import math
import pickle
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pydantic
import pytest
from gymnasium import spaces

from esper.kasmina import KasminaConfig, LifecycleConfig
from esper.leyline import EpisodeSummary
from esper.simic import ENV_ID, EnvConfig, MorphogeneticEnv, make_context
from esper.tolaria import DataConfig, TolariaConfig, load_splits, summarise
from tiny import DATA, LIFECYCLE, MAX_EPOCHS

LIFE = LIFECYCLE
# make's keywords, as plain dicts (what a user of `gymnasium.make` writes)
MAKE_KW = dict(tolaria={"data": DATA}, kasmina={"lifecycle": LIFE}, env={"max_epochs": MAX_EPOCHS}, device="cpu")


@pytest.fixture(scope="module")
def ctx():
    tolaria = TolariaConfig(data=DataConfig(**DATA))
    return make_context(KasminaConfig(lifecycle=LifecycleConfig(**LIFE)), tolaria, EnvConfig(max_epochs=MAX_EPOCHS),
                        0.99, "cpu", splits=load_splits(tolaria.data))


def run_episode(env, seed: int = 0):
    """Steps `env` to the end of an episode with `action_space.sample()` (legal actions); returns each step."""
    env.reset(seed=seed)
    steps, done = [], False
    while not done:
        obs, r, term, trunc, info = env.step(env.action_space.sample())
        steps.append((r, term, trunc, info))
        done = term or trunc
    return steps


def assert_finished(summary, epochs: int) -> None:
    assert isinstance(summary, EpisodeSummary) and summary.epochs == epochs
    assert math.isfinite(summary.final_test_acc) and 0.0 <= summary.final_test_acc <= 1.0
    assert math.isfinite(summary.final_val_acc) and 0.0 <= summary.final_val_acc <= 1.0


# ------------------------------------------------------------------------------------------ info keys
def test_record_episode_statistics_owns_info_episode_and_esper_keeps_its_summary(ctx):
    env = gym.wrappers.RecordEpisodeStatistics(MorphogeneticEnv(ctx))
    steps = run_episode(env, seed=1)
    r, term, trunc, info = steps[-1]
    assert len(steps) == MAX_EPOCHS and term and not trunc
    assert all("esper_episode" not in s[3] and "episode" not in s[3] for s in steps[:-1])
    stats = info["episode"]                                    # the wrapper's own r / l / t
    assert set(stats) == {"r", "l", "t"} and stats["l"] == MAX_EPOCHS
    assert stats["r"] == pytest.approx(sum(s[0] for s in steps))
    summary = info["esper_episode"]
    assert_finished(summary, MAX_EPOCHS)
    assert summary.episode_return == pytest.approx(stats["r"])


# ------------------------------------------------------------------------------------------ pickling
def test_spaces_pickle_and_deep_copy(ctx):
    env = MorphogeneticEnv(ctx)
    env.reset(seed=0)
    n = ctx.space.n
    space = env.action_space
    assert space == spaces.Discrete(n) and spaces.Discrete(n) == space
    mask = env.action_masks()

    clone = pickle.loads(pickle.dumps(space))                  # the weak reference to the env is dropped
    assert clone == space == spaces.Discrete(n)
    assert all(0 <= clone.sample() < n for _ in range(50))     # plain Discrete sampling
    legal = mask.astype(np.int8)
    assert all(mask[clone.sample(mask=legal)] for _ in range(50))
    assert pickle.loads(pickle.dumps(clone)) == space          # and it pickles again

    twin = copy.deepcopy(space)                                # a deep copy keeps the reference: mask-aware
    assert twin == space and twin.np_random is not space.np_random
    assert all(mask[twin.sample()] for _ in range(50))
    assert all(mask[copy.copy(space).sample()] for _ in range(20))

    obs_space = pickle.loads(pickle.dumps(env.observation_space))
    assert obs_space == env.observation_space
    assert pickle.loads(pickle.dumps(gym.spec(ENV_ID))).id == ENV_ID


def test_async_vector_env_runs_two_envs_acting_through_the_masks_in_info():
    # spawn: every env function, space and info crosses a process boundary by pickle
    vec = gym.make_vec(ENV_ID, 2, vectorization_mode="async", vector_kwargs={"context": "spawn"}, **MAKE_KW)
    try:
        assert isinstance(vec, gym.vector.AsyncVectorEnv)
        obs, infos = vec.reset(seed=0)
        assert obs.shape == (2, *vec.single_observation_space.shape)
        rng = np.random.default_rng(0)
        for t in range(MAX_EPOCHS):
            masks = infos["action_mask"]
            assert masks.shape == (2, vec.single_action_space.n) and masks.dtype == bool and masks.any(axis=1).all()
            actions = np.array([rng.choice(np.flatnonzero(m)) for m in masks])
            obs, rewards, term, trunc, infos = vec.step(actions)   # an illegal action would raise in the worker
            assert np.isfinite(rewards).all() and not trunc.any()
            assert term.all() == (t == MAX_EPOCHS - 1) and term.all() == term.any()
            if t < MAX_EPOCHS - 1:
                assert "esper_episode" not in infos
        assert infos["_esper_episode"].all()
        summaries = list(infos["esper_episode"])
        for summary in summaries:
            assert_finished(summary, MAX_EPOCHS)
        assert summaries[0].env_seed != summaries[1].env_seed
    finally:
        vec.close()


# ------------------------------------------------------------------------------------------ registration
def test_make_and_make_vec_build_the_registered_env():
    env = gym.make(ENV_ID, **MAKE_KW)
    base = env.unwrapped
    assert isinstance(base, MorphogeneticEnv) and env.spec.id == ENV_ID
    assert base.ctx.tolaria.data.train_size == 256 and base.ctx.env.max_epochs == MAX_EPOCHS
    assert base.ctx.kasmina.lifecycle.blend_steps == 2 and base.ctx.device.type == "cpu"
    steps = run_episode(env)
    assert len(steps) == MAX_EPOCHS and steps[-1][1]
    assert_finished(steps[-1][3]["esper_episode"], MAX_EPOCHS)
    assert isinstance(gym.make(env.spec).unwrapped, MorphogeneticEnv)      # the spec re-creates the env

    with pytest.raises(pydantic.ValidationError, match="trian_size"):      # a misspelt key is an error
        gym.make(ENV_ID, tolaria={"data": {"trian_size": 256}}, device="cpu")

    vec = gym.make_vec(ENV_ID, 2, vectorization_mode="sync", **MAKE_KW)
    try:
        _, infos = vec.reset(seed=3)
        actions = [np.flatnonzero(m)[-1] for m in infos["action_mask"]]
        _, rewards, term, trunc, infos = vec.step(actions)
        assert np.isfinite(rewards).all() and not (term | trunc).any()
    finally:
        vec.close()


def test_make_imports_esper_itself_and_registration_is_idempotent():
    code = f"""
import warnings
import gymnasium as gym
try:
    gym.make("{ENV_ID}")                     # Gymnasium 1.x discovers no plugins: the bare id is unknown yet
    raise SystemExit("the bare id resolved without importing esper")
except gym.error.Error:
    pass
env = gym.make("esper.simic:{ENV_ID}", **{MAKE_KW!r})
assert type(env.unwrapped).__name__ == "MorphogeneticEnv"
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import importlib
    import esper.simic.environment.env as module
    importlib.reload(module)               # registering again must not override (or warn)
assert not [w for w in caught if "Overriding" in str(w.message)], [str(w.message) for w in caught]
gym.make("{ENV_ID}", **{MAKE_KW!r}).reset(seed=0)
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


# ------------------------------------------------------------------------------------------ TimeLimit
def test_time_limit_cut_episode_reports_its_accuracies(ctx):
    k = 3
    env = gym.wrappers.RecordEpisodeStatistics(gym.make(ENV_ID, max_episode_steps=k, **MAKE_KW))
    for seed in (0, 1):                                        # every episode, not only the first
        steps = run_episode(env, seed=seed)
        r, term, trunc, info = steps[-1]
        assert len(steps) == k and trunc and not term          # the env truncates itself; TimeLimit agrees
        assert all(not (s[1] or s[2]) and "esper_episode" not in s[3] for s in steps[:-1])
        summary = info["esper_episode"]
        assert_finished(summary, k)
        assert info["episode"]["l"] == k
        base = env.unwrapped
        assert base.core.horizon == k and base.time_limit == k
        # the test split was evaluated on the last step: the host has not changed since
        test = base.core.trainer.evaluate(base.ctx.data, "test").cpu().numpy()
        assert summary.final_test_acc == pytest.approx(summarise(test)[1])
        assert summary.final_val_acc == pytest.approx(info["val_acc"])

    # a limit beyond the env's own episode changes nothing: the env terminates at max_epochs
    steps = run_episode(gym.make(ENV_ID, max_episode_steps=MAX_EPOCHS + 5, **MAKE_KW))
    assert len(steps) == MAX_EPOCHS and steps[-1][1] and not steps[-1][2]
    # by hand: a TimeLimit outside make is invisible to the env, horizon= says the same
    steps = run_episode(gym.wrappers.TimeLimit(MorphogeneticEnv(ctx, horizon=k), k))
    assert len(steps) == k and steps[-1][2]
    assert_finished(steps[-1][3]["esper_episode"], k)


# ------------------------------------------------------------------------------------------ env checker
def test_gymnasium_env_checker_passes_on_the_made_env():
    from gymnasium.utils.env_checker import check_env

    env = gym.make(ENV_ID, max_episode_steps=4, **MAKE_KW)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped, skip_render_check=True)
    unexpected = [str(w.message) for w in caught if "Box observation space" not in str(w.message)]
    assert not unexpected                 # only the (deliberate) unbounded-Box warnings
