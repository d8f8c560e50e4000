"""Tamiyo's actions as one flat discrete space: WAIT, GERMINATE(slot, blueprint), ADVANCE(slot), CULL(slot)."""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Sequence

# The blueprint ids the action space and observation know about. Kasmina's catalog implements
# exactly these (a test checks it), so a policy trained on one build reads another's actions.
BLUEPRINT_IDS: tuple[str, ...] = ("norm", "attention", "depthwise", "conv_enhance")


class ActionKind(IntEnum):
    WAIT = 0
    GERMINATE = 1
    ADVANCE = 2
    CULL = 3


@dataclass(frozen=True, slots=True)
class Action:
    kind: ActionKind
    slot: int | None = None
    blueprint: str | None = None

    def __str__(self) -> str:
        if self.kind is ActionKind.WAIT:
            return "WAIT"
        if self.kind is ActionKind.GERMINATE:
            return f"GERMINATE(slot={self.slot}, blueprint={self.blueprint})"
        return f"{self.kind.name}(slot={self.slot})"


class ActionSpace:
    """Index layout: 0 = WAIT; then GERMINATE for each (slot, blueprint); then ADVANCE per slot; then CULL per slot."""

    def __init__(self, num_slots: int, blueprint_ids: Sequence[str] = BLUEPRINT_IDS) -> None:
        if num_slots < 1:
            raise ValueError(f"num_slots must be >= 1, got {num_slots}")
        unknown = [b for b in blueprint_ids if b not in BLUEPRINT_IDS]
        if unknown or not blueprint_ids:
            raise ValueError(f"blueprint_ids {list(blueprint_ids)} must be a non-empty subset of {list(BLUEPRINT_IDS)}")
        self.num_slots = num_slots
        self.blueprint_ids = tuple(blueprint_ids)
        nb = len(self.blueprint_ids)
        self.germinate_start = 1
        self.advance_start = 1 + num_slots * nb
        self.cull_start = self.advance_start + num_slots
        self.n = self.cull_start + num_slots

    def encode(self, action: Action) -> int:
        if action.kind is ActionKind.WAIT:
            return 0
        slot = self._check_slot(action.slot)
        if action.kind is ActionKind.GERMINATE:
            if action.blueprint not in self.blueprint_ids:
                raise ValueError(f"unknown blueprint {action.blueprint!r}; known: {list(self.blueprint_ids)}")
            return self.germinate_start + slot * len(self.blueprint_ids) + self.blueprint_ids.index(action.blueprint)
        if action.kind is ActionKind.ADVANCE:
            return self.advance_start + slot
        return self.cull_start + slot

    def decode(self, index: int) -> Action:
        index = int(index)
        if not 0 <= index < self.n:
            raise ValueError(f"action index {index} out of range [0, {self.n})")
        if index == 0:
            return Action(ActionKind.WAIT)
        if index < self.advance_start:
            slot, b = divmod(index - self.germinate_start, len(self.blueprint_ids))
            return Action(ActionKind.GERMINATE, slot, self.blueprint_ids[b])
        if index < self.cull_start:
            return Action(ActionKind.ADVANCE, index - self.advance_start)
        return Action(ActionKind.CULL, index - self.cull_start)

    def describe(self) -> dict:
        """What a checkpoint stores to check that a policy fits this space."""
        return {"n": self.n, "num_slots": self.num_slots, "blueprint_ids": list(self.blueprint_ids)}

    def _check_slot(self, slot: int | None) -> int:
        if slot is None or not 0 <= slot < self.num_slots:
            raise ValueError(f"slot {slot!r} out of range; valid slots are 0..{self.num_slots - 1}")
        return slot
