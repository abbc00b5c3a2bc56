"""TensorBoard extras of a training run: attention heatmaps, token tables, projector.

Used by `train.py` next to `keras.callbacks.TensorBoard` (which logs the epoch scalars
and weight histograms); everything here lands under the run's `logs/` folder.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tensorboard.plugins import projector
from tensorboard.plugins.hparams import api as hp

ATTENTION_DIR = "attention"
TRAIN_DIR = "train"
PROJECTOR_DIR = "projector"
HPARAMS_DIR = "hparams"
PROJECTOR_CHECKPOINT_PREFIX = "embedding.ckpt"
PROJECTOR_METADATA_FILE = "metadata.tsv"
PADDING_DISPLAY = "[PAD]"

MIN_TOKEN_COUNT = 5
TOP_TOKEN_ROWS = 20
MAX_HEATMAP_TOKENS = 64
MAX_TICK_LABEL_CHARACTERS = 16
MAX_QUOTED_TEXT_CHARACTERS = 300
ATTENTION_BATCH_ROWS = 512
FIGURE_DPI = 100

_MARKDOWN_ESCAPED = "\\`*_{}[]()#+-.!|"


class TokenAttention(NamedTuple):
    """How much attention one vocabulary entry receives, averaged where it appears.

    Attributes:
        token: The vocabulary entry.
        mean_attention: Mean attention weight over its occurrences (heads averaged).
        relative_attention: Mean of the weight times the length of its text, so
            1.0 means the token gets the share a uniform average would give it.
        count: Number of occurrences in the sample.
    """

    token: str
    mean_attention: float
    relative_attention: float
    count: int


class AttentionSummaries(keras.callbacks.Callback):
    """Logs what the attention pooling looks at, for TensorBoard.

    At the end of every epoch (TensorBoard step = the epoch index, as for
    `keras.callbacks.TensorBoard`) it writes to `<log_dir>/attention/`:

    - image `attention/heatmaps`: one heatmap per sample text, tokens along the
      x axis, one row per attention head;
    - text `attention/tokens`: per sample text, a Markdown table of its tokens
      and their attention weights;
    - text `attention/top_tokens`: the vocabulary entries with the highest mean
      attention over a sample of validation texts (see `top_tokens`).

    Every `log_every_steps` optimizer steps it also writes the scalars
    `learning_rate` (the optimizer's current value, so schedules show up; the
    Keras callback only logs it once per epoch) and `batch_loss` (the running
    mean of the epoch's loss that Keras reports) to `<log_dir>/train/`, with the
    optimizer step as TensorBoard step. `keras.callbacks.TensorBoard` writes its
    own `batch_loss` when its `update_freq` is a number of batches: pass
    `log_batch_loss=False` then, so the two do not collide.

    Args:
        log_dir: The run's TensorBoard folder (`<run>/logs`).
        texts: The raw sample texts, a handful (about 6).
        token_ids: int array `(texts, sequence)` of their token ids, 0 = padding.
        tokens: Per text, the display tokens of its non-padding ids, in order.
        attention_fn: Maps token ids `(rows, sequence)` to attention weights
            `(rows, heads, sequence)` (or `(rows, sequence)` for one head), 0 at
            padding.
        validation_token_ids: int array `(rows, sequence)`, a sample of validation
            texts (a few thousand rows at most) for the top-tokens table.
        vocabulary: The tokenizer vocabulary, indexed by token id.
        log_every_steps: Interval, in optimizer steps, of the batch scalars.
        log_batch_loss: Whether to write `batch_loss` (see above).

    Example:

    ```python
    summaries = AttentionSummaries(
        run_dir / "logs", texts, token_ids, tokens, attention_fn,
        validation_token_ids, vocabulary, log_every_steps=50,
    )
    model.fit(train, epochs=3, callbacks=[tensorboard, summaries])
    ```
    """

    def __init__(
        self,
        log_dir: str | os.PathLike,
        texts: list[str],
        token_ids: np.ndarray,
        tokens: list[list[str]],
        attention_fn: Callable[[np.ndarray], Any],
        validation_token_ids: np.ndarray,
        vocabulary: list[str],
        log_every_steps: int = 50,
        log_batch_loss: bool = True,
    ):
        super().__init__()
        token_ids = np.asarray(token_ids)
        validation_token_ids = np.asarray(validation_token_ids)
        _check_token_ids("token_ids", token_ids)
        _check_token_ids("validation_token_ids", validation_token_ids)
        if not len(texts) == len(tokens) == len(token_ids):
            raise ValueError(
                "`texts`, `tokens` and `token_ids` must have one entry per text. "
                f"Received: {len(texts)}, {len(tokens)} and {len(token_ids)} entries"
            )
        for index, (text_tokens, ids) in enumerate(zip(tokens, token_ids, strict=True)):
            if len(text_tokens) != np.count_nonzero(ids):
                raise ValueError(
                    f"`tokens[{index}]` must have one token per non-padding id. "
                    f"Received: {len(text_tokens)} tokens for "
                    f"{np.count_nonzero(ids)} ids"
                )
        if log_every_steps < 1:
            raise ValueError(
                f"`log_every_steps` must be at least 1. Received: {log_every_steps}"
            )

        self.log_dir = os.fspath(log_dir)
        self.texts = list(texts)
        self.token_ids = token_ids
        self.tokens = [list(text_tokens) for text_tokens in tokens]
        self.attention_fn = attention_fn
        self.validation_token_ids = validation_token_ids
        self.vocabulary = list(vocabulary)
        self.log_every_steps = log_every_steps
        self.log_batch_loss = log_batch_loss
        self._writers: dict[str, Any] = {}
        self._epoch_start_step = 0
        self._last_logged_step = 0

    def on_train_begin(self, logs=None):
        self._last_logged_step = int(self.model.optimizer.iterations)

    def on_epoch_begin(self, epoch, logs=None):
        # Read the step once an epoch; batches add their index to it, which stays
        # right with `steps_per_execution` > 1 (Keras passes the last index run).
        self._epoch_start_step = int(self.model.optimizer.iterations)

    def on_train_batch_end(self, batch, logs=None):
        step = self._epoch_start_step + batch + 1
        if (
            step // self.log_every_steps
            <= self._last_logged_step // self.log_every_steps
        ):
            return
        self._last_logged_step = step
        with self._writer(TRAIN_DIR).as_default(step=step):
            learning_rate = _current_learning_rate(self.model.optimizer)
            if learning_rate is not None:
                tf.summary.scalar("learning_rate", learning_rate)
            if self.log_batch_loss and isinstance(logs, dict) and "loss" in logs:
                tf.summary.scalar("batch_loss", float(logs["loss"]))

    def on_epoch_end(self, epoch, logs=None):
        sample_attention = _attention_in_batches(self.attention_fn, self.token_ids)
        validation_attention = _attention_in_batches(
            self.attention_fn, self.validation_token_ids
        )
        text_weights = [
            weights[:, ids != 0]
            for weights, ids in zip(sample_attention, self.token_ids, strict=True)
        ]
        ranking = top_tokens(
            self.validation_token_ids, validation_attention, self.vocabulary
        )

        with self._writer(ATTENTION_DIR).as_default(step=epoch):
            if self.texts:
                tf.summary.image(
                    "attention/heatmaps",
                    self._heatmap_images(text_weights),
                    max_outputs=len(self.texts),
                    description="Attention weights of each sample text, per head.",
                )
            tf.summary.text("attention/tokens", self._tokens_markdown(text_weights))
            tf.summary.text(
                "attention/top_tokens",
                top_tokens_markdown(ranking, len(self.validation_token_ids)),
            )
        self._writer(ATTENTION_DIR).flush()

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}

    def _writer(self, name: str):
        if name not in self._writers:
            path = os.path.join(self.log_dir, name)
            self._writers[name] = tf.summary.create_file_writer(path)
        return self._writers[name]

    def _heatmap_images(self, text_weights: list[np.ndarray]) -> np.ndarray:
        """Renders one heatmap per text; `(texts, height, width, 3)` uint8."""
        images = []
        for number, (text, text_tokens, weights) in enumerate(
            zip(self.texts, self.tokens, text_weights, strict=True), start=1
        ):
            title = f"{number}. {_shorten(text, 80)}"
            figure = heatmap_figure(text_tokens, weights, title)
            images.append(_figure_to_array(figure))

        # A summary holds images of one size: pad the smaller ones with white.
        height = max(image.shape[0] for image in images)
        width = max(image.shape[1] for image in images)
        batch = np.full((len(images), height, width, 3), 255, dtype=np.uint8)
        for index, image in enumerate(images):
            batch[index, : image.shape[0], : image.shape[1]] = image
        return batch

    def _tokens_markdown(self, text_weights: list[np.ndarray]) -> str:
        sections = []
        for number, (text, text_tokens, weights) in enumerate(
            zip(self.texts, self.tokens, text_weights, strict=True), start=1
        ):
            sections.append(
                f"**Text {number}**\n\n"
                f"> {_markdown_cell(_shorten(text, MAX_QUOTED_TEXT_CHARACTERS))}\n\n"
                + _token_weights_table(text_tokens, weights)
            )
        return "\n\n".join(sections) if sections else "No sample texts."


def top_tokens(
    token_ids: np.ndarray,
    attention: np.ndarray,
    vocabulary: list[str],
    min_count: int = MIN_TOKEN_COUNT,
    limit: int = TOP_TOKEN_ROWS,
) -> list[TokenAttention]:
    """Ranks vocabulary entries by the mean attention they receive where they appear.

    Args:
        token_ids: int array `(rows, sequence)`, 0 = padding (never ranked).
        attention: float array `(rows, heads, sequence)` or `(rows, sequence)`;
            heads are averaged.
        vocabulary: The tokenizer vocabulary, indexed by token id.
        min_count: Entries seen fewer times than this are left out, so that a
            rare token seen once in a short text does not top the table.
        limit: The most rows returned.

    Returns:
        Up to `limit` `TokenAttention` rows, highest mean attention first (ties
        broken by count, then id).
    """
    token_ids = np.asarray(token_ids)
    weights = _with_heads_axis(np.asarray(attention, dtype=np.float64)).mean(axis=1)
    if weights.shape != token_ids.shape:
        raise ValueError(
            "`attention` must match `token_ids` in rows and sequence length. "
            f"Received: {weights.shape} and {token_ids.shape}"
        )

    real = token_ids != 0
    lengths = np.broadcast_to(real.sum(axis=1, keepdims=True), token_ids.shape)
    ids = token_ids[real].astype(np.int64)
    size = max(len(vocabulary), int(ids.max(initial=0)) + 1)
    counts = np.bincount(ids, minlength=size)
    sums = np.bincount(ids, weights=weights[real], minlength=size)
    relative_sums = np.bincount(
        ids, weights=weights[real] * lengths[real], minlength=size
    )

    eligible = np.flatnonzero(counts >= max(min_count, 1))
    means = sums[eligible] / counts[eligible]
    order = np.lexsort((eligible, -counts[eligible], -means))[:limit]
    return [
        TokenAttention(
            token=_vocabulary_entry(vocabulary, int(eligible[index])),
            mean_attention=float(means[index]),
            relative_attention=float(relative_sums[eligible[index]])
            / int(counts[eligible[index]]),
            count=int(counts[eligible[index]]),
        )
        for index in order
    ]


def top_tokens_markdown(
    ranking: list[TokenAttention], texts: int, min_count: int = MIN_TOKEN_COUNT
) -> str:
    """Formats a `top_tokens` ranking as a Markdown table with a short caption.

    Args:
        ranking: What `top_tokens` returned.
        texts: How many texts the ranking was computed over.
        min_count: The `min_count` it was computed with.

    Returns:
        Markdown: the caption, then the table (or a line saying it is empty).
    """
    caption = (
        f"Mean attention a token receives where it appears, over {texts} "
        f"validation texts (heads averaged; tokens seen at least {min_count} "
        "times). *vs. uniform* is the weight times the text's token count: "
        "1.0 is the share of a plain average."
    )
    if not ranking:
        return caption + "\n\nNo token appears often enough yet."
    rows = [
        f"| {rank} | {_markdown_cell(row.token)} | {row.mean_attention:.4f} "
        f"| {row.relative_attention:.2f} | {row.count} |"
        for rank, row in enumerate(ranking, start=1)
    ]
    header = [
        "| rank | token | mean attention | vs. uniform | count |",
        "|---:|---|---:|---:|---:|",
    ]
    return caption + "\n\n" + "\n".join(header + rows)


def heatmap_figure(tokens: list[str], attention: np.ndarray, title: str) -> Figure:
    """Draws the attention weights of one text as a heatmap with readable tokens.

    Tokens run along the x axis as rotated tick labels, one row per head, with a
    colorbar. Texts longer than `MAX_HEATMAP_TOKENS` show their first tokens and
    say so in the title. The figure is a plain `matplotlib.figure.Figure` drawn
    with Agg, so it needs no pyplot state and no closing.

    Args:
        tokens: The display tokens of the text, `sequence` of them.
        attention: Weights `(heads, sequence)`, or `(sequence,)` for one head.
        title: Shown above the heatmap.

    Returns:
        The figure; `figure_to_png` turns it into PNG bytes.
    """
    weights = _with_heads_axis(np.asarray(attention, dtype=np.float32)[None])[0]
    if weights.shape[1] != len(tokens):
        raise ValueError(
            "`attention` must have one weight per token. "
            f"Received: shape {tuple(np.shape(attention))} for {len(tokens)} tokens"
        )
    heads = weights.shape[0]
    shown = min(len(tokens), MAX_HEATMAP_TOKENS)
    if shown < len(tokens):
        title = f"{title} (first {shown} of {len(tokens)} tokens)"
    labels = [_shorten(token, MAX_TICK_LABEL_CHARACTERS) for token in tokens[:shown]]

    # Size from the content: a fixed width per token, room for the longest label.
    longest = max((len(label) for label in labels), default=1)
    width = max(4.5, 1.8 + 0.28 * shown)
    height = 1.0 + 0.4 * heads + 0.08 * longest
    figure = Figure(figsize=(width, height), dpi=FIGURE_DPI, layout="constrained")
    axes = figure.add_subplot()
    axes.set_title(title, loc="left", fontsize=10)
    if shown == 0:
        axes.set_axis_off()
        axes.text(0.5, 0.5, "(no tokens)", ha="center", va="center")
        return figure

    image = axes.imshow(weights[:, :shown], aspect="auto", cmap="viridis", vmin=0.0)
    axes.set_xticks(
        range(shown),
        labels=labels,
        rotation=60,
        horizontalalignment="right",
        rotation_mode="anchor",
        fontsize=9,
    )
    axes.set_yticks(range(heads), labels=[f"head {h}" for h in range(1, heads + 1)])
    figure.colorbar(image, ax=axes, label="attention", fraction=0.05, pad=0.01)
    return figure


def figure_to_png(figure: Figure) -> bytes:
    """Renders a matplotlib figure to PNG bytes, at the figure's own DPI.

    Works for figures made with or without pyplot (PNG output always goes through
    Agg). The figure is left open: one made with pyplot is the caller's to close.
    """
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def write_projector(
    log_dir: str | os.PathLike, embeddings: np.ndarray, vocabulary: list[str]
) -> None:
    """Writes an embedding matrix for TensorBoard's projector.

    Creates `<log_dir>/projector/` with the matrix as a TF checkpoint, a
    `metadata.tsv` of the vocabulary (one row per embedding row, tabs and
    newlines escaped, the empty padding entry shown as `[PAD]`) and a
    `projector_config.pbtxt` tying them together. Paths inside are relative, so
    the run directory can be moved. An empty event file marks the folder as a
    TensorBoard run, without which the projector does not look into it.

    Args:
        log_dir: The run's TensorBoard folder (`<run>/logs`).
        embeddings: float array `(vocabulary size, embedding dim)`.
        vocabulary: The tokenizer vocabulary, indexed by token id.
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(vocabulary):
        raise ValueError(
            "`embeddings` must be a matrix with one row per vocabulary entry. "
            f"Received: shape {embeddings.shape} for {len(vocabulary)} entries"
        )
    directory = os.path.join(os.fspath(log_dir), PROJECTOR_DIR)
    os.makedirs(directory, exist_ok=True)

    # `save` (not `write`) also updates the `checkpoint` file that TensorBoard uses
    # to find the latest checkpoint of the folder.
    checkpoint = tf.train.Checkpoint(embedding=tf.Variable(embeddings))
    checkpoint.save(os.path.join(directory, PROJECTOR_CHECKPOINT_PREFIX))

    metadata_path = os.path.join(directory, PROJECTOR_METADATA_FILE)
    with open(metadata_path, "w", encoding="utf-8", newline="\n") as file:
        file.writelines(_metadata_entry(entry) + "\n" for entry in vocabulary)

    config = projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = "embedding/.ATTRIBUTES/VARIABLE_VALUE"
    embedding.metadata_path = PROJECTOR_METADATA_FILE
    projector.visualize_embeddings(directory, config)

    writer = tf.summary.create_file_writer(directory)
    writer.close()


def write_hparams(
    log_dir: str | os.PathLike, config: Mapping[str, Any], metrics: dict[str, float]
) -> None:
    """Records the run's configuration and final metrics for the HParams dashboard.

    Writes to `<log_dir>/hparams/` the session's hyperparameters (one per
    flattened config key, such as `train.learning_rate`) and each metric as a
    scalar at step 0. Values that are neither a bool, a number nor a string are
    written as their string form; `None` is left out.

    No experiment definition (`hparams_config`) is written: TensorBoard then
    derives it from every run it is shown, with value types, observed domains
    and which hyperparameters differ. One written per run would be picked
    arbitrarily among runs opened together, untyped or with a domain that hides
    the other runs' values.

    Args:
        log_dir: The run's TensorBoard folder (`<run>/logs`).
        config: The resolved config as nested dicts (`Config.to_dict()`); a
            config dataclass is accepted too.
        metrics: Final metric values by name, such as `{"val_accuracy": 0.81}`.
    """
    if dataclasses.is_dataclass(config):
        config = dataclasses.asdict(config)
    writer = tf.summary.create_file_writer(
        os.path.join(os.fspath(log_dir), HPARAMS_DIR)
    )
    with writer.as_default(step=0):
        hp.hparams(_flatten_config(config))
        for name, value in metrics.items():
            tf.summary.scalar(name, float(value))
    writer.close()


def _check_token_ids(name: str, token_ids: np.ndarray) -> None:
    if token_ids.ndim != 2 or not np.issubdtype(token_ids.dtype, np.integer):
        raise ValueError(
            f"`{name}` must be a 2-D integer array (rows, sequence). "
            f"Received: shape {token_ids.shape}, dtype {token_ids.dtype}"
        )


def _with_heads_axis(attention: np.ndarray) -> np.ndarray:
    """Returns `(rows, heads, sequence)`, adding a heads axis of 1 if missing."""
    if attention.ndim == 2:
        return attention[:, None, :]
    if attention.ndim != 3:
        raise ValueError(
            "Attention weights must be `(rows, heads, sequence)` or "
            f"`(rows, sequence)`. Received: shape {attention.shape}"
        )
    return attention


def _attention_in_batches(
    attention_fn: Callable[[np.ndarray], Any], token_ids: np.ndarray
) -> np.ndarray:
    """Calls `attention_fn` on slices of `token_ids`; `(rows, heads, sequence)`."""
    if len(token_ids) == 0:
        return np.zeros((0, 1, token_ids.shape[1]), dtype=np.float32)
    parts = []
    for start, end in _slices(len(token_ids), ATTENTION_BATCH_ROWS):
        part = _with_heads_axis(np.asarray(attention_fn(token_ids[start:end])))
        if part.shape[0] != end - start or part.shape[2] != token_ids.shape[1]:
            raise ValueError(
                "`attention_fn` must return weights `(rows, heads, sequence)` for "
                f"token ids `(rows, sequence)`. Received: shape {part.shape} for "
                f"token ids of shape {(end - start, token_ids.shape[1])}"
            )
        parts.append(part)
    return np.concatenate(parts).astype(np.float32)


def _slices(total: int, size: int):
    for start in range(0, total, size):
        yield start, min(start + size, total)


def _current_learning_rate(optimizer) -> float | None:
    """The optimizer's learning rate now (schedules evaluated), or None."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        return None
    # Through a tensor: NumPy 2 warns when it converts a Keras variable directly.
    return float(keras.ops.convert_to_tensor(optimizer.learning_rate))


def _figure_to_array(figure: Figure) -> np.ndarray:
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _token_weights_table(tokens: list[str], weights: np.ndarray) -> str:
    """A Markdown table, one row per token, one weight column per head."""
    heads = weights.shape[0]
    names = ["attention"] if heads == 1 else [f"head {h}" for h in range(1, heads + 1)]
    strongest = weights.argmax(axis=1) if tokens else []
    lines = [
        "| # | token | " + " | ".join(names) + " |",
        "|---:|---|" + "---:|" * heads,
    ]
    for position, token in enumerate(tokens):
        cells = []
        for head in range(heads):
            cell = f"{weights[head, position]:.3f}"
            cells.append(f"**{cell}**" if strongest[head] == position else cell)
        lines.append(
            f"| {position + 1} | {_markdown_cell(token)} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def _markdown_cell(text: str) -> str:
    """Escapes text so Markdown shows it literally, on one line."""
    text = " ".join(text.split()) or "␣"
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "".join("\\" + char if char in _MARKDOWN_ESCAPED else char for char in text)


def _metadata_entry(entry: str) -> str:
    if entry == "":
        return PADDING_DISPLAY
    return entry.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _vocabulary_entry(vocabulary: list[str], token_id: int) -> str:
    if token_id >= len(vocabulary):
        return f"[id {token_id}]"
    return vocabulary[token_id] or PADDING_DISPLAY


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"train": {"epochs": 3}}` → `{"train.epochs": 3}`, values made loggable."""
    values = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            values.update(_flatten_config(value, prefix=f"{name}."))
        elif value is None:
            continue
        elif isinstance(value, np.generic):
            values[name] = value.item()
        elif isinstance(value, (bool, int, float, str)):
            values[name] = value
        else:
            values[name] = str(value)
    return values
