"""Action masks: which actions are legal given each slot's stage. Illegal actions get probability 0."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from esper.leyline import ADVANCEABLE_STAGES, LIVE_STAGES, ActionSpace, SeedStage


def action_mask(stages: Sequence[SeedStage], space: ActionSpace, agent_advances: bool = True,
                agent_culls: bool = True) -> np.ndarray:
    """Boolean mask over the flat action space: WAIT always; GERMINATE into a DORMANT slot;
    ADVANCE from TRAINING/SHADOWING/PROBATIONARY (unless the gates advance seeds themselves:
    `agent_advances=False`); CULL any live seed (unless `agent_culls=False`)."""
    if len(stages) != space.num_slots:
        raise ValueError(f"{len(stages)} slot stages for an action space of {space.num_slots} slots")
    mask = np.zeros(space.n, dtype=bool)
    mask[0] = True
    nb = len(space.blueprint_ids)
    for s, stage in enumerate(stages):
        if stage is SeedStage.DORMANT:
            start = space.germinate_start + s * nb
            mask[start:start + nb] = True
        if agent_advances and stage in ADVANCEABLE_STAGES:
            mask[space.advance_start + s] = True
        if agent_culls and stage in LIVE_STAGES:
            mask[space.cull_start + s] = True
    return mask


def describe_illegal(index: int, stages: Sequence[SeedStage], space: ActionSpace) -> str:
    action = space.decode(index)
    where = ", ".join(f"slot {i}: {st.name}" for i, st in enumerate(stages))
    return f"illegal action {index} = {action} with slots [{where}]; see env.action_masks() for the legal ones"
