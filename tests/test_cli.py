"""The `torchexplain` command: explain (against direct IG), bench (adapters, table, JSON,
--compare on synthetic files), demo, error messages without tracebacks."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from torchexplain import Explanation, _bench, cli, integrated_gradients
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


def test_a_method_missing_from_the_installed_version_says_so(
    small_model, inputs, tmp_path, capsys, monkeypatch
):
    import torchexplain

    monkeypatch.delattr(torchexplain, "AnchorImage")
    model_path = tmp_path / "model.ts"
    torch.jit.save(torch.jit.script(small_model), model_path)
    run_cli_expecting_error(
        [
            "explain",
            "--model",
            str(model_path),
            "--input",
            str(inputs["png"]),
            "--out",
            str(tmp_path / "out"),
            "--method",
            "anchor",
        ],
        capsys,
        "method 'anchor' is not available in this version",
        "available: ig, counterfactual",
    )


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


def test_explain_anchor_matches_the_library(small_model, inputs, tmp_path):
    from torchexplain import anchor_image
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
            "anchor",
            "--n-segments",
            "4",
            "--threshold",
            "0.9",
            "--quiet",
        ]
    )
    assert status == 0
    got = Explanation.from_json((tmp_path / "out" / "digit.json").read_text())
    segmentation = {**DEFAULT_SEGMENTATION_KWARGS["slic"], "n_segments": 4}
    want = anchor_image(
        small_model,
        expected_batch(inputs["png"]),
        segmentation_kwargs=segmentation,
        threshold=0.9,
        seed=0,
    )
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


# -- bench ---------------------------------------------------------------------------------

FAKE_BENCH = """
import argparse, json, os, sys
from pathlib import Path
p = argparse.ArgumentParser()
p.add_argument("--device"); p.add_argument("--out"); p.add_argument("--quick", action="store_true")
a = p.parse_args()
if os.environ.get("FAKE_FAIL") == "{name}":
    print("boom", file=sys.stderr); sys.exit(5)
ours = float(os.environ.get("FAKE_OURS", "2.0"))
rows = [{{"config": "tiny N=4" + (" quick" if a.quick else ""), "providers": {{
    "torchexplain": {{"median_s": ours}}, "captum": {{"median_s": 4.0}}, "floor": {{"median_s": 1.0}}}}}}]
