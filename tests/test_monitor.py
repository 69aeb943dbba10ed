"""ExplanationMonitor: records against direct IG, rank statistics against brute force,
and bit-identical training with and without it (grads, optimizer, modes, RNG streams).

The legacy global numpy stream is used on purpose: it is one of the streams the
monitor must leave untouched.
"""
# ruff: noqa: NPY002

from __future__ import annotations

import copy
import json
import random
import socket

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from torchexplain import Explanation, ExplanationMonitor, IntegratedGradients, integrated_gradients
from torchexplain.base import Explainer
from torchexplain.monitor import (
    MAX_GRID_COLUMNS,
    lightning_callback,
    spearman,
    spearman_on_top,
    top_overlap,
    unwrap_model,
)


class TinyNet(nn.Module):
    """Conv + BatchNorm (buffers) + Dropout (global RNG) on 1x8x8 inputs, 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.norm = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(torch.relu(self.norm(self.conv(x))))
        return self.head(h.flatten(1))


class MeddlingExplainer(Explainer):
    """IG that also does everything a careless explainer might: draws from every global
    RNG, accumulates into .grad in place, flips modes and requires_grad."""

    name = "Meddling"
    accepts_target = True

    def explain(self, inputs, target=None):
        torch.rand(5)
        np.random.rand(3)
        random.random()
        for p in self.model.parameters():
            if p.grad is not None:
                p.grad.add_(1.0)
            p.requires_grad_(False)
        self.model.train()
        self.model(inputs)  # train-mode forward: moves BatchNorm running stats
        return integrated_gradients(self.model, inputs, target=target, n_steps=4)


def train(
    monitor: ExplanationMonitor | None, steps: int = 9, wrap=None
) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    model = TinyNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    trained = wrap(model) if wrap else model
    data = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(64) % 3
    model.train()
    for step in range(steps):
        batch = torch.randperm(64)[:16]  # global torch RNG
        noise = (
            torch.from_numpy(np.random.rand(16, 1, 8, 8).astype(np.float32)) * random.random() * 0.1
        )
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(trained(data[batch] + noise), labels[batch])
        loss.backward()
        if monitor is not None:  # between backward and step: the .grad buffers are live
            monitor.step(trained, step)
        optimizer.step()
    return model, optimizer


@pytest.mark.parametrize(
    "explainer", [IntegratedGradients(None, n_steps=8), MeddlingExplainer(None)]
)
def test_training_bit_identical_with_and_without_monitor(explainer, tmp_path):
    probe = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    monitor = ExplanationMonitor(explainer, probe, every_n_steps=2, out_dir=tmp_path)
    plain_model, plain_opt = train(None)
    monitored_model, monitored_opt = train(monitor)
    assert len(monitor.records) == 5  # steps 0, 2, 4, 6, 8
    for (name, a), (_, b) in zip(
        plain_model.state_dict().items(), monitored_model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    for a, b in zip(plain_model.parameters(), monitored_model.parameters(), strict=True):
        assert torch.equal(a.grad, b.grad) and a.requires_grad == b.requires_grad
    for a, b in zip(plain_opt.state.values(), monitored_opt.state.values(), strict=True):
        assert all(torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])) for k in a)
    assert monitored_model.training and all(m.training for m in monitored_model.modules())
    # the RNG streams continue exactly where the plain run left them
    state_after_monitored = (torch.rand(3), np.random.rand(), random.random())
    train(None)
    state_after_plain = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(state_after_monitored[0], state_after_plain[0])
    assert state_after_monitored[1:] == state_after_plain[1:]


def test_records_match_direct_integrated_gradients(tmp_path):
    torch.manual_seed(0)
    model = TinyNet().eval()
    probe = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    targets = torch.tensor([0, 1, 2])
    monitor = ExplanationMonitor(
        IntegratedGradients(None, n_steps=16), probe, targets, every_n_steps=5, out_dir=tmp_path
    )
    assert monitor.step(model, 3) is None
    first = monitor.step(model, 0)
    direct = integrated_gradients(model, probe, target=targets, n_steps=16)
    assert first["mean_abs_attribution"] == pytest.approx(
        float(direct.attributions.abs().mean()), rel=1e-6
    )
    assert first["convergence_delta_mean"] == pytest.approx(
        float(direct.convergence_delta.abs().mean()), rel=1e-6
    )
    assert first["target"] == [0, 1, 2]
    assert "spearman_vs_previous" not in first
    # same weights again: the maps are unchanged, so rank correlation and overlap are 1
    second = monitor.step(model, 5)
    assert second["spearman_vs_previous"] == pytest.approx(1.0)
    assert second["top_overlap_vs_previous"] == pytest.approx(1.0)
    assert second["spearman_top_vs_previous"] == pytest.approx(1.0)
    with torch.no_grad():
        model.conv.weight.mul_(-1.0)
    third = monitor.step(model, 10)
    direct_previous = direct.attributions.abs().flatten(1)
    direct_now = (
        integrated_gradients(model, probe, target=targets, n_steps=16).attributions.abs().flatten(1)
    )
    assert third["spearman_vs_previous"] == pytest.approx(
        float(spearman(direct_now, direct_previous).mean()), rel=1e-6
    )
    logged = [json.loads(line) for line in (tmp_path / "monitor.jsonl").read_text().splitlines()]
    assert logged == monitor.records
    grid = Image.open(tmp_path / "monitor_grid.png")
    assert grid.width >= 4 * (4 * 8)  # input column + 3 recorded steps, 8 px tiles at scale 4


def test_grid_columns_are_thinned_keeping_first_and_last(tmp_path):
    model = TinyNet().eval()
    monitor = ExplanationMonitor(
        IntegratedGradients, torch.rand(1, 1, 8, 8), every_n_steps=1, out_dir=tmp_path
    )
    for step in range(MAX_GRID_COLUMNS + 5):
        monitor.step(model, step)
    from torchexplain.monitor import _thin

    kept = [s for s, _ in _thin(monitor.maps, MAX_GRID_COLUMNS)]
    assert len(kept) == MAX_GRID_COLUMNS and kept[0] == 0 and kept[-1] == MAX_GRID_COLUMNS + 4


def test_non_image_inputs_get_a_heatmap_strip_per_record(tmp_path):
    model = nn.Sequential(nn.Linear(12, 3)).eval()
    monitor = ExplanationMonitor(
        IntegratedGradients, torch.rand(2, 12), every_n_steps=1, out_dir=tmp_path
    )
    record = monitor.step(model, 0)
    direct = integrated_gradients(model, monitor.probe_inputs)
    assert record["mean_abs_attribution"] == pytest.approx(
        float(direct.attributions.abs().mean()), rel=1e-6
    )
    assert Image.open(tmp_path / "monitor_grid.png").width >= 12 * 4


class ShiftExplainer(Explainer):
    """Stands in for a counterfactual method: takes no target, a `counterfactual` field."""

    name = "Shift"

    def explain(self, inputs):
        with torch.no_grad():
            moved = inputs + 0.1 * torch.sign(self.model(inputs)[:, :1, None, None])
        return Explanation(
            {"name": self.name}, {"counterfactual": moved, "target": self.model(inputs).argmax(1)}
        )

    def explanation_map(self, explanation, inputs):
        return explanation.counterfactual - inputs


def test_explainers_without_a_target_argument_are_called_without_one():
    torch.manual_seed(0)
    model = TinyNet().eval()
    probe = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(7))
    record = ExplanationMonitor(ShiftExplainer(None), probe, every_n_steps=1).step(model, 0)
    with torch.no_grad():
        expected = 0.1 * torch.sign(model(probe)[:, :1, None, None]).expand_as(probe)
        labels = model(probe).argmax(1)
    assert record["mean_abs_attribution"] == pytest.approx(float(expected.abs().mean()))
    assert record["target"] == labels.tolist()
    with pytest.raises(ValueError, match="ShiftExplainer.explain\\(\\) takes no target"):
        ExplanationMonitor(ShiftExplainer(None), probe, torch.tensor([0, 1]))


def _merged_explainers():
    from torchexplain import AnchorImage, Counterfactual

    return [
        Counterfactual(None, max_lam_steps=1, max_iter=20),
        lambda model: AnchorImage(
            model, segmentation_fn=lambda image: np.arange(64).reshape(8, 8) // 16, seed=0
        ),
    ]


@pytest.mark.parametrize("which", ["counterfactual", "anchor"])
def test_counterfactual_and_anchor_monitors_leave_training_bit_identical(which, tmp_path):
    counterfactual_explainer, anchor_factory = _merged_explainers()
    probe = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(8))
    if which == "counterfactual":
        explainer = counterfactual_explainer
    else:
        # AnchorImage needs its predictor at construction; any model will do, step() swaps it.
        explainer = anchor_factory(TinyNet().eval())
    monitor = ExplanationMonitor(explainer, probe, every_n_steps=3, out_dir=tmp_path)
    plain_model, _ = train(None, steps=4)
    monitored_model, _ = train(monitor, steps=4)
    for a, b in zip(plain_model.parameters(), monitored_model.parameters(), strict=True):
        assert (
            torch.equal(a, b) and torch.equal(a.grad, b.grad) and a.requires_grad == b.requires_grad
        )
    assert [r["global_step"] for r in monitor.records] == [0, 3]
    # the logged statistic is the method's own map: the change a counterfactual made, an anchor's mask
    final = monitor.record(monitored_model, 99)
    evaluation_model = copy.deepcopy(monitored_model).eval()
    direct = explainer if which == "counterfactual" else anchor_factory(evaluation_model)
    direct.model = evaluation_model
    exp = direct.explain(probe)
    expected = (exp.counterfactual - probe) if which == "counterfactual" else exp.mask.float()
    assert final["mean_abs_attribution"] == pytest.approx(float(expected.abs().mean()), rel=1e-6)
    assert (tmp_path / "monitor_grid.png").is_file()


def brute_spearman(a: np.ndarray, b: np.ndarray) -> float:
    def ranks(v):
        return np.array([np.sum(v < x) + (np.sum(v == x) + 1) / 2 for x in v], dtype=np.float64)

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / np.sqrt((ra**2).sum() * (rb**2).sum()))


def test_spearman_and_top_overlap_against_brute_force():
    gen = torch.Generator().manual_seed(4)
    # many exact ties (zeros, as IG gives for black MNIST pixels) plus repeated values
    a = torch.randint(0, 5, (3, 40), generator=gen).double() * (
        torch.rand(3, 40, generator=gen) > 0.4
    )
    b = a + torch.randint(-2, 3, (3, 40), generator=gen).double()
    got = spearman(a, b)
    for i in range(3):
        assert float(got[i]) == pytest.approx(brute_spearman(a[i].numpy(), b[i].numpy()), abs=1e-12)
    x = torch.rand(2, 50, generator=gen)
    y = torch.rand(2, 50, generator=gen)
    overlap = top_overlap(x, y, 0.2)
    for i in range(2):
        top_x = set(np.argsort(-x[i].numpy())[:10])
        top_y = set(np.argsort(-y[i].numpy())[:10])
        assert float(overlap[i]) == len(top_x & top_y) / 10
    assert torch.isnan(spearman(torch.ones(1, 5), torch.rand(1, 5))).all()
    on_top = spearman_on_top(x, y, 0.2)
    for i in range(2):
        union = sorted(set(np.argsort(-x[i].numpy())[:10]) | set(np.argsort(-y[i].numpy())[:10]))
        expected = brute_spearman(
            x[i].numpy()[union].astype(np.float64), y[i].numpy()[union].astype(np.float64)
        )
        assert float(on_top[i]) == pytest.approx(expected, abs=1e-12)


def test_compiled_model_is_explained_through_the_original_module_without_recompiling():
    """backend="eager" keeps the test fast (inductor compiles work too, in ~20 s here);
    the OptimizedModule wrapper and dynamo's guards are the same."""
    compiles = []

    def counting_backend(graph_module, example_inputs):
        compiles.append(1)
        return graph_module.forward

    def compiled_wrap(model):
        return torch.compile(model, backend=counting_backend)

    try:
        torch._dynamo.reset()
        plain_model, _ = train(None, steps=5, wrap=compiled_wrap)
    except Exception as err:  # pragma: no cover - depends on the platform's dynamo support
        pytest.skip(f"torch.compile does not run here: {err}")
    compiles_without_monitor = len(compiles)
    assert compiles_without_monitor >= 1
    torch._dynamo.reset()
    compiles.clear()
    probe = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    monitor = ExplanationMonitor(IntegratedGradients(None, n_steps=8), probe, every_n_steps=2)
    monitored_model, _ = train(monitor, steps=5, wrap=compiled_wrap)
    assert len(monitor.records) == 3
    assert len(compiles) == compiles_without_monitor  # the monitor triggered no recompilation
    for a, b in zip(plain_model.parameters(), monitored_model.parameters(), strict=True):
        assert torch.equal(a, b)
    compiled = torch.compile(monitored_model.eval(), backend="eager")
    assert unwrap_model(compiled) is monitored_model
    via_compiled = ExplanationMonitor(IntegratedGradients, probe, every_n_steps=1).step(compiled, 0)
    via_plain = ExplanationMonitor(IntegratedGradients, probe, every_n_steps=1).step(
        monitored_model, 0
    )
    assert via_compiled["mean_abs_attribution"] == via_plain["mean_abs_attribution"]
    assert via_compiled["convergence_delta_max"] == via_plain["convergence_delta_max"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_model_trains_bit_identically_and_records_the_inner_module(tmp_path):
    dist = torch.distributed
    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this build")
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
    )
    try:
        probe = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(6))
        monitor = ExplanationMonitor(IntegratedGradients(None, n_steps=8), probe, every_n_steps=4)
        ddp = nn.parallel.DistributedDataParallel
        plain_model, _ = train(None, steps=5, wrap=ddp)
        monitored_model, _ = train(monitor, steps=5, wrap=ddp)
        assert [r["global_step"] for r in monitor.records] == [0, 4]
        for a, b in zip(plain_model.parameters(), monitored_model.parameters(), strict=True):
            assert torch.equal(a, b)
        direct = integrated_gradients(monitored_model, probe, n_steps=8)
        again = monitor.record(ddp(monitored_model), 5)
        assert again["mean_abs_attribution"] == pytest.approx(
            float(direct.attributions.abs().mean()), rel=1e-6
        )
    finally:
        dist.destroy_process_group()


