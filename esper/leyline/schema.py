"""TensorSchema: the observation layout, a base block plus one block per slot, every feature named."""
from __future__ import annotations

import hashlib
from typing import Sequence

from esper.leyline.actions import BLUEPRINT_IDS
from esper.leyline.signals import FastTrainingSignals, SlotSignals
from esper.leyline.stages import SeedStage
from esper.leyline.version import LEYLINE_VERSION

DEFAULT_MAX_SLOTS = 3


class SchemaMismatchError(ValueError):
    """Data or a checkpoint was made for a different observation layout."""


class TensorSchema:
    """Names and offsets of every observation feature for `max_slots` slots and a blueprint set."""

    def __init__(self, max_slots: int = DEFAULT_MAX_SLOTS, blueprint_ids: Sequence[str] = BLUEPRINT_IDS) -> None:
        if max_slots < 1:
            raise ValueError(f"max_slots must be >= 1, got {max_slots}")
        self.max_slots = max_slots
        self.blueprint_ids = tuple(blueprint_ids)
        self.base_features: tuple[str, ...] = FastTrainingSignals._fields
        slot_feats = [f"stage_{s.name.lower()}" for s in SeedStage]
        slot_feats += [f"blueprint_{b}" for b in self.blueprint_ids]
        slot_feats += list(SlotSignals._fields[2:])
        self.slot_features: tuple[str, ...] = tuple(slot_feats)
        self.base_size = len(self.base_features)
        self.slot_size = len(self.slot_features)
        self.size = self.base_size + max_slots * self.slot_size
        self.feature_names: tuple[str, ...] = self.base_features + tuple(
            f"slot{i}.{name}" for i in range(max_slots) for name in self.slot_features
        )
        self._index = {name: i for i, name in enumerate(self.feature_names)}

    def index(self, name: str) -> int:
        """Offset of a named feature, e.g. 'val_acc' or 'slot1.alpha'."""
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"unknown feature {name!r}; see TensorSchema.feature_names") from None

    def slot_offset(self, slot: int) -> int:
        return self.base_size + slot * self.slot_size

    @property
    def fingerprint(self) -> str:
        """Changes whenever a feature is added, removed, renamed or moved."""
        text = "|".join((LEYLINE_VERSION.split(".")[0], *self.feature_names))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def check_fingerprint(self, other: str, *, what: str = "data") -> None:
        if other != self.fingerprint:
            raise SchemaMismatchError(
                f"{what} was made for observation schema {other}, but this run uses {self.fingerprint} "
                f"({self.size} features, max_slots={self.max_slots}, blueprints={list(self.blueprint_ids)})"
            )

    def write(self, buf, base: FastTrainingSignals, slots: Sequence[SlotSignals]) -> int:
        """Write one full observation into `buf` (length `size`); slots beyond len(slots) are empty."""
        if len(slots) > self.max_slots:
            raise ValueError(f"{len(slots)} slots given but the schema has max_slots={self.max_slots}")
        offset = base.write_into(buf, 0)
        nb = len(self.blueprint_ids)
        for i in range(self.max_slots):
            sig = slots[i] if i < len(slots) else SlotSignals.empty()
            offset = sig.write_into(buf, offset, nb)
        return offset


DEFAULT_SCHEMA = TensorSchema()
TENSOR_SCHEMA_SIZE = DEFAULT_SCHEMA.size