Path(a.out).write_text(json.dumps({{"meta": {{"device": a.device}}, "results": rows}}))
"""


@pytest.fixture
def fake_benchmarks(tmp_path) -> Path:
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    shutil.copy(REPO / "benchmarks" / "_common.py", folder / "_common.py")
    for name in ("alpha", "beta"):
        (folder / f"bench_{name}.py").write_text(FAKE_BENCH.format(name=f"bench_{name}"))
    return folder


def bench(folder: Path, out: Path, *extra: str) -> int:
    return cli.main(
        [
            "bench",
            "--benchmarks-dir",
            str(folder),
            "--device",
            "cpu",
            "--quick",
            "--out",
            str(out),
            *extra,
        ]
    )


def test_bench_runs_every_script_into_one_table_and_json(fake_benchmarks, tmp_path, capsys):
    out = tmp_path / "all.json"
    assert bench(fake_benchmarks, out) == 0
    printed = capsys.readouterr().out
    header = printed.splitlines()[
        printed.splitlines().index(
            next(ln for ln in printed.splitlines() if ln.startswith("method"))
        )
    ]
    for column in (
        "method",
        "configuration",
        "torchexplain",
        "peer",
        "floor",
        "vs peer",
        "vs floor",
        "device",
    ):
        assert column in header
    result = json.loads(out.read_text())
    assert {"device", "versions", "commit", "date"} <= set(result["meta"])
    assert [(r["benchmark"], r["config"]) for r in result["rows"]] == [
        ("bench_alpha", "tiny N=4 quick"),
        ("bench_beta", "tiny N=4 quick"),
    ]
    row = result["rows"][0]
    assert row["peer"] == "captum" and row["ratio_vs_peer"] == 0.5 and row["ratio_vs_floor"] == 2.0
    assert set(result["raw"]) == {"bench_alpha", "bench_beta"}


def test_bench_compare_exits_nonzero_beyond_the_margin(
    fake_benchmarks, tmp_path, monkeypatch, capsys
):
    baseline = tmp_path / "baseline.json"
    rows = [
        {
            "benchmark": "bench_alpha",
            "method": "alpha",
            "config": "tiny N=4 quick",
            "ratio_vs_peer": 0.5,
            "ratio_vs_floor": 2.0,
        }
    ]
    baseline.write_text(json.dumps({"meta": {}, "rows": rows}))
    # 2.4 s is 20 % slower than the baseline's 2.0 s: inside the 25 % margin
    monkeypatch.setenv("FAKE_OURS", "2.4")
    assert (
        bench(fake_benchmarks, tmp_path / "a.json", "--compare", str(baseline), "--only", "alpha")
        == 0
    )
    # 2.6 s is 30 % slower: both ratios regress
    monkeypatch.setenv("FAKE_OURS", "2.6")
    assert (
        bench(fake_benchmarks, tmp_path / "b.json", "--compare", str(baseline), "--only", "alpha")
        == 1
    )
    err = capsys.readouterr().err
    assert err.count("REGRESSION bench_alpha | alpha | tiny N=4 quick") == 2 and "+30%" in err
    compared = json.loads((tmp_path / "b.json").read_text())["compare"]
    assert len(compared["regressions"]) == 2 and compared["margin"] == _bench.DEFAULT_MARGIN
    # a wider margin lets it pass; faster is never a regression
    assert (
        bench(
            fake_benchmarks,
            tmp_path / "c.json",
            "--compare",
            str(baseline),
            "--only",
            "alpha",
            "--margin",
            "0.5",
        )
        == 0
    )
    monkeypatch.setenv("FAKE_OURS", "1.0")
    assert (
        bench(fake_benchmarks, tmp_path / "d.json", "--compare", str(baseline), "--only", "alpha")
        == 0
    )


def test_compare_does_not_judge_ratios_of_too_short_times():
    now = [_bench._row("bench_k", "op", "tiny", "cpu", 0.004, "captum", 0.002, "floor", 0.5)]
    baseline = {
        "rows": [_bench._row("bench_k", "op", "tiny", "cpu", 0.001, "captum", 0.002, "floor", 0.5)]
    }
    judged_all = _bench.compare(now, baseline, margin=0.25, min_time_s=0.0)
    assert len(judged_all["regressions"]) == 2  # 4x on both ratios
    short_skipped = _bench.compare(now, baseline, margin=0.25, min_time_s=0.010)
    assert short_skipped["regressions"] == [] and len(short_skipped["too_short"]) == 2
    # a ratio of long times is still judged
    long_now = [_bench._row("bench_k", "op", "tiny", "cpu", 0.2, None, None, "floor", 0.05)]
    long_base = {
        "rows": [_bench._row("bench_k", "op", "tiny", "cpu", 0.1, None, None, "floor", 0.05)]
    }
    (check,) = _bench.compare(long_now, long_base, margin=0.25, min_time_s=0.010)["regressions"]
    assert check["change"] == pytest.approx(1.0)


def test_bench_failed_script_and_bad_files(fake_benchmarks, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_FAIL", "bench_beta")
    assert bench(fake_benchmarks, tmp_path / "x.json") == cli.EXIT_BENCH_FAILED
    err = capsys.readouterr().err
    assert "bench_beta.py: FAILED (exit 5)" in err and "boom" in err
    assert [r["benchmark"] for r in json.loads((tmp_path / "x.json").read_text())["rows"]] == [
        "bench_alpha"
    ]
    (tmp_path / "bad.json").write_text("{not json")
    run_cli_expecting_error(
        [
            "bench",
            "--benchmarks-dir",
            str(fake_benchmarks),
            "--compare",
            str(tmp_path / "bad.json"),
        ],
        capsys,
        "--compare",
        "bad.json",
        "not valid JSON",
    )
    (tmp_path / "other.json").write_text(json.dumps({"results": []}))
    run_cli_expecting_error(
        [
            "bench",
            "--benchmarks-dir",
            str(fake_benchmarks),
            "--compare",
            str(tmp_path / "other.json"),
        ],
        capsys,
        "other.json",
        "'rows' list",
    )
    run_cli_expecting_error(
        ["bench", "--benchmarks-dir", str(fake_benchmarks), "--only", "gamma"],
        capsys,
        "--only gamma",
        "alpha, beta",
    )
    run_cli_expecting_error(
        ["bench", "--benchmarks-dir", str(tmp_path / "nowhere")], capsys, "--benchmarks-dir"
    )
    if not torch.cuda.is_available():
        run_cli_expecting_error(
            ["bench", "--device", "cuda"], capsys, "--device cuda", "no CUDA device"
        )


def test_quick_adds_the_per_script_restrictions(tmp_path):
    script = tmp_path / "bench_counterfactual.py"
    script.write_text(
        "import json, sys\n"
        "out = sys.argv[sys.argv.index('--out') + 1]\n"
        "json.dump({'meta': {'device': 'cpu'}, 'argv': sys.argv[1:]}, open(out, 'w'))\n"
    )
    quick = _bench.run_script(script, "cpu", True, tmp_path, timeout=60)
    assert quick.payload["argv"][-3:] == ["--quick", *_bench.QUICK_ARGS["bench_counterfactual"]]
    full = _bench.run_script(script, "cpu", False, tmp_path, timeout=60)
    assert "--quick" not in full.payload["argv"] and "--sizes" not in full.payload["argv"]


def test_bench_without_a_source_checkout_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setattr(
        _bench, "__file__", str(tmp_path / "site-packages" / "torchexplain" / "_bench.py")
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(_bench.BenchError, match="not installed with the package.*--benchmarks-dir"):
        _bench.find_benchmarks_dir()


def test_kernel_adapter_uses_the_dispatch_and_copy_bandwidth_floor():
    payload = {
        "meta": {"device": "cpu", "copy_bandwidth_gbps": 2.0},
        "rows": [
            {
                "size": "s",
                "op": "path",
                "dtype": "float32",
                "N": 4,
                "steps": 8,
                "provider": p,
                "bytes": 4e6,
                "median_ms": ms,
            }
            for p, ms in (("reference", 4.0), ("captum_style", 8.0))
        ],
    }
    (row,) = _bench.normalise("bench_kernels", payload)
    assert row["method"] == "ig_kernel_path" and "eager reference" in row["config"]
    assert row["ratio_vs_peer"] == pytest.approx(0.5)
    assert row["floor_s"] == pytest.approx(4e6 / 2e9) and row["ratio_vs_floor"] == pytest.approx(
        0.004 / 0.002
    )


@pytest.mark.parametrize(
    "result_file",
    sorted(
        p.name
        for p in (REPO / "benchmarks" / "results").glob("*.json")
        if not p.name.startswith("torchexplain_bench")
    ),
)
def test_every_committed_benchmark_result_reads_into_common_rows(result_file):
    """The contract a new bench_<method>.py signs: `torchexplain bench` can read its JSON."""
    payload = json.loads((REPO / "benchmarks" / "results" / result_file).read_text())
    benchmark = result_file.split("-")[0].removesuffix(".json")
    benchmark = benchmark if benchmark.startswith("bench_") else f"bench_{benchmark}"
    assert (REPO / "benchmarks" / f"{benchmark}.py").is_file()
    rows = _bench.normalise(benchmark, payload)
    assert rows, f"{result_file}: no rows with a torchexplain time"
    for row in rows:
        assert row["torchexplain_s"] > 0 and row["device"] == payload["meta"]["device"]
        assert row["ratio_vs_peer"] is not None or row["ratio_vs_floor"] is not None


def test_generic_adapter_reads_flat_provider_rows():
    payload = {
        "meta": {"device": "cuda"},
        "rows": [
            {"size": "a", "provider": "torchexplain", "median_s": 1.0},
            {"size": "a", "provider": "alibi", "median_s": 3.0},
            {"size": "a", "provider": "floor", "median_s": 0.5},
        ],
    }
    (row,) = _bench.normalise("bench_newmethod", payload)
    assert (row["method"], row["peer"], row["device"]) == ("newmethod", "alibi", "cuda")
    assert row["ratio_vs_peer"] == pytest.approx(1 / 3) and row["ratio_vs_floor"] == 2.0


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


def test_demo_command_and_the_example_wrapper_write_the_same_summary(mnist_cnn, tmp_path, capsys):
    args = ["--n-explain", "2", "--n-steps", "4", "--device", "cpu"]
    assert cli.main(["demo", "--out", str(tmp_path / "cli"), *args]) == 0
    printed = capsys.readouterr().out
    assert "integrated gradients: 2 digits x 4 steps" in printed
    done = subprocess.run(
        [sys.executable, "examples/mnist_cnn.py", "--out", str(tmp_path / "example"), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    from_cli = json.loads((tmp_path / "cli" / "summary.json").read_text())
    from_example = json.loads((tmp_path / "example" / "summary.json").read_text())
    assert from_cli["accuracy"] == from_example["accuracy"]
    assert from_cli["integrated_gradients"]["mean_abs_delta"] == pytest.approx(
        from_example["integrated_gradients"]["mean_abs_delta"], rel=1e-6
    )


@pytest.mark.parametrize("command", [[], ["demo"], ["explain"], ["bench"]])
def test_every_help_page_prints(command, capsys):
    from torchexplain.cli import main

    with pytest.raises(SystemExit) as raised:
        main([*command, "--help"])
    assert raised.value.code == 0
    assert "usage: torchexplain" in capsys.readouterr().out


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


def test_serving_adapter_compares_each_server_with_the_same_explainer_in_process():
    payload = {
        "meta": {"device": "cpu"},
        "results": [
            {
                "method": "IntegratedGradients",
                "config": "32 rows",
                "providers": {
                    "torchexplain": {"median_s": 5.0},
                    "kserve": {"median_s": 4.5},
                    "in_process": {"median_s": 4.0},
                    "floor": {"median_s": 0.25},
                },
            }
        ],
    }
    mlserver, kserve = _bench.normalise("bench_serving", payload)
    assert mlserver["config"] == "32 rows via MLServer" and kserve["config"] == "32 rows via KServe"
    assert mlserver["ratio_vs_peer"] == pytest.approx(1.25) and kserve[
        "ratio_vs_peer"
    ] == pytest.approx(1.125)
    assert mlserver["peer"] == "in_process" and mlserver["ratio_vs_floor"] == pytest.approx(20.0)
