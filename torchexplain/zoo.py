"""Small models for the demo, the tests and the benchmarks.

``MnistCNN`` is the classic two-convolution MNIST network (as in PyTorch's MNIST
example). ``pretrained_mnist_cnn`` trains it on the offline MNIST data in well
under a minute on a laptop CPU, or loads the checkpoint a previous call cached.
``CensusMLP`` is the small loan-approval classifier of the tabular examples, and
``pretrained_census_mlp`` trains it on the bundled census table in seconds.
``MnistAutoencoder`` is the small convolutional autoencoder whose encoder gives
``CounterfactualProto`` its class prototypes (Alibi's MNIST example has one like
it); ``pretrained_mnist_autoencoder`` trains and caches it like the CNN.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchexplain.anchors.tokens import WORD_PATTERN
from torchexplain.datasets import load_census, load_mnist, load_movie_reviews


class MnistCNN(nn.Module):
    """Conv(1→32, 3) → ReLU → Conv(32→64, 3) → ReLU → MaxPool(2) → Dropout → FC(9216→128) → ReLU → Dropout → FC(128→10).

    Input ``(B, 1, 28, 28)`` in [0, 1]; output ``(B, 10)`` logits.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Dropout(0.25),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(9216, 128),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(128, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def default_cache_dir() -> Path:
    """``$TORCHEXPLAIN_CACHE``, else ``$XDG_CACHE_HOME/torchexplain``, else ``~/.cache/torchexplain``."""
    if "TORCHEXPLAIN_CACHE" in os.environ:
        return Path(os.environ["TORCHEXPLAIN_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "torchexplain"


def _train(
    build: Callable[[], nn.Module],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> nn.Module:
    """Adam on shuffled mini-batches, deterministic for a seed; the model comes back in eval
    mode without gradients. The caller's global RNG is left as it was (initialisation and
    dropout draw from a forked stream)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        shuffle = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(inputs.shape[0], generator=shuffle)
            for start in range(0, inputs.shape[0], batch_size):
                batch = order[start : start + batch_size]
                optimizer.zero_grad(set_to_none=True)
                loss_fn(model(inputs[batch]), targets[batch]).backward()
                optimizer.step()
    model.eval()
    for p in model.parameters():
        p.grad = None
    return model


def _cached(
    path: Path, model: nn.Module, retrain: bool, train: Callable[[], nn.Module]
) -> tuple[nn.Module, bool]:
    """``model`` with the checkpoint at ``path`` when there is one (unless ``retrain``), else
    ``train()``, saved there atomically; returns ``(model, from_cache)``."""
    if path.is_file() and not retrain:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval(), True
    model = train()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp_path)
    tmp_path.replace(path)
    return model, False


def train_mnist_cnn(
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int = 3,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
) -> MnistCNN:
    """Train a fresh :class:`MnistCNN` with Adam on CPU; deterministic for a seed.

    The caller's global RNG is left as it was (initialisation and dropout draw
    from a forked stream).
    """
    return _train(
        MnistCNN, images, labels, nn.functional.cross_entropy, epochs, batch_size, lr, seed
    )


def pretrained_mnist_cnn(
    cache_dir: str | Path | None = None,
    data_root: str | Path | None = None,
    epochs: int = 3,
    seed: int = 0,
    retrain: bool = False,
) -> tuple[MnistCNN, bool]:
    """A trained :class:`MnistCNN` in eval mode, from the cache when possible.

    Args:
        cache_dir: where checkpoints live (default :func:`default_cache_dir`).
        data_root: passed to :func:`~torchexplain.datasets.load_mnist`.
        epochs, seed: training settings; part of the checkpoint's key.
        retrain: ignore a cached checkpoint.

    Returns:
        ``(model, from_cache)``.
    """
    train = load_mnist("train", root=data_root)
    key = hashlib.sha1(f"{train.source}|{len(train.labels)}|{epochs}|{seed}".encode()).hexdigest()[
        :12
    ]
    path = Path(cache_dir or default_cache_dir()) / f"mnist_cnn-{key}.pt"
    return _cached(
        path,
        MnistCNN(),
        retrain,
        lambda: train_mnist_cnn(train.images, train.labels, epochs=epochs, seed=seed),
    )


class CensusMLP(nn.Module):
    """The loan classifier: coded census rows ``(B, 12)`` -> one-hot / standardised (65) -> 64 -> 64 -> 2 logits.

    Categorical columns arrive as integer codes (the layout AnchorTabular and Alibi
    explain) and are one-hot encoded inside the model; numerical columns are
    standardised with the training statistics held as buffers.
    """

    def __init__(self, n_columns: int, categories: dict[int, int], hidden: int = 64) -> None:
        super().__init__()
        self.categorical = sorted(categories)
        self.sizes = [categories[c] for c in self.categorical]
        self.numerical = [c for c in range(n_columns) if c not in categories]
        self.register_buffer("mean", torch.zeros(len(self.numerical)))
        self.register_buffer("std", torch.ones(len(self.numerical)))
        width = sum(self.sizes) + len(self.numerical)
        self.layers = nn.Sequential(
            nn.Linear(width, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 2),
        )

    def encode(self, rows: torch.Tensor) -> torch.Tensor:
        """``(B, 12)`` coded rows -> ``(B, 65)`` network inputs."""
        parts = [(rows[:, self.numerical] - self.mean) / self.std]
        for column, size in zip(self.categorical, self.sizes, strict=True):
            codes = rows[:, column].round().long().clamp(0, size - 1)
            parts.append(nn.functional.one_hot(codes, size).to(rows.dtype))
        return torch.cat(parts, dim=1)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.layers(self.encode(rows.to(self.mean.dtype)))


class Probabilities(nn.Module):
    """A classifier's softmax probabilities ``(B, K)``: what KernelShap and AnchorTabular explain as scores."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.model(rows).softmax(1)


def pretrained_census_mlp(
    cache_dir: str | Path | None = None, epochs: int = 8, seed: int = 0, retrain: bool = False
) -> tuple[CensusMLP, bool]:
    """A trained :class:`CensusMLP` in eval mode (bundled census table, default split), from the cache when possible.

    Returns:
        ``(model, from_cache)``.
    """
    data = load_census()
    categories = {c: len(names) for c, names in data.categorical_names.items()}
    model = CensusMLP(data.X_train.shape[1], categories)
    key = hashlib.sha1(f"census|{len(data.y_train)}|{epochs}|{seed}|v1".encode()).hexdigest()[:12]
    path = Path(cache_dir or default_cache_dir()) / f"census_mlp-{key}.pt"
    X = torch.from_numpy(data.X_train)
    y = torch.from_numpy(data.y_train)

    def build() -> CensusMLP:
        fresh = CensusMLP(X.shape[1], categories)
        fresh.mean.copy_(X[:, fresh.numerical].mean(0))
        fresh.std.copy_(X[:, fresh.numerical].std(0).clamp_min(1e-6))
        return fresh

    return _cached(
        path,
        model,
        retrain,
        lambda: _train(build, X, y, nn.functional.cross_entropy, epochs, 256, 2e-3, seed),
    )


class MnistAutoencoder(nn.Module):
    """Encoder Conv(1→16, 3) → ReLU → Conv(16→16, 3) → ReLU → MaxPool(2) → Conv(16→1, 3): a (1, 14, 14) code;
    decoder Conv(1→16, 3) → ReLU → Upsample(2) → Conv(16→16, 3) → ReLU → Conv(16→1, 3) → Sigmoid.

    Every convolution keeps the size (padding 1). Input and output ``(B, 1, 28, 28)`` in [0, 1].
    """

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 1, 3, padding=1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 1, 3, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def pretrained_mnist_autoencoder(
    cache_dir: str | Path | None = None,
    data_root: str | Path | None = None,
    epochs: int = 8,
    seed: int = 0,
    retrain: bool = False,
) -> tuple[MnistAutoencoder, bool]:
    """A trained :class:`MnistAutoencoder` in eval mode (mean squared error, Adam), from the cache when possible.

    Returns:
        ``(model, from_cache)``.
    """
    train = load_mnist("train", root=data_root)
    key = hashlib.sha1(
        f"ae|{train.source}|{len(train.labels)}|{epochs}|{seed}".encode()
    ).hexdigest()[:12]
    path = Path(cache_dir or default_cache_dir()) / f"mnist_ae-{key}.pt"
    return _cached(
        path,
        MnistAutoencoder(),
        retrain,
        lambda: _train(
            MnistAutoencoder,
            train.images,
            train.images,
            nn.functional.mse_loss,
            epochs,
            64,
            2e-3,
            seed,
        ),
    )


class ReviewClassifier(nn.Module):
    """The movie-review sentiment classifier: texts -> words (lower case, the default tokeniser of
    :mod:`torchexplain.anchors.tokens`) -> mean of 64-d word embeddings -> 64 -> 2 logits
    (rotten, fresh).

    It takes a list of N strings and returns ``(N, 2)`` logits, so it is an AnchorText
    predictor as it is. Words outside ``vocab`` (and ``UNK``) share embedding 0.
    """

    def __init__(self, vocab: list[str], dim: int = 64) -> None:
        super().__init__()
        self.vocab = list(vocab)
        self.index = {word: i + 1 for i, word in enumerate(self.vocab)}
        self.embedding = nn.EmbeddingBag(len(self.vocab) + 1, dim, mode="mean")
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(0.3), nn.Linear(dim, 2))

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids, offsets)`` of the texts' words, as ``nn.EmbeddingBag`` takes them (an empty text
        counts as one unknown word)."""
        index = self.index
        ids: list[int] = []
        offsets: list[int] = []
        for text in texts:
            offsets.append(len(ids))
            words = WORD_PATTERN.findall(text.lower())
            ids.extend([index.get(w, 0) for w in words] or [0])
        device = self.embedding.weight.device
        return torch.tensor(ids, device=device), torch.tensor(offsets, device=device)

    def forward(self, texts: list[str]) -> torch.Tensor:
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
            raise TypeError(
                f"ReviewClassifier takes a list of texts (str), got {type(texts).__name__}"
            )
        return self.head(self.embedding(*self.encode(list(texts))))


def review_vocabulary(texts: list[str], min_count: int = 2) -> list[str]:
    """The words (lower case) seen at least ``min_count`` times, most frequent first (ties alphabetical)."""
    counts = Counter(w for text in texts for w in WORD_PATTERN.findall(text.lower()))
    return [w for w, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_count]


def pretrained_review_classifier(
    cache_dir: str | Path | None = None, epochs: int = 6, seed: int = 0, retrain: bool = False
) -> tuple[ReviewClassifier, bool]:
    """A trained :class:`ReviewClassifier` in eval mode (bundled movie reviews, default split), from the
    cache when possible. Its accuracy on the held-out films is in the docs (AnchorText page).

    Returns:
        ``(model, from_cache)``.
    """
    data = load_movie_reviews()
    vocab = review_vocabulary(data.texts_train)
    key = hashlib.sha1(f"reviews|{len(vocab)}|{epochs}|{seed}|v1".encode()).hexdigest()[:12]
    path = Path(cache_dir or default_cache_dir()) / f"review_classifier-{key}.pt"

    def train() -> ReviewClassifier:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = ReviewClassifier(vocab)
            optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
            targets = torch.from_numpy(data.y_train)
            shuffle = torch.Generator().manual_seed(seed)
            model.train()
            for _ in range(epochs):
                order = torch.randperm(len(targets), generator=shuffle).tolist()
                for start in range(0, len(order), 64):
                    batch = order[start : start + 64]
                    optimizer.zero_grad(set_to_none=True)
                    logits = model([data.texts_train[i] for i in batch])
                    nn.functional.cross_entropy(logits, targets[batch]).backward()
                    optimizer.step()
        model.eval()
        for p in model.parameters():
            p.grad = None
        return model

    return _cached(path, ReviewClassifier(vocab), retrain, train)


def pretrained_review_language_model(
    cache_dir: str | Path | None = None, epochs: int = 2, seed: int = 0, retrain: bool = False
) -> tuple[Any, Any, bool]:
    """A tiny masked language model of the bundled movie reviews, for AnchorText's
    ``language_model`` sampler in the tests and the demo: a WordPiece vocabulary of 3,000 pieces
    learnt from the training snippets (``tokenizers``) and a 2-layer, 64-wide BERT trained on
    them with masked-word prediction (``transformers``), from the cache when possible.

    It exercises the sampler's plumbing on any machine in about a minute; it is **not** a good
    language model (its fills are often ungrammatical): for real explanations load a trained
    one (``AutoModelForMaskedLM.from_pretrained(path, local_files_only=True)``).

    Returns:
        ``(model, tokenizer, from_cache)``: a ``BertForMaskedLM`` in eval mode and its
        ``PreTrainedTokenizerFast``.

    Raises:
        ImportError: ``transformers`` or ``tokenizers`` is not installed (``pip install
            "torchexplain[text]"``).
    """
    from torchexplain.anchors.text_language_model import import_transformers, load_language_model

    transformers = import_transformers()
    import tokenizers  # a dependency of transformers

    data = load_movie_reviews()
    key = hashlib.sha1(f"review-lm|{len(data.texts_train)}|{epochs}|{seed}|v2".encode()).hexdigest()
    folder = Path(cache_dir or default_cache_dir()) / f"review_lm-{key[:12]}"
    if (folder / "ready").is_file() and not retrain:
        model, tokenizer = load_language_model(folder)
        return model, tokenizer, True
    pieces = tokenizers.BertWordPieceTokenizer(lowercase=True)
    pieces.train_from_iterator(data.texts_train, vocab_size=3000, min_frequency=2)
    folder.mkdir(parents=True, exist_ok=True)
    pieces.save(str(folder / "pieces.json"))
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(folder / "pieces.json"),
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=128,
    )
    config = transformers.BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=128,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.BertForMaskedLM(config)
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
        shuffle = torch.Generator().manual_seed(seed)
        special = torch.tensor(sorted(tokenizer.all_special_ids))
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(data.texts_train), generator=shuffle).tolist()
            for start in range(0, len(order), 64):
                batch = tokenizer(
                    [data.texts_train[i] for i in order[start : start + 64]],
                    padding=True,
                    truncation=True,
                    max_length=128,
                    return_tensors="pt",
                )
                ids = batch["input_ids"]
                chosen = (torch.rand(ids.shape) < 0.15) & ~torch.isin(ids, special)
                labels = torch.where(chosen, ids, -100)
                masked = torch.where(chosen, tokenizer.mask_token_id, ids)
                optimizer.zero_grad(set_to_none=True)
                out = model(input_ids=masked, attention_mask=batch["attention_mask"], labels=labels)
                out.loss.backward()
                optimizer.step()
    model.eval()
    for p in model.parameters():
        p.grad = None
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)
    (folder / "ready").write_text("trained\n")
    return model, tokenizer, False
