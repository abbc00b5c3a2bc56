"""Evaluation of a finished run: metrics, a readable report and a confusion matrix.

Reads the run directory after `train` (`nlp-attn evaluate`); writes report.json,
report.md and confusion_matrix.png, and logs them to the run's logs/evaluation/.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from html import escape
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure

from nlp_attn import rundir, tokenize
from nlp_attn.data import Examples, load_examples, load_splits
from nlp_attn.data.sources import FILE_SCHEMES, parse_spec
from nlp_attn.errors import DataError, RunError
from nlp_attn.explain import explain_texts
from nlp_attn.predict import Predictions, Run, load_run, predict_texts
from nlp_attn.summaries import figure_to_png

logger = logging.getLogger(__name__)

DEFAULT_SPLIT = "test"
CALIBRATION_BINS = 15
WORST_MISTAKES = 10
QUOTED_TEXT_CHARACTERS = 500
EVALUATION_LOGS = "evaluation"
SUMMARY_SCALARS = ("accuracy", "macro_f1", "loss", "expected_calibration_error")

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~])")
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-/]+")


@dataclasses.dataclass
class EvaluationData:
    """The examples to evaluate on and where they came from.

    Attributes:
        examples: texts and label indices in the run's label order.
        spec: the data spec the examples were read from.
        split: the split that was read.
        description: a human phrase for reports, such as "the run's own test split".
        own_split: True for a split of the run's own data, rebuilt from its config.
    """

    examples: Examples
    spec: str
    split: str
    description: str
    own_split: bool


@dataclasses.dataclass
class ReportPaths:
    """Where one evaluation writes: report.json with report.md and the image."""

    json: Path
    markdown: Path
    image: Path


def evaluate_run(
    run: str | Path,
    data: str | None = None,
    split: str | None = None,
    out: str | Path | None = None,
) -> str:
    """Evaluates a run's model and writes its report: `nlp-attn evaluate`.

    Args:
        run: the run directory.
        data: a data spec to evaluate on; by default the run's own split.
        split: the split to read (default `test`). A file spec holds a single
            collection and ignores it.
        out: where report.json goes (report.md and confusion_matrix.png are
            written beside it); a path not ending in `.json` is a folder. By
            default the run directory.

    Returns:
        A short summary table to print.

    Raises:
        RunError: the run directory is missing or incomplete, or the run has no
            such split.
        DataError: the data cannot be read, is empty, or has a label the run's
            model does not know.
    """
    loaded = load_run(run)
    evaluation = load_evaluation_data(loaded, data, split or DEFAULT_SPLIT)
    predictions = predict_texts(loaded, evaluation.examples.texts)
    labels = evaluation.examples.labels
    report = {
        "run": str(loaded.path),
        "data": evaluation.spec,
        "split": evaluation.split,
        "description": evaluation.description,
        **classification_metrics(labels, predictions.logits, loaded.label_names),
        "truncated_examples": int(predictions.truncated.sum()),
        "max_length": loaded.max_length,
    }
    mistakes = worst_mistakes(loaded, labels, predictions)
    report["worst_mistakes"] = [_mistake_record(mistake) for mistake in mistakes]

    paths = report_paths(loaded.path, out)
    image = figure_to_png(
        confusion_matrix_figure(report["confusion_matrix"], loaded.label_names)
    )
    markdown = format_markdown(report, mistakes, paths.image.name)
    with rundir.atomic_path(paths.image) as temporary:
        temporary.write_bytes(image)
    rundir.atomic_write_text(paths.markdown, markdown)
    rundir.atomic_write_text(
        paths.json, json.dumps(report, indent=2, ensure_ascii=False)
    )
    prefix = _summary_prefix(evaluation)
    log_dir = log_to_tensorboard(loaded.path, prefix, report, image, markdown)
    return format_summary(report, loaded.label_names, paths, log_dir)


def load_evaluation_data(run: Run, data: str | None, split: str) -> EvaluationData:
    """Reads the examples to evaluate on, labelled in the run's label order.

    Without `data`, the run's own split is rebuilt from its config and seed
    (the same carving as in training). With `data`, labels are matched to the
    run's by name.

    Raises:
        RunError: the run has no such split.
        DataError: the data is unreadable or empty, or has an unknown label.
    """
    if data is not None:
        examples = load_examples(data, run.config.data, run.label_names, split)
        single = parse_spec(data).scheme in FILE_SCHEMES
        description = data if single else f"{split} split of {data}"
        evaluation = EvaluationData(examples, data, split, description, own_split=False)
    else:
        evaluation = _run_split(run, split)
    if not len(evaluation.examples.texts):
        raise DataError(f"no examples to evaluate in the {evaluation.description}")
    return evaluation


def classification_metrics(
    labels: np.ndarray, logits: np.ndarray, label_names: list[str]
) -> dict:
    """Computes the report's metrics from true labels and the model's logits.

    Accuracy, loss, F1, precision, recall and the confusion matrix come from Keras
    and TensorFlow; a prediction is the class with the highest probability.

    Args:
        labels: int `(n,)`, indices into `label_names`.
        logits: float `(n, classes)`.
        label_names: the run's label names.

    Returns:
        A dict with `examples`, `accuracy`, `macro_f1`, `loss`,
        `expected_calibration_error`, `calibration_bins`, `per_class` (per label:
        `precision`, `recall`, `f1`, `support`), `label_names` and
        `confusion_matrix` (rows: true labels, columns: predicted, in
        `label_names` order).
    """
    classes = len(label_names)
    labels = np.asarray(labels, dtype=np.int32)
    logits = np.asarray(logits, dtype=np.float32)
    probabilities = tf.nn.softmax(logits, axis=-1)
    one_hot = tf.one_hot(labels, classes)

    accuracy = keras.metrics.SparseCategoricalAccuracy()
    accuracy.update_state(labels, logits)
    loss = keras.metrics.SparseCategoricalCrossentropy(from_logits=True)
    loss.update_state(labels, logits)
    # With threshold=None, F1Score counts each row's top class as its prediction.
    f1 = keras.metrics.F1Score(average=None, threshold=None)
    f1.update_state(one_hot, probabilities)
    macro_f1 = keras.metrics.F1Score(average="macro", threshold=None)
    macro_f1.update_state(one_hot, probabilities)
    confusion = tf.math.confusion_matrix(
        labels, tf.argmax(probabilities, axis=-1), num_classes=classes
    ).numpy()

    per_class = {}
    f1_values = f1.result().numpy()
    for index, name in enumerate(label_names):
        precision = keras.metrics.Precision(top_k=1, class_id=index)
        precision.update_state(one_hot, probabilities)
        recall = keras.metrics.Recall(top_k=1, class_id=index)
        recall.update_state(one_hot, probabilities)
        per_class[name] = {
            "precision": float(precision.result()),
            "recall": float(recall.result()),
            "f1": float(f1_values[index]),
            "support": int(confusion[index].sum()),
        }
    return {
        "examples": int(len(labels)),
        "accuracy": float(accuracy.result()),
        "macro_f1": float(macro_f1.result()),
        "loss": float(loss.result()),
        "expected_calibration_error": expected_calibration_error(
            probabilities.numpy(), labels
        ),
        "calibration_bins": CALIBRATION_BINS,
        "per_class": per_class,
        "label_names": list(label_names),
        "confusion_matrix": confusion.astype(int).tolist(),
    }


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = CALIBRATION_BINS
) -> float:
    """How far the model's confidence is from its accuracy, on average.

    Each example's confidence is its highest class probability. The interval
    [0, 1] is cut into `bins` equal-width bins, `(i/bins, (i+1)/bins]` (the first
    also holds 0); the error is the mean over examples of
    `|accuracy(bin) - mean confidence(bin)|` of their bin, that is
    `sum over bins of (examples in bin / examples) * |accuracy - confidence|`.
    Keras and TensorFlow have no implementation of it, hence this one.

    Args:
        probabilities: float `(n, classes)`.
        labels: int `(n,)`, the true classes.
        bins: the number of bins (15 by convention).

    Returns:
        The error, in [0, 1]; 0.0 for no examples.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if not len(probabilities):
        return 0.0
    confidence = probabilities.max(axis=-1)
    correct = (probabilities.argmax(axis=-1) == np.asarray(labels)).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    bin_index = np.clip(
        np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1
    )
    confidence_sums = np.bincount(bin_index, weights=confidence, minlength=bins)
    correct_sums = np.bincount(bin_index, weights=correct, minlength=bins)
    return float(np.abs(correct_sums - confidence_sums).sum() / len(probabilities))


