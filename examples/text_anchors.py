"""Anchors for movie reviews: AnchorText on the bundled review snippets, each sampler, one call each.

Trains the small sentiment classifier (``torchexplain.zoo.ReviewClassifier``: word
embeddings averaged, 64 hidden, fresh/rotten) on the bundled Rotten Tomatoes snippets,
or loads it from the cache, explains 100 held-out reviews with each sampler
(``unknown``: words replaced by UNK; ``similarity``: by one of their 100 nearest GloVe
words; ``language_model``, when transformers is installed: filled by a tiny masked
language model of the reviews, trained here in about a minute the first time, on the
first 20 reviews), prints a few anchors with their precision and coverage and the time
per review, and writes ``text_anchors_<sampler>.json`` (every explanation) and
``text_anchors_<sampler>.png`` (the first reviews with their anchor's words highlighted).

Run: ``python examples/text_anchors.py [out_dir] [--reviews N] [--lm-reviews N]`` (offline; CPU
unless CUDA).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import torchexplain
from torchexplain.datasets import load_movie_reviews
from torchexplain.zoo import pretrained_review_classifier, pretrained_review_language_model

SAMPLERS = ("unknown", "similarity", "language_model")


def run(
    out_dir: str | Path = "demo_out",
    n_reviews: int = 100,
    device: str | None = None,
    seed: int = 0,
    n_lm_reviews: int = 20,
) -> dict:
    """Explain ``n_reviews`` held-out reviews with each sampler; write JSON and pictures; return a summary."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = load_movie_reviews()
    model, cached = pretrained_review_classifier()
    model = model.to(device)
    with torch.no_grad():
        accuracy = float((model(data.texts_test).argmax(1).cpu().numpy() == data.y_test).mean())
    texts = data.texts_test[:n_reviews]
    summary: dict = {
        "reviews": len(texts),
        "device": device,
        "classifier_test_accuracy": round(accuracy, 4),
        "classifier_from_cache": cached,
        "samplers": {},
    }
    print(f"review classifier: test accuracy {accuracy:.3f} on {len(data.y_test)} held-out reviews")
    for sampler in SAMPLERS:
        extra: dict = {}
        batch = texts
        if sampler == "language_model":
            try:
                lm, tokenizer, _ = pretrained_review_language_model()
            except ImportError as err:
                print(f"language_model: skipped ({err})")
                continue
            extra = {"language_model": lm.to(device), "tokenizer": tokenizer}
            batch = texts[:n_lm_reviews]
        explainer = torchexplain.AnchorText(
            model, sampling_strategy=sampler, seed=seed, device=device, **extra
        )
        explainer.explain(batch[:2])  # warm-up: word vectors loaded, first calls made
        start = time.perf_counter()
        explanation = explainer.explain(batch)
        seconds = time.perf_counter() - start
        (out / f"text_anchors_{sampler}.json").write_text(explanation.to_json())
        picture = explainer.draw(
            batch[:8], _first(explanation, 8), out / f"text_anchors_{sampler}.png"
        )
        success = explanation.success.float().mean().item()
        print(
            f"{sampler}: {len(batch)} reviews in {seconds:.1f} s ({1000 * seconds / len(batch):.0f} ms per "
            f"review); {100 * success:.0f} % found an anchor"
        )
        for i in range(min(3, len(batch))):
            label = data.class_names[int(explanation.target[i])]
            print(
                f"  [{label}] {batch[i][:70]!r}: anchor {explanation.anchor[i]} "
                f"(precision {float(explanation.precision[i]):.2f}, coverage {float(explanation.coverage[i]):.2f})"
            )
        print(f"  wrote {out / f'text_anchors_{sampler}.json'} and {picture}")
        summary["samplers"][sampler] = {
            "reviews": len(batch),
            "seconds": round(seconds, 3),
            "ms_per_review": round(1000 * seconds / len(batch), 2),
            "success_rate": round(success, 4),
            "mean_precision": round(float(explanation.precision.mean()), 4),
            "mean_coverage": round(float(explanation.coverage.mean()), 4),
            "mean_anchor_length": round(sum(map(len, explanation.anchor)) / len(batch), 3),
            "texts_evaluated": int(explanation.n_texts_evaluated.sum()),
        }
    (out / "text_anchors_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _first(explanation: torchexplain.Explanation, n: int) -> torchexplain.Explanation:
    """The explanation of the first ``n`` texts (for the picture)."""
    data = {
        key: value[:n] if isinstance(value, (list, torch.Tensor)) else value
        for key, value in explanation.data.items()
    }
    return torchexplain.Explanation(explanation.meta, data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default="demo_out", help="where the files go")
    parser.add_argument("--reviews", type=int, default=100, help="held-out reviews to explain")
    parser.add_argument(
        "--lm-reviews",
        type=int,
        default=20,
        help="reviews explained with the language_model sampler",
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    args = parser.parse_args()
    run(args.out_dir, args.reviews, args.device, n_lm_reviews=args.lm_reviews)


if __name__ == "__main__":
    main()
