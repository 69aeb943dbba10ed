"""IG Triton kernels against the plain-PyTorch reference, and the dispatch between them.

On a CPU the kernels run through Triton's interpreter in one child process (see
``_ig_kernel_cases.py`` for why a child); with CUDA the ``gpu`` tests run them on the
device at real sizes. Outputs are poisoned with NaN (or prefilled, for accumulation)
before each call, so an element the kernel fails to write fails the comparison.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchexplain.kernels import ig

from ._ig_kernel_cases import DTYPES, Case, dump_cases, run_kernel, run_reference
from .conftest import TOLERANCES

HAS_TRITON = importlib.util.find_spec("triton") is not None
NEEDS_TRITON = pytest.mark.skipif(
    not HAS_TRITON, reason="triton is not installed (pip install triton); the reference still runs"
)
DTYPE_NAMES = ["float32", "float16", "bfloat16", "float64"]


def _cpu_cases() -> list[Case]:
    """Small awkward sizes, every dtype, both ops; cheap enough for the interpreter."""
    cases = []
    for dtype in DTYPE_NAMES:
        for n, s, d in [(1, 1, 1), (3, 7, 1023), (2, 5, 4097), (5, 50, 28 * 28)]:
            cases.append(Case("path", n, s, d, dtype))
            cases.append(Case("reduce", n, s, d, dtype))
        cases += [
            Case("path_grad", 3, 7, 1023, dtype),
            Case("path_grad", 2, 5, 784, dtype, baseline_rows=2, contiguous=False),
            Case("path", 3, 9, 1023, dtype, baseline_rows=3, contiguous=False),
            Case("reduce", 3, 9, 1023, dtype, baseline_rows=3, contiguous=False),
            Case("reduce", 3, 17, 4097, dtype, accumulate=True),
            Case("reduce", 1, 3, 1023, dtype, has_diff=False),
            Case("reduce", 3, 6, 784, dtype, baseline_rows=3, has_diff=False, accumulate=True),
            Case("reduce", 2, 5, 1023, dtype, accumulate=True, out_float64=True),
        ]
    return cases


def _gpu_cases() -> list[Case]:
    """Real sizes: MNIST batches, CIFAR, one 224x224x3 image; odd batches and dims."""
    cases = []
    for dtype in DTYPE_NAMES:
        for n, s, d in [
            (1, 50, 1),
            (1023, 50, 784),
            (7, 33, 4097),
            (3, 50, 3 * 224 * 224),
            (257, 50, 3 * 32 * 32),
        ]:
            cases.append(Case("path", n, s, d, dtype))
            cases.append(Case("reduce", n, s, d, dtype))
        cases += [
            Case("path_grad", 257, 50, 784, dtype),
            Case("path_grad", 9, 50, 4097, dtype, baseline_rows=9, contiguous=False),
            Case("path", 65, 20, 1023, dtype, baseline_rows=65, contiguous=False),
            Case("reduce", 65, 20, 1023, dtype, baseline_rows=65, contiguous=False),
            Case("reduce", 33, 200, 784, dtype, accumulate=True),
            Case("reduce", 5, 50, 4097, dtype, has_diff=False, accumulate=True),
            Case("reduce", 17, 50, 784, dtype, accumulate=True, out_float64=True),
        ]
    return cases


CPU_CASES = _cpu_cases()
GPU_CASES = _gpu_cases()


def _assert_matches(kernel_out: torch.Tensor, expected: torch.Tensor, case: Case) -> None:
    assert kernel_out.dtype == expected.dtype
    assert kernel_out.shape == expected.shape
    assert not torch.isnan(kernel_out).any(), "kernel left elements unwritten (NaN poison survived)"
    # Tolerance of the precision the values end in: paths and their input gradients are
    # rounded to the input dtype, reductions summed in float32 (float64 for float64
    # grads) even when added into a float64 buffer.
    dtype = DTYPES[case.dtype]
    rtol, atol = TOLERANCES[dtype if case.op != "reduce" else ig.accumulation_dtype(dtype)]
    torch.testing.assert_close(kernel_out.cpu(), expected.cpu(), rtol=rtol, atol=atol)


@pytest.fixture(scope="module")
def interpreted_results(tmp_path_factory) -> dict[str, torch.Tensor]:
    """Every CPU case run once through Triton's interpreter in a child process."""
    if not HAS_TRITON:
        pytest.skip("triton is not installed")
    folder = tmp_path_factory.mktemp("ig_kernels")
    cases_path, results_path = folder / "cases.json", folder / "results.pt"
    dump_cases(CPU_CASES, cases_path)
    tests_dir = Path(__file__).parent
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tests_dir), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [
            sys.executable,
            str(tests_dir / "_ig_kernel_cases.py"),
            str(cases_path),
            str(results_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise AssertionError(f"interpreted kernel run failed:\n{done.stderr[-4000:]}")
    return torch.load(results_path)


@NEEDS_TRITON
@pytest.mark.parametrize("case", CPU_CASES, ids=lambda c: c.id)
def test_kernel_matches_reference_interpreted(case: Case, interpreted_results) -> None:
    _assert_matches(interpreted_results[case.id], run_reference(case), case)


@pytest.mark.gpu
@NEEDS_TRITON
@pytest.mark.parametrize("case", GPU_CASES, ids=lambda c: c.id)
def test_kernel_matches_reference_cuda(case: Case) -> None:
    from torchexplain.kernels.ig import triton as triton_ops

    kernel_out = run_kernel(case, triton_ops, device="cuda")
    torch.cuda.synchronize()
    # The reference runs on the CPU in float64-capable eager PyTorch: an independent oracle.
    _assert_matches(kernel_out, run_reference(case, device="cpu"), case)


@pytest.mark.gpu
@NEEDS_TRITON
@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_dispatch_runs_triton_on_cuda_and_reference_when_forced(dtype: str) -> None:
    case = Case("reduce", 9, 50, 784, dtype, accumulate=True)
    kernel_out = run_kernel(case, ig, device="cuda")
    forced = run_kernel(case, _ForcedReference, device="cuda")
    assert ig.uses_triton(torch.empty(1, device="cuda", dtype=getattr(torch, dtype)))
    _assert_matches(kernel_out, forced, case)


class _ForcedReference:
    """The dispatch functions with ``force_reference=True``, shaped like an ops module."""

    @staticmethod
    def build_path(*args, **kwargs):
        return ig.build_path(*args, force_reference=True, **kwargs)

    @staticmethod
    def reduce_path(*args, **kwargs):
        return ig.reduce_path(*args, force_reference=True, **kwargs)


# --- dispatch, on any machine -------------------------------------------------------


def test_dispatch_on_cpu_is_the_reference() -> None:
    x = torch.randn(4, 10, dtype=torch.float64)
    b = torch.randn(1, 10, dtype=torch.float64)
    alphas = torch.linspace(0, 1, 6, dtype=torch.float64)
    assert not ig.uses_triton(x, b)
    path = ig.build_path(x, b, alphas)
    expected = b[:, None, :] + alphas[None, :, None] * (x - b)[:, None, :]
    torch.testing.assert_close(path, expected, rtol=1e-12, atol=1e-12)
    grads = torch.randn(4, 6, 10, dtype=torch.float64)
    weights = torch.rand(6, dtype=torch.float64)
    loop = torch.zeros(4, 10, dtype=torch.float64)
    for k in range(6):  # brute force, one step at a time
        loop += weights[k] * grads[:, k]
    torch.testing.assert_close(ig.reduce_path(grads, weights, x, b), loop * (x - b))
    out = torch.ones(4, 10, dtype=torch.float64)
    ig.reduce_path(grads, weights, out=out, accumulate=True)
    torch.testing.assert_close(out, loop + 1)


def test_grad_tracking_call_takes_the_reference() -> None:
    # The kernels record no autograd history; a differentiable call must stay differentiable.
    x = torch.randn(2, 3, requires_grad=True)
    path = ig.build_path(x, torch.zeros(1, 3), torch.tensor([0.5, 1.0]))
    path.sum().backward()
    torch.testing.assert_close(x.grad, torch.full((2, 3), 1.5))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda: ig.build_path(torch.ones(3), torch.ones(1, 3), torch.ones(2)),
            ValueError,
            "inputs must have shape",
        ),
        (
            lambda: ig.build_path(torch.ones(2, 3), torch.ones(2, 4), torch.ones(2)),
            ValueError,
            "baselines must have shape",
        ),
        (
            lambda: ig.build_path(torch.ones(2, 3), torch.ones(1, 3), torch.ones(2, 1)),
            ValueError,
            "alphas must have shape",
        ),
        (
            lambda: ig.build_path(
                torch.ones(2, 3), torch.ones(1, 3), torch.ones(2), out=torch.empty(2, 3, 3)
            ),
            ValueError,
            "out must have shape",
        ),
        (
            lambda: ig.build_path(
                torch.ones(2, 3),
                torch.ones(1, 3),
                torch.ones(2),
                out=torch.empty(2, 2, 3, dtype=torch.float64),
            ),
            TypeError,
            "out must have dtype",
        ),
        (
            lambda: ig.build_path(
                torch.ones(2, 3), torch.ones(1, 3, dtype=torch.int64), torch.ones(2)
            ),
            TypeError,
            "baselines must be a floating",
        ),
        (
            lambda: ig.reduce_path(torch.ones(2, 3), torch.ones(3)),
            ValueError,
            "grads must have shape",
        ),
        (
            lambda: ig.reduce_path(torch.ones(2, 4, 3), torch.ones(3)),
            ValueError,
            r"weights must have shape \(4,\)",
        ),
        (
            lambda: ig.reduce_path(torch.ones(2, 4, 3), torch.ones(4), torch.ones(2, 3)),
            ValueError,
            "both inputs and baselines",
        ),
        (
            lambda: ig.reduce_path(
                torch.ones(2, 4, 3), torch.ones(4), torch.ones(1, 3), torch.ones(1, 3)
            ),
            ValueError,
            "inputs must have shape",
        ),
        (
            lambda: ig.reduce_path(
                torch.ones(2, 4, 3, dtype=torch.float16),
                torch.ones(4),
                out=torch.empty(2, 3, dtype=torch.float16),
            ),
            TypeError,
            "out must have dtype torch.float32 or torch.float64",
        ),
    ],
)
def test_bad_arguments_are_named(call, error, match) -> None:
    with pytest.raises(error, match=match):
        call()


def test_package_imports_without_triton() -> None:
    """Triton stays optional: with it unimportable, the dispatch falls back to the reference."""
    code = (
        "import sys\n"
        # torch >= 2.14 imports triton itself when it is installed (and fails if it is
        # blocked mid-way), so torch comes first; then triton is dropped and blocked.
        "import torch\n"
        "for name in [m for m in sys.modules if m == 'triton' or m.startswith('triton.')]:\n"
        "    del sys.modules[name]\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'triton' or name.startswith('triton.'):\n"
        "            raise ImportError('triton blocked for this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from torchexplain.kernels import ig\n"
        "assert not ig.TRITON_AVAILABLE\n"
        "x = torch.randn(2, 5)\n"
        "p = ig.build_path(x, torch.zeros(1, 5), torch.linspace(0, 1, 3))\n"
        "assert torch.allclose(p[:, -1], x)\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"
