"""SignalTracker: per-step metrics in, training signals out (deltas, bests, plateau length, histories).

NaN/inf inputs are replaced (loss -> LARGE_LOSS, accuracy -> 0) and flagged, so nothing downstream
ever compares against NaN.
"""
from __future__ import annotations

import math
from collections import deque
from typing import NamedTuple

from esper.leyline.signals import HISTORY

LARGE_LOSS = 1e4


class TrackedSignals(NamedTuple):
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    loss_delta: float          # previous val loss - current
    acc_delta: float           # current val acc - previous
    best_val_acc: float
    plateau_epochs: int        # steps since best_val_acc last improved by more than min_delta
    acc_history: tuple[float, ...]   # most recent first, HISTORY entries
    loss_history: tuple[float, ...]
    sanitized: bool


def _clean_loss(x: float) -> tuple[float, bool]:
    return (float(x), False) if math.isfinite(x) else (LARGE_LOSS, True)


def _clean_acc(x: float) -> tuple[float, bool]:
    return (float(x), False) if math.isfinite(x) else (0.0, True)


class SignalTracker:
    def __init__(self, min_delta: float = 1e-3) -> None:
        self.min_delta = min_delta
        self.reset()

    def reset(self, val_loss: float = LARGE_LOSS, val_acc: float = 0.0) -> None:
        """Start an episode; the initial evaluation (if any) seeds the baselines."""
        val_loss, _ = _clean_loss(val_loss)
        val_acc, _ = _clean_acc(val_acc)
        self.prev_val_loss, self.prev_val_acc = val_loss, val_acc
        self.best_val_acc = val_acc
        self.plateau_epochs = 0
        self.acc_hist: deque[float] = deque([val_acc] * HISTORY, maxlen=HISTORY)
        self.loss_hist: deque[float] = deque([val_loss] * HISTORY, maxlen=HISTORY)

    def baseline(self) -> TrackedSignals:
        """The signals at the start of an episode (epoch 0), before any training step."""
        return TrackedSignals(0, self.prev_val_loss, self.prev_val_acc, self.prev_val_loss, self.prev_val_acc, 0.0, 0.0,
                              self.best_val_acc, 0, tuple(self.acc_hist), tuple(self.loss_hist), False)

    def update(self, epoch: int, train_loss: float, train_acc: float, val_loss: float, val_acc: float) -> TrackedSignals:
        train_loss, s1 = _clean_loss(train_loss)
        train_acc, s2 = _clean_acc(train_acc)
        val_loss, s3 = _clean_loss(val_loss)
        val_acc, s4 = _clean_acc(val_acc)
        acc_history, loss_history = tuple(self.acc_hist), tuple(self.loss_hist)   # before this step
        loss_delta, acc_delta = self.prev_val_loss - val_loss, val_acc - self.prev_val_acc
        if val_acc > self.best_val_acc + self.min_delta:
            self.best_val_acc, self.plateau_epochs = val_acc, 0
        else:
            self.plateau_epochs += 1
        self.prev_val_loss, self.prev_val_acc = val_loss, val_acc
        self.acc_hist.appendleft(val_acc)
        self.loss_hist.appendleft(val_loss)
        return TrackedSignals(epoch, train_loss, train_acc, val_loss, val_acc, loss_delta, acc_delta,
                              self.best_val_acc, self.plateau_epochs, acc_history, loss_history, s1 or s2 or s3 or s4)
