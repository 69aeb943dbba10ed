"""Alibi's Counterfactual / CounterfactualProto on the MNIST CNN, one digit at a time.

Run by ``bench_counterfactual.py`` with the Python of an environment that has
``alibi`` 0.9.6 and TensorFlow (they need numpy < 2, so not torchexplain's):

    <alibi-venv>/bin/python benchmarks/_alibi_counterfactual.py IN.npz OUT.json

``IN.npz`` holds the CNN's weights in PyTorch's layout (``conv1.w`` ...; with
``ae.e0.w`` ... also the MnistAutoencoder's, for the encoder mode of ``"proto"``), the
digits ``x`` (N, 1, 28, 28), ``method`` ("cf" or "proto"), the settings as JSON
and, for ``"proto"``, the training digits ``train`` the prototypes come from.
The network is rebuilt in Keras (channels last) with the same weights, so both
libraries explain the same function; the Keras probabilities on the digits are
written beside the results so the port can be checked. Per digit it writes
found, L1, time, Adam steps (``apply_gradients`` runs) and the class reached.
This file imports nothing from torchexplain.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def keras_cnn(weights: dict, tf):
    """MnistCNN in Keras: Conv(32,3)-ReLU-Conv(64,3)-ReLU-MaxPool(2)-Dense(128)-ReLU-Dense(10)-Softmax."""
    layers = tf.keras.layers
    inputs = layers.Input((28, 28, 1))
    h = layers.Conv2D(32, 3, activation="relu", name="conv1")(inputs)
    h = layers.Conv2D(64, 3, activation="relu", name="conv2")(h)
    h = layers.MaxPooling2D(2)(h)
    h = layers.Flatten()(h)
    h = layers.Dense(128, activation="relu", name="fc1")(h)
    h = layers.Dense(10, name="fc2")(h)
    outputs = layers.Softmax()(h)
    model = tf.keras.Model(inputs, outputs)
    # PyTorch (out, in, kh, kw) -> Keras (kh, kw, in, out).
    model.get_layer("conv1").set_weights(
        [weights["conv1.w"].transpose(2, 3, 1, 0), weights["conv1.b"]]
    )
    model.get_layer("conv2").set_weights(
        [weights["conv2.w"].transpose(2, 3, 1, 0), weights["conv2.b"]]
    )
    # PyTorch flattens (C, H, W), Keras (H, W, C): reorder fc1's input axis to match.
    fc1 = weights["fc1.w"].reshape(128, 64, 12, 12).transpose(2, 3, 1, 0).reshape(9216, 128)
    model.get_layer("fc1").set_weights([fc1, weights["fc1.b"]])
    model.get_layer("fc2").set_weights([weights["fc2.w"].T, weights["fc2.b"]])
    return model


def keras_autoencoder(weights: dict, tf):
    """MnistAutoencoder in Keras (padding 'same' = PyTorch's padding 1); returns (autoencoder, encoder)."""
    layers = tf.keras.layers
    inputs = layers.Input((28, 28, 1))
    h = layers.Conv2D(16, 3, padding="same", activation="relu", name="e0")(inputs)
    h = layers.Conv2D(16, 3, padding="same", activation="relu", name="e2")(h)
    h = layers.MaxPooling2D(2)(h)
    code = layers.Conv2D(1, 3, padding="same", name="e5")(h)
    encoder = tf.keras.Model(inputs, code)
    code_in = layers.Input((14, 14, 1))
    h = layers.Conv2D(16, 3, padding="same", activation="relu", name="d0")(code_in)
    h = layers.UpSampling2D(2)(h)
    h = layers.Conv2D(16, 3, padding="same", activation="relu", name="d3")(h)
    out = layers.Conv2D(1, 3, padding="same", activation="sigmoid", name="d5")(h)
    decoder = tf.keras.Model(code_in, out)
    for model, names in ((encoder, ("e0", "e2", "e5")), (decoder, ("d0", "d3", "d5"))):
        for name in names:
            w, b = weights[f"ae.{name}.w"], weights[f"ae.{name}.b"]
            model.get_layer(name).set_weights([w.transpose(2, 3, 1, 0), b])
    autoencoder = tf.keras.Model(inputs, decoder(encoder(inputs)))
    return autoencoder, encoder


def count_steps(explainer) -> list[int]:
    """Wrap the explainer's session so runs of its apply-gradients op are counted."""
    counter = [0]
    run = explainer.sess.run
    targets = getattr(explainer, "apply_grads", None), getattr(explainer, "train", None)

    def counted(fetches, *args, **kwargs):
        if any(fetches is t for t in targets if t is not None):
            counter[0] += 1
        return run(fetches, *args, **kwargs)

    explainer.sess.run = counted
    return counter


def main() -> None:
    source, destination = sys.argv[1], sys.argv[2]
    data = np.load(source)
    settings = json.loads(str(data["settings"]))
    method = str(data["method"])

    import tensorflow as tf

    tf.get_logger().setLevel(40)
    tf.compat.v1.disable_eager_execution()
    import alibi
    from alibi.explainers import Counterfactual, CounterfactualProto

    weights = {key: data[key].astype(np.float32) for key in data.files if "." in key}
    model = keras_cnn(weights, tf)
    digits = data["x"].astype(np.float32).transpose(0, 2, 3, 1)  # (N, 28, 28, 1)
    probabilities = model.predict(digits, verbose=0)

    ae_outputs = None
    train = (
        None
        if "train" not in data.files
        else data["train"].astype(np.float32).transpose(0, 2, 3, 1)
    )
    shape = (1, 28, 28, 1)
    if method == "cf":
        explainer = Counterfactual(model, shape=shape, **settings)
    elif "ae.e0.w" in data.files:
        ae, enc = keras_autoencoder(weights, tf)
        explainer = CounterfactualProto(model, shape=shape, ae_model=ae, enc_model=enc, **settings)
        explainer.fit(train)
        ae_outputs = ae.predict(digits, verbose=0).transpose(0, 3, 1, 2)
    else:
        # Alibi 0.9.6's k-d tree mode works on flat rows only (it flattens the training
        # data for the trees, then feeds a flat prototype into an image-shaped variable),
        # so the same network gets a Reshape in front and sees flattened digits.
        flat = tf.keras.Sequential(
            [tf.keras.layers.Input((784,)), tf.keras.layers.Reshape((28, 28, 1)), model]
        )
        shape = (1, 784)
        explainer = CounterfactualProto(flat, shape=shape, **settings)
        explainer.fit(train.reshape(len(train), 784))
    steps = count_steps(explainer)

    rows = []
    for i in range(digits.shape[0]):
        x = digits[i : i + 1].reshape(shape)
        steps[0] = 0
        start = time.perf_counter()
        explanation = (
            explainer.explain(x) if method == "cf" else explainer.explain(x, k=settings_k(data))
        )
        seconds = time.perf_counter() - start
        cf = explanation.cf
        row = {"index": i, "seconds": seconds, "steps": steps[0], "found": cf is not None}
        if cf is not None:
            x_cf = np.asarray(cf["X"], dtype=np.float64).reshape(1, 28, 28, 1)
            proba = model.predict(x_cf.astype(np.float32), verbose=0)[0]
            row.update(
                {
                    "l1": float(np.abs(x_cf - x.reshape(1, 28, 28, 1)).sum()),
                    "cf_class": int(proba.argmax()),
                    "cf_proba": float(proba.max()),
                    "counterfactual": x_cf.transpose(0, 3, 1, 2)[0].tolist(),
                }
            )
        rows.append(row)
        print(
            f"alibi {method} digit {i}: found={row['found']} l1={row.get('l1')} "
            f"{seconds:.2f}s steps={steps[0]}",
            file=sys.stderr,
            flush=True,
        )

    payload = {
        "alibi": alibi.__version__,
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
        "method": method,
        "settings": {k: v for k, v in settings.items() if k not in ("ae_model", "enc_model")},
        "keras_probabilities": probabilities.tolist(),
        "keras_ae_outputs": None if ae_outputs is None else ae_outputs.tolist(),
        "digits": rows,
    }
    with open(destination, "w") as f:
        json.dump(payload, f)


def settings_k(data) -> int | None:
    return int(data["k"]) if "k" in data.files else None


if __name__ == "__main__":
    main()
