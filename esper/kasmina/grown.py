"""A grown network as one self-describing file, and `load_grown`, which rebuilds it with no env and no Ray.

A `MorphogeneticModel` that grew has fossils in its slots: modules the host's recipe does not
describe, so its `state_dict` does not load into a freshly built model (strict loading fails on
the `slots.N.fossils.K.*` keys). The artifact holds what rebuilds the structure as well as the
weights:

    {"kind": "esper.grown", "format": 1, "esper_version": "0.1.0", "leyline_version": "1.0.0",
     "structure": {"host": {...HostConfig...}, "slots": ["block0", ...], "input_shape": [C, H, W],
                   "blueprint_params": {...}, "lifecycle": {...LifecycleConfig...},
                   "fossils": [{"slot": "block1", "slot_index": 1, "channels": 16,
                                "fossils": [{"blueprint": "conv_enhance", "params": {...}, "param_count": 4640}]},
                               ...one entry per slot, in slot order]},
     "state_dict": {...},          # host + fossils; never a live seed's keys
     "params": {"host": 6418, "fossils": 4640, "total": 11058},
     "probe": {"input": tensor (2, C, H, W), "output": tensor (2, classes), "device": "cpu"},
     "growth_log": [...], "decisions": [...], "controller": {...}, "episode": {...},
     "exported": {...}, "live_seed_rule": "...", "config": "<the run config as JSON>"}

Only dicts, lists, strings, numbers, booleans, None and tensors, so `torch.load(weights_only=True)`
reads it; `load_grown` loads no other way. `probe` is the grown model's own output (eval mode, on
its device) for two fixed inputs: on the same device, `load_grown(path)(probe["input"])` equals it
bit for bit. The keys after `probe` are the caller's (`esper grow` fills them, see esper.grow);
`grown_payload` only requires that they are plain data.

Live seeds: an artifact holds no live seed. `drop_live_seeds` is the rule `esper grow` applies at an
episode's end (LIVE_SEED_RULE): a seed that has not reached FOSSILIZED is dropped (culled), because
only a fossil has passed every gate, G5 included; `grown_payload` refuses a model that still has one.
"""
from __future__ import annotations

import io
import pickle
from importlib import metadata
from typing import Any, Sequence

import torch

from esper.kasmina.config import HostConfig, KasminaConfig, LifecycleConfig
from esper.kasmina.graft import MorphogeneticModel
from esper.kasmina.host import build_host
from esper.leyline import LEYLINE_VERSION, SeedEvent, check_compatible
from esper.storage import read_bytes, resolve_fs, write_bytes_atomic

GROWN_KIND = "esper.grown"
GROWN_FORMAT = 1
PROBE_SEED = 0
LIVE_SEED_RULE = ("seeds that did not reach FOSSILIZED by the episode's end are dropped: only seeds that passed "
                  "every gate (G0-G5) are kept, so the saved model is the host plus its fossils; its accuracy is "
                  "re-measured after the drop and recorded beside the episode's")


class GrownModelError(ValueError):
    """A file that is not a grown model this Esper reads, or a model that cannot be saved as one."""


def esper_version() -> str:
    try:
        return metadata.version("esper")
    except metadata.PackageNotFoundError:       # running from a source tree that was never installed
        return "unknown"


# ------------------------------------------------------------------------------------------ live seeds
def drop_live_seeds(model: MorphogeneticModel, epoch: int) -> list[SeedEvent]:
    """Apply LIVE_SEED_RULE: cull every slot's live seed (GERMINATED .. PROBATIONARY). Returns the moves."""
    events = []
    for slot in model.slots:
        if slot.is_live:
            events.append(slot.cull(epoch, f"dropped at the episode's end: still {slot.stage.name}, "
                                           f"not FOSSILIZED (only seeds that passed every gate are kept)"))
    return events


# ------------------------------------------------------------------------------------------ structure
def grown_structure(model: MorphogeneticModel, kasmina: KasminaConfig, input_shape: Sequence[int]) -> dict:
    """The recipe that rebuilds `model` without its weights: host, slots, input shape, every fossil."""
    names = [s.name for s in model.slots]
    if names != list(kasmina.slots):
        raise GrownModelError(f"the model's slots {names} are not kasmina.slots={list(kasmina.slots)}")
    fossils = []
    for slot in model.slots:
        if len(slot.fossil_specs) != len(slot.fossils):
            raise GrownModelError(f"slot {slot.name!r} has {len(slot.fossils)} fossils but records "
                                  f"{len(slot.fossil_specs)}; add fossils with SeedSlot.add_fossil")
        fossils.append({"slot": slot.name, "slot_index": slot.index, "channels": slot.channels,
                        "fossils": [{"blueprint": spec["blueprint"], "params": dict(spec["params"]),
                                     "param_count": sum(p.numel() for p in f.parameters())}
                                    for spec, f in zip(slot.fossil_specs, slot.fossils)]})
    return {"host": kasmina.host.model_dump(mode="json"), "slots": names,
            "input_shape": [int(d) for d in input_shape],
            "blueprint_params": {k: dict(v) for k, v in kasmina.blueprint_params.items()},
            "lifecycle": kasmina.lifecycle.model_dump(mode="json"), "fossils": fossils}


