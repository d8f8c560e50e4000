"""Running mean/std observation normalization that stays on the tensor's device.

Its state travels with the policy weights (runners and learner normalize identically) and is
checkpointed. The learner updates it after each PPO update, so the update itself sees exactly
the normalization the runners used.
"""
from __future__ import annotations

import torch


class RunningMeanStd:
    def __init__(self, size: int, device: torch.device | str = "cpu", clip: float = 10.0, eps: float = 1e-8) -> None:
        self.mean = torch.zeros(size, device=device, dtype=torch.float64)
        self.var = torch.ones(size, device=device, dtype=torch.float64)
        self.count = torch.zeros((), device=device, dtype=torch.float64)
        self.clip, self.eps = clip, eps

    def update(self, x: torch.Tensor) -> None:
        """Merge a batch (N, size) into the running moments (Chan et al.), on the device, no host sync."""
        x = x.reshape(-1, self.mean.shape[0]).to(self.mean)
        n = x.shape[0]
        if n == 0:
            return
        b_mean, b_var = x.mean(0), x.var(0, unbiased=False)
        total = self.count + n
        delta = b_mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.var = (self.var * self.count + b_var * n + delta.square() * self.count * n / total) / total
        self.count = total

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self.mean.to(x.dtype), (self.var + self.eps).sqrt().to(x.dtype)
        return ((x - mean) / std).clamp(-self.clip, self.clip)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean.detach().cpu(), "var": self.var.detach().cpu(), "count": self.count.detach().cpu()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        dev = self.mean.device
        if state["mean"].shape != self.mean.shape:
            raise ValueError(f"normalizer state has {state['mean'].shape[0]} features, expected {self.mean.shape[0]}")
        self.mean, self.var, self.count = (state[k].to(dev, torch.float64) for k in ("mean", "var", "count"))

    def to(self, device: torch.device | str) -> "RunningMeanStd":
        self.mean, self.var, self.count = self.mean.to(device), self.var.to(device), self.count.to(device)
        return self
