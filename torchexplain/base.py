"""The contract every explainer follows.

An explainer is built from its model (white-box methods) or predictor (black-box
methods) and its settings; ``fit(...)`` is there where the method learns from data;
``explain(inputs, ...)`` returns one :class:`~torchexplain.explanation.Explanation`.

Each method defines its settings once (:mod:`torchexplain.settings`). That one
definition gives the constructor's and ``explain``'s signatures, the settings section
of the docstrings, ``config``, ``repr``, ``meta["params"]`` and what ``save`` writes. A
setting marked ``per_call`` may also be passed to ``explain`` for one call (as Alibi
takes ``threshold`` in ``explain``, and as a server receives it per request); every
setting can be given to the constructor, where it becomes the explainer's default.

Each method also declares what the rest of torchexplain needs to know about it, so
that nothing keeps its own list of the methods (:mod:`torchexplain.registry`): its
``explainer_type`` (the name Seldon Core and the servers use), its peer and paper (the
docs tables), its ``--method`` name on the command line and how it is drawn
(:meth:`Explainer.picture`).
"""

from __future__ import annotations

import abc
import copy
import inspect
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch

from torchexplain import saving
from torchexplain._version import __version__
from torchexplain.explanation import Explanation
from torchexplain.registry import register_explainer, registered_explainers
from torchexplain.settings import Settings, describe_value, setting, settings_docs

__all__ = [
    "KINDS",
    "Explainer",
    "Settings",
    "functional_twin",
    "register_explainer",
    "registered_explainers",
    "setting",
]

#: ``meta["type"]`` of an Explanation: whether the method reads the model's insides.
KINDS = ("whitebox", "blackbox")

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

    # What the rest of torchexplain reads from the registry (nothing else lists the methods):
    #: the name servers take in ``explainer_type`` (Seldon Core v2's, i.e. Alibi's, where it has one)
    explainer_type: ClassVar[str] = ""
    #: the peer's equivalent, as its users import it (the docs' tables)
    peer: ClassVar[str] = ""
    #: the method's paper, in one line
    paper: ClassVar[str] = ""
    #: ``torchexplain explain --method NAME`` (None: the command does not offer the method)
    cli_name: ClassVar[str | None] = None
    #: the command explains only images with it (``(C, H, W)``, 1 or 3 channels)
    cli_needs_images: ClassVar[bool] = False
    #: ``explain`` takes a list of texts, not an array of numbers (servers take v2 ``BYTES``)
    takes_texts: ClassVar[bool] = False
    #: ``explain`` explains every output at once (SHAP values); ``target`` only picks the one drawn
    explains_every_class: ClassVar[bool] = False
    #: the title of the map's column in :meth:`draw`
    map_title: ClassVar[str] = "attribution"

    def __init__(self, model: Any, *positional: Any, **settings: Any) -> None:
        if len(positional) > len(self.positional_settings):
            raise TypeError(
                f"{type(self).__name__}() takes {1 + len(self.positional_settings)} positional argument(s) "
                f"({self.model_role()}{''.join(', ' + n for n in self.positional_settings)}); the other "
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
        if cls.kind not in KINDS:
            raise TypeError(f"{cls.__name__}.kind must be one of {KINDS}, got {cls.kind!r}")
        cls.__signature__ = _constructor_signature(cls)  # type: ignore[attr-defined]
        cls.__doc__ = (cls.__doc__ or "") + settings_docs(cls.settings_class)
        if "explain" in cls.__dict__:
            cls.explain.__signature__ = _explain_signature(cls)  # type: ignore[attr-defined]
            cls.explain.__doc__ = _per_call_docs(cls.explain.__doc__ or "", cls.settings_class)

    @abc.abstractmethod
    def explain(self, inputs: Any, **settings: Any) -> Explanation:
        """Explain the model's output on a batch of inputs."""

    @classmethod
    def model_role(cls) -> str:
        """What the constructor's first argument is called: ``"model"`` (white-box) or ``"predictor"``."""
        return "model" if cls.kind == "whitebox" else "predictor"

    # -- settings ---------------------------------------------------------------

    @property
    def config(self) -> dict[str, Any]:
        """The explainer's settings, by name."""
        return self.settings.as_dict()

    def _settings_for_call(self, overrides: Mapping[str, Any]) -> Settings:
        """The settings of one ``explain`` call (checks that there is a model to explain)."""
        if self.model is None:
            role = self.model_role()
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
                f"{type(self).__name__}: {self.model_role()} must be callable, got {type(model).__name__}"
            )

    @property
    def predictor(self) -> Any:
        """The model or predictor this explainer calls (black-box methods' name for it)."""
        return self.model

    def input_shape(self) -> tuple[int, ...] | None:
        """The shape of one input, the batch dimension left out (``-1`` where any size goes), when the
        explainer knows it; None when it does not. Servers declare it in their metadata and refuse
        requests that do not fit it before anything runs.

        By default it is the model's, when the model is a ``torch.export`` program; methods that
        learn the columns from data (anchors on tables, SHAP) say what they learnt.
        """
        shape = getattr(self.model, "input_shape", None)
        return tuple(shape[1:]) if shape else None

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
        return saving.save_explainer(self, path, example_inputs=example_inputs)

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

    def default_fit(self, inputs: torch.Tensor) -> Explainer:
        """Fit with nothing but the inputs to explain, as the command line does (methods that
        learn from data override it); returns the explainer."""
        return self

    def draw(self, inputs: torch.Tensor, explanation: Explanation, path: str | Path) -> Path | None:
        """Save a captioned PNG of the explanation of images ``(B, C, H, W)`` (1 or 3 channels):
        per example the image, the method's map (:meth:`explanation_map`) as a heatmap, and the
        map over the image. Returns the file, or None when the inputs are not images.
        """
        if not is_image_batch(inputs):
            return None
        from torchexplain import visualize

        maps = self.explanation_map(explanation, inputs).detach().cpu()
        rows = [
            [image, visualize.heatmap(maps[i]), visualize.overlay(image, maps[i])]
            for i, image in enumerate(inputs.detach().cpu())
        ]
        captions = [self.caption(explanation, i) for i in range(inputs.shape[0])]
        return visualize.save_grid(
            rows, captions, path, titles=["input", self.map_title, "overlay"]
        )

    def caption(self, explanation: Explanation, i: int) -> str:
        """One line under example ``i``'s row of :meth:`draw`."""
        target = explanation.data.get("target")
        return f"#{i} target {int(target[i])}" if isinstance(target, torch.Tensor) else f"#{i}"

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


