"""Tests for the TensorBoard extras: attention summaries, projector and hparams.

Tiny arrays and a fake attention function; the event files are read back record
by record as TensorFlow `Event` protos.
"""

import io
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from PIL import Image
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.projector import ProjectorConfig

from nlp_attn import summaries

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VOCABULARY = ["", "[UNK]", "the", "movie", "was", "great", "bad", "plot", "a|b", "fun"]
TEXTS = ["the movie was great", "plot a|b fun"]
TOKEN_IDS = np.array([[2, 3, 4, 5, 0, 0], [7, 8, 9, 0, 0, 0]], dtype=np.int32)
TOKENS = [["the", "movie", "was", "great"], ["plot", "a|b", "fun"]]


def two_head_attention(token_ids):
    """Head 1: weight grows with the token id; head 2: uniform over the tokens."""
    real = (token_ids != 0).astype(np.float32)
    by_id = token_ids.astype(np.float32) * real
    by_id /= np.maximum(by_id.sum(axis=1, keepdims=True), 1.0)
    uniform = real / np.maximum(real.sum(axis=1, keepdims=True), 1.0)
    return np.stack([by_id, uniform], axis=1)


class Record(NamedTuple):
    step: int
    value: np.ndarray | None
    plugin: str
    content: bytes


def read_events(directory):
    """Every summary value under `directory`, as {tag: [Record, ...]} in order.

    TensorFlow stores a tag's plugin name and content with its first value only,
    so later records repeat them from there.
    """
    records = {}
    for path in sorted(Path(directory).glob("events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for summary in event.summary.value:
                earlier = records.setdefault(summary.tag, [])
                plugin_data = summary.metadata.plugin_data
                plugin, content = (
                    (earlier[0].plugin, earlier[0].content)
                    if earlier
                    else (plugin_data.plugin_name, plugin_data.content)
                )
                value = (
                    tf.make_ndarray(summary.tensor)
                    if summary.HasField("tensor")
                    else None
                )
                earlier.append(Record(event.step, value, plugin, content))
    return records


def make_callback(log_dir, **kwargs):
    return summaries.AttentionSummaries(
        log_dir,
        texts=TEXTS,
        token_ids=TOKEN_IDS,
        tokens=TOKENS,
        attention_fn=two_head_attention,
        validation_token_ids=np.tile(TOKEN_IDS, (5, 1)),
        vocabulary=VOCABULARY,
        **kwargs,
    )


def test_callback_writes_heatmaps_and_token_tables(tmp_path):
    callback = make_callback(tmp_path)
    callback.on_epoch_end(0)
    callback.on_epoch_end(1)
    callback.on_train_end()

    events = read_events(tmp_path / "attention")
    heatmaps = events["attention/heatmaps"]
    assert [record.step for record in heatmaps] == [0, 1]
    assert heatmaps[0].plugin == "images"
    width, height, *pngs = heatmaps[0].value
    assert len(pngs) == len(TEXTS)
    for png in pngs:
        assert png.startswith(PNG_SIGNATURE)
        assert Image.open(io.BytesIO(png)).size == (int(width), int(height))

    tokens_record = events["attention/tokens"][-1]
    markdown = tokens_record.value.item().decode()
    assert (tokens_record.step, tokens_record.plugin) == (1, "text")
    assert "| # | token | head 1 | head 2 |" in markdown
    # "great" has the largest id of text 1, so head 1 gives it 5 / 14.
    assert "| 4 | great | **0.357** | 0.250 |" in markdown
    assert "| 2 | a\\|b |" in markdown

    top_markdown = events["attention/top_tokens"][-1].value.item().decode()
    assert "| rank | token | mean attention | vs. uniform | count |" in top_markdown
    # Heads averaged: "fun" gets (9 / 24 + 1 / 3) / 2, more than any other token.
    assert "| 1 | fun | 0.3542 | 1.06 | 5 |" in top_markdown


def test_callback_accepts_single_head_attention(tmp_path):
    def one_head(token_ids):
        return two_head_attention(token_ids)[:, 1]

    callback = make_callback(tmp_path)
    callback.attention_fn = one_head
    callback.on_epoch_end(0)
    callback.on_train_end()

    record = read_events(tmp_path / "attention")["attention/tokens"][0]
    assert "| # | token | attention |" in record.value.item().decode()


def test_callback_rejects_tokens_not_aligned_with_ids(tmp_path):
    with pytest.raises(ValueError, match=r"tokens\[1\]"):
        summaries.AttentionSummaries(
            tmp_path,
            TEXTS,
            TOKEN_IDS,
            [TOKENS[0], ["plot"]],
            two_head_attention,
            TOKEN_IDS,
            VOCABULARY,
        )


def test_callback_rejects_attention_of_the_wrong_shape(tmp_path):
    callback = make_callback(tmp_path)
    callback.attention_fn = lambda token_ids: two_head_attention(token_ids)[:, :, :4]
    with pytest.raises(ValueError, match="attention_fn"):
        callback.on_epoch_end(0)


@pytest.mark.parametrize(
    ("batches", "log_batch_loss", "expected_steps"),
    [
        (range(10), True, [4, 8]),
        # steps_per_execution=3: Keras reports the last batch index of each run.
        ([2, 5, 8, 11], True, [6, 9, 12]),
        (range(10), False, [4, 8]),
    ],
)
def test_batch_scalars(tmp_path, batches, log_batch_loss, expected_steps):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.125), loss="mse")
    callback = make_callback(tmp_path, log_every_steps=4, log_batch_loss=log_batch_loss)
    callback.set_model(model)
    callback.on_train_begin()
    callback.on_epoch_begin(0)
    for batch in batches:
        callback.on_train_batch_end(batch, {"loss": 0.5 + batch})
    callback.on_train_end()

    events = read_events(tmp_path / "train")
    rates = events["learning_rate"]
    assert [record.step for record in rates] == expected_steps
    assert all(float(record.value) == pytest.approx(0.125) for record in rates)
    if log_batch_loss:
        losses = {record.step: float(record.value) for record in events["batch_loss"]}
        assert losses[expected_steps[0]] == pytest.approx(expected_steps[0] - 0.5)
    else:
        assert "batch_loss" not in events