def build_grown(structure: dict) -> MorphogeneticModel:
    """A model with the structure `grown_structure` describes (fresh weights; load a state_dict into it,
    strictly). Built on the CPU; the caller's torch RNG is left as it was."""
    host_cfg = HostConfig.model_validate(structure["host"])
    input_shape = tuple(structure["input_shape"])
    with torch.random.fork_rng(devices=[]):
        host = build_host(host_cfg, in_channels=input_shape[0])
        model = MorphogeneticModel(host, structure["slots"], input_shape,
                                   LifecycleConfig.model_validate(structure["lifecycle"]),
                                   structure["blueprint_params"])
        by_name = {s.name: s for s in model.slots}
        for entry in structure["fossils"]:
            slot = by_name[entry["slot"]]
            if slot.channels != entry["channels"]:
                raise GrownModelError(f"slot {slot.name!r} has {slot.channels} channels in the rebuilt host, "
                                      f"the saved model had {entry['channels']}")
            for f in entry["fossils"]:
                slot.add_fossil(f["blueprint"], f["params"])
    return model


# ------------------------------------------------------------------------------------------ save
def _check_plain(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise GrownModelError(f"{where}: key {k!r} is a {type(k).__name__}; keys must be str or int")
            _check_plain(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif not (value is None or isinstance(value, (str, int, float, bool, torch.Tensor))):
        raise GrownModelError(f"{where} is a {type(value).__name__}; a grown-model file holds only plain data "
                              f"(dict, list, str, number, bool, None, tensor) so it loads with weights_only=True")


def grown_payload(model: MorphogeneticModel, kasmina: KasminaConfig, input_shape: Sequence[int],
                  **sections: Any) -> dict:
    """The artifact for `model` (which must hold no live seed; see drop_live_seeds), plus `sections`
    (plain data: growth log, controller, accuracies, config, ...). Checks that it rebuilds: the structure
    is built again and the weights are loaded into it strictly, so every saved file loads."""
    live = [f"{s.name} ({s.stage.name})" for s in model.slots if s.seed is not None]
    if live:
        raise GrownModelError(f"slot(s) {live} still hold a live seed; fossilize or drop it first "
                              f"(drop_live_seeds applies the rule: {LIVE_SEED_RULE})")
    structure = grown_structure(model, kasmina, input_shape)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    try:
        build_grown(structure).load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise GrownModelError(f"the grown model does not rebuild from its own description: {exc}") from None
    fossil_params = sum(f["param_count"] for e in structure["fossils"] for f in e["fossils"])
    probe_in = torch.randn((2, *structure["input_shape"]), generator=torch.Generator().manual_seed(PROBE_SEED))
    p = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            probe_out = model(probe_in.to(device=p.device, dtype=p.dtype)).detach().cpu().clone()
    finally:
        model.train(was_training)
    payload = {"kind": GROWN_KIND, "format": GROWN_FORMAT, "esper_version": esper_version(),
               "leyline_version": LEYLINE_VERSION, "structure": structure, "state_dict": state,
               "params": {"host": model.host_param_count, "fossils": fossil_params,
                          "total": model.host_param_count + fossil_params},
               "probe": {"input": probe_in, "output": probe_out, "device": str(p.device)},
               "live_seed_rule": LIVE_SEED_RULE}
    for key, value in sections.items():
        if key in payload:
            raise GrownModelError(f"section {key!r} is part of the format; choose another name")
        _check_plain(value, key)
        payload[key] = value
    return payload


def save_grown(path: str, payload: dict) -> str:
    """Write a `grown_payload` atomically to `path` (local, NFS, s3://, gs://). Returns `path`."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    fs, p = resolve_fs(path)
    write_bytes_atomic(fs, p, buf.getvalue())
    return path


# ------------------------------------------------------------------------------------------ load
def read_grown(path: str) -> dict:
    """The artifact at `path`, loaded with `weights_only=True` onto the CPU and checked (kind, format, Leyline)."""
    fs, p = resolve_fs(path)
    try:
        data = read_bytes(fs, p)
    except FileNotFoundError:
        raise FileNotFoundError(f"no grown model at {path}") from None
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GrownModelError(f"{path}: refused by torch.load(weights_only=True), which reads only tensors and "
                              f"plain containers ({first})") from None
    except Exception as exc:                # not a torch file at all (truncated, empty, another format)
        raise GrownModelError(f"{path} is not an Esper grown model: torch.load cannot read it "
                              f"({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("kind") != GROWN_KIND:
        raise GrownModelError(f"{path} is not an Esper grown model (written by `esper grow`); "
                              f"kind={payload.get('kind') if isinstance(payload, dict) else type(payload).__name__!r}")
    if payload.get("format") != GROWN_FORMAT:
        raise GrownModelError(f"{path}: grown-model format {payload.get('format')}, this Esper reads {GROWN_FORMAT}")
    check_compatible(payload["leyline_version"], what=f"grown model {path}")
    return payload


def load_grown(path: str) -> MorphogeneticModel:
    """Rebuild the grown network saved at `path`: host + fossils on the CPU, weights loaded strictly.

    Returns a plain `nn.Module` (a MorphogeneticModel: its slots are empty, fossils run in their
    forward and their parameters are in `.parameters()`) in **eval mode**; call `.train()` to fine-tune
    and `.to(device)` to move it. Needs no env, no data and no Ray; reads with `weights_only=True`.
    """
    payload = read_grown(path)
    model = build_grown(payload["structure"])
    model.load_state_dict(payload["state_dict"], strict=True)
    return model.eval()
