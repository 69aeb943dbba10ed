"""The contract every explainer follows, checked on every explainer.

A new explainer joins by adding one ``Case`` to ``CASES``: a small model, inputs, the
explainer built on them, and how closely a batch must match each instance alone.
"""

from __future__ import annotations

import dataclasses
import inspect
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import torchexplain
from torchexplain import (
    AnchorImage,
    AnchorTabular,
    AnchorText,
    Counterfactual,
    CounterfactualProto,
    Explanation,
    IntegratedGradients,
    KernelShap,
    anchor_image,
    anchor_tabular,
    anchor_text,
    counterfactual,
    counterfactual_proto,
    integrated_gradients,
    kernel_shap,
    load_explainer,
)
from torchexplain.base import Explainer, registered_explainers

F64 = torch.float64


def _seeded(module: nn.Module, seed: int, scale: float = 1.0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(
                torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * scale
            )
    return module


def ig_model() -> nn.Module:
    # BatchNorm (buffers) and Dropout (modes, global RNG) make "left as found" testable.
    return _seeded(
        nn.Sequential(
            nn.Conv2d(1, 3, 3, padding=1),
            nn.BatchNorm2d(3),
            nn.Tanh(),
            nn.Dropout(0.2),
            nn.Flatten(),
            nn.Linear(3 * 6 * 6, 4),
        ).to(F64),
        seed=0,
        scale=0.5,
    )


def counterfactual_model() -> nn.Module:
    model = nn.Sequential(
        nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Dropout(0.2), nn.Linear(8, 3)
    )
    return _seeded(model.to(F64), seed=1, scale=1.5)


def anchor_model() -> nn.Module:
    """Class 1 when the top-left quadrant is bright: quadrant means -> BatchNorm -> linear."""
    model = nn.Sequential(
        nn.AvgPool2d(6),
        nn.Flatten(),
        nn.BatchNorm1d(4),
        nn.Dropout(0.2),
        nn.Linear(4, 2),
    )
    with torch.no_grad():
        model[4].weight.copy_(torch.tensor([[0.0, 0, 0, 0], [4.0, 0.5, 0.5, 0]]))
        model[4].bias.copy_(torch.tensor([0.0, -2.2]))
    return model


def anchor_inputs() -> torch.Tensor:
    images = 0.3 * _uniform((3, 1, 12, 12), seed=6, dtype=torch.float32)
    images[0, :, :6, :6] += 0.6  # class 1: its anchor must hold the top-left quadrant
    images[2, :, :6, :6] += 0.6
    images[2, :, 6:, :] += 0.5
    return images


class TabularToy(nn.Module):
    """Rows (kind: 3 codes, colour: 2 codes, size, weight) -> one-hot / raw -> BatchNorm -> 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(7)
        self.dropout = nn.Dropout(0.2)
        self.linear = nn.Linear(7, 3)
        with torch.no_grad():
            self.linear.weight.copy_(
                torch.tensor(
                    [
                        [2.0, 0, 0, 0, 0, -3, 0],
                        [0, 2, 0, 1, 0, 3, 0],
                        [0, 0, 2, 0, 1, 0, 0.8],
                    ]
                )
            )
            self.linear.bias.zero_()

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        kind = nn.functional.one_hot(rows[:, 0].long(), 3).to(rows.dtype)
        colour = nn.functional.one_hot(rows[:, 1].long(), 2).to(rows.dtype)
        return self.linear(self.dropout(self.norm(torch.cat([kind, colour, rows[:, 2:]], 1))))


def tabular_rows(n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.stack(
        [
            torch.randint(0, 3, (n,), generator=generator).float(),
            torch.randint(0, 2, (n,), generator=generator).float(),
            torch.randn(n, generator=generator),
            torch.rand(n, generator=generator) * 10,
        ],
        dim=1,
    )


TABULAR_TRAIN = tabular_rows(300, seed=8)


class TextToy(nn.Module):
    """Texts -> counts of four words -> BatchNorm -> Dropout -> 2 classes (positive when 'good' or
    'great' outweigh 'bad' and 'dull'); a model of text for the invariants: modes, buffers, hooks."""

    WORDS = ("good", "great", "bad", "dull")

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(4)
        self.dropout = nn.Dropout(0.2)
        self.linear = nn.Linear(4, 2)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[0.0, 0, 0, 0], [2.0, 1.5, -2.0, -1.5]]))
            self.linear.bias.copy_(torch.tensor([0.0, 0.3]))

    def forward(self, texts: list[str]) -> torch.Tensor:
        counts = torch.tensor(
            [[t.lower().split().count(w) for w in self.WORDS] for t in texts],
            dtype=torch.float32,
            device=self.linear.weight.device,
        )
        return self.linear(self.dropout(self.norm(counts)))


TEXTS = [
    "a good film with a great cast",
    "dull and bad , though the music is good",
    "nothing to say here",
    "great",
]


def _uniform(shape: tuple[int, ...], seed: int, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@dataclasses.dataclass
class Case:
    """One explainer under the contract's tests."""

    name: str
    cls: type[Explainer]
    twin: Callable[..., Explanation]
    model: Callable[[], nn.Module]
    inputs: Callable[[], torch.Tensor]
    settings: dict[str, Any]
    call: dict[str, Any] = dataclasses.field(default_factory=dict)  # explain's own arguments
    fit: Callable[[Explainer], None] | None = None
    #: what the function twin takes besides the class's settings (the data fit() learns from)
    twin_extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: integer inputs are meaningful (categorical codes) rather than refused
    integer_inputs: bool = False
    #: the inputs are a list of texts, not a tensor (no dtype, no device of their own)
    texts: bool = False
    #: batch vs alone: 0 means exactly equal (every case but one, see CASES)
    rtol: float = 0.0
    atol: float = 0.0
    seeded: bool = False
    #: fields that describe how the work was batched, or the whole batch, not one instance
    batch_dependent: tuple[str, ...] = ()
    #: fields shared by every instance of a call (not one row per instance): equal whole
    shared: tuple[str, ...] = ()
    #: the per-example map the method draws (explanation_map), written out independently
    expected_map: Callable[[Explanation, torch.Tensor], torch.Tensor] = lambda exp, inputs: (
        exp.attributions
    )

    def explainer(
        self, device: torch.device | str = "cpu", model: nn.Module | None = None
    ) -> Explainer:
        model = (model if model is not None else self.model()).to(device)
        explainer = self.cls(model, **self.settings)
        if self.fit is not None:
            self.fit(explainer)
        return explainer


CASES = [
    Case(
        "IntegratedGradients",
        IntegratedGradients,
        integrated_gradients,
        ig_model,
        lambda: _uniform((4, 1, 6, 6), seed=3),
        {"n_steps": 8, "internal_batch_size": 5},
        call={"target": None},
    ),
    Case(
        "Counterfactual",
        Counterfactual,
        counterfactual,
        counterfactual_model,
        lambda: _uniform((4, 5), seed=4),
        # the searches pad their calls only when asked (a lone instance's step costs 2.4x padded)
        {
            "target_proba": 0.6,
            "tol": 0.1,
            "max_lam_steps": 2,
            "max_iter": 100,
            "pad_to_multiple": 4,
        },
        fit=lambda explainer: explainer.fit(_uniform((20, 5), seed=5)),
        twin_extra={"train_data": _uniform((20, 5), seed=5)},
        # Not exact on MKL: this model's first layer takes 5 float64 features, and the input
        # gradient's product (n, 8) @ (8, 5) rounds a row by its position in the call (measured;
        # models.calls documents it). The MNIST CNN's searches are exact (test_batch_invariance.py).
        rtol=1e-9,
        atol=1e-12,
        expected_map=lambda exp, inputs: exp.counterfactual - inputs,
    ),
    Case(
        "CounterfactualProto",
        CounterfactualProto,
        counterfactual_proto,
        counterfactual_model,
        lambda: _uniform((4, 5), seed=4),
        {
            "use_kdtree": True,
            "theta": 1.0,
            "c_init": 1.0,
            "c_steps": 2,
            "max_iterations": 40,
            "feature_range": (0.0, 1.0),
            "pad_to_multiple": 4,
        },
        fit=lambda explainer: explainer.fit(_uniform((20, 5), seed=5)),
        twin_extra={"train_data": _uniform((20, 5), seed=5)},
        expected_map=lambda exp, inputs: exp.counterfactual - inputs,
    ),
    Case(
        "AnchorImage",
        AnchorImage,
        anchor_image,
        anchor_model,
        anchor_inputs,
        {
            "segmentation_kwargs": {"n_segments": 6, "compactness": 10.0, "sigma": 0.5},
            "images_background": 0.2 * _uniform((5, 1, 12, 12), seed=7, dtype=torch.float32),
            "seed": 0,
            "coverage_samples": 500,
            "batch_size": 50,
        },
        seeded=True,
        batch_dependent=("n_model_calls",),  # a call carries the samples of several images
        expected_map=lambda exp, inputs: exp.mask[:, None].to(inputs.dtype).expand_as(inputs),
    ),
    Case(
        "AnchorTabular",
        AnchorTabular,
        anchor_tabular,
        TabularToy,
        lambda: tabular_rows(4, seed=9),
        {
            "feature_names": ["Kind", "Colour", "Size", "Weight"],
            "categorical_names": {0: ["a", "b", "c"], 1: ["red", "blue"]},
            "seed": 0,
            "coverage_samples": 500,
            "batch_size": 50,
        },
        fit=lambda explainer: explainer.fit(TABULAR_TRAIN),
        twin_extra={"train_data": TABULAR_TRAIN},
        seeded=True,
        integer_inputs=True,  # categorical columns are integer codes: int rows are welcome
        expected_map=lambda exp, inputs: torch.stack(
            [
                torch.isin(torch.arange(inputs.shape[1]), torch.tensor(f, dtype=torch.long)).float()
                for f in exp.feature
            ]
        ),
    ),
    Case(
        "AnchorText",
        AnchorText,
        anchor_text,
        TextToy,
        lambda: list(TEXTS),
        {"seed": 0, "coverage_samples": 500, "batch_size": 50, "stop_on_first": False},
        seeded=True,
        texts=True,
        batch_dependent=("n_model_calls",),  # a call carries the samples of several texts
        expected_map=lambda exp, inputs: torch.stack(
            [
                torch.isin(
                    torch.arange(max(len(w) for w in exp.words)), torch.tensor(f, dtype=torch.long)
                ).float()
                for f in exp.feature
            ]
        ),
    ),
    Case(
        "KernelShap",
        KernelShap,
        kernel_shap,
        TabularToy,
        lambda: tabular_rows(4, seed=9),
        {"feature_names": ["Kind", "Colour", "Size", "Weight"], "seed": 0},
        fit=lambda explainer: explainer.fit(TABULAR_TRAIN[:12]),
        twin_extra={"background_data": TABULAR_TRAIN[:12]},
        seeded=True,
        integer_inputs=True,
        shared=("expected_value",),
        batch_dependent=("importances", "aggregated_importances"),  # means over the batch
        expected_map=lambda exp, inputs: exp.shap_values[
            torch.arange(inputs.shape[0]), exp.target
        ].float(),
    ),
]
#: registered explainers whose model is not a torch model (a tree ensemble): their own
#: tests check the same contract on the models they take
NOT_TORCH_MODELS = {"TreeShap": "tests/test_tree_shap.py"}
IDS = [case.name for case in CASES]


def test_every_registered_explainer_is_under_the_contract():
    assert sorted(registered_explainers()) == sorted(IDS + list(NOT_TORCH_MODELS))


# ----------------------------------------------------------------------------- comparison


def assert_same(got: Any, want: Any, case: Case, where: str = "") -> None:
    """Equal structure and equal values, to the bit (a batch gives exactly what each instance
    gives alone: tests/test_batch_invariance.py says how), or within the case's tolerance."""
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor), where
        assert got.dtype == want.dtype and got.shape == want.shape, where
        if want.is_floating_point() and (case.rtol or case.atol):
            torch.testing.assert_close(got, want, rtol=case.rtol, atol=case.atol, msg=where)
        else:
            assert torch.equal(got, want), where
    elif isinstance(want, (list, tuple)):
        assert type(got) is type(want) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, case, f"{where}[{i}]")
    elif isinstance(want, dict):
        assert set(got) == set(want), where
        for key in want:
            assert_same(got[key], want[key], case, f"{where}.{key}")
    else:
        assert got == want, where