def is_image_batch(inputs: Any) -> bool:
    """``(B, C, H, W)`` with 1 or 3 channels: what the pictures draw."""
    return isinstance(inputs, torch.Tensor) and inputs.dim() == 4 and inputs.shape[1] in (1, 3)


def _short(value: Any) -> str:
    described = describe_value(value)
    if isinstance(described, torch.Tensor):
        return f"tensor{tuple(described.shape)}"
    return repr(described)


def _setting_parameters(
    settings_class: type[Settings], per_call_only: bool
) -> list[inspect.Parameter]:
    return [
        inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type
        )
        for f in settings_class.fields()
        if f.metadata.get("per_call") or not per_call_only
    ]


def _constructor_signature(cls: type[Explainer]) -> inspect.Signature:
    first = inspect.Parameter(cls.model_role(), inspect.Parameter.POSITIONAL_OR_KEYWORD)
    settings = _setting_parameters(cls.settings_class, per_call_only=False)
    by_name = {p.name: p for p in settings}
    positional = [
        by_name[n].replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD)
        for n in cls.positional_settings
    ]
    rest = [p for p in settings if p.name not in cls.positional_settings]
    return inspect.Signature([first, *positional, *rest])


def _per_call_docs(doc: str, settings_class: type[Settings]) -> str:
    """``explain``'s docstring with its ``**settings:`` argument entry replaced by one entry per
    per-call setting (its one line of docs), as the signature lists them."""
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        if line.lstrip().startswith("**settings:"):
            indent = line[: len(line) - len(line.lstrip())]
            end = i + 1
            while (
                end < len(lines)
                and lines[end].strip()
                and len(lines[end]) - len(lines[end].lstrip()) > len(indent)
            ):
                end += 1
            entries = []
            for field in settings_class.fields():
                if field.metadata.get("per_call"):
                    head = f"{field.name}: (per call; default: the explainer's) "
                    entries += textwrap.wrap(
                        head + field.metadata.get("doc", ""),
                        width=88,
                        initial_indent=indent,
                        subsequent_indent=indent + "    ",
                    )
            return "\n".join([*lines[:i], *entries, *lines[end:]])
    return doc


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
