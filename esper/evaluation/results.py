"""Results on disk: one folder per task, and one docs page assembled from them.

    RESULTS_DIR/<folder>/results.json          every record, the frontier, the selection, the comparisons
    RESULTS_DIR/<folder>/results.md            tables and verdicts, linking the plots beside it
    RESULTS_DIR/<folder>/accuracy_vs_flops.png test accuracy vs training FLOPs: the frontier and each controller
    RESULTS_DIR/<folder>/ppo_learning.png      PPO learning curves (return, explained variance, entropy)

    assemble_docs("results/", "docs/results.md")   # copies the PNGs to docs/results/<folder>/, links them

`<folder>` is the task name, `<task>-quick` for a quick run. Plots use matplotlib's Agg backend.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

PLOTS = {"accuracy_vs_flops": "accuracy_vs_flops.png", "ppo_learning": "ppo_learning.png"}


def read_learning_curve(path: str) -> list[dict[str, Any]]:
    """The rows of a learning_curve.json (executor.write_learning_curve); [] if there is none."""
    try:
        with open(path) as f:
            return list(json.load(f).get("updates", []))
    except FileNotFoundError:
        return []


def load_results(task_dir: str | Path) -> dict[str, Any]:
    with open(Path(task_dir) / "results.json") as f:
        return json.load(f)


def _clean(obj: Any) -> Any:
    """NaN/inf become null: results.json is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_task_results(task_dir: str | Path, results: dict[str, Any]) -> dict[str, str]:
    """results.json, results.md and the plots into `task_dir`; returns {what: file name}."""
    d = Path(task_dir)
    d.mkdir(parents=True, exist_ok=True)
    files = {"json": "results.json", "markdown": "results.md"}
    if plot_accuracy_vs_flops(results, d / PLOTS["accuracy_vs_flops"]):
        files["accuracy_vs_flops"] = PLOTS["accuracy_vs_flops"]
    if plot_learning_curves(results, d / PLOTS["ppo_learning"]):
        files["ppo_learning"] = PLOTS["ppo_learning"]
    results = {**results, "files": files}
    tmp = d / "results.json.tmp"
    tmp.write_text(json.dumps(_clean(results), indent=1))
    os.replace(tmp, d / "results.json")
    (d / "results.md").write_text(render_markdown(results))
    return files


# ------------------------------------------------------------------------------------------ plots
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy_vs_flops(results: dict[str, Any], path: Path) -> bool:
    plt = _pyplot()
    rows = results["controllers"]
    static = sorted((r for r in rows if r["role"].startswith("static")), key=lambda r: r["training_flops_mean"])
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    ax.errorbar([r["training_flops_mean"] for r in static], [r["final_test_acc_mean"] for r in static],
                yerr=[r["final_test_acc_std"] for r in static], fmt="-o", color="0.35", capsize=3,
                label="static host (frontier)")
    for r in static:
        ax.annotate(f"×{r['width']['ratio']:.2g} params", (r["training_flops_mean"], r["final_test_acc_mean"]),
                    textcoords="offset points", xytext=(4, -12), fontsize=7, color="0.35")
    styles = {"heuristic": ("s", "#dd8452"), "best schedule": ("D", "#55a868"), "PPO (greedy)": ("o", "#8fa9d6"),
              "PPO, mean over training seeds": ("*", "#4c72b0"), "PPO zero-shot": ("P", "#8172b3")}
    for r in rows:
        if r["role"].startswith("PPO zero-shot") and "mean" not in r["role"]:
            continue            # only the zero-shot mean: its per-seed points would crowd the plot
        style = next((v for k, v in styles.items() if r["role"].startswith(k)), None)
        if style is None:
            continue
        ax.errorbar([r["training_flops_mean"]], [r["final_test_acc_mean"]], xerr=[r["training_flops_std"] or 0.0],
                    yerr=[r["final_test_acc_std"] or 0.0], fmt=style[0], color=style[1], capsize=3,
                    markersize=9 if style[0] == "*" else 6, label=r["controller"])
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs per episode (log)")
    ax.set_ylabel("final test accuracy")
    n = len(results["seeds"]["eval"])
    ax.set_title(f"{results['folder']}: mean ± std over {n} evaluation seeds")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_learning_curves(results: dict[str, Any], path: Path) -> bool:
    runs = [r for r in results.get("ppo", {}).get("runs", []) if r.get("learning_curve")]
    if not runs:
        return False
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    keys = ("mean_return", "explained_variance", "entropy")
    fig, axes = plt.subplots(1, len(keys), figsize=(12, 3.2))
    for run in runs:
        curve = run["learning_curve"]
        u = [row["update"] for row in curve]
        for ax, key in zip(axes, keys):
            ax.plot(u, [math.nan if row.get(key) is None else row[key] for row in curve], marker=".",
                    label=run["controller"])
    for ax, key in zip(axes, keys):
        ax.set_title(key.replace("_", " "))
        ax.set_xlabel("PPO update")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ------------------------------------------------------------------------------------------ markdown