def exact(case: Case) -> Case:
    """The case compared to the bit: repeating a call, or a round trip, changes nothing at all."""
    return dataclasses.replace(case, rtol=0.0, atol=0.0)


def row(value: Any, i: int) -> Any:
    """Instance ``i`` of a batched result: tensors by their first dimension, lists by item."""
    if isinstance(value, torch.Tensor):
        return value[i : i + 1]
    if isinstance(value, list):
        return [value[i]]
    if isinstance(value, tuple):
        return tuple(row(v, i) for v in value)
    return value


def _explain(case: Case, explainer: Explainer, inputs: torch.Tensor) -> Explanation:
    return explainer.explain(inputs, **case.call)


def _device_of(inputs: Any) -> str:
    """Where results go: the inputs' device (texts have none: the CPU)."""
    return str(inputs.device) if isinstance(inputs, torch.Tensor) else "cpu"


# ----------------------------------------------------------------------------- the invariants


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_meta_and_data_follow_the_contract(case):
    explainer = case.explainer()
    inputs = case.inputs()
    exp = _explain(case, explainer, inputs)
    assert {"name", "type", "params", "version", "device"} <= set(exp.meta)
    assert exp.meta["name"] == case.cls.name == case.name
    assert exp.meta["type"] == case.cls.kind
    assert exp.meta["version"] == torchexplain.__version__
    assert exp.meta["device"] == _device_of(inputs)
    # every setting used is recorded
    assert set(exp.meta["params"]) == set(case.cls.settings_class.names())
    # the model's predictions at the inputs, and the class explained per instance
    with torch.no_grad():
        model = explainer.model.eval()
        expected = model(inputs)
    torch.testing.assert_close(exp.predictions, expected, rtol=1e-6, atol=1e-7)
    assert exp.target.dtype == torch.int64 and exp.target.shape == (len(inputs),)
    assert torch.equal(exp.target, expected.argmax(1))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_batch_gives_what_each_instance_gives_alone(case):
    explainer = case.explainer()
    inputs = case.inputs()
    batch = _explain(case, explainer, inputs)
    for i in range(len(inputs)):
        alone = _explain(case, explainer, inputs[i : i + 1])
        assert set(alone.data) == set(batch.data)
        for key, value in batch.data.items():
            if key in case.shared:
                assert_same(alone.data[key], value, case, key)
            elif key not in case.batch_dependent:
                assert_same(alone.data[key], row(value, i), case, f"{key}[{i}]")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_deterministic_whatever_the_global_random_state(case):
    explainer = case.explainer()
    inputs = case.inputs()
    torch.manual_seed(1)
    first = _explain(case, explainer, inputs)
    torch.manual_seed(2)
    np.random.seed(3)  # noqa: NPY002 - the legacy global stream must not matter either
    random.seed(4)
    again = _explain(case, explainer, inputs)
    assert_same(again.data, first.data, exact(case))
    assert_same(again.meta, first.meta, case)


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.seeded], ids=[c.name for c in CASES if c.seeded]
)
def test_a_fresh_seed_is_recorded_and_reproduces_the_explanation(case):
    explainer = case.explainer()
    inputs = case.inputs()
    fresh = explainer.__class__(explainer.model, **{**case.settings, "seed": None})
    if case.fit is not None:
        case.fit(fresh)
    first = _explain(case, fresh, inputs)
    seed = first.meta["params"]["seed"]
    assert isinstance(seed, int)
    again = explainer.__class__(explainer.model, **{**case.settings, "seed": seed})
    if case.fit is not None:
        case.fit(again)
    again = _explain(case, again, inputs)
    assert_same(again.data, first.data, case)


