"""The `torchexplain` command: explain (against direct IG), bench (adapters, table, JSON,
--compare on synthetic files), demo, error messages without tracebacks."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from torchexplain import Explanation, cli, integrated_gradients
from torchexplain._progress import Progress

from .conftest import TOLERANCES

REPO = Path(__file__).resolve().parent.parent
RTOL, ATOL = TOLERANCES[torch.float32]


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.head = nn.Linear(3 * 6 * 6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.conv(x)).flatten(1))


@pytest.fixture
def small_model() -> nn.Module:
    torch.manual_seed(0)
    return SmallCNN().eval()


@pytest.fixture
def inputs(tmp_path) -> dict[str, Path]:
    gen = np.random.default_rng(0)
    grey = gen.integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(grey, mode="L").save(tmp_path / "digit.png")
    np.save(tmp_path / "batch.npy", gen.integers(0, 256, (2, 1, 8, 8), dtype=np.uint8))
    torch.save(torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(1)), tmp_path / "one.pt")
    return {"png": tmp_path / "digit.png", "npy": tmp_path / "batch.npy", "pt": tmp_path / "one.pt"}


def expected_batch(path: Path) -> torch.Tensor:
    if path.suffix == ".png":
        return torch.from_numpy(np.asarray(Image.open(path), dtype=np.float32) / 255)[None, None]
    if path.suffix == ".npy":
        return torch.from_numpy(np.load(path)).float() / 255
    return torch.load(path)[None]


def check_explanations(model: nn.Module, out: Path, paths: list[Path], n_steps: int) -> None:
    summary = json.loads((out / "summary.json").read_text())
    assert [entry["input"] for entry in summary["inputs"]] == [str(p) for p in paths]
    for path in paths:
        got = Explanation.from_json((out / f"{path.stem}.json").read_text())
        want = integrated_gradients(model, expected_batch(path), n_steps=n_steps)
        torch.testing.assert_close(got.attributions, want.attributions, rtol=RTOL, atol=ATOL)
        assert torch.equal(got.target, want.target)
        assert (out / f"{path.stem}.png").is_file()


def test_explain_torchscript_model_on_png_npy_pt(small_model, inputs, tmp_path, capsys):
    model_path = tmp_path / "model.ts"
    torch.jit.save(torch.jit.script(small_model), model_path)
    paths = [inputs["png"], inputs["npy"], inputs["pt"]]
    status = cli.main(
        [
            "explain",
            "--model",
            str(model_path),
            "--input",
            *map(str, paths),
            "--out",
            str(tmp_path / "out"),
            "--n-steps",
            "16",
            "--device",
            "cpu",
        ]
    )
    assert status == 0
    check_explanations(small_model, tmp_path / "out", paths, 16)
    assert "digit.png: 1 example(s)" in capsys.readouterr().out


def test_explain_exported_model_with_a_static_batch_of_one(small_model, inputs, tmp_path):
    program = torch.export.export(small_model, (torch.rand(1, 1, 8, 8),))  # batch size fixed at 1
    model_path = tmp_path / "model.pt2"
    torch.export.save(program, model_path)
    paths = [inputs["npy"], inputs["png"]]
    status = cli.main(
        [
            "explain",
            "--model",
            str(model_path),
            "--input",
            *map(str, paths),
            "--out",
            str(tmp_path / "out"),
            "--n-steps",
            "8",
            "--quiet",
        ]
    )
    assert status == 0
    check_explanations(small_model, tmp_path / "out", paths, 8)


def test_exported_model_resizes_and_greys_images_to_its_input(small_model, tmp_path):
    program = torch.export.export(small_model, (torch.rand(1, 1, 8, 8),))
    torch.export.save(program, tmp_path / "model.pt2")
    colour = np.random.default_rng(1).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    Image.fromarray(colour, mode="RGB").save(tmp_path / "photo.jpg")
    loaded = cli.load_model(tmp_path / "model.pt2", torch.device("cpu"))
    assert loaded.example_shape == (1, 1, 8, 8) and loaded.static_batch == 1
    batch = cli.load_inputs(tmp_path / "photo.jpg", loaded.example_shape, None)
    expected = Image.open(tmp_path / "photo.jpg").convert("L").resize((8, 8), Image.BILINEAR)
    torch.testing.assert_close(
        batch, torch.from_numpy(np.asarray(expected, dtype=np.float32) / 255)[None, None]
    )
    # the static-batch wrapper runs 5 rows one at a time, same outputs as the eager model
    rows = torch.rand(5, 1, 8, 8)
    torch.testing.assert_close(loaded.forward(rows), small_model(rows), rtol=RTOL, atol=ATOL)


def test_tensor_files_for_a_model_of_unknown_input_shape(tmp_path):
    cases = {(5,): (1, 5), (3, 5): (3, 5), (1, 8, 8): (1, 1, 8, 8), (2, 1, 8, 8): (2, 1, 8, 8)}
    for shape, batch_shape in cases.items():
        np.save(tmp_path / "x.npy", np.arange(np.prod(shape), dtype=np.float32).reshape(shape))
        batch = cli.load_inputs(tmp_path / "x.npy", None, None)
        assert tuple(batch.shape) == batch_shape
        assert torch.equal(batch.flatten(), torch.arange(np.prod(shape), dtype=torch.float32))


def run_cli_expecting_error(argv: list[str], capsys, *words: str) -> str:
    status = cli.main(argv)
    err = capsys.readouterr().err
    assert status == cli.EXIT_USAGE
    assert "Traceback" not in err and err.count("\n") == 1, err
    for word in words:
        assert word in err, err
    return err


def test_explain_user_mistakes_name_the_file_or_flag(small_model, inputs, tmp_path, capsys):
    model_path = tmp_path / "model.ts"
    torch.jit.save(torch.jit.script(small_model), model_path)
    out = str(tmp_path / "out")
    base = ["explain", "--model", str(model_path), "--out", out, "--input"]
    run_cli_expecting_error(
        ["explain", "--model", "nope.pt2", "--input", str(inputs["png"]), "--out", out],
        capsys,
        "--model nope.pt2",
        "no such file",
    )
    torch.save(small_model.state_dict(), tmp_path / "weights.pt")
    run_cli_expecting_error(
        [
            "explain",
            "--model",
            str(tmp_path / "weights.pt"),
            "--input",
            str(inputs["png"]),
            "--out",
            out,
        ],
        capsys,
        "weights.pt",
        "state_dict",
    )
    (tmp_path / "notes.txt").write_text("hi")
    run_cli_expecting_error(
        [*base, str(tmp_path / "notes.txt")], capsys, "notes.txt", "unsupported file type"
    )
    torch.save(torch.rand(2, 3, 4, 5, 6), tmp_path / "five.pt")
    run_cli_expecting_error([*base, str(tmp_path / "five.pt")], capsys, "five.pt", "5 dimensions")
    torch.save(torch.rand(1, 5, 5), tmp_path / "small.pt")  # the model needs 8x8
    run_cli_expecting_error(
        [*base, str(tmp_path / "small.pt")], capsys, "--input", "small.pt", "failed"
    )
    run_cli_expecting_error(
        [*base, str(inputs["png"]), "--method", "shapley"], capsys, "--method shapley", "unknown"
    )
    run_cli_expecting_error([*base, str(inputs["png"]), "--n-steps", "0"], capsys, "--n-steps")
    run_cli_expecting_error(
        [*base, str(inputs["png"]), "--target", "7"], capsys, "--input", "digit.png", "failed"
    )


def test_the_methods_are_the_registered_explainers_that_declare_a_cli_name(capsys):
    from torchexplain.base import registered_explainers

    declared = {cls.cli_name: cls for cls in registered_explainers().values() if cls.cli_name}
    assert cli.cli_methods() == declared
    assert set(declared) == {"ig", "counterfactual", "anchor", "kernel_shap"}
    with pytest.raises(SystemExit):
        cli.main(["explain", "--help"])
    assert f"one of {', '.join(declared)}" in capsys.readouterr().out


def test_explain_counterfactual_matches_the_library(small_model, inputs, tmp_path):
    from torchexplain import counterfactual

    program = torch.export.export(
        small_model, (torch.rand(2, 1, 8, 8),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, tmp_path / "model.pt2")
    status = cli.main(
        [
            "explain",
            "--model",
            str(tmp_path / "model.pt2"),
            "--input",
            str(inputs["npy"]),
            "--out",
            str(tmp_path / "out"),
            "--method",
            "counterfactual",
            "--max-lam-steps",
            "2",
            "--max-iter",
            "60",
            "--quiet",
        ]
    )
    assert status == 0
    got = Explanation.from_json((tmp_path / "out" / "batch.json").read_text())
    want = counterfactual(small_model, expected_batch(inputs["npy"]), max_lam_steps=2, max_iter=60)
    torch.testing.assert_close(got.counterfactual, want.counterfactual, rtol=RTOL, atol=ATOL)
    assert torch.equal(got.cf_class, want.cf_class) and torch.equal(got.success, want.success)
    assert (tmp_path / "out" / "batch.png").is_file()


@pytest.mark.parametrize("precision_samples", [None, "fresh"])
def test_explain_anchor_matches_the_library(small_model, inputs, tmp_path, precision_samples):
    from torchexplain import anchor_image
    from torchexplain.anchors.image import DEFAULT_SEGMENTATION_KWARGS

    model_path = tmp_path / "model.ts"
    torch.jit.save(torch.jit.script(small_model), model_path)
    command = ["explain", "--model", str(model_path), "--input", str(inputs["png"])]
    command += ["--out", str(tmp_path / "out"), "--method", "anchor"]
    command += ["--n-segments", "4", "--threshold", "0.9", "--quiet"]
    if precision_samples is not None:
        command += ["--precision-samples", precision_samples]
    assert cli.main(command) == 0
    got = Explanation.from_json((tmp_path / "out" / "digit.json").read_text())
    segmentation = {**DEFAULT_SEGMENTATION_KWARGS["slic"], "n_segments": 4}
    want = anchor_image(
        small_model,
        expected_batch(inputs["png"]),
        segmentation_kwargs=segmentation,
        threshold=0.9,
        seed=0,
        precision_samples=precision_samples or "reuse",
    )
    assert got.meta["params"]["precision_samples"] == (precision_samples or "reuse")
    assert got.anchor == want.anchor and torch.equal(got.mask, want.mask)
    assert torch.equal(got.precision, want.precision)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["inputs"][0]["target"] == want.target.tolist()


def test_console_errors_exit_nonzero_without_traceback(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torchexplain.cli",
            "explain",
            "--model",
            str(tmp_path / "missing.pt2"),
            "--input",
            "x.png",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "missing.pt2: no such file" in done.stderr
    bad_flag = subprocess.run(
        [sys.executable, "-m", "torchexplain.cli", "bench", "--qiuck"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert (
        bad_flag.returncode == 2
        and "--qiuck" in bad_flag.stderr
        and "Traceback" not in bad_flag.stderr
    )


# -- bench and demo: tooling of the source checkout ------------------------------------------


def test_bench_runs_the_checkouts_runner_with_the_flags_given(tmp_path, capfd):
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    (folder / "bench_alpha.py").write_text(FAKE_BENCH)
    out = tmp_path / "all.json"
    args = [
        "bench",
        "--benchmarks-dir",
        str(folder),
        "--device",
        "cpu",
        "--quick",
        "--out",
        str(out),
    ]
    assert cli.main(args) == 0
    assert "bench_alpha.py: ok" in capfd.readouterr().out
    assert [row["config"] for row in json.loads(out.read_text())["rows"]] == ["tiny N=4 quick"]
    # its exit status is the command's: a usage error of the runner is 2, one line, no traceback
    assert cli.main(["bench", "--benchmarks-dir", str(tmp_path / "nowhere")]) == cli.EXIT_USAGE
    err = capfd.readouterr().err
    assert "torchexplain bench: error: --benchmarks-dir" in err and "Traceback" not in err


FAKE_BENCH = """
import argparse, json
from pathlib import Path
p = argparse.ArgumentParser()
p.add_argument("--device"); p.add_argument("--out"); p.add_argument("--quick", action="store_true")
a = p.parse_args()
rows = [{"config": "tiny N=4" + (" quick" if a.quick else ""), "providers": {
    "torchexplain": {"median_s": 2.0}, "captum": {"median_s": 4.0}, "floor": {"median_s": 1.0}}}]