@dataclasses.dataclass
class Mistake:
    """A misclassified example with its tokens (and attention when there is any).

    Attributes:
        text: the raw text.
        label: the true label name.
        predicted: the predicted label name.
        confidence: the predicted class's probability.
        tokens: the display tokens the model saw.
        attention: float32 `(heads, len(tokens))`, or None for a model that does
            not pool with attention.
    """

    text: str
    label: str
    predicted: str
    confidence: float
    tokens: list[str]
    attention: np.ndarray | None


def worst_mistakes(
    run: Run, labels: np.ndarray, predictions: Predictions, count: int = WORST_MISTAKES
) -> list[Mistake]:
    """The `count` misclassified examples the model was most confident about."""
    predicted = predictions.label_indices
    confidence = predictions.probabilities.max(axis=-1)
    wrong = np.flatnonzero(predicted != labels)
    chosen = wrong[np.argsort(-confidence[wrong], kind="stable")][:count]
    texts = [predictions.texts[index] for index in chosen]
    if run.config.model.pooling == "attention" and texts:
        explained = explain_texts(run, texts)
        tokens = [item.tokens for item in explained]
        attention = [item.attention for item in explained]
    else:
        tokens = tokenize.token_strings(run.tokenizer, texts) if texts else []
        attention = [None] * len(texts)
    return [
        Mistake(
            text=predictions.texts[index],
            label=run.label_names[labels[index]],
            predicted=run.label_names[predicted[index]],
            confidence=float(confidence[index]),
            tokens=tokens[position],
            attention=attention[position],
        )
        for position, index in enumerate(chosen)
    ]


