"""AnchorText: torchexplain batched vs Alibi 0.9.6's AnchorText on the same classifier and reviews.

Providers, in one run, on held-out reviews of the bundled movie-review snippets, explaining
the zoo's ``ReviewClassifier``:

- ``torchexplain``: ``AnchorText`` on a batch of 16 and of 256 reviews (one call each),
  ``unknown`` and ``similarity`` samplers (``unknown`` also with ``precision_samples="fresh"``), and the ``language_model`` sampler (the zoo's tiny
  masked LM of the reviews) on ``--lm-reviews`` reviews;
- ``alibi``: ``alibi.explainers.AnchorText`` 0.9.6, ``unknown`` sampler, ``spacy.blank("en")``
  as ``nlp`` (no download), one review per call as Alibi explains them, in its own
  environment (Alibi needs numpy < 2; the tests' cached venv), with the same classifier
  run in numpy from the same weights;
- ``floor``: the classifier alone on as many texts as torchexplain's search scored.

Per provider: seconds per review (median of ``--repeats``, after a warm-up), precision
re-estimated on 1,000 fresh samples of each successful anchor (with the provider's own
sampler), coverage and anchor length. Alibi's similarity sampler needs a spaCy model with
vectors and its lexeme probabilities (downloads), and its language-model sampler TensorFlow:
neither is timed here.

Run: ``python benchmarks/bench_anchor_text.py [--device cpu] [--alibi-reviews 16]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import metadata, write_results  # noqa: E402
from torchexplain import AnchorText  # noqa: E402
from torchexplain.anchors.fresh import fresh_precision as anchor_fresh_precision  # noqa: E402
from torchexplain.datasets import load_movie_reviews  # noqa: E402
from torchexplain.zoo import pretrained_review_classifier  # noqa: E402

ALIBI_SCRIPT = r"""
import json, re, sys, time
import numpy as np
import spacy
from alibi.explainers import AnchorText

spec = json.load(open(sys.argv[1]))
weights = np.load(sys.argv[2])
embedding, w, b = weights["embedding"], weights["weight"], weights["bias"]
index = {word: i + 1 for i, word in enumerate(spec["vocab"])}
pattern = re.compile(spec["pattern"])

def predict(texts):
    out = []
    for text in texts:
        ids = [index.get(t, 0) for t in pattern.findall(text.lower())] or [0]
        out.append(np.maximum(embedding[ids].mean(0), 0.0) @ w.T + b)
    return np.asarray(out)

nlp = spacy.blank("en")
explainer = AnchorText(predict, sampling_strategy="unknown", nlp=nlp, seed=0)
results = []
for text in spec["texts"]:
    start = time.perf_counter()
    exp = explainer.explain(text, threshold=0.95)
    seconds = time.perf_counter() - start
    feature = list(exp.raw["feature"])
    precision = None
    if exp.raw["success"]:
        np.random.seed(99)
        _, _, labels, _, _, _ = explainer.sampler((0, tuple(feature)), 1000)
        precision = float(np.mean(labels))
    results.append({"seconds": seconds, "anchor": list(exp.anchor), "success": bool(exp.raw["success"]),
                    "precision": float(exp.precision), "coverage": float(exp.coverage),
                    "fresh_precision": precision})
import alibi
print(json.dumps({"version": alibi.__version__, "spacy": spacy.__version__, "results": results}))
"""


def fresh_precision(explainer: AnchorText, texts: list[str], exp, device: torch.device) -> list:
    """Each successful anchor's precision on 1,000 samples drawn with another seed (None where it failed)."""
    values = anchor_fresh_precision(explainer, texts, exp, n_samples=1000, seed=99)
    return [None if v != v else v for v in values.tolist()]


def quality(exp, fresh: list) -> dict:
    ok = [p for p in fresh if p is not None]
    return {
        "success_rate": float(exp.success.float().mean()),
        "precision": float(exp.precision.mean()),
        "fresh_precision": statistics.mean(ok) if ok else None,
        "fresh_precisions": fresh,
        "coverage": float(exp.coverage.mean()),
        "anchor_length": sum(map(len, exp.anchor)) / len(exp.anchor),
    }


