"""The fairness report and ``torchexplain fairness``: what they write equals the functions they
are made of, and the page is self-contained."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
import torch

from torchexplain import cli, fairness

fm = pytest.importorskip("fairlearn.metrics")
pytest.importorskip("matplotlib")

ROWS = 400


@pytest.fixture(scope="module")
def census():
    from torchexplain.datasets import load_census
    from torchexplain.zoo import pretrained_census_mlp

    model, _ = pretrained_census_mlp()
    return load_census(), model.eval()


@pytest.fixture(scope="module")
def report(census, tmp_path_factory):
    data, model = census
    out = tmp_path_factory.mktemp("fairness")
    result = fairness.fairness_report(
        model,
        data.X_test[:ROWS],
        data.y_test[:ROWS],
        out,
        train_data=data.X_train[:3000],
        sensitive=["Sex", "Race"],
        feature_names=data.feature_names,
        categorical_names=data.categorical_names,
        n_boot=60,
        n_repeats=2,
        n_explain=60,
        n_background=20,
        n_anchors=20,
        n_recourse=20,
        device="cpu",
    )
    return data, model, out, result


def test_the_report_holds_the_functions_numbers(report):
    data, model, out, result = report
    written = json.loads((out / "fairness.json").read_text())
    assert written["sensitive"] == ["Sex", "Race"] and written["rows"] == ROWS
    X, y = data.X_test[:ROWS], data.y_test[:ROWS]
    with torch.no_grad():
        pred = model(torch.as_tensor(X)).argmax(1).numpy()
    sex = np.array(data.categorical_names[8])[X[:, 8].astype(int)]
    frame = written["model"]["Sex"]
    selection = frame["metrics"].index("selection_rate")
    for g, label in enumerate(frame["groups"]):
        assert frame["by_group"][g][selection] == pytest.approx(
            pred[sex == label].mean(), abs=1e-12
        )
    disparities = frame["disparities"]
    assert disparities["demographic_parity_difference"] == pytest.approx(
        fm.demographic_parity_difference(y, pred, sensitive_features=sex), abs=1e-12
    )
    assert disparities["equalized_odds_difference"] == pytest.approx(
        fm.equalized_odds_difference(y, pred, sensitive_features=sex), abs=1e-12
    )
    assert "Sex x Race" in written["model"]
    lows, highs = np.array(frame["by_group_ci"][0], float), np.array(frame["by_group_ci"][1], float)
    assert (lows <= np.array(frame["by_group"], float) + 1e-12).all() and (highs >= lows).all()
    # the gap: parts add up, and it is the gap of the model's own mean scores
    split = written["gap"]["by"]["Sex"]
    with torch.no_grad():
        score = torch.softmax(model(torch.as_tensor(X[:60])), 1)[:, 1].double().numpy()
    female, male = split["groups"].index("Female"), split["groups"].index("Male")
    assert split["gap"][female] == pytest.approx(
        score[sex[:60] == "Female"].mean() - score[sex[:60] == "Male"].mean(), abs=1e-6
    )
    assert abs(split["residual"][female]) < 1e-9
    assert split["gap"][male] == 0.0
    flip = fairness.attribute_flip(model, X, 8)
    assert written["flip"]["Sex"]["any_flip_rate"] == flip.any_flip_rate.tolist()
    assert written["flip"]["Sex"]["values"] == ["Female", "Male"]
    assert set(written["data"]["proxies"]["Sex"]) >= {"Relationship"}  # husband / wife
    race = np.array(data.categorical_names[7])[X[:20, 7].astype(int)]
    assert written["recourse"]["by"]["Race"]["groups"] == sorted(set(race))
    recourse = written["recourse"]["by"]["Sex"]
    assert [u - f for u, f in zip(recourse["unfavourable"], recourse["found"])] == recourse[
        "failed"
    ]


def test_the_page_is_self_contained_and_shows_every_step(report):
    from PIL import Image

    _, _, out, _ = report
    page = (out / "fairness.html").read_text()
    for heading in ("1. The data", "2. The model, per group", "3. Explanations, per group"):
        assert heading in page
    for section in (
        "Rows by Sex",
        "By Sex x Race",
        "What carries the gap, by Sex",
        "Anchors by Race",
        "Recourse by Sex",
        "Attribute flip: Race",
    ):
        assert section in page
    assert "http://" not in page and "https://" not in page  # nothing fetched
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) >= 12
    for encoded in images:
        picture = Image.open(io.BytesIO(base64.b64decode(encoded)))
        assert picture.format == "PNG" and min(picture.size) > 100


def test_bad_report_settings(census, tmp_path):
    data, model = census
    X, y = data.X_test[:50], data.y_test[:50]
    with pytest.raises(ValueError, match="sensitive column 'Gender'"):
        fairness.fairness_report(
            model, X, y, tmp_path, sensitive=["Gender"], feature_names=data.feature_names
        )
    with pytest.raises(ValueError, match="steps must be among"):
        fairness.fairness_report(model, X, y, tmp_path, sensitive=[8], steps=["bias"])
    with pytest.raises(ValueError, match="y has 49 rows"):
        fairness.fairness_report(model, X, y[:49], tmp_path, sensitive=[8])


def test_the_command_on_a_saved_model_and_a_csv(census, tmp_path, capsys):
    data, model = census
    traced = torch.jit.trace(model, torch.as_tensor(data.X_test[:4]))
    traced.save(str(tmp_path / "model.pt"))
    names = data.feature_names
    lines = [",".join(names + ["income"])]
    for row, label in zip(data.X_test[:150], data.y_test[:150]):
        lines.append(",".join(f"{v:g}" for v in row) + f",{label}")
    (tmp_path / "rows.csv").write_text("\n".join(lines) + "\n")
    categorical = [names[j] for j in data.categorical_names]
    status = cli.main(
        [
            "fairness",
            "--model",
            str(tmp_path / "model.pt"),
            "--data",
            str(tmp_path / "rows.csv"),
            "--label",
            "income",
            "--categorical",
            *categorical,
            "--sensitive",
            "Sex",
            "--steps",
            "data",
            "model",
            "flip",
            "--n-boot",
            "20",
            "--out",
            str(tmp_path / "out"),
            "--device",
            "cpu",
        ]
    )
    assert status == 0, capsys.readouterr().err
    written = json.loads((tmp_path / "out" / "fairness.json").read_text())
    X, y = data.X_test[:150], data.y_test[:150]
    with torch.no_grad():
        pred = model(torch.as_tensor(X)).argmax(1).numpy()
    expected = fm.demographic_parity_difference(y, pred, sensitive_features=X[:, 8])
    assert written["model"]["Sex"]["disparities"]["demographic_parity_difference"] == pytest.approx(
        expected, abs=1e-12
    )
    # the CSV's codes 0/1 of Sex are its categories' names here
    assert written["model"]["Sex"]["groups"] == ["0", "1"]
    assert (
        cli.main(["fairness", "--data", "x.csv", "--sensitive", "Sex", "--out", str(tmp_path)]) == 2
    )
    assert "give --model, --data and --label" in capsys.readouterr().err


def test_the_report_leaves_the_model_as_found(census, tmp_path):
    data, model = census
    model.train()
    calls = []
    handle = model.register_forward_hook(lambda *args: calls.append(1))
    before = {name: p.requires_grad for name, p in model.named_parameters()}
    try:
        fairness.fairness_report(
            model,
            data.X_test[:120],
            data.y_test[:120],
            tmp_path,
            train_data=data.X_train[:500],
            sensitive=[8],
            feature_names=data.feature_names,
            categorical_names=data.categorical_names,
            n_boot=10,
            n_repeats=1,
            n_explain=20,
            n_background=10,
            n_anchors=10,
            n_recourse=10,
            device="cpu",
        )
        assert model.training
        assert all(p.grad is None for p in model.parameters())
        assert {name: p.requires_grad for name, p in model.named_parameters()} == before
        assert calls  # the user's hook still runs
        assert len(model._forward_hooks) == 1
    finally:
        handle.remove()
        model.eval()
