"""Settings declared once: each method's settings dataclass, and the bases they share.

A method defines its settings as a frozen dataclass derived from :class:`Settings`,
each field made with :func:`setting`: its default, one line of docs, whether
``explain`` may take it per call, and the check its values must pass. That one
definition gives the constructor's and ``explain``'s signatures, the settings section
of the docstrings, ``config``, ``repr``, ``meta["params"]`` and what ``save`` writes.

Settings that several methods take are declared once, in the bases below, with one
doc and one check each: where the work runs (:class:`DeviceSettings`), the seed of
random draws (:class:`SeedSettings`), how much goes through the model at once
(:class:`ChunkSettings`) and how its calls are padded (:class:`ModelCallSettings`),
how images are cut (:class:`SegmentationSettings`), whether long calls show progress
(:class:`ProgressSettings`), what a black-box predictor is handed
(:class:`PredictorSettings`), and the names of tabular columns and categories
(:class:`ColumnSettings`, :class:`TabularSettings`).

A field's check runs first (one value at a time); then :meth:`Settings.validate`,
which holds only the rules that relate several fields.
"""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import torch

from torchexplain import _checks
from torchexplain.models.calls import DEFAULT_PAD_TO_MULTIPLE

__all__ = [
    "ChunkSettings",
    "ColumnSettings",
    "DeviceSettings",
    "ModelCallSettings",
    "PredictorSettings",
    "ProgressSettings",
    "SeedSettings",
    "SegmentationSettings",
    "Settings",
    "TabularSettings",
    "describe_value",
    "setting",
    "settings_docs",
]

#: Tensors with at most this many elements are written into ``meta["params"]`` as
#: they are; larger ones (background images, per-feature ranges of big inputs) are
#: described by shape and dtype so that every explanation does not repeat them.
META_TENSOR_LIMIT = 64

_SettingsT = TypeVar("_SettingsT", bound="Settings")


def setting(
    default: Any, doc: str, *, per_call: bool = False, check: _checks.FieldCheck | None = None
) -> Any:
    """A field of a method's settings.

    Args:
        default: the value when none is given.
        doc: one line saying what it does (the docstrings' settings section).
        per_call: ``explain`` may also take it, for one call.
        check: ``(name, value) -> value``: raises ``TypeError``/``ValueError`` naming the
            setting, or returns the value normalised (see the factories in ``_checks``).
    """
    return dataclasses.field(
        default=default, metadata={"doc": doc, "per_call": per_call, "check": check}
    )


@dataclasses.dataclass(frozen=True)
class Settings:
    """Base of each method's frozen settings dataclass.

    Every field's own check runs when the settings are made; :meth:`validate` then
    checks what relates several fields and returns the values it normalised.
    """

    def __post_init__(self) -> None:
        for field in self.fields():
            check = field.metadata.get("check")
            if check is not None:
                object.__setattr__(self, field.name, check(field.name, getattr(self, field.name)))
        for name, value in self.validate().items():
            object.__setattr__(self, name, value)

    def validate(self) -> dict[str, Any]:
        """Rules between fields (each field's own check has run); raise naming the settings."""
        return {}

    @classmethod
    def fields(cls) -> tuple[dataclasses.Field, ...]:
        return dataclasses.fields(cls)

    @classmethod
    def names(cls, per_call_only: bool = False) -> list[str]:
        return [f.name for f in cls.fields() if f.metadata.get("per_call") or not per_call_only]

    @classmethod
    def create(cls: type[_SettingsT], owner: str, values: Mapping[str, Any]) -> _SettingsT:
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise TypeError(
                f"{owner} got unknown setting(s) {unknown}; its settings are {cls.names()}"
            )
        return cls(**values)

    def replace(self: _SettingsT, owner: str, changes: Mapping[str, Any]) -> _SettingsT:
        """These settings with ``changes`` applied; only per-call settings may change."""
        if not changes:
            return self
        per_call = set(self.names(per_call_only=True))
        fixed = sorted(set(changes) & (set(self.names()) - per_call))
        if fixed:
            raise TypeError(
                f"{owner} cannot change {fixed} per call: they are fixed when the explainer is "
                f"built; per-call settings are {sorted(per_call)}"
            )
        unknown = sorted(set(changes) - per_call)
        if unknown:
            raise TypeError(
                f"{owner} got unknown setting(s) {unknown}; per-call settings are {sorted(per_call)}"
            )
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The values, not copied (``dataclasses.asdict`` would deep-copy tensors)."""
        return {f.name: getattr(self, f.name) for f in self.fields()}

    def describe(self) -> dict[str, Any]:
        """The settings as plain data for ``meta["params"]`` (JSON-ready)."""
        return {name: describe_value(value) for name, value in self.as_dict().items()}


def describe_value(value: Any) -> Any:
    """A setting as it is recorded in ``meta["params"]``."""
    if isinstance(value, torch.Tensor):
        if value.numel() <= META_TENSOR_LIMIT:
            return value.detach().cpu()
        return {"tensor_shape": list(value.shape), "dtype": str(value.dtype).removeprefix("torch.")}
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    if isinstance(value, (tuple, list)):
        return [describe_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): describe_value(v) for k, v in value.items()}
    if callable(value):
        return f"callable {getattr(value, '__qualname__', type(value).__name__)}"
    return value


def settings_docs(settings_class: type[Settings]) -> str:
    """The "Settings:" docstring section, from the fields' own docs."""
    lines = [
        "",
        "",
        "    Settings (keyword arguments of the constructor; * = may also be passed to explain):",
    ]
    for field in settings_class.fields():
        star = " *" if field.metadata.get("per_call") else ""
        head = f"{field.name} (default {field.default!r}){star}: "
        body = textwrap.wrap(
            head + field.metadata.get("doc", ""), width=88, subsequent_indent="    "
        )
        lines.extend("        " + line for line in body)
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- shared bases