def report_paths(run: Path, out: str | Path | None) -> ReportPaths:
    """Where report.json, report.md and confusion_matrix.png go (see `evaluate_run`)."""
    if out is None:
        report = run / rundir.REPORT_JSON
    else:
        out = Path(out)
        report = out if out.suffix == ".json" else out / rundir.REPORT_JSON
    folder = report.parent
    return ReportPaths(
        report, folder / rundir.REPORT_MARKDOWN, folder / rundir.CONFUSION_MATRIX_IMAGE
    )


def confusion_matrix_figure(
    confusion: list[list[int]], label_names: list[str]
) -> Figure:
    """Draws a confusion matrix with its counts, true labels down, predicted across.

    Cells are shaded by the share of their row (the recall of the true label), so
    small classes stay visible next to large ones.
    """
    counts = np.asarray(confusion, dtype=np.int64)
    classes = len(label_names)
    totals = np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = max(4.0, 1.5 + 0.6 * classes)
    figure = Figure(figsize=(side + 1.0, side), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(counts / totals, cmap="Blues", vmin=0.0, vmax=1.0)
    font_size = max(6, 11 - classes // 4)
    for row in range(classes):
        for column in range(classes):
            share = counts[row, column] / totals[row, 0]
            axes.text(
                column,
                row,
                str(counts[row, column]),
                ha="center",
                va="center",
                fontsize=font_size,
                color="white" if share > 0.5 else "black",
            )
    axes.set_xticks(
        range(classes),
        labels=label_names,
        rotation=45,
        horizontalalignment="right",
        rotation_mode="anchor",
    )
    axes.set_yticks(range(classes), labels=label_names)
    axes.set_xlabel("predicted label")
    axes.set_ylabel("true label")
    axes.set_title("Confusion matrix")
    figure.colorbar(
        image, ax=axes, fraction=0.046, pad=0.04, label="share of the true label"
    )
    return figure


def log_to_tensorboard(
    run: Path, prefix: str, report: dict, image: bytes, markdown: str
) -> Path:
    """Logs the metrics, the confusion matrix and the report under logs/evaluation/.

    Tags are `<prefix>/<name>`, the prefix naming the evaluated data (`test` for
    the run's test split), so evaluations of different data stay apart; the step
    is the number of epochs the run trained.
    """
    log_dir = run / rundir.LOGS_DIR / EVALUATION_LOGS
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default(step=_trained_epochs(run)):
        for name in SUMMARY_SCALARS:
            tf.summary.scalar(f"{prefix}/{name}", report[name])
        picture = tf.image.decode_png(image, channels=4)
        tf.summary.image(f"{prefix}/confusion_matrix", picture[tf.newaxis])
        tf.summary.text(f"{prefix}/report", markdown)
    writer.close()
    return log_dir


def format_summary(
    report: dict, label_names: list[str], paths: ReportPaths, log_dir: Path
) -> str:
    """The short table `nlp-attn evaluate` prints."""
    width = max(len("label"), *(len(name) for name in label_names))
    lines = [
        f"evaluated {report['examples']} examples: {report['description']}",
        f"accuracy {report['accuracy']:.4f}   macro F1 {report['macro_f1']:.4f}   "
        f"loss {report['loss']:.4f}   ECE {report['expected_calibration_error']:.4f}",
        "",
        f"{'label':<{width}}  precision  recall  f1      support",
    ]
    for name in label_names:
        row = report["per_class"][name]
        lines.append(
            f"{name:<{width}}  {row['precision']:<9.4f}  {row['recall']:<6.4f}  "
            f"{row['f1']:<6.4f}  {row['support']}"
        )
    lines += [
        "",
        f"report {paths.json} (with {paths.markdown.name}, {paths.image.name})",
        f"TensorBoard: {log_dir}",
    ]
    return "\n".join(lines)


def format_markdown(report: dict, mistakes: list[Mistake], image_name: str) -> str:
    """The readable report: metrics, per-class table, confusion matrix, mistakes."""
    label_names = report["label_names"]
    lines = [
        "# Evaluation",
        "",
        f"Run `{report['run']}`, evaluated on {_markdown(report['description'])}: "
        f"{report['examples']} examples.",
        "",
        "| metric | value |",
        "|---|---:|",
        f"| accuracy | {report['accuracy']:.4f} |",
        f"| macro F1 | {report['macro_f1']:.4f} |",
        f"| loss (cross-entropy) | {report['loss']:.4f} |",
        f"| expected calibration error ({report['calibration_bins']} bins) | "
        f"{report['expected_calibration_error']:.4f} |",
        "",
    ]
    if report["truncated_examples"]:
        lines += [
            f"{report['truncated_examples']} texts were longer than "
            f"data.max_length={report['max_length']} tokens; the model saw only "
            "their first tokens.",
            "",
        ]
    lines += [
        "## Per class",
        "",
        "| label | precision | recall | F1 | support |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in label_names:
        row = report["per_class"][name]
        lines.append(
            f"| {_markdown(name)} | {row['precision']:.4f} | {row['recall']:.4f} | "
            f"{row['f1']:.4f} | {row['support']} |"
        )
    lines += ["", "## Confusion matrix", "", f"![confusion matrix]({image_name})", ""]
    lines += _confusion_table(report["confusion_matrix"], label_names)
    lines += ["", "## Most confident mistakes", ""]
    if not mistakes:
        lines.append("None: every example was classified correctly.")
    for number, mistake in enumerate(mistakes, start=1):
        lines += _mistake_markdown(number, mistake)
    return "\n".join(lines) + "\n"


def _run_split(run: Run, split: str) -> EvaluationData:
    config = run.config
    splits = load_splits(config.data, seed=config.train.seed)
    if splits.label_names != run.label_names:
        raise RunError(
            f"the run's data now gives the labels {', '.join(splits.label_names)}, "
            f"but the run was trained with {', '.join(run.label_names)}"
        )
    examples = {
        "train": splits.train,
        "validation": splits.validation,
        "test": splits.test,
    }
    if split not in examples:
        raise RunError(
            f"a run has the splits train, validation and test, not '{split}'; "
            "use --data to evaluate other data"
        )
    if examples[split] is None:
        raise RunError(f"the run has no {split} split; use --data SPEC")
    spec = getattr(config.data, split) or config.data.train
    description = f"the run's own {split} split"
    return EvaluationData(examples[split], spec, split, description, own_split=True)


def _mistake_record(mistake: Mistake) -> dict:
    return {
        "text": mistake.text,
        "label": mistake.label,
        "predicted": mistake.predicted,
        "confidence": mistake.confidence,
    }


def _mistake_markdown(number: int, mistake: Mistake) -> list[str]:
    text = " ".join(mistake.text.split())
    if len(text) > QUOTED_TEXT_CHARACTERS:
        text = text[: QUOTED_TEXT_CHARACTERS - 1] + "…"
    lines = [
        f"### {number}. {_markdown(mistake.label)}, predicted "
        f"{_markdown(mistake.predicted)} ({mistake.confidence:.3f})",
        "",
        f"> {_markdown(text) or '(empty text)'}",
        "",
    ]
    if mistake.attention is None:
        tokens = " ".join(_markdown(token) for token in mistake.tokens)
        lines += [f"Tokens: {tokens or '(none)'}", ""]
        return lines
    heads = mistake.attention.shape[0]
    for head in range(heads):
        weights = mistake.attention[head]
        strongest = int(weights.argmax()) if len(weights) else -1
        cells = []
        for position, (token, weight) in enumerate(
            zip(mistake.tokens, weights, strict=True)
        ):
            cell = f"{_markdown(token)} ({weight:.3f})"
            cells.append(f"**{cell}**" if position == strongest else cell)
        name = f"head {head + 1}" if heads > 1 else "attention"
        lines += [f"{name.capitalize()}: {' · '.join(cells) or '(no tokens)'}", ""]
    return lines


def _confusion_table(confusion: list[list[int]], label_names: list[str]) -> list[str]:
    header = "| true \\ predicted | " + " | ".join(map(_markdown, label_names)) + " |"
    rule = "|---|" + "---:|" * len(label_names)
    rows = [
        f"| {_markdown(name)} | " + " | ".join(str(count) for count in counts) + " |"
        for name, counts in zip(label_names, confusion, strict=True)
    ]
    return [header, rule, *rows]


def _markdown(text: str) -> str:
    """Escapes text so Markdown shows it literally."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", escape(text, quote=False))


def _summary_prefix(evaluation: EvaluationData) -> str:
    """`test` for the run's test split; the data file's name (and split) otherwise."""
    if evaluation.own_split:
        return evaluation.split
    parsed = parse_spec(evaluation.spec)
    if parsed.scheme in FILE_SCHEMES:
        name = Path(parsed.target).name
    else:
        name = f"{parsed.target or parsed.scheme}/{evaluation.split}"
    return _TAG_UNSAFE.sub("_", name).strip("_") or "data"


def _trained_epochs(run: Path) -> int:
    try:
        metrics = json.loads((run / rundir.METRICS_FILE).read_text(encoding="utf-8"))
        return int(metrics.get("epochs_run", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return 0
