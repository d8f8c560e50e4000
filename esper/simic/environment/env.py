"""MorphogeneticEnv: one host training run as a Gymnasium environment.

    env = MorphogeneticEnv()                      # built-in synthetic task, reference host
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_masks().nonzero()[0][0])

One episode = one host trained for `max_epochs` steps; one step = apply the action, train
`batches_per_step` batches (default one epoch), evaluate on validation. The action mask is in
`info["action_mask"]` and `env.action_masks()`; an illegal action raises IllegalActionError.
`action_space.sample()` draws among the legal actions, so random agents and Gymnasium's env
checker exercise real transitions. The finished episode's `EpisodeSummary` (final validation and test
accuracy, seeds, parameters) is in `info["esper_episode"]` on the last step; `info["episode"]` is left to
Gymnasium's `RecordEpisodeStatistics` and the RL libraries' monitors. Stepped by hand, it writes its own
telemetry (step, seed, diagnostic and episode events) to the process's hub; it knows no policy, so
`policy_version` is -1.

Registered with Gymnasium as `esper/Morphogenetic-v0` when `esper.simic` is imported; the constructor's
keywords go through `make` (the configs as pydantic objects or plain dicts):

    import gymnasium as gym
    env = gym.make("esper.simic:esper/Morphogenetic-v0",       # "module:id": make imports esper.simic itself
                   tolaria={"data": {"train_size": 256}}, device="cpu", max_episode_steps=10)
    vec = gym.make_vec("esper.simic:esper/Morphogenetic-v0", 2, vectorization_mode="async", device="cpu")

Gymnasium (1.x) has no plugin discovery, so after only `import gymnasium` the bare id is unknown: import
`esper.simic` first or use the "esper.simic:" prefix. An episode cut short by `make(...,
max_episode_steps=k)` (k < max_epochs) still reports its accuracies: the registered `HorizonFromTimeLimit`
wrapper tells the env the TimeLimit's k, so the env truncates itself at step k after running the test split.
A `TimeLimit` applied by hand (not through `make`, or above `make`'s wrappers) is invisible to the env:
pass `horizon=k` to the constructor (or to `make`) as well.
"""
from __future__ import annotations

import copy
import weakref
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import TimeLimit

from esper.kasmina import KasminaConfig
from esper.nissa.records import emit_episode, emit_records
from esper.simic.config import EnvConfig
from esper.simic.environment.context import EnvContext, make_context
from esper.simic.environment.core import EnvCore
from esper.tolaria import TolariaConfig

ENV_ID = "esper/Morphogenetic-v0"


class MaskedDiscrete(spaces.Discrete):
    """A Discrete space whose mask-less `sample()` draws from the env's current legal actions.

    It holds a weak reference to its env (copying the space must not copy the env). `copy.deepcopy` keeps
    that reference; pickling drops it (a weak reference does not pickle, and the env lives in another
    process anyway), so an unpickled space — or one whose env is gone — samples as a plain `Discrete(n)`
    unless given a mask. It equals `Discrete(n)`.
    """

    def __init__(self, n: int, env: "MorphogeneticEnv", seed: int | None = None) -> None:
        super().__init__(n, seed=seed)
        self._env: weakref.ReferenceType | None = weakref.ref(env)

    def sample(self, mask=None, probability=None):
        env = self._env() if self._env is not None else None
        if mask is None and probability is None and env is not None and env.core.model is not None:
            mask = env.action_masks().astype(np.int8)
        return super().sample(mask=mask, probability=probability)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_env"] = None
        return state

    def __setstate__(self, state) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_env", None)

    def __deepcopy__(self, memo: dict) -> "MaskedDiscrete":
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            new.__dict__[key] = value if key == "_env" else copy.deepcopy(value, memo)
        return new

    def __copy__(self) -> "MaskedDiscrete":
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new


