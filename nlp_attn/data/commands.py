"""`nlp-attn data prepare|stats`: fetch and prepare the configured data, describe it.

Runs the data stage alone (sources, splits, a tokenizer fit on train) and returns
the text the CLI prints.
"""

from __future__ import annotations

import time

import numpy as np

from nlp_attn.config import Config
from nlp_attn.data.sources import Examples
from nlp_attn.data.split import Splits, load_splits

PERCENTILES = (50, 90, 95, 99)


def prepare(config: Config) -> str:
    """Fetches and prepares the configured data; returns split sizes and labels.

    Args:
        config: the run config; `data.*` and `train.seed` are used.

    Returns:
        Lines for the terminal: one per split, the label names, the notes and the
        time it took.
    """
    start = time.perf_counter()
    splits = load_splits(config.data, config.train.seed)
    seconds = time.perf_counter() - start
    lines = [f"data: {config.data.train}"]
    for name, examples in _named_splits(splits):
        lines.append(f"  {name:<10} {len(examples):>9,} examples")
    lines.append(f"labels: {', '.join(splits.label_names)}")
    lines += [f"note: {note}" for note in splits.notes]
    lines.append(f"prepared in {seconds:.1f} s")
    return "\n".join(lines)


def stats(config: Config) -> str:
    """Describes each split: sizes, examples per label and token lengths.

    Token lengths come from a tokenizer (`tokenizer.*`) fit on the training
    split, counted before cutting to `data.max_length`.

    Args:
        config: the run config.

    Returns:
        Lines for the terminal, one block per split.
    """
    from nlp_attn.tokenize import fit_tokenizer, token_lengths

    splits = load_splits(config.data, config.train.seed)
    max_length = config.data.max_length
    tokenizer = fit_tokenizer(config.tokenizer, splits.train.texts, max_length)
    percentile_names = "/".join(f"p{value}" for value in PERCENTILES)
    lines = [
        f"data: {config.data.train}   labels: {', '.join(splits.label_names)}   "
        f"tokenizer: {config.tokenizer.kind}, fit on train"
    ]
    for name, examples in _named_splits(splits):
        lengths = token_lengths(tokenizer, examples.texts)
        counts = np.bincount(examples.labels, minlength=len(splits.label_names))
        per_label = ", ".join(
            f"{label} {count:,} ({count / max(len(examples), 1):.1%})"
            for label, count in zip(splits.label_names, counts, strict=True)
        )
        longer = float(np.mean(lengths > max_length)) if len(lengths) else 0.0
        percentiles = np.percentile(lengths, PERCENTILES, method="higher")
        lines += [
            f"{name}: {len(examples):,} examples",
            f"  per label: {per_label}",
            f"  tokens {percentile_names}/max: "
            + "/".join(str(int(value)) for value in percentiles)
            + f"/{int(lengths.max())}",
            f"  longer than data.max_length={max_length}: {longer:.1%}",
        ]
    lines += [f"note: {note}" for note in splits.notes]
    return "\n".join(lines)


def _named_splits(splits: Splits) -> list[tuple[str, Examples]]:
    named = [("train", splits.train), ("validation", splits.validation)]
    if splits.test is not None:
        named.append(("test", splits.test))
    return named