def test_top_tokens_ranks_by_mean_attention_where_a_token_appears():
    # Rows of 4 positions; "great" (5) always gets 0.6, "bad" (6) 0.3, "the" (2)
    # 0.1. "fun" (9) gets 0.9 but is seen only twice, under the minimum count.
    token_ids = np.array(
        [[2, 5, 6, 0]] * 4 + [[9, 2, 5, 6]] * 2,
        dtype=np.int32,
    )
    head = np.array([[0.1, 0.6, 0.3, 0.0]] * 4 + [[0.9, 0.0, 0.05, 0.05]] * 2)
    # Two heads that average to `head`.
    attention = np.stack([head * 1.5, head * 0.5], axis=1)

    ranking = summaries.top_tokens(token_ids, attention, VOCABULARY, min_count=3)

    assert [row.token for row in ranking] == ["great", "bad", "the"]
    great, bad, the = ranking
    assert great.count == 6
    assert great.mean_attention == pytest.approx((4 * 0.6 + 2 * 0.05) / 6)
    assert bad.mean_attention == pytest.approx((4 * 0.3 + 2 * 0.05) / 6)
    assert the.mean_attention == pytest.approx(4 * 0.1 / 6)
    # Relative to uniform: the weight times the text's 3 or 4 tokens.
    assert great.relative_attention == pytest.approx((4 * 0.6 * 3 + 2 * 0.05 * 4) / 6)
    assert summaries.top_tokens(token_ids, attention, VOCABULARY, min_count=7) == []
    with_rare = summaries.top_tokens(token_ids, attention, VOCABULARY, min_count=2)
    assert [row.token for row in with_rare] == ["fun", "great", "bad", "the"]
    assert len(summaries.top_tokens(token_ids, attention, VOCABULARY, limit=2)) == 2


