"""The contract every explainer follows, and the registry that save/load reads.

An explainer is built from its model (white-box methods) or predictor (black-box
methods) and its settings; ``fit(...)`` is there where the method learns from data;
``explain(inputs, ...)`` returns one :class:`~torchexplain.explanation.Explanation`.

Each method defines its settings once, as a frozen dataclass derived from
:class:`Settings` whose fields are made with :func:`setting`. That one definition
gives the constructor's and ``explain``'s signatures, the settings section of the
docstrings, ``config``, ``repr``, ``meta["params"]`` and what ``save`` writes. A
setting marked ``per_call`` may also be passed to ``explain`` for one call (as Alibi
takes ``threshold`` in ``explain``, and as a server receives it per request); every
setting can be given to the constructor, where it becomes the explainer's default.
"""

from __future__ import annotations

import abc
import copy
import dataclasses
import inspect
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch

from torchexplain._version import __version__
from torchexplain.explanation import Explanation

__all__ = ["EXPLAINER_TYPES", "Explainer", "Settings", "registered_explainers", "setting"]

#: ``meta["type"]`` of an Explanation: whether the method reads the model's insides.
EXPLAINER_TYPES = ("whitebox", "blackbox")

#: Tensors with at most this many elements are written into ``meta["params"]`` as
#: they are; larger ones (background images, per-feature ranges of big inputs) are
#: described by shape and dtype so that every explanation does not repeat them.
META_TENSOR_LIMIT = 64

_SettingsT = TypeVar("_SettingsT", bound="Settings")


def setting(default: Any, doc: str, *, per_call: bool = False) -> Any:
    """A field of a method's settings: its default, one line of docs, and whether
    ``explain`` may take it per call."""
    return dataclasses.field(default=default, metadata={"doc": doc, "per_call": per_call})


@dataclasses.dataclass(frozen=True)
class Settings:
    """Base of each method's frozen settings dataclass.

    Subclasses declare fields with :func:`setting` and check them in
    :meth:`validate`, which returns the normalised values it changed (e.g. a numpy
    integer turned into an ``int``).
    """

    def __post_init__(self) -> None:
        for name, value in self.validate().items():
            object.__setattr__(self, name, value)

    def validate(self) -> dict[str, Any]:
        """Check every field; raise ``TypeError``/``ValueError`` naming the bad one."""
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


# ----------------------------------------------------------------------------- registry

_REGISTRY: dict[str, type[Explainer]] = {}


def register_explainer(cls: type[Explainer]) -> type[Explainer]:
    """Add one of torchexplain's explainers to the allow-list that ``load_explainer`` reads."""
    if not cls.__module__.startswith("torchexplain."):
        raise ValueError(
            f"only torchexplain's own explainers are registered for loading, not {cls.__module__}.{cls.__name__}"
        )
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"an explainer named {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def registered_explainers() -> dict[str, type[Explainer]]:
    """The explainers ``load_explainer`` may build, by name."""
    return dict(_REGISTRY)


# ----------------------------------------------------------------------------- the base


