"""Rows: a batch of inputs, converted and checked once.

Explainers take inputs as tensors or numpy arrays, a server takes them as JSON. Each
way in ends in one :class:`Rows`: a real floating-point tensor ``(N, ...)`` with N >= 1
and only finite values, the device results go back to, and whether the user gave
numpy. Everything after that (the explainers' runs, the model calls) receives the
``Rows`` and checks no more than the shape it needs: a served request's rows are
checked once, by the service, and an explainer handed a ``Rows`` does not check them
again.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from torchexplain import _checks

__all__ = ["Rows"]


@dataclasses.dataclass(frozen=True)
class Rows:
    """A checked batch of inputs.

    Attributes:
        values: ``(N, ...)`` real floating-point tensor, N >= 1, every value finite.
        from_numpy: the user gave a numpy array (results go back to the CPU; a black-box
            predictor that is not an ``nn.Module`` is handed numpy by default).
        input_device: where results go back to (the CPU for numpy inputs).

    Examples:
        >>> rows = Rows.of(np.array([[1, 2], [3, 4]]), integers=True)
        >>> rows.values.dtype, rows.from_numpy, len(rows)
        (torch.float32, True, 2)
        >>> Rows.of(torch.tensor([[0.0, float("nan")]]))
        Traceback (most recent call last):
        ...
        ValueError: inputs contains 1 non-finite value(s) (NaN or inf), the first at index (0, 1); explanations of non-finite inputs are meaningless
    """

    values: torch.Tensor
    from_numpy: bool
    input_device: torch.device

    @classmethod
    def of(
        cls,
        value: Any,
        name: str = "inputs",
        *,
        numpy: bool = True,
        integers: bool = False,
        min_dim: int = 2,
        exact_dim: int | None = None,
        layout: str = "(N, ...)",
    ) -> Rows:
        """Convert and check ``value``; a :class:`Rows` is returned as it is (already checked).

        Args:
            value: a tensor, or a numpy array when ``numpy``.
            name: what the messages call it.
            numpy: numpy arrays are accepted (black-box methods), else only tensors.
            integers: integer (and bool) values are accepted and become float32 (categorical
                codes); otherwise they are refused with a hint to convert them.
            min_dim: the fewest dimensions a batch may have.
            exact_dim: the dimensions a batch must have (None: at least ``min_dim``).
            layout: the expected shape, as the messages write it.

        Raises:
            TypeError: not a tensor (or array), not real, or integers where floats are needed.
            ValueError: the wrong number of dimensions, no rows, or a NaN/inf value.
        """
        if isinstance(value, Rows):
            return value
        from_numpy = isinstance(value, np.ndarray)
        if from_numpy and numpy:
            batch = _checks.as_numeric_tensor(name, value, layout)
        elif isinstance(value, torch.Tensor):
            batch = value.detach()
        else:
            expected = "a torch.Tensor or a numpy array" if numpy else "a torch.Tensor"
            raise TypeError(
                f"{name} must be {expected} shaped {layout}, got {type(value).__name__}"
            )
        if batch.is_complex():
            raise TypeError(f"{name} must be real, got {batch.dtype}")
        if not batch.is_floating_point():
            if not integers:
                raise TypeError(
                    f"{name} must be a floating-point tensor, got dtype {batch.dtype} (convert with .float())"
                )
            batch = batch.to(torch.float32)
        if (exact_dim is not None and batch.dim() != exact_dim) or batch.dim() < min_dim:
            hint = f" (one row: {name}[None])" if batch.dim() == (exact_dim or min_dim) - 1 else ""
            raise ValueError(
                f"{name} must be shaped {layout}{hint}, got shape {tuple(batch.shape)}"
            )
        if batch.shape[0] == 0:
            raise ValueError(f"{name} has batch size 0; nothing to explain")
        _checks.check_finite(name, batch)
        device = torch.device("cpu") if from_numpy else batch.device
        return cls(batch, from_numpy, device)

    def __len__(self) -> int:
        return self.values.shape[0]

    @property
    def shape(self) -> torch.Size:
        return self.values.shape

    def __getitem__(self, part: slice) -> Rows:
        """Some of the rows (a slice), still checked."""
        return Rows(self.values[part], self.from_numpy, self.input_device)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Rows:
        """The same rows on ``device`` and/or in ``dtype`` (a floating dtype); results still go back
        to the inputs' device."""
        return Rows(self.values.to(device=device, dtype=dtype), self.from_numpy, self.input_device)

    def with_columns(
        self, n_columns: int, name: str = "inputs", what: str = "one column per feature name"
    ) -> Rows:
        """These rows, checked to be a table ``(N, n_columns)``."""
        if self.values.dim() != 2 or self.values.shape[1] != n_columns:
            raise ValueError(
                f"{name} must be shaped (N, {n_columns}) ({what}), got {tuple(self.values.shape)}"
            )
        return self

    def compute_device(self, device: str | torch.device | None) -> torch.device:
        """Where a method's work runs: its ``device`` setting, else where the rows are."""
        return torch.device(device) if device is not None else self.values.device
