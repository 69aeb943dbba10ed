"""explain_dataset / load_results: equal to one explain call, resumable after SIGKILL, checked on
read, refused on a different run, split by rank under torchrun (2 processes, gloo)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import torchexplain
from torchexplain.dataset import explain_dataset, load_results

SETUP = """
import torch, torchexplain
from torchexplain.datasets import load_census
from torchexplain.zoo import Probabilities, pretrained_census_mlp
data = load_census()
model = Probabilities(pretrained_census_mlp()[0]).eval()
explainer = torchexplain.KernelShap(model, seed=0).fit(data.X_train[:30])
rows = torch.from_numpy(data.X_test[:60])
"""


@pytest.fixture(scope="module")
def census():
    namespace: dict = {}
    exec(SETUP, namespace)  # the same explainer the subprocesses build
    return namespace["explainer"], namespace["rows"]


def test_shards_equal_one_call(census, tmp_path):
    explainer, rows = census
    manifest = explain_dataset(explainer, rows, tmp_path, chunk_rows=16, progress=False)
    assert [(s["start"], s["stop"]) for s in manifest["shards"]] == [
        (0, 16),
        (16, 32),
        (32, 48),
        (48, 60),
    ]
    results = load_results(tmp_path)
    whole = explainer.explain(rows)
    assert len(results) == 60
    assert torch.equal(results["shap_values"], whole.shap_values)
    assert torch.equal(results["expected_value"], whole.expected_value)
    assert [e.shap_values.shape[0] for e in results.shards()] == [16, 16, 16, 12]


def test_the_progress_bar_shows_rows_per_second_and_an_eta(census, tmp_path, monkeypatch):
    import io

    from torchexplain import _progress

    explainer, rows = census
    stream = io.StringIO()
    original = _progress.Progress.__init__

    def drawn_to_stream(self, *args, **kwargs):
        original(self, *args, **{**kwargs, "stream": stream})

    monkeypatch.setattr(_progress.Progress, "__init__", drawn_to_stream)
    explain_dataset(explainer, rows, tmp_path, chunk_rows=20, progress=True)
    drawn = stream.getvalue()
    assert "explain_dataset [" in drawn and "20/60" in drawn and "/s ETA " in drawn


def test_anchor_lists_come_back_in_row_order(tmp_path):
    from torchexplain.datasets import load_census
    from torchexplain.zoo import Probabilities, pretrained_census_mlp

    data = load_census()
    model = Probabilities(pretrained_census_mlp()[0]).eval()
    explainer = torchexplain.AnchorTabular(
        model, data.feature_names, data.categorical_names, seed=0
    )
    explainer.fit(data.X_train)
    rows = data.X_test[:10]
    explain_dataset(explainer, rows, tmp_path, chunk_rows=4, progress=False)
    results = load_results(tmp_path)
    whole = explainer.explain(rows)
    assert results["anchor"] == whole.anchor
    assert torch.equal(results["precision"], whole.precision)


def test_a_killed_run_resumes_with_nothing_lost_or_redone(census, tmp_path):
    explainer, rows = census
    out = tmp_path / "run"
    script = SETUP + textwrap.dedent(
        f"""
        import os, signal
        from torchexplain.dataset import explain_dataset
        done = []
        def kill(name):
            done.append(name)
            if len(done) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        explain_dataset(explainer, rows, {str(out)!r}, chunk_rows=16, progress=False, on_shard=kill)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == -9, result.stderr[-2000:]
    written = sorted(p.name for p in out.glob("shard-*.json"))
    assert len(written) == 2 and not (out / "manifest.json").exists()
    with pytest.raises(ValueError, match="the run is not finished"):
        load_results(out)
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("shard-*")}
    redone = []
    explain_dataset(explainer, rows, out, chunk_rows=16, progress=False, on_shard=redone.append)
    assert len(redone) == 2 and all(out / f"{name}.json" not in stamps for name in redone)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # the finished shards kept
    assert torch.equal(load_results(out)["shap_values"], explainer.explain(rows).shap_values)


