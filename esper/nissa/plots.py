"""The report's plots, one function per figure: an Arrow table in, a PNG out (the timeline and the
accuracy plot also as `*_figure`, which returns the figure unsaved, for a caller to inspect).

Only the report imports this module (and so matplotlib), with the non-interactive Agg backend.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from esper.leyline.stages import SeedStage  # noqa: E402

STAGE_COLORS = dict(zip([s.name for s in SeedStage], plt.get_cmap("tab10").colors))
SEED_MARKERS = {"GERMINATED": "^", "FOSSILIZED": "*", "CULLED": "x"}
INSTANT_WIDTH = 0.25  # epochs: how wide a stage that lasted no epoch is drawn
LEARNER_METRICS = ("policy_loss", "value_loss", "entropy", "approx_kl", "explained_variance", "clip_fraction")


def episode_keys(table: pa.Table, limit: int) -> list[tuple[Any, Any]]:
    """The first `limit` (episode_id, attempt) pairs in time order."""
    seen: dict[tuple[Any, Any], None] = {}
    for key in zip(table["episode_id"].to_pylist(), table["attempt"].to_pylist()):
        if key not in seen:
            seen[key] = None
            if len(seen) == limit:
                break
    return list(seen)


def _episode(table: pa.Table, key: tuple[Any, Any]) -> pa.Table:
    eid, attempt = key
    mask = pc.equal(table["episode_id"], eid) if eid is not None else pc.is_null(table["episode_id"])
    if attempt is not None:
        mask = pc.and_(mask, pc.equal(table["attempt"], attempt))
    return table.filter(mask)


def _save(fig: Figure, path: str) -> None:
    fig.savefig(path, dpi=100)
    plt.close(fig)


def val_acc_figure(steps: pa.Table, seeds: pa.Table | None, episodes: int = 8) -> tuple[Figure, int]:
    """Validation accuracy per episode over epochs, seed germinations/fossils/culls marked (and in the
    legend only those that occur). Returns (figure, #episodes)."""
    keys = episode_keys(steps, episodes)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    marked: set[str] = set()
    for k, key in enumerate(keys):
        ep = _episode(steps, key).sort_by("epoch")
        epochs, acc = ep["epoch"].to_numpy(zero_copy_only=False), ep["val_acc"].to_numpy(zero_copy_only=False)
        color = plt.get_cmap("tab10")(k % 10)
        ax.plot(epochs, acc, color=color, lw=1.2, label=f"{key[0]}#{key[1]}")
        if seeds is not None and seeds.num_rows:
            acc_at = dict(zip(epochs.tolist(), acc.tolist()))
            for row in _episode(seeds, key).to_pylist():
                marker = SEED_MARKERS.get(row["to_stage"])
                if marker and row["epoch"] in acc_at:
                    ax.scatter(row["epoch"], acc_at[row["epoch"]], marker=marker, color=color, s=60, zorder=3)
                    marked.add(row["to_stage"])
    for stage, marker in SEED_MARKERS.items():  # legend entries only for markers on the plot
        if stage in marked:
            ax.scatter([], [], marker=marker, color="gray", label=stage.lower())
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"Validation accuracy, first {len(keys)} episodes")
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    return fig, len(keys)


def plot_val_acc(steps: pa.Table, seeds: pa.Table | None, path: str, episodes: int = 8) -> int:
    """`val_acc_figure` saved as a PNG at `path`. Returns #episodes."""
    fig, n = val_acc_figure(steps, seeds, episodes)
    _save(fig, path)
    return n


def stage_bars(changes: list[tuple[int, str]], last: int) -> list[tuple[float, float, str, bool]]:
    """One slot's bars (start, width, stage, instant) from its (epoch, stage) changes, up to epoch `last`.

    A stage entered and left in the same step (GERMINATED -> TRAINING, FOSSILIZED -> DORMANT and
    CULLED -> EMBARGOED all happen inside one step) lasts no epoch; it becomes a narrow `instant`
    bar at the start of the next one (side by side when several share an epoch), drawn on top so
    its colour shows.
    """
    bars, instants = [], defaultdict(int)
    for (start, stage), (end, _) in zip(changes, changes[1:] + [(last, None)]):
        if end > start:
            bars.append((start, end - start, stage, False))
        else:
            bars.append((start + INSTANT_WIDTH * instants[start], INSTANT_WIDTH, stage, True))
            instants[start] += 1
    return bars


