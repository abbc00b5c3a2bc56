"""Tests for the tokenizers: fitting, vocabulary files, token strings, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from nlp_attn import tokenize
from nlp_attn.config import TokenizerConfig
from nlp_attn.errors import ConfigError, RunError

TEXTS = [
    "A warm, funny film that earns every laugh.",
    "Dull from start to finish; the film drags.",
    "The cast is superb and the script is sharp!",
    "A tedious, overlong mess of a film.",
    "Funny, warm and sharp: the best film of the year.",
] * 4
KINDS = ["words", "wordpiece"]


def fit(kind: str, max_length: int = 12, **options) -> keras.layers.Layer:
    config = TokenizerConfig(kind=kind, vocabulary_size=60, **options)
    return tokenize.fit_tokenizer(config, TEXTS, max_length)


def token_ids(tokenizer, texts) -> np.ndarray:
    return np.asarray(tokenizer(tf.constant(texts, dtype=tf.string)))


@pytest.mark.parametrize("kind", KINDS)
def test_output_shape_padding_and_reserved_ids(kind):
    tokenizer = fit(kind)
    ids = token_ids(tokenizer, ["film", "", "the film " * 20])
    assert ids.shape == (3, 12)
    assert ids[0, 0] > 1 and (ids[0, 1:] == 0).all()
    assert (ids[1] == 0).all()
    assert (ids[2] != 0).all()
    assert tokenize.max_length(tokenizer) == 12
    reserved = ["", "[UNK]"] if kind == "words" else ["[PAD]", "[UNK]"]
    assert tokenize.vocabulary(tokenizer)[:2] == reserved
    assert len(tokenize.vocabulary(tokenizer)) <= 60


@pytest.mark.parametrize("kind", KINDS)
def test_vocabulary_file_round_trip_gives_identical_ids(kind, tmp_path):
    tokenizer = fit(kind)
    path = tmp_path / "vocabulary.txt"
    tokenize.save_vocabulary(tokenizer, path)
    config = TokenizerConfig(kind=kind, vocabulary_size=60)
    reloaded = tokenize.load_tokenizer(config, 12, path)
    probe = TEXTS[:5] + ["Unseen words: zyzzyva quux, and a film."]
    assert np.array_equal(token_ids(reloaded, probe), token_ids(tokenizer, probe))
    assert tokenize.vocabulary(reloaded) == tokenize.vocabulary(tokenizer)


@pytest.mark.parametrize("kind", KINDS)
def test_keras_file_with_the_tokenizer_loads_in_safe_mode(kind, tmp_path):
    tokenizer = fit(kind)
    inputs = keras.Input(shape=(), dtype="string")
    outputs = keras.layers.Embedding(60, 3)(tokenizer(inputs))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling1D()(outputs))
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    probe = tf.constant(TEXTS[:3])
    np.testing.assert_allclose(restored(probe), model(probe))


def test_token_strings_line_up_with_non_padding_ids():
    words = fit("words")
    assert tokenize.token_strings(words, ["The FILM, zyzzyva!"]) == [
        ["the", "film", "[UNK]"]
    ]
    pieces = fit("wordpiece")
    strings = tokenize.token_strings(pieces, ["The film drags."])[0]
    ids = token_ids(pieces, ["The film drags."])[0]
    assert len(strings) == np.count_nonzero(ids)
    assert strings[-1] == "."
    assert "".join(strings).replace("##", "").startswith("thefilm")
    assert tokenize.token_strings(pieces, []) == []


def test_standardization_options_and_ngrams():
    cased = fit("words", lowercase=False, strip_punctuation=False)
    assert "A" in tokenize.vocabulary(cased) and "film." in tokenize.vocabulary(cased)
    bigrams = fit("words", ngrams=2)
    assert "the film" in tokenize.vocabulary(bigrams)
    with pytest.raises(ConfigError, match="tokenizer.ngrams"):
        fit("wordpiece", ngrams=2)


@pytest.mark.parametrize("kind", KINDS)
def test_token_lengths_count_beyond_max_length(kind):
    tokenizer = fit(kind, max_length=4)
    lengths = tokenize.token_lengths(tokenizer, ["film", "the film " * 10])
    assert lengths.tolist() == [1, 20]
    assert tokenize.token_lengths(tokenizer, []).shape == (0,)


def test_vocabulary_files_are_checked(tmp_path):
    config = TokenizerConfig(kind="wordpiece")
    with pytest.raises(RunError, match="vocabulary file not found"):
        tokenize.load_tokenizer(config, 8, tmp_path / "missing.txt")
    path = tmp_path / "vocabulary.txt"
    tokenize.save_vocabulary(fit("words"), path)
    with pytest.raises(RunError, match="is not a wordpiece vocabulary"):
        tokenize.load_tokenizer(config, 8, path)