def test_a_changed_shard_is_refused_on_read_and_recomputed(census, tmp_path):
    explainer, rows = census
    explain_dataset(explainer, rows, tmp_path, chunk_rows=32, progress=False)
    shard = sorted(tmp_path.glob("shard-*.safetensors"))[1]
    shard.write_bytes(shard.read_bytes()[:-7])  # truncated
    with pytest.raises(ValueError, match=f"{shard.name}: missing, truncated or changed"):
        load_results(tmp_path)["shap_values"]
    redone = []
    explain_dataset(
        explainer, rows, tmp_path, chunk_rows=32, progress=False, on_shard=redone.append
    )
    assert redone == [shard.stem]
    assert torch.equal(load_results(tmp_path)["shap_values"], explainer.explain(rows).shap_values)


def test_another_run_in_the_folder_is_refused_unless_overwritten(census, tmp_path):
    explainer, rows = census
    explain_dataset(explainer, rows[:20], tmp_path, chunk_rows=10, progress=False)
    other = torchexplain.KernelShap(explainer.model, seed=0, nsamples=64).fit(
        explainer._fit["background"]
    )
    with pytest.raises(ValueError, match=r"other settings\.nsamples"):
        explain_dataset(other, rows[:20], tmp_path, chunk_rows=10, progress=False)
    with pytest.raises(ValueError, match=r"other chunk_rows, inputs\.sha256"):
        explain_dataset(explainer, rows[:20] + 1, tmp_path, chunk_rows=5, progress=False)
    explain_dataset(other, rows[:20], tmp_path, chunk_rows=10, progress=False, overwrite=True)
    assert torch.equal(load_results(tmp_path)["shap_values"], other.explain(rows[:20]).shap_values)


def test_bad_rows_are_refused_before_any_work(census, tmp_path):
    explainer, rows = census
    bad = rows.clone()
    bad[37, 2] = float("nan")
    with pytest.raises(ValueError, match=r"rows \[37\] \(in rows 32..47\)"):
        explain_dataset(explainer, bad, tmp_path, chunk_rows=16, progress=False)
    assert not list(tmp_path.glob("shard-*"))
    with pytest.raises(TypeError, match="inputs must be a tensor or a numpy array"):
        explain_dataset(explainer, [[1.0]], tmp_path)