def seed_timeline_figure(seeds: pa.Table, steps: pa.Table | None, episodes: int = 4) -> tuple[Figure, int]:
    """Slot x epoch, coloured by seed stage, for the first few episodes with seed events.

    The legend lists exactly the stages drawn. Returns (figure, #episodes).
    """
    keys = episode_keys(seeds, episodes)
    fig, axes = plt.subplots(len(keys), 1, figsize=(8, 1.2 + 1.3 * len(keys)), squeeze=False)
    drawn: set[str] = set()
    for ax, key in zip(axes[:, 0], keys):
        ep = _episode(seeds, key).sort_by([("epoch", "ascending"), ("time", "ascending")]).to_pylist()
        last = max(r["epoch"] for r in ep) + 1
        if steps is not None and steps.num_rows:
            ep_steps = _episode(steps, key)
            if ep_steps.num_rows:
                last = max(last, pc.max(ep_steps["epoch"]).as_py() + 1)
        by_slot: dict[int, list[tuple[int, str]]] = defaultdict(list)
        for r in ep:
            by_slot[r["slot"]].append((r["epoch"], r["to_stage"]))
        for slot, changes in by_slot.items():
            for start, width, stage, instant in stage_bars(changes, last):
                ax.broken_barh([(start, width)], (slot - 0.4, 0.8), color=STAGE_COLORS.get(stage, "black"),
                               zorder=3 if instant else 2)
                drawn.add(stage)
        ax.set_yticks(sorted(by_slot))
        ax.set_yticklabels([f"slot {s}" for s in sorted(by_slot)])
        ax.set_xlim(0, last)
        ax.set_title(f"episode {key[0]}#{key[1]}", fontsize=9)
    axes[-1, 0].set_xlabel("epoch")
    order = list(STAGE_COLORS)
    stages = sorted(drawn, key=lambda s: order.index(s) if s in order else len(order))
    handles = [plt.Rectangle((0, 0), 1, 1, color=STAGE_COLORS.get(s, "black")) for s in stages]
    fig.legend(handles, [str(s).lower() for s in stages], loc="upper right", fontsize=7, ncol=4)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig, len(keys)


def plot_seed_timeline(seeds: pa.Table, steps: pa.Table | None, path: str, episodes: int = 4) -> int:
    """`seed_timeline_figure` saved as a PNG at `path`. Returns #episodes."""
    fig, n = seed_timeline_figure(seeds, steps, episodes)
    _save(fig, path)
    return n


def action_counts(decisions: pa.Table, bins: int = 10) -> tuple[str, list[Any], dict[str, np.ndarray]]:
    """Action-kind counts per policy version (or per time bin when versions do not vary)."""
    kinds = [(n or "?").split("(")[0] for n in decisions["action_name"].to_pylist()]
    versions = decisions["policy_version"].to_pylist()
    if len({v for v in versions if v is not None}) > 1:
        axis, groups = "policy version", [v if v is not None else -1 for v in versions]
    else:
        t = decisions["time"].cast(pa.int64()).to_numpy(zero_copy_only=False)
        edges = np.linspace(t.min(), t.max() + 1, bins + 1)
        axis, groups = "time bin", np.digitize(t, edges[1:-1]).tolist()
    labels = sorted(set(groups))
    pos = {g: i for i, g in enumerate(labels)}
    counts: dict[str, np.ndarray] = {}
    for g, kind in zip(groups, kinds):
        counts.setdefault(kind, np.zeros(len(labels)))[pos[g]] += 1
    return axis, labels, counts


def plot_actions(decisions: pa.Table, path: str) -> dict[str, float]:
    """Stacked fraction of each action kind over training. Returns the overall fractions."""
    axis, labels, counts = action_counts(decisions)
    total = sum(counts.values())
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(8, 4))
    bottom = np.zeros(len(labels))
    for kind in sorted(counts):
        frac = counts[kind] / np.maximum(total, 1)
        ax.bar(x, frac, bottom=bottom, label=kind, width=0.9)
        bottom += frac
    ax.set_xticks(x[:: max(1, len(x) // 12)])
    ax.set_xticklabels([str(labels[i]) for i in x[:: max(1, len(x) // 12)]], fontsize=7)
    ax.set_xlabel(axis)
    ax.set_ylabel("fraction of decisions")
    ax.legend(fontsize=7)
    ax.set_title("Action distribution over training")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    n = float(sum(c.sum() for c in counts.values()))
    return {k: float(c.sum()) / n for k, c in sorted(counts.items())}


def plot_learner(learner: pa.Table, path: str) -> list[str]:
    """One panel per PPO metric against policy version. Returns the metrics that had data."""
    present = [m for m in LEARNER_METRICS if learner[m].null_count < learner.num_rows]
    fig, axes = plt.subplots(2, 3, figsize=(10, 5.5), squeeze=False)
    x = learner["policy_version"].to_numpy(zero_copy_only=False)
    for ax, metric in zip(axes.flat, LEARNER_METRICS):
        if metric in present:
            ax.plot(x, learner[metric].to_numpy(zero_copy_only=False), lw=1.2, marker="." if len(x) < 50 else None)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(metric.replace("_", " "), fontsize=9)
        ax.set_xlabel("policy version", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return present
