"""save/load: safe (no pickle, allow-listed classes, checksums), stable, and exact.

The round trip of every explainer is in test_contract.py; here are the refusals, the
stored model program, callables that must be passed again, and file permissions.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import torchexplain
from torchexplain import AnchorImage, Counterfactual, IntegratedGradients, load_explainer
from torchexplain.models.exported import ExportedModel
from torchexplain.saving import CONFIG_FILE, FORMAT_VERSION, MODEL_FILE, TENSORS_FILE

from .test_contract import CASES, _explain, anchor_inputs, assert_same, ig_model

F64 = torch.float64


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4)
    ).eval()


def fitted_counterfactual(tmp_path: Path) -> tuple[Counterfactual, Path]:
    model = nn.Sequential(nn.Linear(5, 3)).to(F64)
    explainer = Counterfactual(model, max_lam_steps=1, max_iter=20).fit(
        torch.rand(10, 5, dtype=F64)
    )
    return explainer, explainer.save(tmp_path / "cf")


def edit_config(folder: Path, change) -> None:
    config = json.loads((folder / CONFIG_FILE).read_text())
    change(config)
    (folder / CONFIG_FILE).write_text(json.dumps(config))


def rewrite_tensors(folder: Path, change) -> None:
    """Rewrite the safetensors file and record its new checksum (a careful tamperer)."""
    tensors = load_file(str(folder / TENSORS_FILE))
    change(tensors)
    save_file(tensors, str(folder / TENSORS_FILE))
    digest = "sha256:" + hashlib.sha256((folder / TENSORS_FILE).read_bytes()).hexdigest()
    edit_config(folder, lambda c: c["files"].__setitem__(TENSORS_FILE, digest))


# ----------------------------------------------------------------------------- the folder


def test_the_folder_is_plain_json_and_safetensors_readable_by_others(tmp_path):
    explainer, folder = fitted_counterfactual(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_FILE, TENSORS_FILE]
    config = json.loads((folder / CONFIG_FILE).read_text())
    assert config["format_version"] == FORMAT_VERSION and config["explainer"] == "Counterfactual"
    assert config["torchexplain_version"] == torchexplain.__version__
    assert config["settings"]["max_iter"] == 20 and config["fitted"] == {"fitted": True}
    assert config["tensors"] == {"fitted/mad": {"dtype": "float64", "shape": [5]}}
    assert torch.equal(load_file(str(folder / TENSORS_FILE))["fitted/mad"], explainer.mad)
    umask = os.umask(0)
    os.umask(umask)
    for name in (CONFIG_FILE, TENSORS_FILE):
        assert (folder / name).stat().st_mode & 0o777 == 0o666 & ~umask, (
            name
        )  # not safetensors' 0600


def test_loading_never_unpickles(tmp_path, monkeypatch):
    case = next(
        c for c in CASES if c.cls is AnchorImage
    )  # background images in the safetensors file
    explainer = case.explainer()
    explainer.save(tmp_path / "anchor")

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used while loading")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    loaded = load_explainer(tmp_path / "anchor", model=explainer.model)
    assert torch.equal(loaded.settings.images_background, explainer.settings.images_background)


def test_saving_again_replaces_a_stale_model_program(tmp_path):
    model = small_cnn()
    explainer = IntegratedGradients(model, n_steps=4)
    explainer.save(tmp_path / "ig", example_inputs=torch.rand(2, 1, 6, 6))
    assert (tmp_path / "ig" / MODEL_FILE).is_file()
    explainer.save(tmp_path / "ig")
    assert not (tmp_path / "ig" / MODEL_FILE).exists()
    with pytest.raises(ValueError, match=r"model was not saved with the explainer; pass it"):
        load_explainer(tmp_path / "ig")


# ----------------------------------------------------------------------------- refusals


def test_an_unknown_explainer_is_refused(tmp_path):
    _, folder = fitted_counterfactual(tmp_path)
    edit_config(folder, lambda c: c.__setitem__("explainer", "os.system"))
    with pytest.raises(ValueError, match=r"explainer.json: unknown explainer 'os.system'"):
        load_explainer(folder, model=nn.Linear(5, 3))


def test_a_newer_format_is_refused(tmp_path):
    _, folder = fitted_counterfactual(tmp_path)
    edit_config(folder, lambda c: c.__setitem__("format_version", FORMAT_VERSION + 1))
    with pytest.raises(
        ValueError, match=rf"written in format {FORMAT_VERSION + 1} .* upgrade torchexplain"
    ):
        load_explainer(folder, model=nn.Linear(5, 3))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda t: t.pop("fitted/mad"),
            r"holds tensors \[\] but explainer.json declares \['fitted/mad'\]",
        ),
        (
            lambda t: t.__setitem__("fitted/mad", torch.ones(6, dtype=F64)),
            r"is float64 \[6\] but explainer.json declares",
        ),
        (
            lambda t: t.__setitem__("fitted/mad", torch.ones(5)),
            r"is float32 \[5\] but explainer.json declares",
        ),
        (
            lambda t: t.__setitem__("extra", torch.ones(1)),
            r"holds tensors \['extra', 'fitted/mad'\]",
        ),
    ],
    ids=["missing", "wrong-shape", "wrong-dtype", "extra"],
)
def test_missing_or_mismatched_tensors_are_refused(tmp_path, change, message):
    _, folder = fitted_counterfactual(tmp_path)
    rewrite_tensors(folder, change)
    with pytest.raises(ValueError, match=message):
        load_explainer(folder, model=nn.Linear(5, 3).to(F64))


def test_a_tampered_tensor_file_is_refused(tmp_path):
    _, folder = fitted_counterfactual(tmp_path)
    data = bytearray((folder / TENSORS_FILE).read_bytes())
    data[-1] ^= 0xFF  # one bit of the MAD's last value
    (folder / TENSORS_FILE).write_bytes(bytes(data))
    with pytest.raises(
        ValueError, match=r"tensors.safetensors: its SHA-256 differs .* changed after saving"
    ):
        load_explainer(folder, model=nn.Linear(5, 3).to(F64))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: c["settings"].__setitem__("max_iter", -5),
            r"stored settings are not valid for Counterfactual: max_iter must be an int >= 1",
        ),
        (
            lambda c: c["settings"].__setitem__("max_iter", "many"),
            r"not valid for Counterfactual: max_iter must be an int",
        ),
        (
            lambda c: c["settings"].__setitem__("surprise", 1),
            r"not valid for Counterfactual: .*unknown setting",
        ),
        (lambda c: c.__setitem__("code", "import os"), r"expected the keys"),
        (
            lambda c: c["settings"].__setitem__(
                "target_class", {"__tag__": "tensor", "key": "nowhere"}
            ),
            r"refers to tensor 'nowhere'",
        ),
        (
            lambda c: c["settings"].__setitem__(
                "target_proba", {"__tag__": "dtype", "name": "load"}
            ),
            r"dtype 'load' is not one of",
        ),
        (lambda c: c["fitted"].__setitem__("fitted", "yes"), r"fitted state must be"),
    ],
    ids=[
        "bad-value",
        "bad-type",
        "unknown-setting",
        "unknown-key",
        "dangling-tensor",
        "dtype-lookup",
        "fitted",
    ],
)
def test_a_tampered_config_is_refused_naming_the_file(tmp_path, change, message):
    _, folder = fitted_counterfactual(tmp_path)
    edit_config(folder, change)
    with pytest.raises(ValueError, match=message) as raised:
        load_explainer(folder, model=nn.Linear(5, 3).to(F64))
    assert str(folder) in str(raised.value)


def test_not_a_saved_explainer(tmp_path):
    with pytest.raises(ValueError, match="explainer.json: not found"):
        load_explainer(tmp_path)
    (tmp_path / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_explainer(tmp_path)
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="not a torchexplain explainer file"):
        load_explainer(tmp_path)


def test_a_black_box_explainer_needs_its_predictor_again(tmp_path):
    case = next(c for c in CASES if c.cls is AnchorImage)
    explainer = case.explainer()
    with pytest.raises(ValueError, match="black-box: its predictor is never saved"):
        explainer.save(tmp_path / "a", example_inputs=anchor_inputs())
    explainer.save(tmp_path / "a")
    with pytest.raises(
        ValueError, match=r"the predictor was not saved with the explainer; pass it"
    ):
        load_explainer(tmp_path / "a")
    with pytest.raises(TypeError, match=r"unknown setting\(s\) \['thresold'\]"):
        load_explainer(tmp_path / "a", model=explainer.model, thresold=0.9)


def test_callable_settings_are_not_stored_and_must_be_passed_again(tmp_path):
    def quadrants(image: np.ndarray) -> np.ndarray:
        return (np.arange(12)[:, None] // 6) * 2 + np.arange(12)[None, :] // 6

    case = next(c for c in CASES if c.cls is AnchorImage)
    model = case.model()
    settings = {**case.settings, "segmentation_fn": quadrants}
    settings.pop("segmentation_kwargs")
    explainer = AnchorImage(model, **settings)
    want = explainer.explain(anchor_inputs())
    explainer.save(tmp_path / "a")
    assert "quadrants" in (tmp_path / "a" / CONFIG_FILE).read_text()
    with pytest.raises(
        ValueError,
        match=r"segmentation_fn \(was .*quadrants\) were callables.*segmentation_fn=\.\.\.",
    ):
        load_explainer(tmp_path / "a", model=model)
    loaded = load_explainer(tmp_path / "a", model=model, segmentation_fn=quadrants)
    assert_same(loaded.explain(anchor_inputs()).data, want.data, case)


# ----------------------------------------------------------------------------- the model program


def test_a_white_box_explainer_can_store_its_model_as_an_export_program(tmp_path):
    case = next(c for c in CASES if c.cls is IntegratedGradients)
    model = ig_model().eval()
    explainer = IntegratedGradients(model, **case.settings)
    inputs = case.inputs()
    want = _explain(case, explainer, inputs)
    explainer.save(tmp_path / "ig", example_inputs=inputs[:2])
    loaded = load_explainer(tmp_path / "ig")
    assert isinstance(loaded.model, ExportedModel)
    got = _explain(case, loaded, inputs)  # other batch sizes than the example's
    assert_same(got.data, want.data, case)
    # and saved again from the loaded one, without the original module
    loaded.save(tmp_path / "again", example_inputs=inputs[:1])
    assert_same(_explain(case, load_explainer(tmp_path / "again"), inputs).data, want.data, case)


def test_the_model_program_is_exported_in_eval_mode_and_the_module_left_as_found(tmp_path):
    model = ig_model().train()
    before = [m.training for m in model.modules()]
    explainer = IntegratedGradients(model, n_steps=4)
    explainer.save(tmp_path / "ig", example_inputs=torch.rand(2, 1, 6, 6, dtype=F64))
    assert [m.training for m in model.modules()] == before
    x = torch.rand(3, 1, 6, 6, dtype=F64)
    want = explainer.explain(x).attributions  # explained in eval mode (dropout off)
    torch.testing.assert_close(
        load_explainer(tmp_path / "ig").explain(x).attributions, want, rtol=1e-12, atol=1e-14
    )


def _rewrite_archive(path: Path, edit) -> None:
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    edit(entries)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    folder = path.parent
    digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    edit_config(folder, lambda c: c["files"].__setitem__(MODEL_FILE, digest))


def _mark_pickled(entries: dict[str, bytes]) -> None:
    name = next(n for n in entries if n.endswith("model_weights_config.json"))
    config = json.loads(entries[name])
    first = next(iter(config["config"]))
    config["config"][first]["use_pickle"] = True
    entries[name] = json.dumps(config).encode()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_mark_pickled, r"is stored as a pickle; refusing to load it"),
        (
            lambda e: e.__setitem__(
                next(iter(e)).split("/")[0] + "/data/constants/opaque_obj_0", b"cos\nsystem\n"
            ),
            r"holds '.*opaque_obj_0'",
        ),
        (
            lambda e: e.__setitem__(
                next(n for n in e if n.endswith("sample_inputs/model.pt")), pickle.dumps(print)
            ),
            r"example inputs do not load with torch.load\(weights_only=True\)",
        ),
    ],
    ids=["pickled-weight", "extra-entry", "unsafe-example-inputs"],
)
def test_an_export_archive_that_would_unpickle_is_refused(tmp_path, edit, message):
    explainer = IntegratedGradients(small_cnn(), n_steps=4)
    explainer.save(tmp_path / "ig", example_inputs=torch.rand(2, 1, 6, 6))
    _rewrite_archive(tmp_path / "ig" / MODEL_FILE, edit)
    with pytest.raises(ValueError, match=message):
        load_explainer(tmp_path / "ig")
    # with the model passed in, the archive is not read at all
    load_explainer(tmp_path / "ig", model=small_cnn())


def test_a_tampered_model_program_is_refused(tmp_path):
    explainer = IntegratedGradients(small_cnn(), n_steps=4)
    explainer.save(tmp_path / "ig", example_inputs=torch.rand(2, 1, 6, 6))
    with (tmp_path / "ig" / MODEL_FILE).open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ValueError, match=r"model.pt2: its SHA-256 differs"):
        load_explainer(tmp_path / "ig")
