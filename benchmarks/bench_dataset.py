"""Whole datasets: explain_dataset against one in-process explain call, and with 2 torchrun
processes (gloo), in one run.

For each configuration: KernelShap on census rows (the census MLP's probabilities, 30 background
rows, ``nsamples="auto"``), AnchorTabular on census rows, IG on MNIST digits (32 steps):

- ``one explain call``: the explainer on all rows in one call (the target's reference; this and
  the next are medians of 3, interleaved, after a warm-up);
- ``explain_dataset, 1 process``: the same rows streamed in shards of ``--chunk-rows``, written to
  a fresh folder (chunking, safetensors and JSON writing, checksums included);
- ``torchrun, 2 processes``: the same call under ``torch.distributed.run --nproc_per_node=2``
  (gloo): the slowest rank's time inside ``explain_dataset``, and, apart, the start-up (the
  processes, the imports, the process group, loading the model): the wall time less that; one
  run each;
- ``ray, 2 actors``: ``ray.data`` ``map_batches(ExplainBatches, concurrency=2)`` on a local 2-CPU
  cluster (the map's time; ``ray.init`` apart), when Ray is installed.

Usage: ``python benchmarks/bench_dataset.py [--quick] [--out PATH]`` (CPU; on GPUs the ranks
take one GPU each).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import metadata, print_table, write_results  # noqa: E402

CONFIGS = {
    "kernel_shap": """
from torchexplain.datasets import load_census
from torchexplain.zoo import Probabilities, pretrained_census_mlp
data = load_census()
explainer = torchexplain.KernelShap(Probabilities(pretrained_census_mlp()[0]).eval(), seed=0).fit(data.X_train[:30])
rows = torch.from_numpy(data.X_test[:ROWS])
""",
    "anchor_tabular": """
from torchexplain.datasets import load_census
from torchexplain.zoo import Probabilities, pretrained_census_mlp
data = load_census()
model = Probabilities(pretrained_census_mlp()[0]).eval()
explainer = torchexplain.AnchorTabular(model, data.feature_names, data.categorical_names, seed=0).fit(data.X_train)
rows = torch.from_numpy(data.X_test[:ROWS])
""",
    "integrated_gradients": """
from torchexplain.datasets import load_mnist
from torchexplain.zoo import pretrained_mnist_cnn
explainer = torchexplain.IntegratedGradients(pretrained_mnist_cnn()[0].eval(), n_steps=32)
rows = load_mnist("test").images[:ROWS]
""",
}
ROWS = {"kernel_shap": 96, "anchor_tabular": 512, "integrated_gradients": 512}
REPEATS = 3


def _setup(name: str, rows: int) -> str:
    return "import torch, torchexplain\n" + CONFIGS[name].replace("ROWS", str(rows))


def _one_process(name: str, rows: int, chunk_rows: int) -> dict:
    namespace: dict = {}
    exec(_setup(name, rows), namespace)  # noqa: S102 - this script's own configurations
    explainer, inputs = namespace["explainer"], namespace["rows"]
    from torchexplain.dataset import explain_dataset

    explainer.explain(inputs[:8])  # warm-up
    calls, streams = [], []
    for _ in range(REPEATS):  # interleaved, medians
        start = time.perf_counter()
        explainer.explain(inputs)
        calls.append(time.perf_counter() - start)
        folder = Path(tempfile.mkdtemp())
        start = time.perf_counter()
        explain_dataset(explainer, inputs, folder / "out", chunk_rows=chunk_rows, progress=False)
        streams.append(time.perf_counter() - start)
        shutil.rmtree(folder)
    one_call, streamed = sorted(calls)[REPEATS // 2], sorted(streams)[REPEATS // 2]
    return {"one explain call": one_call, "explain_dataset, 1 process": streamed}


def _two_processes(name: str, rows: int, chunk_rows: int) -> dict:
    folder = Path(tempfile.mkdtemp())
    script = folder / "rank.py"
    script.write_text(
        _setup(name, rows)
        + textwrap.dedent(
            f"""
            import json, os, time
            import torch.distributed as dist
            from torchexplain.dataset import explain_dataset
            explainer.explain(rows[:8])  # warm-up, as in one process
            start = time.perf_counter()
            explain_dataset(explainer, rows, {str(folder / "out")!r}, chunk_rows={chunk_rows}, progress=False)
            seconds = time.perf_counter() - start
            with open({str(folder)!r} + "/rank" + os.environ["RANK"], "w") as handle:
                handle.write(json.dumps(seconds))
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
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    inside = max(json.loads((folder / f"rank{r}").read_text()) for r in (0, 1))
    shutil.rmtree(folder)
    return {"torchrun, 2 processes": inside, "torchrun start-up": wall - inside}