def test_a_saved_white_box_explainer_by_its_folder(tmp_path):
    torch.manual_seed(0)
    layers = (torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    model = torch.nn.Sequential(*layers).double().eval()
    explainer = torchexplain.IntegratedGradients(model, n_steps=8)
    x = torch.randn(23, 5, dtype=torch.float64)
    explainer.save(tmp_path / "ig", example_inputs=x[:4])
    explain_dataset(tmp_path / "ig", x, tmp_path / "out", chunk_rows=8, progress=False)
    # the folder brings the torch.export program, whose decomposed ops may round differently
    # from the eager module's: the saving tests' float64 tolerance
    torch.testing.assert_close(
        load_results(tmp_path / "out")["attributions"],
        explainer.explain(x).attributions,
        rtol=1e-12,
        atol=1e-14,
    )


def test_two_torchrun_processes_equal_one(census, tmp_path):
    explainer, rows = census
    script = tmp_path / "ranks.py"
    script.write_text(
        SETUP
        + textwrap.dedent(
            f"""
            from torchexplain.dataset import explain_dataset
            manifest = explain_dataset(explainer, rows, {str(tmp_path / "out")!r}, chunk_rows=16, progress=False)
            import torch.distributed as dist, json, os
            with open({str(tmp_path)!r} + "/rank" + os.environ["RANK"], "w") as handle:
                handle.write(json.dumps(manifest["world_size"]))
            dist.destroy_process_group()
            """
        )
    )
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(script),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert [(tmp_path / f"rank{r}").read_text() for r in (0, 1)] == ["2", "2"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and len(manifest["shards"]) == 4
    assert torch.equal(
        load_results(tmp_path / "out")["shap_values"], explainer.explain(rows).shap_values
    )


def test_the_command_on_a_csv_and_a_saved_black_box_explainer(census, tmp_path, capsys):
    from torchexplain import cli
    from torchexplain.datasets import load_census

    explainer, rows = census
    data = load_census()
    saved = explainer.save(tmp_path / "shap")
    names = data.feature_names
    lines = [",".join(names + ["label"])]
    lines += [",".join(f"{v:g}" for v in row) + ",0" for row in data.X_test[:60]]
    (tmp_path / "rows.csv").write_text("\n".join(lines) + "\n")
    model = torch.jit.trace(explainer.model, rows[:4])
    model.save(str(tmp_path / "model.pt"))
    command = [
        "explain-dataset",
        str(saved),
        str(tmp_path / "rows.csv"),
        "--out",
        str(tmp_path / "out"),
        "--model",
        str(tmp_path / "model.pt"),
        "--drop",
        "label",
        "--chunk-rows",
        "25",
        "--quiet",
    ]
    assert cli.main(command) == 0, capsys.readouterr().err
    assert "60 rows in 3 shards" in capsys.readouterr().out
    assert torch.equal(
        load_results(tmp_path / "out")["shap_values"], explainer.explain(rows).shap_values
    )
    assert cli.main(command) == 2
    assert "give --resume to finish it or --overwrite" in capsys.readouterr().err
    assert cli.main(command + ["--resume"]) == 0


def test_explain_batches_turns_batches_into_columns(census, tmp_path):
    import pandas as pd

    from torchexplain.dataset import ExplainBatches

    explainer, rows = census
    saved = explainer.save(tmp_path / "shap")
    batches = ExplainBatches(str(saved), load_options={"model": explainer.model})
    frame = pd.DataFrame(rows[:7].numpy(), columns=[f"c{i}" for i in range(12)])
    columns = batches(frame)
    # the columns are the loaded explainer's explanations of the frame's rows, field by field
    expected = batches.explainer.explain(rows[:7])
    assert np.array_equal(columns["shap_values"], expected.shap_values.numpy())
    assert np.array_equal(columns["predictions"], expected.predictions.numpy())
    np.testing.assert_allclose(
        columns["shap_values"], explainer.explain(rows[:7]).shap_values.numpy(), atol=1e-9
    )
    single = ExplainBatches(
        str(saved), column="x", fields=["shap_values"], load_options={"model": explainer.model}
    )
    out = single({"x": rows[:3].numpy()})
    assert list(out) == ["shap_values"] and out["shap_values"].shape == (3, 2, 12)
    with pytest.raises(ValueError, match="fields \\['nope'\\] are not per-row fields"):
        ExplainBatches(str(saved), fields=["nope"], load_options={"model": explainer.model})(frame)


@pytest.mark.slow
def test_ray_data_actors_equal_one_call(tmp_path, monkeypatch):
    """A local 2-CPU Ray cluster, two actors, each loading the saved folder (nothing pickled but
    the folder's path); results keyed by a row id equal one call of the loaded explainer."""
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # ray 2.60 writes an auth token otherwise
    ray = pytest.importorskip("ray")
    from torchexplain.dataset import ExplainBatches

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)
    ).eval()
    rows = torch.randn(40, 6)
    torchexplain.IntegratedGradients(model, n_steps=8).save(
        tmp_path / "ig", example_inputs=rows[:4]
    )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        items = [{"id": i, "rows": row} for i, row in enumerate(rows.numpy())]
        dataset = ray.data.from_items(items, override_num_blocks=4)
        explained = dataset.map_batches(
            ExplainBatches,
            fn_constructor_kwargs={
                "path": str(tmp_path / "ig"),
                "column": "rows",
                "fields": ["attributions"],
                "keep": ["id"],
            },
            batch_format="numpy",
            batch_size=10,
            concurrency=2,
        ).take_all()
    finally:
        ray.shutdown()
    order = np.argsort([r["id"] for r in explained])
    got = np.stack([explained[i]["attributions"] for i in order])
    expected = torchexplain.load_explainer(tmp_path / "ig").explain(rows).attributions.numpy()
    assert sorted(r["id"] for r in explained) == list(range(40))  # none lost, none twice
    assert np.array_equal(got, expected)
