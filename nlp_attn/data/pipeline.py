"""The input pipeline: texts to cached token ids, token ids to bucketed tf.data batches.

The last step of the data stage: `train` and `evaluate` feed `make_dataset`'s batches
to the model. All work is per batch (vectorized); no Python runs per example.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from nlp_attn.tokenize import max_length as tokenizer_max_length

# Bucket boundaries: multiples of BUCKET_STEP up to BUCKET_LINEAR_UNTIL, then
# doubling, always ending at max_length: a handful of shapes for XLA, and padding
# at most a step (or twice the length, for long texts) per example.
BUCKET_STEP = 16
BUCKET_LINEAR_UNTIL = 128
# Spreads seeds apart so that (seed, epoch) pairs do not collide for any sane epoch
# count.
EPOCH_SEED_STRIDE = 1_000_003


def tokenize_texts(
    tokenizer: keras.layers.Layer,
    texts: Sequence[str] | np.ndarray,
    batch_size: int = 2048,
) -> np.ndarray:
    """Tokenizes texts in parallel batches, once, for caching.

    Args:
        tokenizer: a layer from `nlp_attn.tokenize`.
        texts: the texts, shape `(n,)`.
        batch_size: texts per call of the tokenizer.

    Returns:
        int32 array `(n, max_length)`, 0 for padding.
    """
    texts = np.asarray(texts, dtype=object)
    length = tokenizer_max_length(tokenizer)
    if len(texts) == 0:
        return np.zeros((0, length), dtype=np.int32)
    batches = tf.data.Dataset.from_tensor_slices(texts).batch(batch_size)
    batches = batches.map(
        lambda batch: tf.cast(tokenizer(batch), tf.int32),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return np.concatenate([batch.numpy() for batch in batches])


def bucket_boundaries(max_length: int) -> list[int]:
    """Returns the padded lengths a batch can have, ascending, ending at max_length.

    >>> bucket_boundaries(64)
    [16, 32, 48, 64]
    >>> bucket_boundaries(512)
    [16, 32, 48, 64, 80, 96, 112, 128, 256, 512]
    """
    boundaries = list(
        range(BUCKET_STEP, min(max_length, BUCKET_LINEAR_UNTIL) + 1, BUCKET_STEP)
    )
    while boundaries and boundaries[-1] * 2 < max_length:
        boundaries.append(boundaries[-1] * 2)
    return [boundary for boundary in boundaries if boundary < max_length] + [max_length]


def make_dataset(
    token_ids: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    bucket: bool = True,
    epoch: tf.Variable | None = None,
) -> tf.data.Dataset:
    """Batches token ids and labels, padding each batch only as far as it needs.

    With `bucket`, every batch is cut to a length from `bucket_boundaries`: the
    smallest that holds its longest example. When shuffling, examples are first
    grouped by that length (batches of similar texts, shuffled within and across
    buckets); without shuffling, batches are consecutive examples in the given
    order, so predictions line up with `labels`.

    Shuffling draws a new order on every iteration (epoch), the same series of
    orders for the same seed.

    Args:
        token_ids: int32 `(n, max_length)`, 0 for padding, from `tokenize_texts`.
        labels: int32 `(n,)`.
        batch_size: examples per batch (the last batch of a bucket may be
            smaller).
        shuffle: reshuffle on each iteration.
        seed: the shuffle seed.
        bucket: cut batches to bucket lengths; otherwise pad all to max_length.
        epoch: an int64 variable holding the current epoch (training sets it at
            the start of each). When given, the order of an iteration depends
            only on `(seed, epoch)`, not on how many iterations came before, so
            a resumed run repeats the order an uninterrupted one would have had.

    Returns:
        A dataset of `(token_ids, labels)`: int32 `(batch, length)` and int32
        `(batch,)`, with `length` from `bucket_boundaries(max_length)`.
    """
    token_ids = np.ascontiguousarray(token_ids, dtype=np.int32)
    labels = np.ascontiguousarray(labels, dtype=np.int32)
    if token_ids.ndim != 2 or len(labels) != len(token_ids):
        raise ValueError(
            "expected token_ids (n, max_length) and labels (n,), got "
            f"{token_ids.shape} and {labels.shape}"
        )
    max_length = token_ids.shape[1]
    boundaries = np.asarray(
        bucket_boundaries(max_length) if bucket else [max_length], dtype=np.int32
    )
    # Bucket of each example: the first boundary that holds its tokens.
    lengths = max_length - np.argmax(token_ids[:, ::-1] != 0, axis=1)
    lengths[~token_ids.any(axis=1)] = 0
    buckets = np.searchsorted(boundaries, lengths).astype(np.int32)

    if shuffle:
        batches = _shuffled_batches(buckets, boundaries, batch_size, seed, epoch)
    else:
        batches = _ordered_batches(buckets, boundaries, batch_size)
    token_table = tf.constant(token_ids)
    label_table = tf.constant(labels)

    def gather(indices: tf.Tensor, width: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        token_batch = tf.gather(token_table, indices)[:, :width]
        return token_batch, tf.gather(label_table, indices)

    dataset = batches.map(
        gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


def _ordered_batches(
    buckets: np.ndarray, boundaries: np.ndarray, batch_size: int
) -> tf.data.Dataset:
    """Consecutive examples; each batch as wide as its longest example's bucket."""
    starts = np.arange(0, len(buckets), batch_size)
    sizes = np.minimum(batch_size, len(buckets) - starts)
    widths = boundaries[np.maximum.reduceat(buckets, starts)] if len(starts) else []
    batches = tf.data.Dataset.from_tensor_slices(
        (starts.astype(np.int64), sizes.astype(np.int64), np.asarray(widths, np.int32))
    )
    return batches.map(
        lambda start, size, width: (tf.range(start, start + size), width)
    )