def _config(model: type, value: Any, name: str):
    """A config given as the pydantic model, a dict of its fields (validated: an unknown key is an error) or None."""
    if value is None:
        return model()
    if isinstance(value, model):
        return value
    if isinstance(value, dict):
        return model.model_validate(value)
    raise TypeError(f"{name} must be a {model.__name__} or a dict of its fields, got {type(value).__name__}")


class MorphogeneticEnv(gym.Env):
    """`horizon`: cut every episode after this many steps (truncated, with the summary and test accuracy on
    that step); None runs `max_epochs` steps. `time_limit` is the same, set by `HorizonFromTimeLimit` from
    `gymnasium.make(..., max_episode_steps=k)`; the shorter of the two applies."""

    metadata = {"render_modes": []}

    def __init__(self, ctx: EnvContext | None = None, *, kasmina: KasminaConfig | dict | None = None,
                 tolaria: TolariaConfig | dict | None = None, env: EnvConfig | dict | None = None,
                 gamma: float = 0.99, device: str | None = None, env_index: int = 0,
                 horizon: int | None = None) -> None:
        super().__init__()
        if ctx is None:
            ctx = make_context(_config(KasminaConfig, kasmina, "kasmina"), _config(TolariaConfig, tolaria, "tolaria"),
                               _config(EnvConfig, env, "env"), gamma, device)
        self.ctx = ctx
        self.core = EnvCore(self.ctx, env_index)
        self.observation_space = spaces.Box(-np.inf, np.inf, (self.ctx.schema.size,), np.float32)
        self.action_space = MaskedDiscrete(self.ctx.space.n, self)
        self.horizon = horizon
        self.time_limit: int | None = None
        self._done = True

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        env_seed = seed if seed is not None else int(self.np_random.integers(2**62))
        episode_id = options.get("episode_id", f"env{self.core.env_index}-seed{env_seed}")
        self._done = False
        horizon = min((h for h in (self.horizon, self.time_limit) if h is not None), default=None)
        return self.core.reset(env_seed, episode_id, int(options.get("attempt", 0)), horizon=horizon)

    def step(self, action):
        if self._done:
            raise RuntimeError("the episode is over (or never started); call reset() first")
        core = self.core
        core.begin_step(int(action))
        for _ in range(core.batches_per_step):
            core.train_batch()
        core.evaluate()
        stats = core.device_stats().cpu().numpy()           # the step's one synchronisation
        obs, reward, terminated, truncated, info = core.finish_step(stats)
        emit_records(info["records"], policy_version=-1)
        if "esper_episode" in info:
            emit_episode(info["esper_episode"], policy="")
        self._done = terminated or truncated
        return obs, reward, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        if self.core.model is None:
            raise RuntimeError("call reset() before asking for the action mask")
        return self.core.action_mask()


class HorizonFromTimeLimit(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Tells the MorphogeneticEnv underneath the episode length of the `TimeLimit`s underneath, at each reset.

    `gymnasium.make` applies it above its TimeLimit (it is the registered spec's additional wrapper); the env
    then truncates itself on the TimeLimit's last step, running the test split and reporting its summary,
    which a TimeLimit alone would cut off. Without a TimeLimit it changes nothing.
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)

    def _time_limit(self) -> int | None:
        steps, inner = None, self.env
        while isinstance(inner, gym.Wrapper):
            if isinstance(inner, TimeLimit):
                k = int(inner._max_episode_steps)
                steps = k if steps is None else min(steps, k)
            inner = inner.env
        return steps

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        base = self.unwrapped
        if isinstance(base, MorphogeneticEnv):
            base.time_limit = self._time_limit()
        return super().reset(seed=seed, options=options)


def register() -> None:
    """Register `esper/Morphogenetic-v0` with Gymnasium (once: importing again does not re-register)."""
    if ENV_ID in gym.registry:
        return
    gym.register(
        id=ENV_ID, entry_point="esper.simic.environment.env:MorphogeneticEnv",
        additional_wrappers=(gym.envs.registration.WrapperSpec(
            "HorizonFromTimeLimit", "esper.simic.environment.env:HorizonFromTimeLimit", {}),),
    )


register()
