"""``pip install .`` (a built wheel, not the editable checkout) gives a working ``torchexplain explain``,
``serve`` and ``kserve``; ``demo`` and ``bench``, tooling of the checkout, say so cleanly."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from torchexplain.serving.local import Process, free_port, post_json

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, object]:
    """The package built as a wheel from a copy of the sources and installed into its own folder."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("torchexplain", "kernels"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            *isolation,
            "-w",
            str(work / "dist"),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (work / "dist").glob("torchexplain-*.whl")
    site = work / "site"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-compile",
            "--target",
            str(site),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    env = dict(os.environ, PYTHONPATH=str(site))
    run_dir = work / "elsewhere"  # outside any checkout
    run_dir.mkdir()
    return {"site": site, "env": env, "cwd": run_dir, "wheel": wheel}


def command(installed, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    script = Path(installed["site"]) / "bin" / "torchexplain"
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        env=installed["env"],
        cwd=installed["cwd"],
        timeout=timeout,
    )


def test_the_wheel_holds_the_package_and_its_kernels_and_data(installed):
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import torchexplain, torchexplain.kernels.ig as k, torchexplain.datasets as d; "
            "print(torchexplain.__file__); print(k.__file__); print(len(d.load_census().X_train))",
        ],
        capture_output=True,
        text=True,
        env=installed["env"],
        cwd=installed["cwd"],
    )
    assert probe.returncode == 0, probe.stderr
    package, kernels, rows = probe.stdout.split()
    assert Path(package).is_relative_to(installed["site"]) and Path(kernels).is_relative_to(
        installed["site"]
    )
    assert int(rows) > 0
    import zipfile

    names = zipfile.ZipFile(installed["wheel"]).namelist()
    assert not any(n.startswith(("benchmarks/", "examples/", "tests/", "kernels/")) for n in names)
    assert "torchexplain/py.typed" in names


def test_explain_from_the_wheel(installed, tmp_path):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (torch.rand(2, 1, 4, 4),), dynamic_shapes=({0: batch},))
    torch.export.save(program, tmp_path / "model.pt2")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((2, 1, 4, 4), dtype=np.float32))
    done = command(
        installed,
        "explain",
        "--model",
        str(tmp_path / "model.pt2"),
        "--input",
        str(tmp_path / "x.npy"),
        "--out",
        str(tmp_path / "out"),
        "--n-steps",
        "8",
        "--quiet",
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["method"] == "ig" and summary["inputs"][0]["examples"] == 2


def _saved_ig(folder: Path) -> Path:
    from torchexplain import IntegratedGradients

    model = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
    IntegratedGradients(model, n_steps=8).save(folder, example_inputs=torch.rand(2, 4))
    return folder


def test_serve_writes_mlserver_settings_from_the_wheel(installed, tmp_path):
    saved = _saved_ig(tmp_path / "ig")
    done = command(
        installed, "serve", str(saved), "--settings-dir", str(tmp_path / "settings"), "--write-only"
    )
    assert done.returncode == 0, done.stderr
    settings = json.loads(next((tmp_path / "settings").rglob("model-settings.json")).read_text())
    assert settings["implementation"] == "torchexplain.serving.runtime.ExplainerRuntime"


def test_kserve_explains_a_request_from_the_wheel(installed, tmp_path):
    pytest.importorskip("starlette")
    saved = _saved_ig(tmp_path / "ig")
    port = free_port()
    script = Path(installed["site"]) / "bin" / "torchexplain"
    server = Process(
        [
            sys.executable,
            str(script),
            "kserve",
            "--model_name",
            "ig",
            "--storage_uri",
            str(saved),
            "--http_port",
            str(port),
            "--host",
            "127.0.0.1",
        ],
        [f"http://127.0.0.1:{port}/v1/models/ig"],
        tmp_path / "kserve.log",
        env=installed["env"],
    )
    with server:
        status, answer = post_json(
            f"http://127.0.0.1:{port}/v1/models/ig:explain", {"instances": [[0.1, 0.2, 0.3, 0.4]]}
        )
    assert status == 200, answer
    assert answer["data"]["attributions"]


@pytest.mark.parametrize("name", ["demo", "bench"])
def test_demo_and_bench_from_the_wheel_say_they_need_a_checkout(installed, name):
    done = command(installed, name)
    assert (
        done.returncode == 2 and "source checkout" in done.stderr and "Traceback" not in done.stderr
    )
