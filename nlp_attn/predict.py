"""Labels and class probabilities for raw texts, from a finished run directory.

Comes after `train`: it loads the run's `model.keras`; `evaluate`, `explain` and
`export` share its run loading and batched prediction.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from nlp_attn import rundir, tokenize
from nlp_attn.config import Config, load_config
from nlp_attn.data.sources import SPEC_FORMS, parse_spec, read_source
from nlp_attn.errors import ConfigError, DataError, RunError
from nlp_attn.model import classifier_of, tokenizer_of

PREDICTION_BATCH_SIZE = 256
PREVIEW_CHARACTERS = 60
INPUT_SPLIT = "test"


@dataclasses.dataclass
class Run:
    """A finished run, loaded: its config, label names and end-to-end model.

    Attributes:
        path: the run directory.
        config: the resolved config the run was trained with.
        label_names: label names in index order (`labels.txt`).
        model: the end-to-end model from `model.keras`, strings `(batch,)` in,
            logits `(batch, classes)` out.
    """

    path: Path
    config: Config
    label_names: list[str]
    model: keras.Model

    @property
    def tokenizer(self) -> keras.layers.Layer:
        return tokenizer_of(self.model)

    @property
    def classifier(self) -> keras.Model:
        return classifier_of(self.model)

    @property
    def max_length(self) -> int:
        return tokenize.max_length(self.tokenizer)


@dataclasses.dataclass
class Predictions:
    """The model's answer for a batch of texts.

    Attributes:
        texts: the texts, `n` of them.
        logits: float32 `(n, classes)`.
        probabilities: float32 `(n, classes)`, the softmax of the logits.
        truncated: bool `(n,)`, True where a text had more tokens than the run's
            `data.max_length` and only its first tokens were seen.
    """

    texts: list[str]
    logits: np.ndarray
    probabilities: np.ndarray
    truncated: np.ndarray

    @property
    def label_indices(self) -> np.ndarray:
        return self.probabilities.argmax(axis=-1)


def predict_command(
    run: str | Path, texts: Sequence[str], input: str | None, json: bool = False
) -> str:
    """Labels texts with a run's model: what `nlp-attn predict` prints.

    Args:
        run: the run directory.
        texts: the texts to label; used when `input` is not given.
        input: a UTF-8 file with one text a line, or a data spec (`csv:PATH`, ...)
            whose texts are read (its labels are ignored).
        json: print one JSON object a line instead of a table.

    Returns:
        The text to print: per text its label and class probabilities, and a
        note when texts were cut to the run's `data.max_length` tokens.

    Raises:
        RunError: the run directory is missing or incomplete.
        DataError: the input cannot be read or holds no texts.
    """
    loaded = load_run(run)
    if input is not None:
        texts = read_texts(input, loaded.config)
    if not texts:
        raise DataError("no texts to predict")
    predictions = predict_texts(loaded, texts)
    if json:
        return format_json_lines(predictions, loaded.label_names)
    return format_table(predictions, loaded.label_names, loaded.max_length)


def load_run(path: str | Path) -> Run:
    """Loads a finished run directory.

    Raises:
        RunError: the directory, its config, labels or model is missing, or the
            model does not match the labels.
    """
    path = rundir.require_run(path, rundir.LABELS_FILE, rundir.MODEL_FILE)
    config = load_config(path / rundir.CONFIG_FILE)
    label_names = rundir.read_labels(path)
    model = load_model(path / rundir.MODEL_FILE)
    classes = model.output_shape[-1]
    if classes != len(label_names):
        raise RunError(
            f"{path / rundir.MODEL_FILE} gives {classes} classes but "
            f"{rundir.LABELS_FILE} names {len(label_names)}"
        )
    return Run(path, config, label_names, model)


def load_model(path: str | Path) -> keras.Model:
    """Loads a `.keras` file with Keras' safe mode on.

    Raises:
        RunError: the file is missing or cannot be loaded.
    """
    path = Path(path)
    if not path.is_file():
        raise RunError(f"model file not found: {path}")
    try:
        return keras.saving.load_model(path)
    except Exception as error:  # noqa: BLE001 - any failure means an unusable file
        raise RunError(f"cannot load {path}: {type(error).__name__}: {error}") from None


def predict_texts(
    run: Run, texts: Sequence[str], batch_size: int = PREDICTION_BATCH_SIZE
) -> Predictions:
    """Runs the run's end-to-end model over texts, `batch_size` texts a step.

    Args:
        run: a loaded run.
        texts: the raw texts; empty strings are fine.
        batch_size: texts per model call.

    Returns:
        The `Predictions`.
    """
    texts = [str(text) for text in texts]
    logits = predict_logits(run.model, texts, batch_size)
    probabilities = tf.nn.softmax(logits, axis=-1).numpy()
    lengths = tokenize.token_lengths(run.tokenizer, texts) if texts else np.zeros(0)
    return Predictions(texts, logits, probabilities, lengths > run.max_length)


def predict_logits(
    model: keras.Model, texts: Sequence[str], batch_size: int = PREDICTION_BATCH_SIZE
) -> np.ndarray:
    """Returns an end-to-end model's float32 logits `(n, classes)` for raw texts."""
    if not len(texts):
        return np.zeros((0, model.output_shape[-1]), dtype=np.float32)
    strings = tf.constant(np.asarray(texts, dtype=object), dtype=tf.string)
    batches = tf.data.Dataset.from_tensor_slices(strings).batch(batch_size)
    return np.asarray(model.predict(batches, verbose=0), dtype=np.float32)


