"""Side-by-side speed and accuracy benchmark on the default data (not a test).

Measures, in one process on the same cores: our training step throughput against a
straightforward Keras attention-pooling model, and our test accuracy and time to it
against TF-IDF + logistic regression (and fastText when it is installed).
Figures are reported as ratios, since absolute numbers vary between machines.

Usage: python scripts/benchmark.py [--epochs N] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import keras
import numpy as np
import tensorflow as tf

import nlp_attn  # noqa: F401  (quiet TensorFlow start-up, layer registration)
from nlp_attn.config import load_config
from nlp_attn.data.pipeline import make_dataset
from nlp_attn.model import build_classifier
from nlp_attn.train import _optimizer, prepare_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    config = load_config(None, args.overrides)
    keras.utils.set_random_seed(config.train.seed)
    prepared = prepare_data(config)
    rows = []

    ours = _time_ours(config, prepared, args.epochs)
    rows.append(("nlp_attn attention model", *ours))
    plain = _time_plain_keras(config, prepared, args.epochs)
    rows.append(("plain Keras attention pooling", *plain))
    if importlib.util.find_spec("sklearn") is not None:
        rows.append(("TF-IDF + logistic regression", *_tfidf(prepared)))
    if importlib.util.find_spec("fasttext") is not None:
        rows.append(("fastText", *_fasttext(prepared)))

    print(
        f"{'model':32} {'train ex/s':>12} {'vs ours':>8} {'test acc':>9} {'wall s':>7}"
    )
    for name, throughput, accuracy, wall in rows:
        ratio = throughput / ours[0] if throughput else float("nan")
        print(f"{name:32} {throughput:12.0f} {ratio:8.2f} {accuracy:9.4f} {wall:7.1f}")


def _time_ours(config, prepared, epochs: int) -> tuple[float, float, float]:
    """Steady-state throughput: the first epoch (tracing, XLA) is not counted."""
    train_ids = prepared.token_ids["train"]
    labels = prepared.splits.train.labels
    steps = int(np.ceil(len(labels) / config.train.batch_size))
    model = build_classifier(config, len(_vocabulary(prepared)), len(_names(prepared)))
    model.compile(
        optimizer=_optimizer(config, steps),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile="auto",
    )
    dataset = make_dataset(
        train_ids, labels, config.train.batch_size, shuffle=True, seed=1
    )
    started = time.perf_counter()
    model.fit(dataset, epochs=1, verbose=0, shuffle=False)
    steady = time.perf_counter()
    model.fit(dataset, epochs=epochs - 1, verbose=0, shuffle=False)
    throughput = (epochs - 1) * len(labels) / (time.perf_counter() - steady)
    test = make_dataset(
        prepared.token_ids["test"],
        prepared.splits.test.labels,
        256,
        shuffle=False,
        seed=0,
    )
    accuracy = model.evaluate(test, verbose=0)[1]
    return throughput, accuracy, time.perf_counter() - started


def _time_plain_keras(config, prepared, epochs: int) -> tuple[float, float, float]:
    """The keras-io way: fixed-length padding, a Dense score, no bucketing."""
    vocabulary_size = len(_vocabulary(prepared))
    inputs = keras.Input(shape=(config.data.max_length,), dtype="int32")
    embedded = keras.layers.Embedding(vocabulary_size, config.model.embedding_dim)(
        inputs
    )
    scores = keras.layers.Dense(1)(embedded)
    padding = keras.ops.expand_dims(keras.ops.equal(inputs, 0), -1)
    scores = keras.ops.where(padding, -1e9, scores)
    weights = keras.ops.softmax(scores, axis=1)
    pooled = keras.ops.sum(weights * embedded, axis=1)
    hidden = keras.layers.Dense(config.model.hidden_units, activation="relu")(pooled)
    logits = keras.layers.Dense(len(_names(prepared)))(hidden)
    model = keras.Model(inputs, logits)
    model.compile(
        optimizer=keras.optimizers.Adam(config.train.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    ids, labels = prepared.token_ids["train"], prepared.splits.train.labels
    batch = config.train.batch_size
    started = time.perf_counter()
    model.fit(ids, labels, batch_size=batch, epochs=1, verbose=0)
    steady = time.perf_counter()
    model.fit(ids, labels, batch_size=batch, epochs=epochs - 1, verbose=0)
    throughput = (epochs - 1) * len(labels) / (time.perf_counter() - steady)
    accuracy = model.evaluate(
        prepared.token_ids["test"], prepared.splits.test.labels, verbose=0
    )[1]
    return throughput, accuracy, time.perf_counter() - started


def _tfidf(prepared) -> tuple[float, float, float]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    started = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    features = vectorizer.fit_transform(prepared.splits.train.texts)
    classifier = LogisticRegression(C=4.0, max_iter=1000)
    classifier.fit(features, prepared.splits.train.labels)
    wall = time.perf_counter() - started
    test = vectorizer.transform(prepared.splits.test.texts)
    accuracy = float(np.mean(classifier.predict(test) == prepared.splits.test.labels))
    return len(prepared.splits.train.labels) / wall, accuracy, wall


def _fasttext(prepared) -> tuple[float, float, float]:
    import tempfile

    import fasttext

    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        for text, label in zip(
            prepared.splits.train.texts, prepared.splits.train.labels, strict=True
        ):
            clean = " ".join(str(text).lower().split())
            handle.write(f"__label__{label} {clean}\n")
    started = time.perf_counter()
    model = fasttext.train_supervised(handle.name, epoch=10, wordNgrams=2, verbose=0)
    wall = time.perf_counter() - started
    predictions = [
        int(model.predict(" ".join(str(text).lower().split()))[0][0][9:])
        for text in prepared.splits.test.texts
    ]
    accuracy = float(np.mean(np.asarray(predictions) == prepared.splits.test.labels))
    return 10 * len(prepared.splits.train.labels) / wall, accuracy, wall


def _vocabulary(prepared) -> list[str]:
    from nlp_attn.tokenize import vocabulary

    return vocabulary(prepared.tokenizer)


def _names(prepared) -> list[str]:
    return prepared.splits.label_names


if __name__ == "__main__":
    tf.get_logger().setLevel("ERROR")
    main()
