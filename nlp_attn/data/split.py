"""Splitting: from data specs to train / validation / test examples with label indices.

The middle of the data stage: reads sources (`sources.py`), carves missing splits,
fixes the run's label order; tokenization and `pipeline.py` come next.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from nlp_attn.config import DataConfig
from nlp_attn.data.sources import (
    Examples,
    NamedExamples,
    SourceData,
    is_integer_label,
    read_source,
)
from nlp_attn.errors import ConfigError, DataError

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Splits:
    """The examples of one run, split, with the label order fixed for the run.

    Attributes:
        train: the training examples (after `data.limit`).
        validation: the validation examples.
        test: the test examples; None only when the training source has no test
            split, `data.test` is empty and `data.test_fraction` is 0.
        label_names: label names; `labels` in every split index into this list.
        notes: human lines about what loading skipped, dropped or carved.
    """

    train: Examples
    validation: Examples
    test: Examples | None
    label_names: list[str]
    notes: list[str]


def load_splits(config: DataConfig, seed: int) -> Splits:
    """Reads the configured data and returns its train / validation / test splits.

    `data.validation` and `data.test`, when set, are read from their own specs.
    Otherwise the training source's split of that name is used, or, when it has
    none, one is carved from the training examples: stratified by label, seeded,
    with identical texts kept together so no text is in two splits. Then
    `data.limit` caps the training examples (a stratified, seeded subsample).

    Label order: a TFDS source (the default dataset included) keeps the order of
    its `ClassLabel`; file and folder sources sort their label names,
    numerically when every name is an integer (`2` before `10`), otherwise by
    Unicode code point. Only labels present in the training examples are kept.

    Args:
        config: the data config.
        seed: the seed for carving and subsampling (the run's `train.seed`).

    Returns:
        The `Splits`, labels as indices into `label_names`.

    Raises:
        ConfigError: a spec is malformed, or a validation split is needed and
            `data.validation_fraction` is 0.
        DataError: the data is missing or unusable (see `sources.read_source`),
            training has one class only, or validation / test has a label that
            training never saw.
    """
    source = read_source(config.train, config)
    notes = list(source.notes)
    train = source.select("train")
    given = {
        "validation": _given_split(config.validation, "validation", config, notes),
        "test": _given_split(config.test, "test", config, notes),
    }
    for name in given:
        if given[name] is None and source.has_named_splits:
            given[name] = source.splits.get(name)

    fractions = {}
    if given["test"] is None and config.test_fraction > 0:
        fractions["test"] = config.test_fraction
    if given["validation"] is None:
        if config.validation_fraction <= 0:
            raise ConfigError(
                f"{config.train} has no validation split and "
                "data.validation_fraction is 0; set data.validation or a fraction"
            )
        fractions["validation"] = config.validation_fraction
    if fractions:
        train, carved = carve(train, fractions, seed)
        given.update(carved)
        shares = ", ".join(f"{name} {len(carved[name])}" for name in fractions)
        notes.append(
            f"carved {shares} examples from {config.train} (stratified, seed {seed})"
        )

    if 0 < config.limit < len(train):
        notes.append(f"kept {config.limit} of {len(train)} training examples")
        train = subsample(train, config.limit, seed)

    label_names = _label_names(train, source, config.train)
    return Splits(
        train=to_examples(train, label_names, f"training examples of {config.train}"),
        validation=to_examples(
            given["validation"], label_names, _describe("validation", config)
        ),
        test=(
            to_examples(given["test"], label_names, _describe("test", config))
            if given["test"] is not None
            else None
        ),
        label_names=label_names,
        notes=notes,
    )


def load_examples(
    spec: str, config: DataConfig, label_names: list[str], split: str = "test"
) -> Examples:
    """Reads one split of a data spec, labelled in a finished run's label order.

    A file or folder spec has a single collection, returned whatever `split`
    says. `default` with `split="test"` gives exactly the test split that
    `load_splits` gives for `data.train=default`.

    Args:
        spec: a data spec.
        config: the data config (field names, directories, the empty-text rule).
        label_names: the run's label names; labels are mapped to them by name.
        split: the named split to read from a TFDS source.

    Returns:
        The examples, labels as indices into `label_names`.

    Raises:
        DataError: the source lacks the split, or it has a label the run does not
            know.
    """
    source = read_source(spec, config, (split,))
    for note in source.notes:
        logger.info(note)
    return to_examples(source.select(split), label_names, f"{split} split of {spec}")


def to_examples(
    examples: NamedExamples, label_names: list[str], where: str
) -> Examples:
    """Maps label names to indices into `label_names`.

    Raises:
        DataError: a label is not in `label_names`.
    """
    names, inverse = np.unique(examples.labels, return_inverse=True)
    index = {name: position for position, name in enumerate(label_names)}
    unknown = [str(name) for name in names if name not in index]
    if unknown:
        raise DataError(
            f"label {', '.join(repr(name) for name in unknown)} in the {where} "
            f"never appears in training (labels: {', '.join(label_names)})"
        )
    mapping = np.array([index[name] for name in names], dtype=np.int32)
    return Examples(examples.texts, mapping[inverse.reshape(-1)])


def carve(
    examples: NamedExamples, fractions: dict[str, float], seed: int
) -> tuple[NamedExamples, dict[str, NamedExamples]]:
    """Carves stratified, seeded splits from `examples`; the rest stays in train.

    Identical texts are carved together (each group follows the label of its
    first occurrence), so no text ends up in two splits. Every part keeps the
    original order of its examples.

    Args:
        examples: the examples to cut.
        fractions: split name -> share of the examples, e.g. `{"validation": 0.1}`.
        seed: seeds the shuffle within each label.

    Returns:
        `(rest, carved)`: the remaining training examples, and split name ->
        the examples carved for it.

    Raises:
        DataError: a carved split would be empty (too few examples).
    """
    _, first, group = np.unique(examples.texts, return_index=True, return_inverse=True)
    group = group.reshape(-1)
    keys = _stratified_keys(examples.labels[first], np.random.default_rng(seed))
    example_keys = keys[group]
    carved = {}
    taken = np.zeros(len(examples), dtype=bool)
    low = 0.0
    for name, fraction in fractions.items():
        chosen = (example_keys >= low) & (example_keys < low + fraction)
        if not chosen.any():
            raise DataError(
                f"carving {name} ({fraction:g} of {len(examples)} examples) gives no "
                "examples: too few examples for that fraction"
            )
        carved[name] = examples.subset(np.flatnonzero(chosen))
        taken |= chosen
        low += fraction
    return examples.subset(np.flatnonzero(~taken)), carved


def subsample(examples: NamedExamples, limit: int, seed: int) -> NamedExamples:
    """Keeps `limit` examples, each label in proportion, chosen with the seed."""
    keys = _stratified_keys(examples.labels, np.random.default_rng(seed))
    kept = np.sort(np.argsort(keys, kind="stable")[:limit])
    return examples.subset(kept)


def _stratified_keys(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gives each item a key in (0, 1): its shuffled rank within its label, scaled.

    The keys of each label are evenly spaced, so any interval of keys holds the
    same share of every label (up to rounding): taking the keys below a threshold,
    or the k smallest, is a stratified sample.
    """
    keys = np.empty(len(labels), dtype=np.float64)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        keys[members] = (rng.permutation(len(members)) + 0.5) / len(members)
    return keys


def _given_split(
    spec: str, split: str, config: DataConfig, notes: list[str]
) -> NamedExamples | None:
    if not spec:
        return None
    source: SourceData = read_source(spec, config, (split,))
    notes.extend(source.notes)
    return source.select(split)


def _label_names(train: NamedExamples, source: SourceData, spec: str) -> list[str]:
    present = set(train.labels)
    if source.label_order is not None:
        names = [name for name in source.label_order if name in present]
    elif all(is_integer_label(name) for name in present):
        names = sorted(present, key=int)
    else:
        names = sorted(present)
    if len(names) < 2:
        raise DataError(
            f"the training examples of {spec} have one class only "
            f"({', '.join(names)}); classification needs at least two"
        )
    return names


def _describe(split: str, config: DataConfig) -> str:
    spec = getattr(config, split)
    return f"{split} split of {spec or config.train}"
