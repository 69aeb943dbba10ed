"""A batch gives exactly what each instance gives alone (``torch.equal``, not "close").

On the CPU, BLAS rounds a row of a matrix product differently with the number of rows
in the call (:mod:`torchexplain.models.calls`); the model-call layer pads every call to
a multiple of 4 rows, and the methods' own arithmetic on a row never mixes in other
rows. Checked here on the MNIST CNN the demo explains: each digit alone, and inside
batches of 3, 4 and 17 at different positions.
"""

from __future__ import annotations

import pytest
import torch

from torchexplain import (
    AnchorImage,
    Counterfactual,
    CounterfactualProto,
    IntegratedGradients,
    KernelShap,
)
from torchexplain.models import Predictor

#: batch sizes and the position of the digit under test in each
LAYOUTS = [(3, 2), (4, 0), (17, 9)]
#: fields that describe a whole call, not one instance
BATCH_FIELDS = {"importances", "aggregated_importances", "n_model_calls"}
#: fields every instance of a call shares (compared whole)
SHARED_FIELDS = {"expected_value"}
#: fields with one entry per feature, where a batch has as many as its instance with the most
FEATURE_FIELDS = {"shap_values", "varying"}


@pytest.fixture(scope="module")
def digits(mnist_cnn):
    model, test = mnist_cnn
    return model, test.images[:17].clone(), test.images[-40:].clone()


def _same_row(alone, batch, i: int) -> None:
    assert set(alone.data) == set(batch.data)
    for key, value in batch.data.items():
        if key in BATCH_FIELDS:
            continue
        other = alone.data[key]
        if key in SHARED_FIELDS:
            mine = value
        elif isinstance(value, list):
            mine, other = value[i], other[0]
        else:
            mine = value[i : i + 1]
        if isinstance(mine, torch.Tensor):
            if key in FEATURE_FIELDS and mine.shape[-1] > other.shape[-1]:
                # the feature axis spans the batch's largest feature count (superpixels per image):
                # this instance's own features come first, the rest are zero
                assert not mine[..., other.shape[-1] :].any(), key
                mine = mine[..., : other.shape[-1]]
            assert torch.equal(mine, other), key
        else:
            assert mine == other, key


def _check(explain, images: torch.Tensor, digit: int) -> None:
    """``explain(batch)`` of ``images[digit]`` alone equals its row in each layout."""
    alone = explain(images[digit : digit + 1])
    for size, position in LAYOUTS:
        others = [i for i in range(images.shape[0]) if i != digit][: size - 1]
        order = others[:position] + [digit] + others[position:]
        batch = explain(images[order])
        _same_row(alone, batch, position)


def test_padded_calls_give_every_row_the_same_output_at_any_batch_size(digits):
    model, images, _ = digits
    predictor = Predictor(model)  # pads to a multiple of 4 by default
    with torch.no_grad():
        reference = predictor.outputs(images)
        for size in range(1, 18):
            for start in (0, 17 - size):
                assert torch.equal(
                    predictor.outputs(images[start : start + size]), reference[start : start + size]
                )


def test_unpadded_calls_round_differently_on_this_machine(digits):
    """What the padding is for; BLAS libraries that compute rows alike at every batch size skip this."""
    model, images, _ = digits
    with torch.no_grad():
        reference = model(images[:4])
        alone = torch.cat([model(images[i : i + 1]) for i in range(4)])
    if torch.equal(alone, reference):
        pytest.skip("this machine's BLAS gives a row the same bits at batch sizes 1 and 4")
    assert (alone - reference).abs().max() < 1e-4  # rounding, not a different model


def test_counterfactual(digits):
    model, images, _ = digits
    explainer = Counterfactual(model, max_lam_steps=2, max_iter=60, tol=0.05, pad_to_multiple=4)
    _check(explainer.explain, images, digit=0)


def test_counterfactual_proto(digits):
    model, images, train = digits
    explainer = CounterfactualProto(
        model,
        use_kdtree=True,
        theta=10.0,
        k=2,
        c_init=10.0,
        c_steps=2,
        max_iterations=40,
        feature_range=(0.0, 1.0),
        pad_to_multiple=4,
    ).fit(train)
    _check(explainer.explain, images, digit=1)


def test_anchor_image(digits):
    model, images, train = digits
    explainer = AnchorImage(
        model,
        segmentation_kwargs={"n_segments": 15, "compactness": 20, "sigma": 0.5},
        images_background=train[:10],
        seed=0,
        coverage_samples=500,
    )
    _check(explainer.explain, images, digit=2)


def test_kernel_shap(digits):
    model, images, _ = digits
    explainer = KernelShap(model, seed=0).fit(torch.zeros_like(images[:1]))
    _check(explainer.explain, images, digit=3)


def test_integrated_gradients(digits):
    model, images, _ = digits
    explainer = IntegratedGradients(model, n_steps=20)
    _check(explainer.explain, images, digit=4)


def test_integrated_gradients_with_examples_cut_into_pieces(monkeypatch):
    """Images too large for one example's 50 steps in the first chunk (3x64x64 on the CPU:
    32 rows) are cut into pieces (28 + 22 steps), the same pieces wherever the example
    sits; before, the first example was cut 32 + 18 and the others 28 + 22, so an image
    alone and first in a batch differed in the last bit from the same image later on."""
    from torchexplain.integrated_gradients import _PathIntegral

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 5, stride=4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 15 * 15, 3),
    ).eval()
    images = torch.rand(17, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    cuts = []
    integrate = _PathIntegral.integrate

    def spy(self, *args, **kwargs):
        out = integrate(self, *args, **kwargs)
        cuts.append(self.piece)
        return out

    monkeypatch.setattr(_PathIntegral, "integrate", spy)
    explain = IntegratedGradients(model, n_steps=50).explain
    _check(lambda x: explain(x, target=1), images, digit=5)
    assert set(cuts) == {28}  # the examples really were cut, in every call