@dataclasses.dataclass(frozen=True)
class DeviceSettings(Settings):
    """Where a method's own work runs."""

    device: str | None = setting(
        None,
        "where the method's own work runs (samples, perturbed inputs, the search); None: the inputs' device "
        "(cpu for numpy inputs). Results come back on the inputs' device",
        check=_checks.device(),
    )


@dataclasses.dataclass(frozen=True)
class SeedSettings(Settings):
    """The seed of a method's random draws."""

    seed: int | None = setting(
        None,
        "seed of the method's random draws, in [0, 2**63) (None: a fresh seed per call, recorded in "
        "meta['params'] so the call can be repeated)",
        check=_checks.seed(),
    )


@dataclasses.dataclass(frozen=True)
class ChunkSettings(Settings):
    """How much of a call's work goes through the model at once."""

    internal_batch_size: int | str | None = setting(
        "auto",
        "most rows (instances, for the counterfactual searches) the model sees in one call: 'auto' sizes "
        "it to the device (halving a call that runs out of memory), an int fixes it, None sends all at once. "
        "Results do not depend on it",
        per_call=True,
        check=_checks.chunk_size(),
    )


@dataclasses.dataclass(frozen=True)
class ModelCallSettings(ChunkSettings):
    """How a method's calls of a torch model are shaped: chunks, and padding for batch invariance."""

    pad_to_multiple: int | str = setting(
        "auto",
        "every model call carries a multiple of this many rows (the last row repeated), so that what the model "
        "gives a row does not depend on the other rows of its call and a batch gives exactly what each "
        "instance gives alone (torchexplain.models.calls says why). 'auto': 4, except for the counterfactual "
        "searches, whose steps carry few rows (a lone instance's search costs 2.2x padded on the CPU): 1 there; "
        "1 turns padding off",
        check=_checks.auto_or_integer(1),
    )

    #: what ``"auto"`` means for this method
    auto_padding: ClassVar[int] = DEFAULT_PAD_TO_MULTIPLE

    def padding(self) -> int:
        """The multiple every model call is padded to."""
        return self.auto_padding if self.pad_to_multiple == "auto" else int(self.pad_to_multiple)


@dataclasses.dataclass(frozen=True)
class ProgressSettings(Settings):
    """Whether a long call draws a progress bar."""

    progress: bool | None = setting(
        None,
        "draw a progress bar on stderr (None: only when stderr is a terminal)",
        per_call=True,
        check=_checks.boolean(optional=True),
    )


@dataclasses.dataclass(frozen=True)
class PredictorSettings(DeviceSettings, ModelCallSettings):
    """A black-box method's predictor: what it is handed, where, how many rows at a time."""

    predictor_input: str = setting(
        "auto",
        "what the predictor is handed: 'numpy' arrays, 'tensor's on the device, or 'auto' (tensors for an "
        "nn.Module, numpy arrays for any other callable, as scikit-learn and Alibi users have)",
        check=_checks.choice("auto", "numpy", "tensor"),
    )


@dataclasses.dataclass(frozen=True)
class SegmentationSettings(Settings):
    """How images are cut into superpixels (the features of image explanations)."""

    segmentation_fn: str | Callable[..., Any] = setting(
        "slic",
        "superpixels of images: 'slic', 'felzenszwalb', 'quickshift' (built-in methods see grey images "
        "repeated to RGB, as Alibi does) or a callable (see torchexplain.segmentation.segment)",
    )
    segmentation_kwargs: dict[str, Any] | None = setting(
        None,
        "keyword arguments of the segmentation (None: torchexplain.segmentation.DEFAULT_SEGMENTATION_KWARGS, "
        "Alibi's defaults)",
    )

    def validate(self) -> dict[str, Any]:
        from torchexplain.segmentation import check_segmentation_settings

        check_segmentation_settings(self.segmentation_fn, self.segmentation_kwargs)
        return super().validate()


@dataclasses.dataclass(frozen=True)
class ColumnSettings(Settings):
    """The names of tabular columns."""

    feature_names: list[str] | None = setting(
        None, "the name of every column, in order (distinct strings)", check=_checks.names()
    )


@dataclasses.dataclass(frozen=True)
class TabularSettings(ColumnSettings):
    """The names of tabular columns and of the categories of categorical ones (Alibi's ``category_map``)."""

    categorical_names: dict[int, list[str]] | None = setting(
        None,
        "column index -> names of its categories; those columns hold integer codes 0..K-1 (Alibi's "
        "category_map). Every other column is numerical",
        check=_checks.category_names(),
    )