Path(a.out).write_text(json.dumps({"meta": {"device": a.device}, "results": rows}))
"""


@pytest.mark.parametrize("command", ["demo", "bench"])
def test_without_a_source_checkout_demo_and_bench_say_how_to_get_one(
    command, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(
        cli, "__file__", str(tmp_path / "site-packages" / "torchexplain" / "cli.py")
    )
    monkeypatch.chdir(tmp_path)
    assert cli.main([command]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert (
        "source checkout" in err
        and "not installed with the package" in err
        and err.count("\n") == 1
    )


def test_progress_bar_draws_only_when_enabled():
    stream = io.StringIO()
    with Progress(2, "bench", enabled=False, stream=stream) as bar:
        bar.update("x")
        bar.advance()
    assert stream.getvalue() == ""
    with Progress(2, "bench", enabled=True, stream=stream) as bar:
        bar.update("bench_ig")
        bar.advance()
    drawn = stream.getvalue()
    assert "bench [############............] 1/2" in drawn and "bench_ig" in drawn
    assert not io.StringIO().isatty()  # so the default (enabled=None) is quiet off a terminal


# -- demo ----------------------------------------------------------------------------------


def test_the_demo_command_runs_the_example(mnist_cnn, tmp_path, capfd):
    args = ["--n-explain", "2", "--n-steps", "4", "--device", "cpu"]
    assert cli.main(["demo", "--out", str(tmp_path / "cli"), *args]) == 0
    assert "integrated gradients: 2 digits x 4 steps" in capfd.readouterr().out
    summary = json.loads((tmp_path / "cli" / "summary.json").read_text())
    model, test = mnist_cnn
    with torch.no_grad():
        accuracy = float((model(test.images).argmax(1) == test.labels).float().mean())
    assert summary["accuracy"] == pytest.approx(accuracy)
    for name in ("integrated_gradients.png", "counterfactuals.png", "mnist_anchor.png"):
        assert (tmp_path / "cli" / name).is_file()


@pytest.mark.parametrize("command", [[], ["explain"], ["serve"], ["kserve"]])
def test_every_help_page_prints(command, capsys):
    from torchexplain.cli import main

    with pytest.raises(SystemExit) as raised:
        main([*command, "--help"])
    assert raised.value.code == 0
    assert "usage: torchexplain" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["demo", "bench"])
def test_the_checkout_scripts_print_their_help_as_the_command(command, capfd):
    assert cli.main([command, "--help"]) == 0
    assert f"usage: torchexplain {command}" in capfd.readouterr().out


def test_explain_kernel_shap_matches_the_library(small_model, inputs, tmp_path, capsys):
    from torchexplain import kernel_shap
    from torchexplain.anchors.image import DEFAULT_SEGMENTATION_KWARGS

    model_path = tmp_path / "model.ts"
    torch.jit.save(torch.jit.script(small_model), model_path)
    status = cli.main(
        [
            "explain",
            "--model",
            str(model_path),
            "--input",
            str(inputs["png"]),
            "--out",
            str(tmp_path / "out"),
            "--method",
            "kernel_shap",
            "--n-segments",
            "4",
            "--quiet",
        ]
    )
    assert status == 0
    got = Explanation.from_json((tmp_path / "out" / "digit.json").read_text())
    batch = expected_batch(inputs["png"])
    segmentation = {**DEFAULT_SEGMENTATION_KWARGS["slic"], "n_segments": 4}
    want = kernel_shap(
        small_model, batch, torch.zeros_like(batch), segmentation_kwargs=segmentation, seed=0
    )
    torch.testing.assert_close(got.shap_values, want.shap_values, rtol=1e-6, atol=1e-7)
    assert torch.equal(got.feature_mask, want.feature_mask) and torch.equal(got.target, want.target)
    assert (tmp_path / "out" / "digit.png").is_file()
    run_cli_expecting_error(
        [
            "explain",
            "--model",
            str(model_path),
            "--input",
            str(inputs["png"]),
            "--out",
            str(tmp_path / "bad"),
            "--method",
            "kernel_shap",
            "--target",
            "99",
            "--quiet",
        ],
        capsys,
        "--target 99",
        "outputs",
    )
