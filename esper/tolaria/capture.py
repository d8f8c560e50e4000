"""Captured steps: a whole training (or evaluation) step recorded once as a CUDA graph and replayed
per batch.

An eager step of a small host costs ~3 ms of Python and kernel launches whatever the model; one
graph replay is one launch. A graph stays valid while the tensors it captured stay the same, so
it is recaptured when `key_fn()` changes (the model's forward structure: germinate, stage change,
cull, fossilize; replaced optimizers) or after `invalidate()` (governor rollback, optimizer state
loaded). alpha is a tensor, so blending needs no recapture.

Capturing needs warm-up runs (allocator, cuDNN autotuning, optimizer state); their effects are
undone, and optimizer buffers they created are zeroed (for SGD momentum, a zero buffer gives the
same first step as no buffer), so a captured run trains exactly like an eager one.

`recording_factory` makes the recording: CUDA graphs on a GPU; on CPU, tests pass
`EagerRecording`, which runs warm-up and "replay" eagerly, so the buffer plumbing, the warm-up
undo and the recapture rules are tested everywhere.
"""
from __future__ import annotations

from typing import Callable, Protocol

import torch


class Recording(Protocol):
    def warmup(self, fn: Callable[[], None]) -> None: ...
    def capture(self, fn: Callable[[], None]) -> None: ...
    def replay(self) -> None: ...


class CudaGraphRecording:
    """One CUDA graph with its own memory pool."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.graph = torch.cuda.CUDAGraph()

    def warmup(self, fn: Callable[[], None]) -> None:
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                fn()
        torch.cuda.current_stream(self.device).wait_stream(side)

    def capture(self, fn: Callable[[], None]) -> None:
        with torch.cuda.graph(self.graph):
            fn()

    def replay(self) -> None:
        self.graph.replay()


class EagerRecording:
    """Stand-in without a GPU: warm-up runs fn once, replay runs it again."""

    def __init__(self, device: torch.device | None = None) -> None:
        self.fn: Callable[[], None] | None = None

    def warmup(self, fn: Callable[[], None]) -> None:
        fn()

    def capture(self, fn: Callable[[], None]) -> None:
        self.fn = fn

    def replay(self) -> None:
        assert self.fn is not None, "replay before capture"
        self.fn()


def default_recording(device: torch.device) -> Recording:
    if device.type != "cuda":
        raise ValueError(f"CUDA graph capture needs a CUDA device, not {device}; use the eager path on CPU/MPS")
    return CudaGraphRecording(device)


class CapturedStep:
    """Replays `step_fn(x_static, y_static)`, recapturing when `key_fn()` or the input layout changes.

    `step_fn` reads its inputs only from the static buffers and writes results into tensors that
    outlive the graph. `state_fn()` lists every tensor a step mutates (parameters, buffers,
    optimizer state, accumulators): warm-up effects on them are undone before the capture.
    """

    def __init__(self, step_fn: Callable[[torch.Tensor, torch.Tensor], None], key_fn: Callable[[], tuple],
                 state_fn: Callable[[], list[torch.Tensor]],
                 recording_factory: Callable[[torch.device], Recording] = default_recording) -> None:
        self.step_fn, self.key_fn, self.state_fn = step_fn, key_fn, state_fn
        self.recording_factory = recording_factory
        self._recording: Recording | None = None
        self._key: tuple | None = None
        self.x_static: torch.Tensor | None = None
        self.y_static: torch.Tensor | None = None
        self.captures = 0
        self.generation = 0

    def invalidate(self) -> None:
        """Tensors the graph points at were replaced: recapture before the next replay."""
        self.generation += 1

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        key = (self.key_fn(), self.generation, tuple(x.shape), x.dtype, x.stride(), tuple(y.shape), y.dtype)
        if self._recording is None or key != self._key:
            self._capture(x, y, key)
        self.x_static.copy_(x)
        self.y_static.copy_(y)
        self._recording.replay()

    def _capture(self, x: torch.Tensor, y: torch.Tensor, key: tuple) -> None:
        self._recording = None                       # drop the old graph (and its memory pool) first
        self.x_static = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=x.device).copy_(x)
        self.y_static = y.clone()
        xs, ys = self.x_static, self.y_static
        recording = self.recording_factory(x.device)
        before = self.state_fn()
        saved = [t.detach().clone() for t in before]
        recording.warmup(lambda: self.step_fn(xs, ys))
        with torch.no_grad():
            if before:
                torch._foreach_copy_([t.detach() for t in before], saved)
            known = {id(t) for t in before}
            for t in self.state_fn():
                if id(t) not in known:              # created by the warm-up (e.g. momentum buffers)
                    t.zero_()
        recording.capture(lambda: self.step_fn(xs, ys))
        self._recording, self._key = recording, key
        self.captures += 1