def test_top_tokens_markdown_escapes_tokens_and_handles_no_rows():
    ranking = [summaries.TokenAttention("a|b*", 0.5, 1.25, 7)]
    markdown = summaries.top_tokens_markdown(ranking, texts=10)
    assert "| 1 | a\\|b\\* | 0.5000 | 1.25 | 7 |" in markdown
    assert "over 10 validation texts" in markdown
    assert "No token appears" in summaries.top_tokens_markdown([], texts=0)


def test_heatmap_figure_has_a_row_per_head_and_token_labels():
    tokens = ["the", "movie", "was"]
    figure = summaries.heatmap_figure(
        tokens, np.array([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]]), "two heads"
    )

    heatmap_axes, colorbar_axes = figure.axes
    assert heatmap_axes.images[0].get_array().shape == (2, 3)
    assert [label.get_text() for label in heatmap_axes.get_xticklabels()] == tokens
    assert [label.get_text() for label in heatmap_axes.get_yticklabels()] == [
        "head 1",
        "head 2",
    ]
    assert heatmap_axes.get_xticklabels()[0].get_rotation() == 60
    assert colorbar_axes.get_ylabel() == "attention"
    assert summaries.figure_to_png(figure).startswith(PNG_SIGNATURE)


def test_heatmap_figure_shows_the_first_tokens_of_a_long_text():
    tokens = [f"token{index}" for index in range(100)]
    figure = summaries.heatmap_figure(tokens, np.full(100, 0.01), "long")

    axes = figure.axes[0]
    assert axes.images[0].get_array().shape == (1, summaries.MAX_HEATMAP_TOKENS)
    assert "first 64 of 100 tokens" in axes.get_title(loc="left")
    with pytest.raises(ValueError, match="one weight per token"):
        summaries.heatmap_figure(tokens[:3], np.ones(4), "mismatch")


def test_write_projector(tmp_path):
    vocabulary = VOCABULARY[:8] + ["tab\there", "new\nline"]
    embeddings = np.arange(40, dtype=np.float32).reshape(10, 4)

    summaries.write_projector(tmp_path, embeddings, vocabulary)

    directory = tmp_path / "projector"
    rows = (directory / "metadata.tsv").read_text(encoding="utf-8").split("\n")
    assert rows[:3] == ["[PAD]", "[UNK]", "the"]
    assert rows[8:] == ["tab\\there", "new\\nline", ""]

    config = text_format.Parse(
        (directory / "projector_config.pbtxt").read_text(), ProjectorConfig()
    )
    (embedding,) = config.embeddings
    assert embedding.metadata_path == "metadata.tsv"
    reader = tf.train.load_checkpoint(str(directory))
    np.testing.assert_array_equal(reader.get_tensor(embedding.tensor_name), embeddings)
    assert list(directory.glob("events.out.tfevents.*"))

    with pytest.raises(ValueError, match="one row per vocabulary entry"):
        summaries.write_projector(tmp_path, embeddings[:5], vocabulary)


def test_write_hparams(tmp_path):
    config = {
        "train": {"learning_rate": 0.01, "epochs": 2, "mixed_precision": "none"},
        "model": {"pooling": "attention", "position_embedding": False},
        "data": {"validation": None, "shape": (2, 3)},
    }

    summaries.write_hparams(tmp_path, config, {"val_accuracy": 0.75})

    events = read_events(tmp_path / "hparams")
    record = events[hparams_metadata.SESSION_START_INFO_TAG][0]
    assert record.plugin == hparams_metadata.PLUGIN_NAME
    start = hparams_metadata.parse_session_start_info_plugin_data(record.content)
    assert start.hparams["train.learning_rate"].number_value == pytest.approx(0.01)
    assert start.hparams["train.epochs"].number_value == 2
    assert start.hparams["model.pooling"].string_value == "attention"
    assert start.hparams["model.position_embedding"].bool_value is False
    assert start.hparams["data.shape"].string_value == "(2, 3)"
    assert "data.validation" not in start.hparams
    [metric] = events["val_accuracy"]
    assert (metric.step, float(metric.value)) == (0, pytest.approx(0.75))