def _snapshot(model: nn.Module) -> dict[str, Any]:
    return {
        "modes": [m.training for m in model.modules()],
        "grads": [
            None if p.grad is None else (id(p.grad), p.grad.clone()) for p in model.parameters()
        ],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "buffers": [b.clone() for b in model.buffers()],
        "params": [p.detach().clone() for p in model.parameters()],
        "hooks": [len(m._forward_hooks) for m in model.modules()],
        "rng": torch.get_rng_state(),
        "numpy_rng": np.random.get_state()[1].copy(),  # noqa: NPY002
        "python_rng": random.getstate(),
    }


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_model_is_left_as_found(case):
    model = case.model().train()
    first = case.inputs()[:2]
    if not case.texts:
        first = first.to(next(model.parameters()).dtype)
    model(first).sum().backward()  # live .grad buffers
    parameters = list(model.parameters())
    parameters[0].requires_grad_(False)
    list(model.modules())[-1].eval()  # mixed modes must survive too
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    before = _snapshot(model)
    explainer = case.explainer(model=model)
    _explain(case, explainer, case.inputs())
    after = _snapshot(model)
    assert calls  # the user's hook stayed in place and was called
    for key in ("modes", "requires_grad", "hooks", "python_rng"):
        assert after[key] == before[key], key
    for a, b in zip(after["grads"], before["grads"]):
        assert (a is None and b is None) or (a[0] == b[0] and torch.equal(a[1], b[1]))
    for key in ("buffers", "params"):
        for a, b in zip(after[key], before[key]):
            assert torch.equal(a, b), key
    assert torch.equal(after["rng"], before["rng"])
    assert np.array_equal(after["numpy_rng"], before["numpy_rng"])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_results_stay_on_the_inputs_device(case, device):
    explainer = case.explainer(device)
    if case.cls is AnchorImage:
        background = case.settings["images_background"].to(device)
        explainer = AnchorImage(
            explainer.model, **{**case.settings, "images_background": background}
        )
    if case.texts:  # texts: the work runs on the device asked for, results come back on the CPU
        exp = explainer.__class__(explainer.model, **{**case.settings, "device": str(device)})
        exp = _explain(case, exp, case.inputs())
        assert exp.meta["device"] == str(torch.device(device))
        assert exp.predictions.device.type == "cpu" and exp.precision.device.type == "cpu"
        return
    inputs = case.inputs().to(device)
    exp = _explain(case, explainer, inputs)
    assert exp.meta["device"] == str(inputs.device)

    def tensors(value: Any):
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, (list, tuple)):
            for item in value:
                yield from tensors(item)

    found = list(tensors(list(exp.data.values())))
    assert found and all(t.device == inputs.device for t in found)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_json_round_trip_is_exact(case):
    exp = _explain(case, case.explainer(), case.inputs())
    back = Explanation.from_json(exp.to_json())
    assert_same(back.data, exp.data, exact(case))
    assert_same(back.meta, exp.meta, case)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_save_and_load_give_the_same_explanation(case, tmp_path):
    explainer = case.explainer()
    inputs = case.inputs()
    want = _explain(case, explainer, inputs)
    explainer.save(tmp_path / "saved")
    loaded = load_explainer(tmp_path / "saved", model=explainer.model)
    assert type(loaded) is case.cls
    assert_same(loaded.config, explainer.config, exact(case))
    got = _explain(case, loaded, inputs)
    assert_same(got.data, want.data, exact(case))
    assert_same(got.meta, want.meta, case)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_function_twin_is_the_class(case):
    inputs = case.inputs()
    model = case.model()
    settings = dict(case.settings)
    extra = dict(case.twin_extra)
    by_class = _explain(case, case.explainer(model=model), inputs)
    by_function = case.twin(model, inputs, **case.call, **extra, **settings)
    assert_same(by_function.data, by_class.data, exact(case))
    assert by_function.meta == by_class.meta


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_one_definition_of_the_settings_feeds_signature_docs_config_and_repr(case):
    names = case.cls.settings_class.names()
    constructor = inspect.signature(case.cls)
    # settings a method takes by position (Alibi's order) come first, then the rest in order
    positional = list(case.cls.positional_settings)
    assert list(constructor.parameters)[1:] == positional + [
        n for n in names if n not in positional
    ]
    for name in positional:
        assert constructor.parameters[name].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert list(constructor.parameters)[0] == (
        "model" if case.cls.kind == "whitebox" else "predictor"
    )
    per_call = case.cls.settings_class.names(per_call_only=True)
    explain_parameters = list(inspect.signature(case.cls.explain).parameters)
    assert explain_parameters[-len(per_call) :] == per_call if per_call else True
    twin_parameters = inspect.signature(case.twin).parameters
    assert set(names) <= set(twin_parameters)
    explainer = case.explainer()
    assert list(explainer.config) == names
    for name in names:
        assert f"{name} (default" in case.cls.__doc__ and f"{name} (default" in case.twin.__doc__
        assert f"{name}=" in repr(explainer)
    for field in case.cls.settings_class.fields():
        assert constructor.parameters[field.name].default == field.default


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_bad_inputs_are_refused_with_the_argument_named(case):
    explainer = case.explainer()
    inputs = case.inputs()
    if case.texts:
        with pytest.raises(TypeError, match="explains a list of texts"):
            explainer.explain(torch.zeros(2, 3), **case.call)
        with pytest.raises(TypeError, match="item 1 is float"):
            explainer.explain([inputs[0], float("nan")], **case.call)
        with pytest.raises(ValueError, match="at least one text"):
            explainer.explain(inputs[:0], **case.call)
        return
    with pytest.raises(TypeError, match="inputs must be a torch.Tensor"):
        explainer.explain(inputs.tolist(), **case.call)
    if case.integer_inputs:
        assert_same(
            explainer.explain(inputs.long(), **case.call).data,
            explainer.explain(inputs.long().to(inputs.dtype), **case.call).data,
            case,
        )
    else:
        with pytest.raises(TypeError, match="floating-point"):
            explainer.explain(inputs.long(), **case.call)
    poisoned = inputs.clone()
    poisoned.view(-1)[3] = float("nan")
    with pytest.raises(ValueError, match=r"inputs contains 1 non-finite value\(s\)"):
        explainer.explain(poisoned, **case.call)
    poisoned.view(-1)[3] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        explainer.explain(poisoned, **case.call)
    with pytest.raises(ValueError, match="batch size 0"):
        explainer.explain(inputs[:0], **case.call)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_bad_settings_are_refused_with_the_setting_named(case):
    model = case.model()
    with pytest.raises(TypeError, match=r"unknown setting\(s\) \['no_such_setting'\]"):
        case.cls(model, no_such_setting=1)
    with pytest.raises(TypeError, match="must be callable"):
        case.cls("not a model")
    fixed = [
        n
        for n in case.cls.settings_class.names()
        if n not in case.cls.settings_class.names(per_call_only=True)
    ]
    with pytest.raises(TypeError, match=rf"cannot change \['{fixed[0]}'\] per call"):
        case.cls(model).explain(
            case.inputs(), **case.call, **{fixed[0]: case.cls.settings_class().as_dict()[fixed[0]]}
        )
    with pytest.raises(TypeError, match="internal_batch_size must be 'auto', None or an int"):
        case.cls(model, internal_batch_size=2.5)
    with pytest.raises(
        ValueError, match="internal_batch_size must be 'auto', None or an int >= 1, got 0"
    ):
        case.cls(model, internal_batch_size=0)
    with pytest.raises(ValueError, match="built without a"):
        case.cls(None).explain(case.inputs(), **case.call)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_explanation_map_is_shaped_like_the_inputs_and_is_the_methods_own(case):
    explainer = case.explainer()
    inputs = case.inputs()
    exp = _explain(case, explainer, inputs)
    maps = explainer.explanation_map(exp, inputs)
    if case.texts:  # one value per word of each text
        assert maps.shape == (len(inputs), max(len(w) for w in exp.words))
    else:
        assert maps.shape == inputs.shape and maps.device == inputs.device
    torch.testing.assert_close(maps, case.expected_map(exp, inputs))