def _pm(m: float | None, s: float | None, digits: int = 3) -> str:
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return "n/a"
    s = 0.0 if s is None or (isinstance(s, float) and math.isnan(s)) else s
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def _p(p: float | None) -> str:
    return "n/a" if p is None or (isinstance(p, float) and math.isnan(p)) else f"{p:.3g}"


def render_markdown(results: dict[str, Any], *, image_prefix: str = "", heading: str = "#") -> str:
    """The task's page; images are linked as `image_prefix/<file>` (empty: beside the page)."""
    h2 = heading + "#"
    seeds, data, files = results["seeds"], results["episode"]["data"], results.get("files", {})
    n_eval = len(seeds["eval"])

    def img(file: str) -> str:
        return f"{image_prefix.rstrip('/')}/{file}" if image_prefix else file

    lines = [f"{heading} {results['task']}" + (" (quick)" if results["quick"] else ""), ""]
    if results["quick"]:
        lines += [f"**Quick mode**: {n_eval} evaluation seeds, {len(seeds['train'])} training seeds, small data, "
                  f"short episodes, {len(results['frontier']['widths'])} widths, {len(results['selection']['scores'])} "
                  f"schedules and a tiny PPO budget. It checks the protocol end to end; its numbers are not results.", ""]
    store = results.get("store", {})
    lines += [f"Produced by `esper.evaluation.evaluate` ({results['executor']} executor) on {results['machine']}, "
              f"{results['date']}, in {results['minutes']:.1f} min ({store.get('episodes_run', 0)} episodes run, "
              f"{store.get('episodes_reused', 0)} taken from the result store). Code: esper "
              f"{results['code']['esper']}, source {results['code']['source_sha256'][:12]}.", "",
              f"Task: {data['dataset']} ({data.get('train_size')} train / {data.get('val_size')} val / "
              f"{data.get('test_size')} test), {results['episode']['max_epochs']}-step episodes. "
              f"Evaluation seeds {seeds['eval']} (scores only); training seeds {seeds['train']} (schedule "
              f"selection only); PPO training seeds {seeds['ppo']} "
              f"({results['ppo']['budget']['total_updates']} updates × {results['ppo']['budget']['envs']} "
              f"episodes each). Score: final test accuracy, never used for a decision, reward or selection.", ""]

    lines += [f"{h2} Controllers", "",
              "Mean ± std over the evaluation seeds. Margin: test accuracy minus the static frontier at the "
              "same training FLOPs, per seed (linear in log FLOPs, against that seed's static hosts); n/a "
              "outside the frontier's FLOP range.", "",
              "| controller | role | test acc | val acc | training FLOPs | host params | params added | "
              "fossilized | margin vs frontier |", "|---|---|---|---|---|---|---|---|---|"]
    lo, hi = results["frontier"]["mean"]["training_flops"][0], results["frontier"]["mean"]["training_flops"][-1]
    for r in results["controllers"]:
        margin = _pm(r["margin_mean"], r["margin_std"])
        if r["margin_n"] < r["n"]:
            side = "above" if r["training_flops_mean"] > hi else "below" if r["training_flops_mean"] < lo else "outside"
            margin += f" (n={r['margin_n']} of {r['n']}; the others {side} the frontier's FLOP range)"
        lines.append(f"| {r['controller']} | {r['role']} | {_pm(r['final_test_acc_mean'], r['final_test_acc_std'])} | "
                     f"{_pm(r['final_val_acc_mean'], r['final_val_acc_std'])} | {r['training_flops_mean']:.3g} | "
                     f"{r['params_host_mean']:.0f} | {r['params_added_mean']:.0f} | {r['seeds_fossilized_mean']:.1f} | "
                     f"{margin} |")

    sel = results["selection"]
    ranked = sorted(sel["scores"].items(), key=lambda kv: (-kv[1], kv[0]))
    lines += ["", f"{h2} Best schedule", "",
              f"`{sel['best']}`: mean final validation accuracy {sel['score']:.3f} over training seeds "
              f"{sel['seeds']}, the best of {len(ranked)} schedules (blueprint × slot × germination step, each "
              f"germinating once and advancing whenever the gates allow). Chosen on validation accuracy on the "
              f"training seeds only; then run once on the evaluation seeds.", "",
              "| rank | schedule | mean val acc (training seeds) |", "|---|---|---|"]
    lines += [f"| {i + 1} | {name} | {score:.3f} |" for i, (name, score) in enumerate(ranked[:5])]

    lines += ["", f"{h2} Paired comparisons", "",
              f"a − b per evaluation seed on test accuracy: one-sided paired t-test (H1: a > b), Wilcoxon "
              f"signed-rank, wins / ties / losses out of {n_eval}. Significant means p_t < 0.05.", "",
              "| a | b | mean diff ± std | p (t) | p (Wilcoxon) | wins / ties / losses | verdict |",
              "|---|---|---|---|---|---|---|"]
    for c in results["comparisons"]:
        verdict = "**significant**" if c["significant"] else "not significant"
        lines.append(f"| {c['a']} | {c['b']} | {c['diff_mean']:+.3f} ± {c['diff_std'] or 0.0:.3f} | {_p(c['p_t'])} | "
                     f"{_p(c['p_wilcoxon'])} | {c['wins']} / {c['ties']} / {c['losses']} | {verdict} |")

    widths = ", ".join(f"×{w['multiplier']:g} ({w['params']} params)" for w in results["frontier"]["widths"])
    lines += ["", f"{h2} Plots", "", f"Static hosts (width multipliers): {widths}.", ""]
    if "accuracy_vs_flops" in files:
        lines += [f"![test accuracy vs training FLOPs]({img(files['accuracy_vs_flops'])})", ""]
    if "ppo_learning" in files:
        lines += ["PPO learning curves (mean episode return, explained variance, entropy per update):", "",
                  f"![PPO learning curves]({img(files['ppo_learning'])})", ""]
    return "\n".join(lines) + "\n"