def test_only_rank_zero_records_by_default(monkeypatch):
    import torchexplain.monitor as monitor_module

    monkeypatch.setattr(monitor_module, "_is_rank_zero", lambda: False)
    model = TinyNet().eval()
    probe = torch.rand(1, 1, 8, 8)
    assert ExplanationMonitor(IntegratedGradients, probe, every_n_steps=1).step(model, 0) is None
    everywhere = ExplanationMonitor(
        IntegratedGradients, probe, every_n_steps=1, rank_zero_only=False
    )
    assert everywhere.step(model, 0) is not None


def test_the_users_explainer_object_keeps_its_model():
    sentinel = TinyNet()
    explainer = IntegratedGradients(sentinel, n_steps=4)
    ExplanationMonitor(explainer, torch.rand(1, 1, 8, 8), every_n_steps=1).step(TinyNet(), 0)
    assert explainer.model is sentinel


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"explainer": "ig"}, TypeError, "Explainer instance or class"),
        ({"probe_inputs": [1, 2]}, TypeError, "probe_inputs"),
        ({"probe_targets": torch.zeros(3)}, ValueError, "probe_targets must have shape (2,)"),
        ({"every_n_steps": 0}, ValueError, "every_n_steps"),
        ({"top_fraction": 1.5}, ValueError, "top_fraction"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, words):
    args = {"explainer": IntegratedGradients, "probe_inputs": torch.rand(2, 1, 8, 8), **kwargs}
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        ExplanationMonitor(**args)


def test_lightning_callback_needs_lightning():
    monitor = ExplanationMonitor(IntegratedGradients, torch.rand(1, 1, 8, 8))
    try:
        import lightning  # noqa: F401
    except ImportError:
        try:
            import pytorch_lightning  # noqa: F401
        except ImportError:
            with pytest.raises(ImportError, match="pip install lightning"):
                lightning_callback(monitor)
            return
    callback = lightning_callback(monitor)
    assert callback.monitor is monitor
