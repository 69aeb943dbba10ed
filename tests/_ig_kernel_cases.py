"""Test cases for the IG Triton kernels, and the runner that executes them interpreted.

Triton decides at import time whether ``@triton.jit`` compiles or interprets (its own
standard library is decorated when ``triton`` is first imported), so the CPU run
through the interpreter happens in a child process started with
``TRITON_INTERPRET=1``: nothing leaks into the pytest process or other tests, and
the library itself never looks at the variable. The child rebuilds every case from
its seed, runs the kernel launcher on NaN-poisoned outputs and saves what it wrote;
the test compares that with the reference computed in the parent on the same inputs.

Run as a script: ``python _ig_kernel_cases.py CASES.json RESULTS.pt``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass

import torch

DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


@dataclass(frozen=True)
class Case:
    """One kernel call: ``op`` is "path", "path_grad" (its backward) or "reduce"."""

    op: str
    n_rows: int
    n_steps: int
    n_features: int
    dtype: str
    baseline_rows: int = 1  # 1 (shared baseline) or n_rows
    contiguous: bool = True  # False: every input is a strided view
    has_diff: bool = True  # reduce only: multiply by (x - b)
    accumulate: bool = False  # reduce only: add into a prefilled out
    out_float64: bool = False  # reduce only: a float64 out whatever the grads' dtype
    seed: int = 0

    @property
    def id(self) -> str:
        parts = [self.op, f"N{self.n_rows}", f"S{self.n_steps}", f"D{self.n_features}", self.dtype]
        parts.append(f"b{self.baseline_rows}")
        if not self.contiguous:
            parts.append("strided")
        if not self.has_diff:
            parts.append("nodiff")
        if self.accumulate:
            parts.append("acc")
        if self.out_float64:
            parts.append("out64")
        return "-".join(parts)


def _strided(
    shape: tuple[int, ...], dtype: torch.dtype, generator: torch.Generator, device
) -> torch.Tensor:
    """A view with ``shape`` whose last dim is not unit-stride (every other element)."""
    base = torch.randn(*shape[:-1], 2 * shape[-1], generator=generator, dtype=torch.float64)
    return base.to(device=device, dtype=dtype)[..., ::2]


def make_inputs(case: Case, device: str | torch.device = "cpu") -> dict[str, torch.Tensor | None]:
    """The case's tensors, identical in every process (seeded, built in float64 on CPU)."""
    g = torch.Generator().manual_seed(case.seed)
    dtype = DTYPES[case.dtype]
    n, s, d = case.n_rows, case.n_steps, case.n_features

    def rand(*shape: int) -> torch.Tensor:
        if case.contiguous:
            return torch.randn(*shape, generator=g, dtype=torch.float64).to(
                device=device, dtype=dtype
            )
        return _strided(shape, dtype, g, device)

    tensors: dict[str, torch.Tensor | None] = {
        "inputs": rand(n, d),
        "baselines": rand(case.baseline_rows, d),
    }
    if case.op in ("path", "path_grad"):
        tensors["alphas"] = torch.rand(s, generator=g, dtype=torch.float64).to(device)
        if case.op == "path_grad":
            tensors["grad_path"] = rand(n, s, d)
    else:
        if case.contiguous:
            grads = torch.randn(n, s, d, generator=g, dtype=torch.float64).to(
                device=device, dtype=dtype
            )
        else:
            # Step-major storage seen example-major: the layout a (S, N, D) batch gives.
            grads = torch.randn(s, n, d, generator=g, dtype=torch.float64).to(
                device=device, dtype=dtype
            )
            grads = grads.transpose(0, 1)
        tensors["grads"] = grads
        tensors["weights"] = torch.rand(s, generator=g, dtype=torch.float64).to(device) / max(s, 1)
        wide = dtype == torch.float64 or case.out_float64
        acc_dtype = torch.float64 if wide else torch.float32
        tensors["prefill"] = torch.randn(n, d, generator=g, dtype=torch.float64).to(
            device=device, dtype=acc_dtype
        )
        if not case.has_diff:
            tensors["inputs"] = tensors["baselines"] = None
    return tensors


def run_kernel(case: Case, ops, device: str | torch.device = "cpu") -> torch.Tensor:
    """Call ``ops.build_path`` / ``ops.reduce_path`` on a NaN-poisoned (or prefilled) out."""
    t = make_inputs(case, device)
    dtype = DTYPES[case.dtype]
    if case.op == "path_grad":
        return _path_backward(t, getattr(ops, "build_path_differentiable", ops.build_path))
    if case.op == "path":
        out = torch.full(
            (case.n_rows, case.n_steps, case.n_features), float("nan"), dtype=dtype, device=device
        )
        return ops.build_path(t["inputs"], t["baselines"], t["alphas"], out=out)
    if case.accumulate:
        out = t["prefill"].clone()
    else:
        out = torch.full_like(t["prefill"], float("nan"))
    return ops.reduce_path(
        t["grads"], t["weights"], t["inputs"], t["baselines"], out=out, accumulate=case.accumulate
    )


def run_reference(case: Case, device: str | torch.device = "cpu") -> torch.Tensor:
    from torchexplain.kernels.ig import reference

    t = make_inputs(case, device)
    if case.op == "path_grad":
        return _path_backward(t, reference.build_path)
    if case.op == "path":
        return reference.build_path(t["inputs"], t["baselines"], t["alphas"])
    out = t["prefill"].clone()
    return reference.reduce_path(
        t["grads"], t["weights"], t["inputs"], t["baselines"], out=out, accumulate=case.accumulate
    )


def _path_backward(t: dict, build_path) -> torch.Tensor:
    """Gradients of ``<path, grad_path>`` w.r.t. inputs and baselines, concatenated."""
    inputs = t["inputs"].detach().clone().requires_grad_()
    baselines = t["baselines"].detach().clone().requires_grad_()
    with torch.enable_grad():
        path = build_path(inputs, baselines, t["alphas"])
        path.backward(t["grad_path"])
    return torch.cat([inputs.grad.flatten(), baselines.grad.flatten()])


def main(cases_path: str, results_path: str) -> None:
    from torchexplain.kernels.ig import triton as triton_ops

    kind = type(triton_ops._ig_path_kernel).__name__
    if kind != "InterpretedFunction":
        raise RuntimeError(f"expected Triton's interpreter (TRITON_INTERPRET=1), got {kind}")
    cases = [Case(**c) for c in json.loads(open(cases_path).read())]
    results = {case.id: run_kernel(case, triton_ops) for case in cases}
    torch.save(results, results_path)


def dump_cases(cases: list[Case], path) -> None:
    with open(path, "w") as f:
        json.dump([asdict(c) for c in cases], f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
