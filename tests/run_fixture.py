"""Tiny trained runs shared by the evaluate, predict, explain and export tests.

Each run is trained once per test session through `nlp_attn.train.train` on a
small CSV written here; test modules wrap `trained_run` in session fixtures.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

LABEL_WORDS = {
    "negative": ["awful", "boring", "dull", "terrible", "weak"],
    "neutral": ["average", "fine", "okay", "plain", "middling"],
    "positive": ["brilliant", "great", "moving", "superb", "wonderful"],
}
COMMON_WORDS = ["the", "film", "movie", "was", "a", "plot", "acting", "and", "cast"]
ROWS = 90
SEED = 7

# Settings every test run shares: small and fast, on the CSV written below.
BASE_OVERRIDES = [
    "train.epochs=3",
    "train.learning_rate=0.02",
    "train.batch_size=16",
    "train.summary_texts=2",
    "train.early_stopping_patience=0",
    "model.embedding_dim=8",
    "model.hidden_units=8",
    "tokenizer.vocabulary_size=200",
    # Pinned, not inherited from configs/default.yaml: the token assertions
    # expect unigrams, and WordPiece takes no n-grams.
    "tokenizer.ngrams=1",
    "data.max_length=16",
]

_RUNS: dict[str, Path] = {}


def write_csv(path: Path, rows: int = ROWS, seed: int = SEED, labels=None) -> Path:
    """Writes a learnable CSV (`text,label`): each text mixes its label's words."""
    generator = np.random.default_rng(seed)
    names = list(labels or LABEL_WORDS)
    with open(path, "w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["text", "label"])
        for row in range(rows):
            label = names[row % len(names)]
            words = LABEL_WORDS.get(label, ["unheard"])
            picked = list(generator.choice(words, size=2)) + list(
                generator.choice(COMMON_WORDS, size=int(generator.integers(2, 6)))
            )
            generator.shuffle(picked)
            writer.writerow([" ".join(picked), label])
    return path


def trained_run(tmp_path_factory, name: str, overrides: list[str] = ()) -> Path:
    """Trains (once per session) a tiny run named `name` and returns its folder."""
    if name in _RUNS:
        return _RUNS[name]
    from nlp_attn.config import load_config
    from nlp_attn.train import train

    folder = tmp_path_factory.mktemp(f"run-{name}")
    data = write_csv(folder / "train.csv")
    run = folder / "run"
    config = load_config(None, [f"data.train=csv:{data}", *BASE_OVERRIDES, *overrides])
    train(config, run_dir=run)
    _RUNS[name] = run
    return run


def attention_run(tmp_path_factory) -> Path:
    """A run with two-head attention pooling and the `words` tokenizer."""
    return trained_run(tmp_path_factory, "attention", ["model.attention_heads=2"])


def mean_run(tmp_path_factory) -> Path:
    """A run with mean pooling (no attention) and the `wordpiece` tokenizer."""
    return trained_run(
        tmp_path_factory,
        "mean",
        ["model.pooling=mean", "tokenizer.kind=wordpiece", "train.epochs=1"],
    )
