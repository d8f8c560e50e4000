"""Seed lifecycle stages and the legal moves between them (docs/architecture.md, "The seed lifecycle")."""
from __future__ import annotations

from enum import IntEnum


class SeedStage(IntEnum):
    DORMANT = 0
    GERMINATED = 1
    TRAINING = 2
    BLENDING = 3
    SHADOWING = 4
    PROBATIONARY = 5
    FOSSILIZED = 6
    CULLED = 7
    EMBARGOED = 8
    RESETTING = 9


S = SeedStage
# Stages in which a seed exists and can still be culled.
LIVE_STAGES = frozenset({S.GERMINATED, S.TRAINING, S.BLENDING, S.SHADOWING, S.PROBATIONARY})
# Stages in which the seed's output reaches the host's forward value.
ACTIVE_STAGES = frozenset({S.BLENDING, S.SHADOWING, S.PROBATIONARY})
# Stages the agent may ADVANCE from (the others move automatically).
ADVANCEABLE_STAGES = frozenset({S.TRAINING, S.SHADOWING, S.PROBATIONARY})

VALID_TRANSITIONS: dict[SeedStage, frozenset[SeedStage]] = {
    S.DORMANT: frozenset({S.GERMINATED}),
    S.GERMINATED: frozenset({S.TRAINING, S.CULLED}),
    S.TRAINING: frozenset({S.BLENDING, S.CULLED}),
    S.BLENDING: frozenset({S.SHADOWING, S.CULLED}),
    S.SHADOWING: frozenset({S.PROBATIONARY, S.CULLED}),
    S.PROBATIONARY: frozenset({S.FOSSILIZED, S.CULLED}),
    # The fossil joins the host; the slot is free for a new seed.
    S.FOSSILIZED: frozenset({S.DORMANT}),
    S.CULLED: frozenset({S.EMBARGOED}),
    S.EMBARGOED: frozenset({S.RESETTING}),
    S.RESETTING: frozenset({S.DORMANT}),
}


class IllegalTransitionError(ValueError):
    """A seed was asked to move between two stages that VALID_TRANSITIONS does not connect."""


def check_transition(current: SeedStage, target: SeedStage) -> None:
    """Raise IllegalTransitionError naming both stages unless current → target is legal."""
    allowed = VALID_TRANSITIONS[SeedStage(current)]
    if SeedStage(target) not in allowed:
        legal = ", ".join(s.name for s in sorted(allowed)) or "none"
        raise IllegalTransitionError(
            f"illegal seed transition {SeedStage(current).name} -> {SeedStage(target).name}; "
            f"from {SeedStage(current).name} the legal moves are: {legal}"
        )