def read_texts(input: str, config: Config) -> list[str]:
    """Reads the texts of `predict --input`: a text file or a data spec.

    An existing file is read as UTF-8, one text a line (an empty line is an
    empty text). Anything else must be a data spec; a source with named splits
    gives its `test` split.

    Raises:
        DataError: the file is not UTF-8, or the input is neither a file nor a
            readable data spec.
    """
    path = Path(input).expanduser()
    if path.is_file():
        try:
            return path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as error:
            raise DataError(f"{path} is not UTF-8 text: {error.reason}") from None
    try:
        parse_spec(input)
    except ConfigError:
        raise DataError(
            f"--input {input}: no such file, and not a data spec ({SPEC_FORMS})"
        ) from None
    source = read_source(input, config.data, (INPUT_SPLIT,))
    return [str(text) for text in source.select(INPUT_SPLIT).texts]


def format_table(
    predictions: Predictions, label_names: list[str], max_length: int
) -> str:
    """One line per text: its label, every class probability and the text."""
    width = max(len(name) for name in label_names)
    lines = []
    for index, text in enumerate(predictions.texts):
        label = label_names[predictions.label_indices[index]]
        probabilities = "  ".join(
            f"{name} {probability:.3f}"
            for name, probability in zip(
                label_names, predictions.probabilities[index], strict=True
            )
        )
        mark = "*" if predictions.truncated[index] else " "
        lines.append(f"{label:<{width}}  {probabilities}  {mark}{preview(text)}")
    cut = int(predictions.truncated.sum())
    if cut:
        lines.append(truncation_note(cut, max_length, marker="*"))
    return "\n".join(lines)


def format_json_lines(predictions: Predictions, label_names: list[str]) -> str:
    """One JSON object per text: text, label, probabilities, truncated."""
    lines = []
    for index, text in enumerate(predictions.texts):
        record = {
            "text": text,
            "label": label_names[predictions.label_indices[index]],
            "probabilities": {
                name: float(probability)
                for name, probability in zip(
                    label_names, predictions.probabilities[index], strict=True
                )
            },
            "truncated": bool(predictions.truncated[index]),
        }
        lines.append(json.dumps(record, ensure_ascii=False))
    return "\n".join(lines)


def truncation_note(count: int, max_length: int, marker: str = "") -> str:
    """Says that `count` texts were cut to their first `max_length` tokens."""
    texts = "text was" if count == 1 else "texts were"
    marked = f" ({marker})" if marker else ""
    return (
        f"note: {count} {texts}{marked} longer than data.max_length={max_length} "
        "tokens; the model saw only the first tokens"
    )


def preview(text: str, limit: int = PREVIEW_CHARACTERS) -> str:
    """The text on one line, shortened to `limit` characters; `""` for empty."""
    flat = " ".join(text.split())
    if not flat:
        return '""'
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
