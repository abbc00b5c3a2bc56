"""Tokenizers: learn a vocabulary from the training texts, turn strings into token ids.

Sits between the data stage and the model: the layer built here is the first layer
of the end-to-end model, and its vocabulary is saved as the run's `vocabulary.txt`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import keras
import keras_hub
import numpy as np
import tensorflow as tf
import tokenizers

from nlp_attn.config import TokenizerConfig
from nlp_attn.errors import ConfigError, RunError

PAD_TOKEN = "[PAD]"
UNKNOWN_TOKEN = "[UNK]"
SUFFIX_INDICATOR = "##"
ADAPT_BATCH_SIZE = 1024
LENGTH_BATCH_SIZE = 2048


def fit_tokenizer(
    config: TokenizerConfig, texts: Sequence[str] | np.ndarray, max_length: int
) -> keras.layers.Layer:
    """Builds a tokenizer whose vocabulary is learned from `texts` only.

    Two kinds (`tokenizer.kind`), both stock Keras layers that
    `keras.saving.load_model` restores with safe mode on:
    - `words`: `keras.layers.TextVectorization`, vocabulary `["", "[UNK]", ...]`.
      Its ids are int64 (the layer has no other output type).
    - `wordpiece`: keras-hub `WordPieceTokenizer`, vocabulary
      `["[PAD]", "[UNK]", ...]`, int32 ids. Punctuation marks stay tokens of
      their own (`tokenizer.strip_punctuation` applies to `words` only).

    Args:
        config: the tokenizer config (kind, vocabulary size, standardization).
        texts: the training texts.
        max_length: the number of token ids per text (longer texts are cut,
            shorter ones padded with 0).

    Returns:
        A Keras layer mapping a string tensor `(batch,)` to integer ids
        `(batch, max_length)`, 0 for padding.

    Example:

    >>> tokenizer = fit_tokenizer(TokenizerConfig(), ["a good film"], 4)
    >>> tokenizer(["a bad film"]).shape
    TensorShape([1, 4])
    """
    texts = _string_array(texts)
    if config.kind == "words":
        tokenizer = _words_tokenizer(config, max_length)
        batches = tf.data.Dataset.from_tensor_slices(texts).batch(ADAPT_BATCH_SIZE)
        tokenizer.adapt(batches)
        return tokenizer
    return _wordpiece_tokenizer(config, max_length, _learn_wordpieces(config, texts))


def vocabulary(tokenizer: keras.layers.Layer) -> list[str]:
    """Returns the tokenizer's vocabulary; a token's position is its id."""
    return [str(token) for token in tokenizer.get_vocabulary()]


def save_vocabulary(tokenizer: keras.layers.Layer, path: str | Path) -> None:
    """Writes the vocabulary as UTF-8 text, one token a line, in id order.

    Tokens never contain a line feed (both kinds split on whitespace), so the
    file splits back on `\\n` exactly; the first line of `words` is empty.
    """
    text = "".join(f"{token}\n" for token in vocabulary(tokenizer))
    Path(path).write_text(text, encoding="utf-8")


def load_tokenizer(
    config: TokenizerConfig, max_length: int, path: str | Path
) -> keras.layers.Layer:
    """Rebuilds a tokenizer from a saved vocabulary; it gives the same ids.

    Args:
        config: the tokenizer config the vocabulary was learned with.
        max_length: the number of token ids per text.
        path: a file written by `save_vocabulary`.

    Raises:
        RunError: the file is missing or does not fit `config.kind`.
    """
    path = Path(path)
    if not path.is_file():
        raise RunError(f"vocabulary file not found: {path}")
    tokens = path.read_text(encoding="utf-8").split("\n")[:-1]
    expected = "" if config.kind == "words" else PAD_TOKEN
    if not tokens or tokens[0] != expected:
        raise RunError(
            f"{path} is not a {config.kind} vocabulary (its first token is not "
            f"{expected!r})"
        )
    if config.kind == "words":
        tokenizer = _words_tokenizer(config, max_length)
        tokenizer.set_vocabulary(tokens)
        return tokenizer
    return _wordpiece_tokenizer(config, max_length, tokens)


def max_length(tokenizer: keras.layers.Layer) -> int:
    """Returns the number of token ids the tokenizer gives per text."""
    if isinstance(tokenizer, keras.layers.TextVectorization):
        return int(tokenizer.get_config()["output_sequence_length"])
    return int(tokenizer.sequence_length)


def token_strings(
    tokenizer: keras.layers.Layer, texts: Sequence[str]
) -> list[list[str]]:
    """Returns each text's tokens as vocabulary strings, one per non-padding id.

    The i-th string of a text belongs to its i-th token id, so attention weights
    line up with it. An out-of-vocabulary word shows as `[UNK]` (what the model
    saw); a `words` n-gram shows as its words joined by a space.
    """
    texts = _string_array(texts)
    if not len(texts):
        return []
    token_ids = np.asarray(tokenizer(tf.constant(texts)))
    table = np.asarray(vocabulary(tokenizer), dtype=object)
    return [table[row[row != 0]].tolist() for row in token_ids]


def token_lengths(
    tokenizer: keras.layers.Layer, texts: Sequence[str] | np.ndarray
) -> np.ndarray:
    """Counts each text's tokens before cutting to `max_length` (for `data stats`).

    Returns:
        int64 array `(n,)`.
    """
    if isinstance(tokenizer, keras.layers.TextVectorization):
        config = {**tokenizer.get_config(), "output_sequence_length": None}
        counter = keras.layers.TextVectorization.from_config(config)
    else:
        counter = keras_hub.tokenizers.WordPieceTokenizer.from_config(
            {**tokenizer.get_config(), "sequence_length": None}
        )
    counter.set_vocabulary(tokenizer.get_vocabulary())

    def count(batch: tf.Tensor) -> tf.Tensor:
        token_ids = counter(batch)
        if isinstance(token_ids, tf.RaggedTensor):
            return token_ids.row_lengths()
        return tf.math.count_nonzero(token_ids, axis=1)

    texts = _string_array(texts)
    if not len(texts):
        return np.zeros(0, dtype=np.int64)
    batches = tf.data.Dataset.from_tensor_slices(texts)
    batches = batches.batch(LENGTH_BATCH_SIZE).map(count)
    return np.concatenate([batch.numpy() for batch in batches])


def _learn_wordpieces(config: TokenizerConfig, texts: np.ndarray) -> list[str]:
    """Learns a WordPiece vocabulary with the Rust trainer of `tokenizers`.

    keras-hub's `compute_word_piece_vocabulary` learns in Python: 98 s on the
    10,202 default training texts (and 3,418 of 8,000 tokens asked for), against
    about 2 s here. The normalization and splitting below are BERT's, as in
    `WordPieceTokenizer`, which then tokenizes with the learned vocabulary.
    """
    if config.ngrams > 1:
        raise ConfigError(
            "tokenizer.ngrams applies to tokenizer.kind=words only; add "
            "--set tokenizer.ngrams=1 to use wordpiece"
        )
    learner = tokenizers.Tokenizer(tokenizers.models.WordPiece(unk_token=UNKNOWN_TOKEN))
    learner.normalizer = tokenizers.normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=True,
        strip_accents=False,
        lowercase=config.lowercase,
    )
    learner.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    trainer = tokenizers.trainers.WordPieceTrainer(
        vocab_size=config.vocabulary_size,
        special_tokens=[PAD_TOKEN, UNKNOWN_TOKEN],
        continuing_subword_prefix=SUFFIX_INDICATOR,
        show_progress=False,
    )
    learner.train_from_iterator(texts.tolist(), trainer)
    ids = learner.get_vocab()
    return sorted(ids, key=ids.__getitem__)


def _words_tokenizer(config: TokenizerConfig, max_length: int):
    standardize = {
        (True, True): "lower_and_strip_punctuation",
        (True, False): "lower",
        (False, True): "strip_punctuation",
        (False, False): None,
    }[(config.lowercase, config.strip_punctuation)]
    return keras.layers.TextVectorization(
        max_tokens=config.vocabulary_size,
        standardize=standardize,
        ngrams=config.ngrams if config.ngrams > 1 else None,
        output_mode="int",
        output_sequence_length=max_length,
        name="tokenizer",
    )


def _wordpiece_tokenizer(config: TokenizerConfig, max_length: int, tokens: list[str]):
    if tokens[:2] != [PAD_TOKEN, UNKNOWN_TOKEN]:
        raise RunError(
            f"a wordpiece vocabulary must start with {PAD_TOKEN}, {UNKNOWN_TOKEN}"
        )
    return keras_hub.tokenizers.WordPieceTokenizer(
        vocabulary=tokens,
        sequence_length=max_length,
        lowercase=config.lowercase,
        suffix_indicator=SUFFIX_INDICATOR,
        oov_token=UNKNOWN_TOKEN,
        dtype="int32",
        name="tokenizer",
    )


def _string_array(texts: Sequence[str] | np.ndarray) -> np.ndarray:
    array = np.asarray(texts, dtype=object)
    if array.ndim != 1:
        raise ValueError(f"expected a 1-D sequence of texts, got shape {array.shape}")
    return array