def bench_ours(model, texts, sizes, samplers, repeats, device, extra=None) -> list[dict]:
    rows = []
    for sampler in samplers:
        explainer = AnchorText(
            model, sampling_strategy=sampler, seed=0, device=str(device), **(extra or {})
        )
        explainer.explain(texts[:4])  # warm-up
        for size in sizes:
            batch = texts[:size]
            times, exp = [], None
            for _ in range(repeats):
                start = time.perf_counter()
                exp = explainer.explain(batch)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times.append(time.perf_counter() - start)
            seconds = statistics.median(times)
            scored = int(exp.n_texts_evaluated.sum())
            floor = time_floor(model, batch, scored)
            rows.append(
                {
                    "provider": "torchexplain",
                    "sampler": sampler,
                    "reviews": size,
                    "seconds": seconds,
                    "ms_per_review": 1000 * seconds / size,
                    "reviews_per_s": size / seconds,
                    "texts_scored": scored,
                    "floor_seconds": floor,
                    "vs_floor": seconds / floor,
                    "precision_samples": (extra or {}).get("precision_samples", "reuse"),
                    "search_rounds": exp.meta["search_rounds"],
                    "host_syncs_per_round": exp.meta["host_syncs"]
                    / max(exp.meta["search_rounds"], 1),
                    "anchors": exp.anchor,
                    **quality(exp, fresh_precision(explainer, batch, exp, device)),
                }
            )
            print(
                f"torchexplain {sampler:10s} {rows[-1]['precision_samples']:5s} {size:4d} reviews: "
                f"{1000 * seconds / size:7.1f} ms/review (floor: the model on the {scored} texts "
                f"scored, {1000 * floor / size:.1f} ms/review, {seconds / floor:.2f}x)"
            )
    return rows


