"""Tests for splitting: carving, limits, label order, spec precedence, commands."""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from nlp_attn.config import Config, DataConfig
from nlp_attn.data import load_examples, load_splits
from nlp_attn.data.commands import prepare, stats
from nlp_attn.data.sources import NamedExamples
from nlp_attn.data.split import carve, subsample
from nlp_attn.errors import ConfigError, DataError


def named(texts, labels) -> NamedExamples:
    return NamedExamples(
        np.asarray(texts, dtype=object), np.asarray(labels, dtype=object)
    )


def write_jsonl(path: Path, rows) -> str:
    path.write_text(
        "".join(
            json.dumps({"text": text, "label": label}) + "\n" for text, label in rows
        ),
        encoding="utf-8",
    )
    return f"jsonl:{path}"


@pytest.fixture
def balanced(tmp_path) -> str:
    """300 distinct texts: 200 labelled `a`, 100 labelled `b`."""
    rows = [(f"text number {index}", "a" if index % 3 else "b") for index in range(300)]
    return write_jsonl(tmp_path / "balanced.jsonl", rows)


def texts(examples) -> set[str]:
    return set(examples.texts)


def test_carving_is_stratified_disjoint_and_seeded(balanced):
    config = DataConfig(train=balanced, validation_fraction=0.1, test_fraction=0.2)
    splits = load_splits(config, seed=3)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (
        210,
        30,
        60,
    )
    for examples in (splits.train, splits.validation, splits.test):
        assert np.mean(examples.labels == 1) == pytest.approx(1 / 3)
    assert not texts(splits.train) & texts(splits.validation)
    assert not texts(splits.train) & texts(splits.test)
    assert not texts(splits.validation) & texts(splits.test)
    again = load_splits(config, seed=3)
    other = load_splits(config, seed=4)
    assert np.array_equal(again.test.texts, splits.test.texts)
    assert not np.array_equal(other.test.texts, splits.test.texts)
    assert splits.notes == [
        f"carved test 60, validation 30 examples from {balanced} (stratified, seed 3)"
    ]


def test_duplicates_are_carved_together():
    examples = named([f"t{index % 50}" for index in range(500)], ["x", "y"] * 250)
    rest, carved = carve(examples, {"validation": 0.2}, seed=0)
    assert not texts(rest) & texts(carved["validation"])
    assert len(carved["validation"]) == 100


def test_tiny_data_cannot_be_carved():
    with pytest.raises(DataError, match="too few examples"):
        carve(named(["a", "b"], ["x", "y"]), {"validation": 0.1}, seed=0)


def test_limit_is_a_stratified_seeded_subsample(balanced):
    splits = load_splits(DataConfig(train=balanced, limit=60), seed=1)
    assert len(splits.train) == 60
    assert np.bincount(splits.train.labels).tolist() == [40, 20]
    assert len(splits.validation) == 30 and len(splits.test) == 30
    examples = named([str(index) for index in range(90)], ["p", "q", "r"] * 30)
    assert np.array_equal(
        subsample(examples, 9, seed=5).texts, subsample(examples, 9, seed=5).texts
    )


def test_given_specs_take_precedence_and_test_can_be_absent(tmp_path, balanced):
    validation = write_jsonl(tmp_path / "v.jsonl", [("held out", "a"), ("also", "b")])
    config = DataConfig(train=balanced, validation=validation, test_fraction=0.0)
    splits = load_splits(config, seed=0)
    assert list(splits.validation.texts) == ["held out", "also"]
    assert splits.test is None
    assert len(splits.train) == 300


def test_validation_needs_a_source_or_a_fraction(balanced):
    with pytest.raises(ConfigError, match="data.validation_fraction is 0"):
        load_splits(DataConfig(train=balanced, validation_fraction=0.0), seed=0)


def test_integer_labels_sort_numerically_and_others_by_code_point(tmp_path):
    numbers = write_jsonl(
        tmp_path / "n.jsonl", [(f"x{i}", [10, 2, 1][i % 3]) for i in range(60)]
    )
    assert load_splits(DataConfig(train=numbers), 0).label_names == ["1", "2", "10"]
    words = write_jsonl(
        tmp_path / "w.jsonl", [(f"x{i}", "bBa"[i % 3]) for i in range(60)]
    )
    assert load_splits(DataConfig(train=words), 0).label_names == ["B", "a", "b"]


def test_tfds_keeps_the_class_label_order(tmp_path):
    config = DataConfig(train="tfds:ag_news_subset", data_dir=str(tmp_path))
    with tfds.testing.mock_data(num_examples=200):
        splits = load_splits(config, seed=0)
    assert splits.label_names == ["World", "Sports", "Business", "Sci/Tech"]
    assert 0 < splits.train.labels.max() < 4


def test_one_class_only_is_refused(tmp_path):
    spec = write_jsonl(tmp_path / "one.jsonl", [(f"t{i}", "same") for i in range(30)])
    with pytest.raises(DataError, match="one class only"):
        load_splits(DataConfig(train=spec), seed=0)


def test_label_unseen_in_training_is_refused(tmp_path, balanced):
    test = write_jsonl(tmp_path / "t.jsonl", [("new", "a"), ("stranger", "zebra")])
    with pytest.raises(DataError) as error:
        load_splits(DataConfig(train=balanced, test=test), seed=0)
    assert str(error.value) == (
        f"label 'zebra' in the test split of {test} never appears in training "
        "(labels: a, b)"
    )


def test_load_examples_maps_labels_by_name(tmp_path):
    spec = write_jsonl(tmp_path / "e.jsonl", [("one", "b"), ("two", "a")])
    examples = load_examples(spec, DataConfig(), ["b", "a"], split="validation")
    assert examples.labels.tolist() == [0, 1]
    assert examples.labels.dtype == np.int32
    with pytest.raises(DataError, match="label 'a'"):
        load_examples(spec, DataConfig(), ["b", "c"])


def test_prepare_and_stats_describe_the_splits(balanced):
    config = Config()
    config.data.train = balanced
    config.data.max_length = 3
    report = prepare(config)
    assert "train" in report and "240 examples" in report
    assert "labels: a, b" in report
    described = stats(config)
    assert "per label: a 160 (66.7%), b 80 (33.3%)" in described
    assert "tokens p50/p90/p95/p99/max: 3/3/3/3/3" in described
    assert "longer than data.max_length=3: 0.0%" in described