def _shuffled_batches(
    buckets: np.ndarray,
    boundaries: np.ndarray,
    batch_size: int,
    seed: int,
    epoch: tf.Variable | None,
) -> tf.data.Dataset:
    """Batches of one bucket each, drawn anew on every iteration.

    The batch layout is fixed (each bucket cut into `batch_size` pieces); each
    epoch a fresh seed from `Dataset.random` shuffles which examples fill them
    and the order of the batches, with stateless ops.
    """
    counts = np.bincount(buckets, minlength=len(boundaries))
    sizes, widths = [], []
    for bucket, count in enumerate(counts):
        full, rest = divmod(int(count), batch_size)
        sizes += [batch_size] * full + ([rest] if rest else [])
        widths += [int(boundaries[bucket])] * (full + (1 if rest else 0))
    sizes = np.asarray(sizes, dtype=np.int64)
    starts = tf.constant(np.cumsum(sizes) - sizes, dtype=tf.int64)
    sizes = tf.constant(sizes, dtype=tf.int64)
    widths = tf.constant(widths, dtype=tf.int32)
    bucket_table = tf.constant(buckets)
    count = len(buckets)

    epoch_variable = epoch

    def one_epoch(epoch_seed: tf.Tensor) -> tf.data.Dataset:
        order = tf.random.experimental.stateless_shuffle(
            tf.range(count, dtype=tf.int64),
            seed=tf.stack([epoch_seed, tf.constant(0, tf.int64)]),
        )
        # A stable sort by bucket keeps the shuffled order inside each bucket.
        order = tf.gather(
            order, tf.argsort(tf.gather(bucket_table, order), stable=True)
        )
        batch_order = tf.random.experimental.stateless_shuffle(
            tf.range(tf.size(widths)),
            seed=tf.stack([epoch_seed, tf.constant(1, tf.int64)]),
        )
        batches = tf.data.Dataset.from_tensor_slices(
            (
                tf.gather(starts, batch_order),
                tf.gather(sizes, batch_order),
                tf.gather(widths, batch_order),
            )
        )
        return batches.map(
            lambda start, size, width: (order[start : start + size], width)
        )

    if epoch_variable is None:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    else:
        # Read when each iteration starts, so the seed follows the epoch.
        seeds = tf.data.Dataset.from_tensors(tf.constant(seed, tf.int64)).map(
            lambda base: base * EPOCH_SEED_STRIDE + epoch_variable.read_value()
        )
    # The batch layout is fixed, so the count is known: Keras can size epochs
    # and progress bars from it.
    batches = seeds.take(1).flat_map(one_epoch)
    return batches.apply(tf.data.experimental.assert_cardinality(int(sizes.shape[0])))