def _ray(name: str, rows: int, chunk_rows: int) -> dict:
    """The same rows through ``ray.data`` map_batches with ExplainBatches, 2 actors on a local
    2-CPU cluster: the explainer saved to a folder that each actor loads (the model travels as the
    saved ``torch.export`` program for IG; for the black-box methods, as a pickled constructor
    argument)."""
    import os

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    try:
        import ray
    except ImportError:
        return {}
    from torchexplain.dataset import ExplainBatches

    namespace: dict = {}
    exec(_setup(name, rows), namespace)  # noqa: S102 - this script's own configurations
    explainer, inputs = namespace["explainer"], namespace["rows"]
    folder = Path(tempfile.mkdtemp())
    white_box = name == "integrated_gradients"
    explainer.save(folder / "saved", example_inputs=inputs[:4] if white_box else None)
    load = {} if white_box else {"model": explainer.model}
    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    started = time.perf_counter() - start
    try:
        items = [{"id": i, "rows": row} for i, row in enumerate(inputs.numpy())]
        dataset = ray.data.from_items(items, override_num_blocks=max(2, rows // chunk_rows))
        start = time.perf_counter()
        out = dataset.map_batches(
            ExplainBatches,
            fn_constructor_kwargs={
                "path": str(folder / "saved"),
                "column": "rows",
                "keep": ["id"],
                "load_options": load,
            },
            batch_format="numpy",
            batch_size=chunk_rows,
            concurrency=2,
        ).take_all()
        seconds = time.perf_counter() - start
    finally:
        ray.shutdown()
        shutil.rmtree(folder)
    if sorted(r["id"] for r in out) != list(range(rows)):
        raise RuntimeError("Ray lost or doubled rows")
    return {"ray, 2 actors": seconds, "ray start-up (init)": started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunk-rows", type=int, default=64)
    parser.add_argument("--out", default=None)
    parser.add_argument("--quick", action="store_true", help="a quarter of the rows")
    args = parser.parse_args()
    results = []
    for name, rows in ROWS.items():
        rows = rows // 4 if args.quick else rows
        seconds = {
            **_one_process(name, rows, args.chunk_rows),
            **_two_processes(name, rows, args.chunk_rows),
            **_ray(name, rows, args.chunk_rows),
        }
        one, streamed, two = (
            seconds["one explain call"],
            seconds["explain_dataset, 1 process"],
            seconds["torchrun, 2 processes"],
        )
        results.append(
            {
                "method": name,
                "config": f"{name}, {rows} rows, shards of {args.chunk_rows}",
                "rows": rows,
                "seconds": seconds,
                "rows_per_s": {k: rows / v for k, v in seconds.items() if "start-up" not in k},
                "streaming_overhead": streamed / one - 1,
                "two_processes_speedup": streamed / two,
                # the generic table of benchmarks/run.py: ours (1 process) against one explain call
                "providers": {
                    "torchexplain": {"median_s": streamed, "repeats": REPEATS},
                    "floor": {"median_s": one, "repeats": REPEATS, "source": "one explain call"},
                },
            }
        )
    payload = {
        "meta": metadata(torch.device("cpu"), chunk_rows=args.chunk_rows),
        "results": results,
    }
    path = write_results("bench_dataset", payload, args.out)
    table = [
        {"config": r["config"], "what": k, "seconds": v, "rows/s": r["rows_per_s"].get(k, "")}
        for r in results
        for k, v in r["seconds"].items()
    ]
    print_table(table, ["config", "what", "seconds", "rows/s"])
    print(path)


if __name__ == "__main__":
    main()
