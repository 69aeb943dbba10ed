"""evaluate / torchexplain evaluate / the MNIST comparison demo: the table is the metrics' own
numbers, and the random control scores worst."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

import torchexplain
from torchexplain import cli, metrics
from torchexplain.evaluation import evaluate, random_attributions

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def mnist():
    from torchexplain.datasets import load_mnist
    from torchexplain.zoo import pretrained_mnist_cnn

    model, _ = pretrained_mnist_cnn()
    return model.eval(), load_mnist("test").images[:12]


def test_the_table_is_the_metrics_own_numbers(mnist):
    model, x = mnist
    ig = torchexplain.IntegratedGradients(model, n_steps=16)
    evaluation = evaluate(
        model, x, {"ig": ig}, n_infidelity_samples=20, n_sensitivity_samples=2, n_steps=10, seed=3
    )
    maps = ig.explain(x).attributions
    target = model(x).argmax(1)
    expected = metrics.infidelity(
        model,
        metrics.noise_perturbation(0.1, 3),
        x,
        maps,
        target=target,
        n_perturb_samples=20,
        normalize=True,
    )
    torch.testing.assert_close(evaluation.per_example["ig"]["infidelity"], expected)
    curve = metrics.deletion_curve(model, x, maps, n_steps=10, model_output="logits")
    torch.testing.assert_close(evaluation.per_example["ig"]["deletion"], curve.auc)
    sensitivity = metrics.sensitivity_max(
        lambda inputs: ig.explain(inputs).attributions,
        x,
        perturb_func=metrics.uniform_perturbation(0.02, 3),
        n_perturb_samples=2,
    )
    torch.testing.assert_close(evaluation.per_example["ig"]["sensitivity_max"], sensitivity.cpu())
    assert evaluation.table()["ig"]["insertion"] == pytest.approx(
        float(evaluation.per_example["ig"]["insertion"].mean())
    )


def test_the_mnist_demo_ranks_the_random_control_last(tmp_path):
    path = Path(__file__).parents[1] / "examples" / "mnist_quality.py"
    spec = importlib.util.spec_from_file_location("mnist_quality", path)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    summary = demo.run(tmp_path, n_digits=16, device="cpu")
    written = json.loads((tmp_path / "evaluation.json").read_text())
    assert written["ranking"] == summary["ranking"]
    for metric, ranking in summary["ranking"].items():
        assert ranking[-1] == "random", f"{metric}: {ranking}"
    assert (tmp_path / "evaluation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    means = written["mean"]
    assert means["IG (black)"]["deletion"] < means["random"]["deletion"]
    assert means["IG (black)"]["insertion"] > means["random"]["insertion"]


def test_bad_methods(mnist):
    model, x = mnist
    with pytest.raises(ValueError, match="methods is empty"):
        evaluate(model, x, {})
    with pytest.raises(ValueError, match="metrics_to_run: unknown"):
        evaluate(model, x, {"r": random_attributions()}, metrics_to_run=["accuracy"])
    with pytest.raises(ValueError, match="maps shaped like inputs"):
        evaluate(model, x, {"bad": lambda inputs: inputs[:, :, :5]})
    with pytest.raises(TypeError, match="must be an Explainer or a function"):
        evaluate(model, x, {"bad": 3})


def test_the_command_on_a_saved_model(mnist, tmp_path, capsys):
    model, x = mnist
    exported = torch.export.export(
        model, (x[:2],), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(exported, str(tmp_path / "cnn.pt2"))
    torch.save(x[:6], tmp_path / "digits.pt")
    status = cli.main(
        [
            "evaluate",
            "--model",
            str(tmp_path / "cnn.pt2"),
            "--input",
            str(tmp_path / "digits.pt"),
            "--methods",
            "ig",
            "random",
            "--metrics",
            "deletion",
            "insertion",
            "--out",
            str(tmp_path / "out"),
            "--device",
            "cpu",
        ]
    )
    assert status == 0, capsys.readouterr().err
    written = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert written["methods"] == ["ig", "random"] and written["metrics"] == [
        "deletion",
        "insertion",
    ]
    assert written["ranking"]["deletion"] == ["ig", "random"]
    assert (
        cli.main(
            [
                "evaluate",
                "--model",
                str(tmp_path / "cnn.pt2"),
                "--input",
                str(tmp_path / "digits.pt"),
                "--methods",
                "magic",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "--method magic: unknown method" in capsys.readouterr().err
