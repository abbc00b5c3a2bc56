"""Tests for the tf.data pipeline: batched tokenization, shuffling and bucketing."""

import numpy as np
import pytest

from nlp_attn.config import TokenizerConfig
from nlp_attn.data.pipeline import bucket_boundaries, make_dataset, tokenize_texts
from nlp_attn.tokenize import fit_tokenizer

MAX_LENGTH = 40


@pytest.fixture(scope="module")
def examples() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1000 examples of random lengths 0..40; each label is the example's index."""
    rng = np.random.default_rng(0)
    count = 1000
    lengths = rng.integers(0, MAX_LENGTH + 1, count)
    lengths[:10] = 0
    token_ids = np.zeros((count, MAX_LENGTH), dtype=np.int32)
    for index, length in enumerate(lengths):
        token_ids[index, :length] = rng.integers(2, 100, length)
    return token_ids, np.arange(count, dtype=np.int32), lengths


def epochs(dataset, count: int = 2) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    return [
        [(ids.numpy(), labels.numpy()) for ids, labels in dataset] for _ in range(count)
    ]


def order(batches) -> np.ndarray:
    return np.concatenate([labels for _, labels in batches])


def test_bucket_boundaries_are_few_and_end_at_max_length():
    assert bucket_boundaries(40) == [16, 32, 40]
    assert bucket_boundaries(16) == [16]
    assert bucket_boundaries(1000) == [16, 32, 48, 64, 80, 96, 112, 128, 256, 512, 1000]


def test_shuffled_buckets_hold_each_example_once_with_bounded_shapes(examples):
    token_ids, labels, lengths = examples
    [batches] = epochs(make_dataset(token_ids, labels, 32, shuffle=True, seed=1), 1)
    boundaries = bucket_boundaries(MAX_LENGTH)
    for ids, index in batches:
        width = ids.shape[1]
        assert ids.dtype == np.int32 and index.dtype == np.int32
        assert width in boundaries and len(ids) <= 32
        np.testing.assert_array_equal(ids, token_ids[index, :width])
        # One bucket per batch: every example needs this width, none a smaller one.
        narrower = ([0] + boundaries)[boundaries.index(width)]
        assert (lengths[index] <= width).all()
        assert (lengths[index] > narrower).all() or width == boundaries[0]
    assert sorted(order(batches)) == labels.tolist()


def test_shuffle_is_deterministic_per_seed_and_changes_each_epoch(examples):
    token_ids, labels, _ = examples
    first = epochs(make_dataset(token_ids, labels, 32, shuffle=True, seed=5))
    again = epochs(make_dataset(token_ids, labels, 32, shuffle=True, seed=5))
    other = epochs(make_dataset(token_ids, labels, 32, shuffle=True, seed=6))
    for epoch, repeat in zip(first, again, strict=True):
        np.testing.assert_array_equal(order(epoch), order(repeat))
    assert not np.array_equal(order(first[0]), order(first[1]))
    assert not np.array_equal(order(first[0]), order(other[0]))
    assert sorted(order(first[1])) == labels.tolist()


def test_without_shuffle_the_order_is_kept_and_widths_are_minimal(examples):
    token_ids, labels, lengths = examples
    batches = epochs(make_dataset(token_ids, labels, 64, shuffle=False, seed=0), 1)[0]
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), labels)
    boundaries = np.asarray(bucket_boundaries(MAX_LENGTH))
    for index, (ids, _) in enumerate(batches):
        longest = lengths[index * 64 : index * 64 + len(ids)].max()
        assert ids.shape[1] == boundaries[np.searchsorted(boundaries, longest)]
        np.testing.assert_array_equal(
            ids, token_ids[index * 64 : index * 64 + len(ids), : ids.shape[1]]
        )


def test_without_buckets_every_batch_is_max_length(examples):
    token_ids, labels, _ = examples
    for shuffle in (True, False):
        dataset = make_dataset(
            token_ids, labels, 100, shuffle=shuffle, seed=0, bucket=False
        )
        widths = {ids.shape[1] for ids, _ in dataset}
        assert widths == {MAX_LENGTH}


def test_make_dataset_rejects_mismatched_arrays(examples):
    token_ids, labels, _ = examples
    with pytest.raises(ValueError, match="expected token_ids"):
        make_dataset(token_ids, labels[:-1], 8, shuffle=False, seed=0)


def test_tokenize_texts_is_batched_int32_and_matches_the_tokenizer():
    texts = [f"review {index} of a good film" for index in range(50)]
    tokenizer = fit_tokenizer(TokenizerConfig(), texts, 8)
    token_ids = tokenize_texts(tokenizer, texts, batch_size=7)
    assert token_ids.dtype == np.int32 and token_ids.shape == (50, 8)
    np.testing.assert_array_equal(token_ids, np.asarray(tokenizer(texts)))
    assert tokenize_texts(tokenizer, []).shape == (0, 8)
