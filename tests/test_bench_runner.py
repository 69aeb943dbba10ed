"""benchmarks/run.py, the runner behind ``torchexplain bench``: every script into one table and
one JSON, the adapters, --compare against a baseline, errors in one line."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


def _load_runner():
    spec = importlib.util.spec_from_file_location("bench_runner", REPO / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_runner", module)
    spec.loader.exec_module(module)
    return module


runner = _load_runner()


def run_expecting_error(argv: list[str], capsys, *words: str) -> str:
    status = runner.main(argv, prog="torchexplain bench")
    err = capsys.readouterr().err
    assert status == runner.EXIT_USAGE
    assert "Traceback" not in err and err.count("\n") == 1, err
    for word in words:
        assert word in err, err
    return err


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
    return runner.main(
        [
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
    assert len(compared["regressions"]) == 2 and compared["margin"] == runner.DEFAULT_MARGIN
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
    now = [runner._row("bench_k", "op", "tiny", "cpu", 0.004, "captum", 0.002, "floor", 0.5)]
    baseline = {
        "rows": [runner._row("bench_k", "op", "tiny", "cpu", 0.001, "captum", 0.002, "floor", 0.5)]
    }
    judged_all = runner.compare(now, baseline, margin=0.25, min_time_s=0.0)
    assert len(judged_all["regressions"]) == 2  # 4x on both ratios
    short_skipped = runner.compare(now, baseline, margin=0.25, min_time_s=0.010)
    assert short_skipped["regressions"] == [] and len(short_skipped["too_short"]) == 2
    # a ratio of long times is still judged
    long_now = [runner._row("bench_k", "op", "tiny", "cpu", 0.2, None, None, "floor", 0.05)]
    long_base = {
        "rows": [runner._row("bench_k", "op", "tiny", "cpu", 0.1, None, None, "floor", 0.05)]
    }
    (check,) = runner.compare(long_now, long_base, margin=0.25, min_time_s=0.010)["regressions"]
    assert check["change"] == pytest.approx(1.0)


def test_bench_failed_script_and_bad_files(fake_benchmarks, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_FAIL", "bench_beta")
    assert bench(fake_benchmarks, tmp_path / "x.json") == runner.EXIT_BENCH_FAILED
    err = capsys.readouterr().err
    assert "bench_beta.py: FAILED (exit 5)" in err and "boom" in err
    assert [r["benchmark"] for r in json.loads((tmp_path / "x.json").read_text())["rows"]] == [
        "bench_alpha"
    ]
    (tmp_path / "bad.json").write_text("{not json")
    run_expecting_error(
        [
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
    run_expecting_error(
        [
            "--benchmarks-dir",
            str(fake_benchmarks),
            "--compare",
            str(tmp_path / "other.json"),
        ],
        capsys,
        "other.json",
        "'rows' list",
    )
    run_expecting_error(
        ["--benchmarks-dir", str(fake_benchmarks), "--only", "gamma"],
        capsys,
        "--only gamma",
        "alpha, beta",
    )
    run_expecting_error(["--benchmarks-dir", str(tmp_path / "nowhere")], capsys, "--benchmarks-dir")
    if not torch.cuda.is_available():
        run_expecting_error(["--device", "cuda"], capsys, "--device cuda", "no CUDA device")


def test_quick_adds_the_per_script_restrictions(tmp_path):
    script = tmp_path / "bench_counterfactual.py"
    script.write_text(
        "import json, sys\n"
        "out = sys.argv[sys.argv.index('--out') + 1]\n"
        "json.dump({'meta': {'device': 'cpu'}, 'argv': sys.argv[1:]}, open(out, 'w'))\n"
    )
    quick = runner.run_script(script, "cpu", True, tmp_path, timeout=60)
    assert quick.payload["argv"][-3:] == ["--quick", *runner.QUICK_ARGS["bench_counterfactual"]]
    full = runner.run_script(script, "cpu", False, tmp_path, timeout=60)
    assert "--quick" not in full.payload["argv"] and "--sizes" not in full.payload["argv"]


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
    (row,) = runner.normalise("bench_kernels", payload)
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
    rows = runner.normalise(benchmark, payload)
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
    (row,) = runner.normalise("bench_newmethod", payload)
    assert (row["method"], row["peer"], row["device"]) == ("newmethod", "alibi", "cuda")
    assert row["ratio_vs_peer"] == pytest.approx(1 / 3) and row["ratio_vs_floor"] == 2.0


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
    mlserver, kserve = runner.normalise("bench_serving", payload)
    assert mlserver["config"] == "32 rows via MLServer" and kserve["config"] == "32 rows via KServe"
    assert mlserver["ratio_vs_peer"] == pytest.approx(1.25) and kserve[
        "ratio_vs_peer"
    ] == pytest.approx(1.125)
    assert mlserver["peer"] == "in_process" and mlserver["ratio_vs_floor"] == pytest.approx(20.0)


def _ab_module():
    spec = importlib.util.spec_from_file_location("bench_ab", REPO / "benchmarks" / "ab.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ab_pairs_calls_in_alternating_order_and_reports_the_median_ratio():
    ab = _ab_module()
    calls = []

    class Fake:
        def __init__(self, side, times):
            self.side, self.times = side, iter(times)

        def time(self, name):
            calls.append(self.side)
            return next(self.times)

    old = Fake("old", [1.0, 1.0, 1.0, 1.0])
    new = Fake("new", [1.1, 0.9, 1.5, 1.2])  # ratios 1.1, 0.9, 1.5, 1.2: median 1.15
    result = ab.compare(old, new, "w", pairs=4)
    assert calls == ["old", "new", "new", "old", "old", "new", "new", "old"]
    assert result["change"] == pytest.approx(0.15)
    assert result["old_median_s"] == 1.0 and result["new_median_s"] == pytest.approx(1.15)
    assert result["change_q1"] < result["change"] < result["change_q3"]


def test_ab_refuses_a_folder_that_is_not_a_checkout(tmp_path, capsys):
    ab = _ab_module()
    with pytest.raises(SystemExit) as exit_info:
        ab.main(["--old", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "not a torchexplain checkout" in capsys.readouterr().err
