"""DiagnosticTracker: profile gating, hook cleanup, exact statistics, narrative, sharpness."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from esper.leyline.events import DIAGNOSTIC
from esper.nissa import TelemetryConfig, configure_hub, read_events, reset_hub
from esper.nissa.diagnostics import MODEL_ROW, DiagnosticTracker


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))


def batch(seed: int = 1, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, scale: float = 1.0) -> None:
    model.zero_grad(set_to_none=True)
    (F.cross_entropy(model(x), y) * scale).backward()


def hook_count(model: nn.Module) -> int:
    return sum(len(p._post_accumulate_grad_hooks or {}) for p in model.parameters())


def test_minimal_registers_nothing():
    model = mlp()
    with DiagnosticTracker(model, TelemetryConfig(profile="minimal")) as t:
        assert t.hooks == 0 and hook_count(model) == 0
        train_step(model, *batch())
        assert t.epoch_report() == ([], "diagnostics off (minimal profile)")
        assert t.sharpness(F.cross_entropy, *batch()) is None


@pytest.mark.parametrize("profile", ["standard", "research"])
def test_hooks_are_removed_on_exit_and_close(profile):
    model = mlp()
    with DiagnosticTracker(model, TelemetryConfig(profile=profile)) as t:
        assert t.hooks == hook_count(model) == 6
    assert hook_count(model) == 0
    t = DiagnosticTracker(model, TelemetryConfig(profile=profile))
    t.close()
    t.close()
    assert hook_count(model) == 0


def test_statistics_equal_a_direct_computation_over_batches():
    model = mlp()
    batches = [batch(s) for s in range(3)]
    expected: dict[str, list[float]] = {}
    with DiagnosticTracker(model, TelemetryConfig(profile="standard")) as t:
        for x, y in batches:
            train_step(model, x, y)
            for name, p in model.named_parameters():
                expected.setdefault(name, []).append((p.grad.norm().item(), p.grad.abs().mean().item()))
        rows, narrative = t.epoch_report()
    by_layer = {r["layer"]: r for r in rows}
    assert set(by_layer) == {n for n, _ in model.named_parameters()} | {MODEL_ROW}
    for name, vals in expected.items():
        assert by_layer[name]["grad_norm"] == pytest.approx(sum(v[0] for v in vals) / 3, rel=1e-5)
        assert by_layer[name]["grad_mean_abs"] == pytest.approx(sum(v[1] for v in vals) / 3, rel=1e-5)
        assert "grad_q05" not in by_layer[name]
    assert narrative == "gradients healthy across 6 layers"
    assert by_layer[MODEL_ROW]["narrative"] == narrative
    assert set().union(*rows) <= set(DIAGNOSTIC.names)
    assert t.epoch_report()[1] == "no gradients recorded this epoch"  # the report reset the sums


def test_zeroed_layer_reads_as_vanishing_gradients():
    model = mlp()
    with torch.no_grad():
        model[2].weight.zero_()  # nothing flows back through the middle layer
    with DiagnosticTracker(model, TelemetryConfig(profile="standard")) as t:
        train_step(model, *batch())
        rows, narrative = t.epoch_report()
    assert narrative.startswith("vanishing gradients in 2 layers (0.weight, 0.bias)")


def test_huge_loss_reads_as_exploding_gradients():
    model = mlp()
    with DiagnosticTracker(model, TelemetryConfig(profile="standard"), explode_threshold=10.0) as t:
        train_step(model, *batch(), scale=1e6)
        _, narrative = t.epoch_report()
    assert narrative.startswith("exploding gradients in 6 layers (0.weight, 0.bias, 2.weight, ...)")


def test_research_quantiles_and_sharpness_restore_the_model():
    model = mlp()
    x, y = batch(5)
    with DiagnosticTracker(model, TelemetryConfig(profile="research", sharpness_epsilon=0.05), quantile_sample=64) as t:
        train_step(model, *batch())
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        model.train()
        sharp = t.sharpness(F.cross_entropy, x, y)
        assert model.training
        for n, p in model.named_parameters():
            assert torch.equal(p, before[n]) and torch.equal(p.grad, grads[n])
        rows, _ = t.epoch_report()
    assert sharp.item() > 0  # moving uphill along the gradient sign raises the loss
    layer = next(r for r in rows if r["layer"] == "2.weight")  # 256 values, subsampled to 64
    assert 0 <= layer["grad_q05"] <= layer["grad_q50"] <= layer["grad_q95"]
    bias = next(r for r in rows if r["layer"] == "0.bias")  # 16 values, exact quantiles
    expected = torch.quantile(grads["0.bias"].abs(), torch.tensor([0.05, 0.5, 0.95])).tolist()
    assert [bias["grad_q05"], bias["grad_q50"], bias["grad_q95"]] == pytest.approx(expected, rel=1e-5)
    model_row = next(r for r in rows if r["layer"] == MODEL_ROW)
    assert model_row["sharpness"] == pytest.approx(sharp.item())


def test_on_the_esper_host_rows_go_through_the_hub(tmp_path):
    from esper.kasmina import KasminaConfig, build_model

    torch.manual_seed(0)
    model = build_model(KasminaConfig(), (3, 16, 16))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    cfg = TelemetryConfig(profile="standard", console=False)
    hub = configure_hub(str(tmp_path), cfg, "test")
    try:
        with DiagnosticTracker(model, cfg) as t:
            for _ in range(2):
                opt.zero_grad()
                F.cross_entropy(model(torch.randn(4, 3, 16, 16)), torch.randint(0, 10, (4,))).backward()
                opt.step()
            rows, narrative = t.epoch_report()
        for row in rows:
            hub.emit("diagnostic", episode_id="e", epoch=0, **row)
    finally:
        reset_hub()
    table = read_events(str(tmp_path), "diagnostic")
    assert table.num_rows == len(rows) > 5
    assert all(math.isfinite(v) for v in table.column("grad_norm").to_pylist())
    assert "host.block0.0.weight" in table.column("layer").to_pylist()
    assert narrative
