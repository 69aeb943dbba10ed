"""Tree SHAP (Lundberg et al., "From local explanations to global understanding with explainable AI
for trees", Nature Machine Intelligence 2020) on shap's ``TreeExplainer``.

The algorithm is shap's (its C++ Tree SHAP, or XGBoost's and LightGBM's own on their
models); it is not re-implemented here. What torchexplain adds is the common
contract: the Explanation's fields and JSON, save/load of the configuration (the tree
model is given again at load time, never pickled), rows explained in pieces with a
progress bar, and no silent subsampling of the background: shap's ``Independent``
masker keeps at most 100 rows unless told otherwise, so every background row given to
``fit`` is passed on and ``meta["n_background"]`` says how many were used.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np
import torch

from torchexplain import _checks
from torchexplain._progress import Progress
from torchexplain.base import Explainer, functional_twin, register_explainer
from torchexplain.explanation import Explanation
from torchexplain.models import Rows, in_chunks
from torchexplain.settings import ChunkSettings, ColumnSettings, ProgressSettings, setting

__all__ = ["TreeShap", "TreeShapSettings", "tree_shap"]

_MODEL_OUTPUTS = ("raw", "probability", "log_loss", "predict", "predict_proba")
#: rows per call of shap when ``internal_batch_size="auto"`` (shap's C++ loop holds one
#: row's work at a time; pieces bound the output held for interactions, M x M per row)
_AUTO_ROWS = 4096


@dataclasses.dataclass(frozen=True)
class TreeShapSettings(ColumnSettings, ChunkSettings, ProgressSettings):
    """The settings of :class:`TreeShap` (shap's and Alibi's names)."""

    model_output: str = setting(
        "raw",
        "what is explained: 'raw' (the trees' margin: probabilities for scikit-learn forests, log-odds for "
        "boosted classifiers), 'probability' or 'log_loss' (both need a background: interventional)",
        check=_checks.choice(*_MODEL_OUTPUTS),
    )
    # Not DeviceSettings' device: here it chooses XGBoost's own algorithm, not where torchexplain works.
    device: str | None = setting(
        None,
        "XGBoost models only: compute the values with XGBoost's own Tree SHAP on this device ('cuda': its GPU "
        "path; 'cpu'), path-dependent. None: shap's TreeExplainer, for every model",
        check=_checks.device(),
    )
    approximate: bool = setting(
        False,
        "shap's fast Saabas-style approximation instead of exact Tree SHAP",
        per_call=True,
        check=_checks.boolean(),
    )
    check_additivity: bool = setting(
        True,
        "let shap check that the values sum to the model output (its own tolerance)",
        per_call=True,
        check=_checks.boolean(),
    )


def _shap():
    try:
        import shap
    except ImportError:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "TreeShap runs shap's TreeExplainer: pip install shap (or torchexplain[test])"
        ) from None
    return shap


@register_explainer
class TreeShap(Explainer):
    """Exact SHAP values of tree ensembles (scikit-learn, XGBoost, LightGBM, CatBoost), via shap.

    ``fit()`` without background data explains path-dependently (the trees' own cover
    statistics); ``fit(background)`` explains interventionally over those rows (every
    row is used; shap's 100-row cap is lifted).

    Examples:
        >>> from sklearn.tree import DecisionTreeRegressor
        >>> X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
        >>> tree = DecisionTreeRegressor().fit(X, X[:, 0] * 2.0)
        >>> TreeShap(tree).fit(X).explain(X[:1]).shap_values.tolist()
        [[[-1.0, 0.0]]]
    """

    name = "TreeShap"
    explains_every_class = True
    explainer_type = "tree_shap"
    peer = "shap.TreeExplainer; alibi.explainers.TreeShap"
    paper = 'Lundberg et al., "From local explanations to global understanding with explainable AI for trees", Nat. Mach. Intell. 2020'
    kind = "blackbox"
    settings_class = TreeShapSettings
    _fit: dict[str, Any] | None = None

    def _check_model(self, model: Any) -> None:
        if isinstance(model, torch.nn.Module) or not (
            hasattr(model, "predict")
            or hasattr(model, "get_dump")
            or type(model).__name__ == "Booster"
        ):
            raise TypeError(
                f"TreeShap: predictor must be a tree model shap's TreeExplainer reads (scikit-learn, XGBoost, "
                f"LightGBM, CatBoost), got {type(model).__name__}; for other models use KernelShap"
            )

    def fit(
        self,
        background_data: Any = None,
        summarise_background: bool = False,
        n_background_samples: int = 1000,
    ) -> TreeShap:
        """Choose path-dependent (no background) or interventional (a background) Tree SHAP.

        Args:
            background_data: ``(N, M)`` rows, or None.
            summarise_background: keep ``n_background_samples`` rows drawn without
                replacement (fixed seed) instead of all of them.
            n_background_samples: rows kept by the summary.

        Returns:
            The explainer (fitted).
        """
        background = None
        if background_data is not None:
            background = _as_array(
                Rows.of(
                    background_data, "background_data", integers=True, exact_dim=2, layout="(N, M)"
                )
            )
            n_keep = _checks.check_int("n_background_samples", n_background_samples, minimum=1)
            if (
                _checks.check_bool("summarise_background", summarise_background)
                and background.shape[0] > n_keep
            ):
                order = np.sort(np.random.RandomState(0).permutation(background.shape[0])[:n_keep])  # noqa: NPY002
                background = background[order]
        self._set_fitted(background)
        return self

    def _set_fitted(self, background: np.ndarray | None) -> None:
        config = self.settings
        if config.device is not None:
            self._fit = {
                "background": background,
                "explainer": _XGBoostShap(self.model, config, background),
            }
            return
        shap = _shap()
        if background is None:
            if config.model_output != "raw":
                raise ValueError(
                    f"model_output={config.model_output!r} needs background data (interventional Tree SHAP); "
                    "fit(background_data) or use model_output='raw'"
                )
            explainer = shap.TreeExplainer(self.model, feature_perturbation="tree_path_dependent")
        else:
            masker = shap.maskers.Independent(background, max_samples=background.shape[0])
            explainer = shap.TreeExplainer(
                self.model,
                masker,
                feature_perturbation="interventional",
                model_output=config.model_output,
            )
        self._fit = {"background": background, "explainer": explainer}

    def with_model(self, model: Any) -> TreeShap:
        bound = super().with_model(model)
        if self._fit is not None:
            bound._set_fitted(self._fit["background"])
        return bound

    def input_shape(self) -> tuple[int, ...] | None:
        """``(M,)``: the background's columns, else the model's ``n_features_in_`` (scikit-learn, XGBoost)."""
        background = None if self._fit is None else self._fit["background"]
        if background is not None:
            return tuple(background.shape[1:])
        n = getattr(self.model, "n_features_in_", None)
        return (int(n),) if isinstance(n, (int, np.integer)) else None

    def _fitted_state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        if self._fit is None:
            return {}, {}
        background = self._fit["background"]
        if background is None:
            return {"perturbation": "tree_path_dependent"}, {}
        return {"perturbation": "interventional"}, {"background": torch.from_numpy(background)}

    def _restore_fitted_state(self, data: Any, tensors: Any) -> None:
        if not data and not tensors:
            return
        perturbation = data.get("perturbation")
        if (
            set(data) != {"perturbation"}
            or perturbation not in ("tree_path_dependent", "interventional")
            or (set(tensors) != ({"background"} if perturbation == "interventional" else set()))
        ):
            raise ValueError(
                f"TreeShap: unexpected fitted state {sorted(data)} / {sorted(tensors)}"
            )
        self._set_fitted(
            None if perturbation == "tree_path_dependent" else tensors["background"].numpy()
        )

    def explain(self, inputs: Any, interactions: bool = False, **settings: Any) -> Explanation:
        """SHAP values (and optionally interaction values) of a batch of rows.

        Args:
            inputs: ``(B, M)`` numpy array or tensor.
            interactions: also return SHAP interaction values (path-dependent only, as in shap).
            **settings: per-call settings (``approximate``, ``check_additivity``,
                ``internal_batch_size``, ``progress``).

        Returns:
            An :class:`Explanation` whose ``data`` holds ``shap_values`` ``(B, K, M)``
            float64 (K = 1 for single-output models), ``expected_value`` ``(K,)``,
            ``predictions`` ``(B, K)`` (shap's model output in the explained space),
            ``target`` ``(B,)`` (argmax of ``predictions``), ``importances`` ``(K, M)``
            and ``aggregated_importances`` ``(M,)`` (mean |value| over the batch), and
            with ``interactions`` also ``interaction_values`` ``(B, K, M, M)``.
            Tensors are on the inputs' device (cpu for numpy).
        """
        config = self._settings_for_call(settings)
        if self._fit is None:
            raise ValueError(
                "TreeShap is not fitted: call explainer.fit() (path-dependent) or explainer.fit(background_data) "
                "(interventional) first"
            )
        interactions = _checks.check_bool("interactions", interactions)
        checked = Rows.of(inputs, integers=True, exact_dim=2, layout="(N, M)")
        rows = _as_array(checked)
        background = self._fit["background"]
        if interactions and background is not None:
            raise ValueError(
                "interactions=True needs path-dependent Tree SHAP: fit() without background data"
            )
        if background is not None and rows.shape[1] != background.shape[1]:
            raise ValueError(
                f"inputs must have {background.shape[1]} columns like the background, got {rows.shape[1]}"
            )
        values, pairs = self._values(rows, config, interactions)
        expected = np.atleast_1d(
            np.asarray(self._fit["explainer"].expected_value, dtype=np.float64)
        )
        if expected.shape[0] != values.shape[1]:
            raise ValueError(
                f"shap returned {expected.shape[0]} expected values for {values.shape[1]} outputs"
            )
        shap_values = torch.from_numpy(values)
        predictions = torch.from_numpy(self._predictions(rows, values, expected))
        data = {
            "shap_values": shap_values,
            "expected_value": torch.from_numpy(expected),
            "predictions": predictions,
            "target": predictions.argmax(1),
            "importances": shap_values.abs().mean(0),
            "aggregated_importances": shap_values.abs().sum(1).mean(0),
        }
        if interactions:
            data["interaction_values"] = torch.from_numpy(pairs)
        device = checked.input_device
        data = {key: value.to(device) for key, value in data.items()}
        return self._explanation(
            config,
            data,
            device,
            feature_names=config.feature_names or [f"feature_{i}" for i in range(rows.shape[1])],
            feature_perturbation="interventional"
            if background is not None
            else "tree_path_dependent",
            n_background=0 if background is None else int(background.shape[0]),
            model_type=type(self.model).__name__,
            algorithm="shap TreeExplainer"
            if config.device is None
            else f"xgboost pred_contribs ({config.device})",
        )

    def _values(
        self, rows: np.ndarray, config: TreeShapSettings, interactions: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``(B, K, M)`` SHAP values (and ``(B, K, M, M)`` interaction values), float64, in pieces."""
        explainer = self._fit["explainer"]
        chunk = config.internal_batch_size
        size = rows.shape[0] if chunk is None else (_AUTO_ROWS if chunk == "auto" else chunk)

        def piece(start: int, stop: int, size: int) -> tuple[np.ndarray, np.ndarray | None]:
            part = rows[start:stop]
            values = explainer.shap_values(
                part, approximate=config.approximate, check_additivity=config.check_additivity
            )
            pairs = (
                _per_class(explainer.shap_interaction_values(part), interactions=True)
                if interactions
                else None
            )
            bar.advance(stop - start)
            return _per_class(values), pairs

        with (
            Progress(rows.shape[0], "TreeShap", enabled=config.progress) as bar,
            warnings.catch_warnings(),
        ):
            warnings.filterwarnings(
                "ignore", message=".*approximate.*", category=DeprecationWarning
            )
            pieces = in_chunks(rows.shape[0], size, piece, halve=False)
        values = np.concatenate([v for v, _ in pieces]).astype(np.float64)
        pairs = np.concatenate([p for _, p in pieces]).astype(np.float64) if interactions else None
        return values, pairs

    def _predictions(
        self, rows: np.ndarray, values: np.ndarray, expected: np.ndarray
    ) -> np.ndarray:
        """``(B, K)``: the model's output in the explained space (shap's ``model.predict``)."""
        predicted = np.asarray(self._fit["explainer"].model.predict(rows), dtype=np.float64)
        predicted = predicted.reshape(rows.shape[0], -1)
        if (
            predicted.shape[1] != values.shape[1]
        ):  # e.g. a binary model whose trees carry one margin
            predicted = values.sum(-1) + expected
        return predicted

    def explanation_map(self, explanation: Explanation, inputs: Any) -> torch.Tensor:
        """The explained class's value of each column: ``(B, M)``."""
        values = explanation.data["shap_values"]
        target = explanation.data["target"]
        return values[torch.arange(values.shape[0], device=values.device), target].to(torch.float32)


class _XGBoostShap:
    """XGBoost's own Tree SHAP (``pred_contribs``/``pred_interactions``) with the calls TreeShap makes of shap's.

    Runs on a copy of the booster set to the device, so the user's model keeps its settings.
    """

    def __init__(self, model: Any, config: TreeShapSettings, background: np.ndarray | None) -> None:
        booster = model.get_booster() if hasattr(model, "get_booster") else model
        if (
            not type(booster).__module__.startswith("xgboost")
            or type(booster).__name__ != "Booster"
        ):
            raise ValueError(
                f"TreeShap: device={config.device!r} selects XGBoost's own Tree SHAP, but the model is a "
                f"{type(model).__name__}; leave device=None for shap's TreeExplainer"
            )
        if background is not None or config.model_output != "raw":
            raise ValueError(
                "TreeShap: XGBoost's Tree SHAP (device=...) is path-dependent on the raw margin: fit() without "
                "background data and model_output='raw'"
            )
        import xgboost  # importable: the model is one of its boosters

        self.xgboost = xgboost
        self.booster = booster.copy()
        self.booster.set_param({"device": config.device})
        self.expected_value: np.ndarray | None = None
        self.model = self  # shap's TreeExplainer has .model.predict: the margin

    def _matrix(self, rows: np.ndarray) -> Any:
        return self.xgboost.DMatrix(rows)

    def shap_values(
        self, rows: np.ndarray, approximate: bool = False, check_additivity: bool = True
    ) -> np.ndarray:
        contributions = self.booster.predict(
            self._matrix(rows), pred_contribs=True, approx_contribs=approximate
        )
        self.expected_value = np.atleast_1d(contributions[0, ..., -1]).astype(np.float64)
        values = contributions[..., :-1]  # (B, M) or (B, K, M): the last column is the bias
        return values if values.ndim == 2 else np.moveaxis(values, 1, -1)

    def shap_interaction_values(self, rows: np.ndarray) -> np.ndarray:
        pairs = self.booster.predict(self._matrix(rows), pred_interactions=True)[..., :-1, :-1]
        return pairs if pairs.ndim == 3 else np.moveaxis(pairs, 1, -1)

    def predict(self, rows: np.ndarray) -> np.ndarray:
        return self.booster.predict(self._matrix(rows), output_margin=True)


def _per_class(values: Any, interactions: bool = False) -> np.ndarray:
    """shap's outputs (a list per class, ``(B, M, K)``, or ``(B, M)``) as ``(B, K, M)`` (or ``(B, K, M, M)``)."""
    if isinstance(values, list):
        return np.stack(values, axis=1)
    values = np.asarray(values)
    single = 3 if interactions else 2
    if values.ndim == single:
        return values[:, None]
    return np.moveaxis(values, -1, 1)


def _as_array(rows: Rows) -> np.ndarray:
    """Checked rows as the contiguous numpy array shap takes (integer codes as float64, as given)."""
    return np.ascontiguousarray(rows.values.cpu().numpy())


@functional_twin(TreeShap)
def tree_shap(
    model: Any,
    inputs: Any,
    background_data: Any = None,
    interactions: bool = False,
    **settings: Any,
) -> Explanation:
    """Functional form of :class:`TreeShap`: fit (on ``background_data`` if given) and explain ``inputs``."""
    return (
        TreeShap(model, **settings).fit(background_data).explain(inputs, interactions=interactions)
    )