class Explainer(abc.ABC):
    """Base class of every torchexplain method.

    Subclasses set :attr:`name`, :attr:`kind` (``"whitebox"`` or ``"blackbox"``) and
    :attr:`settings_class`, and implement ``explain``. The constructor takes the model
    (or predictor) and keyword settings; ``config`` and ``repr`` show them. The model
    may be None for an explainer that only holds settings until
    :meth:`with_model` binds one (as :class:`~torchexplain.ExplanationMonitor` does).
    """

    #: the method's name, as written to ``meta["name"]`` and used by save/load
    name: ClassVar[str] = "Explainer"
    #: ``"whitebox"`` (needs the model's gradients) or ``"blackbox"`` (any callable)
    kind: ClassVar[str] = "whitebox"
    #: the frozen dataclass of the method's settings
    settings_class: ClassVar[type[Settings]] = Settings
    #: whether ``explain`` takes ``target`` (the class to explain); methods without
    #: it explain the model's own prediction
    accepts_target: ClassVar[bool] = False
    #: settings that may also be given by position after the model, in this order (as
    #: Alibi's ``AnchorTabular(predictor, feature_names, categorical_names)``)
    positional_settings: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: Any, *positional: Any, **settings: Any) -> None:
        if len(positional) > len(self.positional_settings):
            raise TypeError(
                f"{type(self).__name__}() takes {1 + len(self.positional_settings)} positional argument(s) "
                f"({_role(type(self))}{''.join(', ' + n for n in self.positional_settings)}); the other "
                f"settings are keywords"
            )
        for name, value in zip(self.positional_settings, positional):
            if name in settings:
                raise TypeError(f"{type(self).__name__}() got multiple values for {name!r}")
            settings[name] = value
        if model is not None:
            self._check_model(model)
        self.model = model
        self.settings = self.settings_class.create(f"{type(self).__name__}()", settings)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.settings_class is Settings:
            return
        if cls.kind not in EXPLAINER_TYPES:
            raise TypeError(
                f"{cls.__name__}.kind must be one of {EXPLAINER_TYPES}, got {cls.kind!r}"
            )
        cls.__signature__ = _constructor_signature(cls)  # type: ignore[attr-defined]
        cls.__doc__ = (cls.__doc__ or "") + settings_docs(cls.settings_class)
        if "explain" in cls.__dict__:
            cls.explain.__signature__ = _explain_signature(cls)  # type: ignore[attr-defined]

    @abc.abstractmethod
    def explain(self, inputs: Any, **settings: Any) -> Explanation:
        """Explain the model's output on a batch of inputs."""

    # -- settings ---------------------------------------------------------------

    @property
    def config(self) -> dict[str, Any]:
        """The explainer's settings, by name."""
        return self.settings.as_dict()

    def _settings_for_call(self, overrides: Mapping[str, Any]) -> Settings:
        """The settings of one ``explain`` call (checks that there is a model to explain)."""
        if self.model is None:
            role = _role(type(self))
            raise ValueError(
                f"{type(self).__name__} was built without a {role}; build it with one, or bind one "
                f"with explainer.with_model({role})"
            )
        return self.settings.replace(f"{type(self).__name__}.explain()", overrides)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={_short(v)}" for k, v in self.config.items())
        return f"{type(self).__name__}({shown})"

    # -- model ------------------------------------------------------------------

    def _check_model(self, model: Any) -> None:
        """Refuse what this method cannot explain (by default: anything not callable)."""
        if not callable(model):
            raise TypeError(
                f"{type(self).__name__}: {_role(type(self))} must be callable, got {type(model).__name__}"
            )

    @property
    def predictor(self) -> Any:
        """The model or predictor this explainer calls (black-box methods' name for it)."""
        return self.model

    def with_model(self, model: Any) -> Explainer:
        """A copy with the same settings (and fitted state) that explains ``model``."""
        self._check_model(model)
        bound = copy.copy(self)
        bound.model = model
        return bound

    # -- fitted state, for save/load ----------------------------------------------

    def _fitted_state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """What ``fit`` learnt: plain data and tensors (none for methods without ``fit``)."""
        return {}, {}

    def _restore_fitted_state(
        self, data: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]
    ) -> None:
        if data or tensors:
            raise ValueError(
                f"{type(self).__name__} has no fitted state, but the file holds {sorted({*data, *tensors})}"
            )

    def save(self, path: str | Path, example_inputs: Any = None) -> Path:
        """Write the explainer to the folder ``path``: JSON settings plus safetensors.

        Args:
            path: the folder (created if missing; files in it are replaced).
            example_inputs: white-box only: also store the model as a ``torch.export``
                program traced on these inputs (batch dimension dynamic), so that
                ``load_explainer(path)`` needs no model. Without it the model is not
                stored and must be passed to ``load_explainer``.

        Returns:
            The folder written.
        """
        from torchexplain.saving import save_explainer

        return save_explainer(self, path, example_inputs=example_inputs)

    # -- results ----------------------------------------------------------------

    def explanation_map(self, explanation: Explanation, inputs: torch.Tensor) -> torch.Tensor:
        """One map per example shaped like ``inputs`` ``(B, ...)``, for pictures and the monitor.

        Attribution methods give their ``attributions`` (this default); other methods
        override it (a counterfactual's change to the input, an anchor's mask).
        """
        maps = explanation.data.get("attributions")
        if isinstance(maps, tuple):
            if len(maps) != 1:
                raise ValueError(
                    f"{self.name} explained {len(maps)} inputs; a map needs a single-input model"
                )
            maps = maps[0]
        if not isinstance(maps, torch.Tensor):
            raise ValueError(
                f"{self.name}: cannot draw a map from an Explanation with data fields {sorted(explanation.data)}; "
                "an explainer without 'attributions' overrides explanation_map()"
            )
        return maps

    def _explanation(
        self,
        settings: Settings,
        data: dict[str, Any],
        device: torch.device | str,
        **extra_meta: Any,
    ) -> Explanation:
        """The Explanation of one call: the contract's meta, then the method's data."""
        meta = {
            "name": self.name,
            "type": self.kind,
            "params": settings.describe(),
            "version": __version__,
            "device": str(device),
            **extra_meta,
        }
        return Explanation(meta, data)


def _short(value: Any) -> str:
    described = describe_value(value)
    if isinstance(described, torch.Tensor):
        return f"tensor{tuple(described.shape)}"
    return repr(described)


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


def _setting_parameters(
    settings_class: type[Settings], per_call_only: bool
) -> list[inspect.Parameter]:
    return [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default)
        for f in settings_class.fields()
        if f.metadata.get("per_call") or not per_call_only
    ]


def _role(cls: type[Explainer]) -> str:
    """What the constructor's first argument is called: a white-box model or a black-box predictor."""
    return "model" if cls.kind == "whitebox" else "predictor"


def _constructor_signature(cls: type[Explainer]) -> inspect.Signature:
    first = inspect.Parameter(_role(cls), inspect.Parameter.POSITIONAL_OR_KEYWORD)
    settings = _setting_parameters(cls.settings_class, per_call_only=False)
    by_name = {p.name: p for p in settings}
    positional = [by_name[n].replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in cls.positional_settings]
    rest = [p for p in settings if p.name not in cls.positional_settings]
    return inspect.Signature([first, *positional, *rest])


def _explain_signature(cls: type[Explainer]) -> inspect.Signature:
    own = inspect.signature(cls.explain)
    kept = [p for p in own.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    return own.replace(
        parameters=[*kept, *_setting_parameters(cls.settings_class, per_call_only=True)]
    )


def functional_twin(
    cls: type[Explainer],
) -> Callable[[Callable[..., Explanation]], Callable[..., Explanation]]:
    """Decorate a method's function twin: its ``**settings`` become the class's settings
    in the signature, and the settings docs are appended to its docstring."""

    def decorate(function: Callable[..., Explanation]) -> Callable[..., Explanation]:
        own = inspect.signature(function)
        kept = [p for p in own.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        function.__signature__ = own.replace(  # type: ignore[attr-defined]
            parameters=[*kept, *_setting_parameters(cls.settings_class, per_call_only=False)]
        )
        function.__doc__ = (function.__doc__ or "") + settings_docs(cls.settings_class)
        return function

    return decorate