def assemble_docs(results_dir: str | Path, out: str | Path = "docs/results.md", *, image_dir: str | Path | None = None,
                  folders: list[str] | None = None, title: str = "Results") -> Path:
    """One page from the task folders under `results_dir` (all with a results.json, or `folders`): their
    PNGs are copied to `image_dir` (default: <out's folder>/results)/<folder>/ and linked relatively."""
    root, out = Path(results_dir), Path(out)
    image_dir = Path(image_dir) if image_dir is not None else out.parent / "results"
    names = folders if folders is not None else sorted(p.parent.name for p in root.glob("*/results.json"))
    if not names:
        raise FileNotFoundError(f"no task results (results.json) under {root}")
    sections = []
    for name in names:
        results = load_results(root / name)
        dest = image_dir / name
        dest.mkdir(parents=True, exist_ok=True)
        for key, file in results.get("files", {}).items():
            if file.endswith(".png"):
                shutil.copyfile(root / name / file, dest / file)
        prefix = os.path.relpath(dest, out.parent).replace(os.sep, "/")
        sections.append(render_markdown(results, image_prefix=prefix, heading="##"))
    out.parent.mkdir(parents=True, exist_ok=True)
    head = [f"# {title}", "", "Written by `esper.evaluation.results.assemble_docs` from the task folders of an "
            "evaluation run; each section's figures come from that run.", ""]
    head += [f"- [{n}](#{n.lower()})" for n in names] + [""]
    out.write_text("\n".join(head) + "\n" + "\n".join(sections))
    return out