def time_floor(model, texts: list[str], n: int) -> float:
    """The classifier alone on ``n`` texts (the reviews repeated), median of 3."""
    many = (texts * (n // len(texts) + 1))[:n]
    times = []
    with torch.no_grad():
        for _ in range(3):
            start = time.perf_counter()
            for chunk in range(0, n, 1024):
                model(many[chunk : chunk + 1024])
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_alibi(model, texts: list[str]) -> dict | str:
    try:
        from tests import _venvs
    except ImportError:
        return "tests/_venvs.py not found (run from a checkout)"
    python = _venvs.ready("alibi")
    if isinstance(python, str):
        return python
    from torchexplain.anchors.tokens import WORD_PATTERN

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        spec = {"vocab": model.vocab, "pattern": WORD_PATTERN.pattern, "texts": texts}
        (folder / "spec.json").write_text(json.dumps(spec))
        linear = model.head[2]
        np.savez(
            folder / "weights.npz",
            embedding=model.embedding.weight.detach().numpy(),
            weight=linear.weight.detach().numpy(),
            bias=linear.bias.detach().numpy(),
        )
        (folder / "run.py").write_text(ALIBI_SCRIPT)
        done = subprocess.run(
            [
                str(python),
                str(folder / "run.py"),
                str(folder / "spec.json"),
                str(folder / "weights.npz"),
            ],
            capture_output=True,
            text=True,
            timeout=3600,
        )
    if done.returncode != 0:
        return f"alibi failed: {done.stderr[-1500:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def common_rows(rows: list[dict], alibi_row: dict | None) -> list[dict]:
    """The rows ``torchexplain bench`` reads: per sampler and batch size, seconds per review of
    torchexplain, Alibi (unknown sampler, when timed) and the floor."""
    out = []
    for row in rows:
        providers = {
            "torchexplain": {"median_s": row["seconds"] / row["reviews"]},
            "floor": {"median_s": row["floor_seconds"] / row["reviews"]},
        }
        if alibi_row and row["sampler"] == alibi_row["sampler"]:
            providers["alibi"] = {"median_s": alibi_row["ms_per_review"] / 1000}
        out.append(
            {
                "method": "anchor_text",
                "config": f"{row['sampler']}"
                + (", fresh precision samples" if row["precision_samples"] == "fresh" else "")
                + f", {row['reviews']} reviews, s per review",
                "providers": providers,
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="16,256")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--alibi-reviews", type=int, default=16)
    parser.add_argument(
        "--lm-reviews",
        type=int,
        default=16,
        help="reviews for the language_model sampler (0: none)",
    )
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--quick", action="store_true", help="16 reviews, one repeat, Alibi on 2 reviews"
    )
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.repeats, args.alibi_reviews = "16", 1, min(args.alibi_reviews, 2)
        args.lm_reviews = min(args.lm_reviews, 4)
    device = torch.device(args.device)
    data = load_movie_reviews()
    model, _ = pretrained_review_classifier()
    texts = data.texts_test
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = bench_ours(
        model.to(device), texts, sizes, ("unknown", "similarity"), args.repeats, device
    )
    rows += bench_ours(
        model.to(device),
        texts,
        sizes,
        ("unknown",),
        args.repeats,
        device,
        {"precision_samples": "fresh"},
    )
    if args.lm_reviews:
        try:
            from torchexplain.zoo import pretrained_review_language_model

            lm, tokenizer, _ = pretrained_review_language_model()
            rows += bench_ours(
                model,
                texts,
                [args.lm_reviews],
                ("language_model",),
                args.repeats,
                device,
                {"language_model": lm.to(device), "tokenizer": tokenizer},
            )
        except ImportError as err:
            print(f"language_model not timed: {err}")
    peer = (
        bench_alibi(model.cpu(), texts[: args.alibi_reviews]) if args.alibi_reviews else "skipped"
    )
    alibi_row = None
    if isinstance(peer, dict):
        results = peer["results"]
        seconds = statistics.median(r["seconds"] for r in results)
        fresh = [r["fresh_precision"] for r in results if r["fresh_precision"] is not None]
        alibi_row = {
            "provider": "alibi",
            "version": peer["version"],
            "spacy": peer["spacy"],
            "sampler": "unknown",
            "reviews": len(results),
            "ms_per_review": 1000 * seconds,
            "mean_ms_per_review": 1000 * statistics.mean(r["seconds"] for r in results),
            "success_rate": statistics.mean(r["success"] for r in results),
            "precision": statistics.mean(r["precision"] for r in results),
            "fresh_precision": statistics.mean(fresh) if fresh else None,
            "fresh_precisions": [r["fresh_precision"] for r in results],
            "coverage": statistics.mean(r["coverage"] for r in results),
            "anchor_length": statistics.mean(len(r["anchor"]) for r in results),
            "anchors": [r["anchor"] for r in results],
        }
        print(
            f"alibi {peer['version']} unknown, one review a call: {alibi_row['ms_per_review']:.0f} ms/review "
            f"(median of {len(results)})"
        )
        for row in rows:
            if row["sampler"] == "unknown":
                row["speedup_vs_alibi"] = alibi_row["ms_per_review"] / row["ms_per_review"]
                print(
                    f"  torchexplain {row['reviews']} reviews: {row['speedup_vs_alibi']:.1f}x Alibi"
                )
    else:
        print(f"alibi not timed: {peer}")
    for row in [*rows, *([alibi_row] if alibi_row else [])]:
        print(
            f"{row['provider']:12s} {row['sampler']:10s} {row['reviews']:4d}: success {row['success_rate']:.2f}, "
            f"precision {row['precision']:.3f} (fresh {row['fresh_precision']}), coverage {row['coverage']:.3f}, "
            f"length {row['anchor_length']:.2f}"
        )
    payload = {
        "meta": metadata(device, benchmark="bench_anchor_text", sizes=sizes),
        "results": common_rows(rows, alibi_row),
        "torchexplain": rows,
        "alibi": alibi_row if alibi_row else {"skipped": peer},
    }
    print(f"wrote {write_results('bench_anchor_text', payload, args.out)}")


if __name__ == "__main__":
    main()
